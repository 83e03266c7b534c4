"""Codes: one row per issued code (never the code itself), for batch listings and the
sweeper that expires codes past their date."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from ledger.distribution.codes import Code, CodeBatch
from projections.base import View, columns

STATUS_AFTER = {
    Code.Reserved: "reserved",
    Code.Released: "issued",
    Code.Redeemed: "redeemed",
    Code.Voided: "voided",
    Code.Expired: "expired",
}


class CodesView(View):
    view_name = "codes"
    tables = ("codes",)
    keys = {"codes": "code_id"}

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        self.apply_all(curs, [(event, tracking)])

    def apply_all(self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]) -> None:
        """A batch's codes inserted, then every code the events after it change updated in
        one statement, with what its last event left (its status, activation, time)."""
        changes: dict[UUID, Change] = {}
        for e, _ in events:
            if isinstance(e, CodeBatch.Issued):
                self._update(curs, changes)
                self._issue(curs, e)
            elif type(e) in STATUS_AFTER or isinstance(e, Code.Activated):
                change = changes.setdefault(e.originator_id, Change())
                change.at = e.timestamp
                if isinstance(e, Code.Activated):
                    change.activated = True
                else:
                    change.status = STATUS_AFTER[type(e)]
        self._update(curs, changes)

    def _issue(self, curs: Cursor[Any], e: Any) -> None:
        curs.execute(
            self.sql(
                "INSERT INTO {t} (code_id, batch_id, channel_id, product_id, status, active, "
                "expires_at, issued_at, updated_at) SELECT code_id, %s, %s, %s, 'issued', %s, "
                "%s, %s, %s FROM unnest(%s::uuid[]) AS code_id",
                t="codes",
            ),
            (
                e.originator_id,
                e.channel_id,
                e.product_id,
                not e.inactive,
                e.expires_at,
                e.timestamp,
                e.timestamp,
                list(e.code_ids),
            ),
        )

    def _update(self, curs: Cursor[Any], changes: dict[UUID, Change]) -> None:
        if not changes:
            return
        rows = [(code, c.status, c.activated, c.at) for code, c in sorted(changes.items())]
        curs.execute(
            self.sql(
                "UPDATE {t} AS c SET status = coalesce(u.status, c.status), "
                "active = c.active OR u.activated, updated_at = u.at FROM unnest(%s::uuid[], "
                "%s::text[], %s::boolean[], %s::timestamptz[]) AS u(code_id, status, "
                "activated, at) WHERE c.code_id = u.code_id",
                t="codes",
            ),
            columns(rows, 4),
        )
        changes.clear()


@dataclass
class Change:
    """What a code's events in a run leave: its last status (if one changed it), whether it
    was activated, and the time of its last event."""

    status: str | None = None
    activated: bool = False
    at: datetime | None = None


class CodesReader:
    def __init__(self, pool: Any, table: str = "codes") -> None:
        self.pool = pool
        self.table = Identifier(table)

    def due_for_expiry(self, limit: int = 500) -> list[Any]:
        query = SQL(
            "SELECT code_id FROM {t} WHERE status = 'issued' AND expires_at < now() "
            "ORDER BY expires_at LIMIT %s"
        ).format(t=self.table)
        with self.pool.connection() as conn:
            return [row[0] for row in conn.execute(query, (limit,)).fetchall()]

    def batch_summary(self, batch_id: Any) -> dict[str, int]:
        query = SQL("SELECT status, count(*) FROM {t} WHERE batch_id = %s GROUP BY status")
        with self.pool.connection() as conn:
            rows = conn.execute(query.format(t=self.table), (batch_id,)).fetchall()
        return {status: count for status, count in rows}
