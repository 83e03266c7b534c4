"""The journal: every movement in log order with its postings, and one line per leg for
point-in-time balances and exports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from ledger.postings import Holds, Postings
from projections.base import View, columns


class JournalView(View):
    view_name = "journal"
    tables = ("journal", "journal_lines")
    keys = {
        "journal": "application, notification_id",
        "journal_lines": "application, notification_id, line",
    }

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        self.apply_all(curs, [(event, tracking)])

    def apply_all(self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]) -> None:
        """All entries and all lines of a run of events, each in one batched statement."""
        entries, lines = [], []
        for event, tracking in events:
            postings = getattr(event, "postings", None)
            holds = getattr(event, "holds", None)
            postings = postings if isinstance(postings, Postings) else None
            holds = holds if isinstance(holds, Holds) else None
            if postings is None and holds is None:
                continue
            position = (tracking.application_name, tracking.notification_id)
            entries.append(
                (
                    *position,
                    event.originator_id,
                    event.originator_version,
                    type(event).__qualname__,
                    event.timestamp,
                    json.dumps(postings.to_rows() if postings else []),
                    json.dumps(holds.to_rows() if holds else []),
                )
            )
            legs = [("posted", leg) for leg in postings or ()]
            legs += [("pending", leg) for leg in holds or ()]
            lines += [
                (*position, number, leg.account, leg.asset, leg.amount, kind, event.timestamp)
                for number, (kind, leg) in enumerate(legs)
            ]
        if not entries:
            return
        # one statement for the run's entries and their lines (a data-modifying WITH runs
        # whatever the outer statement reads of it)
        curs.execute(
            self.sql(
                "WITH entries AS (INSERT INTO {j} (application, notification_id, originator_id, "
                "originator_version, topic, recorded_at, postings, holds) SELECT * FROM "
                "unnest(%s::text[], %s::bigint[], %s::uuid[], %s::bigint[], %s::text[], "
                "%s::timestamptz[], %s::jsonb[], %s::jsonb[])) "
                "INSERT INTO {l} (application, notification_id, line, account, asset, amount, "
                "kind, recorded_at) SELECT * FROM unnest(%s::text[], %s::bigint[], %s::int[], "
                "%s::text[], %s::text[], %s::bigint[], %s::text[], %s::timestamptz[])",
                j="journal",
                l="journal_lines",
            ),
            [*columns(entries, 8), *columns(lines, 8)],
        )


class JournalReader:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def entries(
        self, application: str | None, after: tuple[str, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """In log order: by application, then by position in that application's log."""
        clauses: list[str] = []
        params: list[Any] = []
        if application:
            clauses.append("j.application = %s")
            params.append(application)
        if after:
            clauses.append("(j.application, j.notification_id) > (%s, %s)")
            params += list(after)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = (
            "SELECT j.application, j.notification_id, j.originator_id, j.originator_version, "
            "j.topic, j.recorded_at, j.postings, j.holds FROM journal j "
            + where
            + " ORDER BY j.application, j.notification_id LIMIT %s"
        )
        with self.pool.connection() as conn:
            cursor = conn.execute(query, (*params, limit))
            names = [c.name for c in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            for row in rows:
                chain = Identifier(f"{row['application']}_events_chain")
                found = conn.execute(
                    SQL("SELECT hash FROM {c} WHERE notification_id = %s").format(c=chain),
                    (row["notification_id"],),
                ).fetchone()
                row["chain_hash"] = bytes(found[0]).hex() if found else None
        return rows

    def balance_as_of(self, account: str, as_of: datetime) -> dict[str, tuple[int, int]]:
        """{asset: (posted, pending)} of an account by event time."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT asset, coalesce(sum(amount) FILTER (WHERE kind = 'posted'), 0)::bigint, "
                "coalesce(sum(amount) FILTER (WHERE kind = 'pending'), 0)::bigint "
                "FROM journal_lines WHERE account = %s AND recorded_at <= %s GROUP BY asset",
                (account, as_of),
            ).fetchall()
        return {asset: (posted, pending) for asset, posted, pending in rows}

    def lines(self, start: datetime | None, end: datetime | None) -> Any:
        """Every line recorded in [start, end), in time order (recorded at, then position:
        application, event, line), streamed."""
        with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(name="journal_export") as cursor,
        ):
            cursor.itersize = 2000
            cursor.execute(
                "SELECT recorded_at, application, notification_id, line, account, asset, amount, "
                "kind FROM journal_lines WHERE (%(start)s::timestamptz IS NULL OR "
                "recorded_at >= %(start)s) AND (%(end)s::timestamptz IS NULL OR "
                "recorded_at < %(end)s) ORDER BY recorded_at, application, notification_id, line",
                {"start": start, "end": end},
            )
            yield from cursor

    def balances_between(self, start: datetime | None, end: datetime | None) -> list[Any]:
        """Per account and asset: opening (before start), debits and credits in the period,
        closing, posted amounts only."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT account, asset, "
                "coalesce(sum(amount) FILTER (WHERE %(start)s::timestamptz IS NOT NULL "
                "AND recorded_at < %(start)s), 0)::bigint AS opening, "
                "coalesce(sum(amount) FILTER (WHERE amount > 0 AND in_period), 0)::bigint, "
                "coalesce(-sum(amount) FILTER (WHERE amount < 0 AND in_period), 0)::bigint, "
                "coalesce(sum(amount), 0)::bigint AS closing FROM ("
                " SELECT account, asset, amount, recorded_at, "
                " (%(start)s::timestamptz IS NULL OR recorded_at >= %(start)s) AS in_period "
                " FROM journal_lines WHERE kind = 'posted' AND "
                " (%(end)s::timestamptz IS NULL OR recorded_at < %(end)s)) lines "
                "GROUP BY account, asset ORDER BY account, asset",
                {"start": start, "end": end},
            ).fetchall()
