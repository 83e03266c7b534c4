"""Balances: posted and pending per account and asset, summed from every event's postings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection
from psycopg.sql import SQL, Identifier

from ledger.postings import Holds, Postings


class BalancesView(PostgresTrackingRecorder):
    """Writes a movement's legs and the tracking record in one transaction (exactly once)."""

    table = "balances_v1"

    def apply(
        self, postings: Postings | None, holds: Holds | None, at: datetime, tracking: Tracking
    ) -> None:
        statement = SQL(
            "INSERT INTO {table} (account, asset, posted, pending, updated_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (account, asset) DO UPDATE "
            "SET posted = {table}.posted + EXCLUDED.posted, "
            "pending = {table}.pending + EXCLUDED.pending, updated_at = EXCLUDED.updated_at"
        ).format(table=Identifier(self.table))
        rows = [(leg.account, leg.asset, leg.amount, 0, at) for leg in postings or ()]
        rows += [(leg.account, leg.asset, 0, leg.amount, at) for leg in holds or ()]
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(statement, rows)
            self._insert_tracking(curs, tracking)


class BalancesProjection(Projection[BalancesView]):
    """Events that carry postings or holds move balances; every other event is only tracked."""

    name = "balances_v1"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        postings = getattr(domain_event, "postings", None)
        holds = getattr(domain_event, "holds", None)
        if isinstance(postings, Postings) or isinstance(holds, Holds):
            self.view.apply(postings, holds, domain_event.timestamp, tracking)
        else:
            self.view.insert_tracking(tracking)


class BalancesReader:
    """Queries over the live balances table, for the API and the command line."""

    def __init__(self, pool: Any, table: str = BalancesView.table) -> None:
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
