"""Balances: posted and pending per account and asset, summed from every event's postings
and holds, whatever application recorded it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from ledger.postings import Holds, Postings
from projections.base import View, columns


class BalancesView(View):
    view_name = "balances"
    tables = ("balances",)
    keys = {"balances": "account, asset"}

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        self.apply_all(curs, [(event, tracking)])

    def apply_all(self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]) -> None:
        """One upsert of every account and asset the run of events moves."""
        totals: dict[tuple[str, str], list[Any]] = {}
        for event, _ in events:
            postings = getattr(event, "postings", None)
            holds = getattr(event, "holds", None)
            legs = [(leg, 0) for leg in postings] if isinstance(postings, Postings) else []
            legs += [(leg, 1) for leg in holds] if isinstance(holds, Holds) else []
            for leg, column in legs:
                total = totals.setdefault((leg.account, leg.asset), [0, 0, event.timestamp])
                total[column] += leg.amount
                total[2] = max(total[2], event.timestamp)
        # in key order: the runners of several logs lock the rows they share in one order
        rows = [(a, k, posted, pending, at) for (a, k), (posted, pending, at) in totals.items()]
        if rows:
            curs.execute(
                self.sql(
                    "INSERT INTO {t} AS b (account, asset, posted, pending, updated_at) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], "
                    "%s::timestamptz[]) ON CONFLICT (account, asset) DO UPDATE "
                    "SET posted = b.posted + EXCLUDED.posted, "
                    "pending = b.pending + EXCLUDED.pending, "
                    # several logs feed one account, applied by runners in any interleaving:
                    # the latest movement's time, whichever log's runner arrives last
                    "updated_at = GREATEST(b.updated_at, EXCLUDED.updated_at)",
                    t="balances",
                ),
                columns(sorted(rows), 5),
            )


class BalancesReader:
    """Queries over the live balances, for the API and the command line."""

    def __init__(self, pool: Any, table: str = "balances") -> None:
        self.pool = pool
        self.table = Identifier(table)

    def of_account(self, account: str) -> dict[str, tuple[int, int]]:
        """{asset: (posted, pending)} of one account."""
        query = SQL("SELECT asset, posted, pending FROM {t} WHERE account = %s").format(
            t=self.table
        )
        with self.pool.connection() as conn:
            rows = conn.execute(query, (account,)).fetchall()
        return {asset: (posted, pending) for asset, posted, pending in rows}

    def of_accounts_under(self, prefix: str) -> dict[tuple[str, str], tuple[int, int]]:
        """{(account, asset): (posted, pending)} of every account whose name starts so."""
        query = SQL("SELECT account, asset, posted, pending FROM {t} WHERE account LIKE %s").format(
            t=self.table
        )
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.pool.connection() as conn:
            rows = conn.execute(query, (pattern,)).fetchall()
        return {(account, asset): (posted, pending) for account, asset, posted, pending in rows}

    def trial_balance(self) -> dict[str, int]:
        """Sum of posted balances per asset: zero for every asset, always."""
        query = SQL("SELECT asset, sum(posted)::bigint FROM {t} GROUP BY asset ORDER BY asset")
        with self.pool.connection() as conn:
            rows = conn.execute(query.format(t=self.table)).fetchall()
        return dict(rows)

    def all(self) -> list[tuple[str, str, int, int]]:
        query = SQL("SELECT account, asset, posted, pending FROM {t} ORDER BY account, asset")
        with self.pool.connection() as conn:
            return [tuple(row) for row in conn.execute(query.format(t=self.table)).fetchall()]
