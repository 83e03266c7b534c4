"""The directory: channels, platforms, products, code batches and withdrawals, one row each,
for the operator's lists (and a channel's own subtree), and the sweeper's pending payouts."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.sql import SQL

from ledger.cards.wallets import Withdrawal
from ledger.distribution.catalogue import Platform, Product
from ledger.distribution.channel import Channel
from ledger.distribution.codes import CodeBatch
from projections.base import View

CODE_STATES = ("issued", "reserved", "redeemed", "voided", "expired")


class DirectoryView(View):
    view_name = "directory"
    tables = (
        "directory_channels",
        "directory_platforms",
        "directory_products",
        "directory_batches",
        "directory_withdrawals",
    )
    keys = {table: "id" for table in tables}

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        e = event
        at = e.timestamp
        if isinstance(e, Channel.Registered):
            self._run(
                curs,
                "INSERT INTO {t} (id, name, parent_id, ancestry, suspended, registered_at) "
                "VALUES (%s, %s, %s, %s, false, %s)",
                "directory_channels",
                (e.originator_id, e.name, e.parent_id, list(e.ancestry), at),
            )
        elif isinstance(e, Channel.Suspended | Channel.Resumed):
            self._run(
                curs,
                "UPDATE {t} SET suspended = %s WHERE id = %s",
                "directory_channels",
                (isinstance(e, Channel.Suspended), e.originator_id),
            )
        elif isinstance(e, Platform.Registered):
            self._run(
                curs,
                "INSERT INTO {t} (id, name, gateway_url, registered_at) VALUES (%s, %s, %s, %s)",
                "directory_platforms",
                (e.originator_id, e.name, e.gateway_url, at),
            )
        elif isinstance(e, Platform.GatewayMoved):
            self._run(
                curs,
                "UPDATE {t} SET gateway_url = %s WHERE id = %s",
                "directory_platforms",
                (e.gateway_url, e.originator_id),
            )
        elif isinstance(e, Product.Registered):
            self._run(
                curs,
                "INSERT INTO {t} (id, platform_id, name, duration_days, currency, face_value, "
                "wholesale_cost, registered_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                "directory_products",
                (
                    e.originator_id,
                    e.platform_id,
                    e.name,
                    e.duration_days,
                    e.face_value.currency,
                    e.face_value.amount,
                    e.wholesale_cost.amount,
                    at,
                ),
            )
        elif isinstance(e, CodeBatch.Issued):
            self._run(
                curs,
                "INSERT INTO {t} (id, channel_id, product_id, quantity, inactive, expires_at, "
                "issued_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                "directory_batches",
                (
                    e.originator_id,
                    e.channel_id,
                    e.product_id,
                    len(e.code_ids),
                    e.inactive,
                    e.expires_at,
                    at,
                ),
            )
        elif isinstance(e, Withdrawal.Requested):
            self._run(
                curs,
                "INSERT INTO {t} (id, member_id, currency, amount, status, requested_at, "
                "updated_at) VALUES (%s, %s, %s, %s, 'pending', %s, %s)",
                "directory_withdrawals",
                (e.originator_id, e.member_id, e.amount.currency, e.amount.amount, at, at),
            )
        elif isinstance(e, Withdrawal.Paid | Withdrawal.Failed):
            paid = isinstance(e, Withdrawal.Paid)
            self._run(
                curs,
                "UPDATE {t} SET status = %s, reference = %s, failure = %s, updated_at = %s "
                "WHERE id = %s",
                "directory_withdrawals",
                (
                    "paid" if paid else "failed",
                    e.reference if paid else None,
                    None if paid else e.reason,
                    at,
                    e.originator_id,
                ),
            )

    def _run(self, curs: Cursor[Any], statement: str, table: str, row: tuple[Any, ...]) -> None:
        curs.execute(self.sql(statement, t=table), row)


class DirectoryReader:
    """Pages are ordered by id; `after` is the last id of the previous page."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def subtree(self, channel_id: Any) -> list[Any]:
        """The channel (even before the view has its row) and every channel below it."""
        below = self._rows(
            "SELECT id FROM directory_channels WHERE %s = ANY(ancestry)", (channel_id,)
        )
        return [channel_id, *(row[0] for row in below)]

    def channels(
        self, within: Any | None, parent_id: Any | None, after: Any, limit: int
    ) -> list[dict[str, Any]]:
        clauses, params = self._page(after)
        if within is not None:
            clauses.append("(id = %s OR %s = ANY(ancestry))")
            params += [within, within]
        if parent_id is not None:
            clauses.append("parent_id = %s")
            params.append(parent_id)
        return self._select(
            "SELECT id, name, parent_id, suspended, registered_at FROM directory_channels",
            clauses,
            params,
            limit,
        )

    def platforms(self, after: Any, limit: int) -> list[dict[str, Any]]:
        clauses, params = self._page(after)
        return self._select(
            "SELECT id, name, gateway_url, registered_at FROM directory_platforms",
            clauses,
            params,
            limit,
        )

    def products(self, platform_id: Any | None, after: Any, limit: int) -> list[dict[str, Any]]:
        clauses, params = self._page(after)
        if platform_id is not None:
            clauses.append("platform_id = %s")
            params.append(platform_id)
        return self._select(
            "SELECT id, platform_id, name, duration_days, currency, face_value, wholesale_cost, "
            "registered_at FROM directory_products",
            clauses,
            params,
            limit,
        )

    def batches(self, channel_id: Any | None, after: Any, limit: int) -> list[dict[str, Any]]:
        """Each batch with how many of its codes are in each state (from the codes view)."""
        clauses, params = self._page(after, "b.id")
        if channel_id is not None:
            clauses.append("b.channel_id = %s")
            params.append(channel_id)
        counts = ", ".join(
            f"count(*) FILTER (WHERE c.status = '{state}') AS {state}" for state in CODE_STATES
        )
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = (
            "SELECT b.id, b.channel_id, b.product_id, b.quantity, b.inactive, b.expires_at, "
            f"b.issued_at, {counts} FROM directory_batches b "
            f"LEFT JOIN codes c ON c.batch_id = b.id {where} "
            "GROUP BY b.id, b.channel_id, b.product_id, b.quantity, b.inactive, b.expires_at, "
            "b.issued_at ORDER BY b.id LIMIT %s"
        )
        return self._dicts(query, (*params, limit))

    def batch(self, batch_id: Any) -> dict[str, Any] | None:
        rows = self._dicts(
            "SELECT id, channel_id, product_id, quantity, inactive FROM directory_batches "
            "WHERE id = %s",
            (batch_id,),
        )
        return rows[0] if rows else None

    def withdrawals(self, status: str | None, after: Any, limit: int) -> list[dict[str, Any]]:
        clauses, params = self._page(after)
        if status:
            clauses.append("status = %s")
            params.append(status)
        return self._select(
            "SELECT id, member_id, currency, amount, status, reference, failure, requested_at, "
            "updated_at FROM directory_withdrawals",
            clauses,
            params,
            limit,
        )

    def pending_withdrawals(self, grace_seconds: float, limit: int = 100) -> list[Any]:
        """Withdrawals still pending past the grace period: their payout answer was lost."""
        return [
            row[0]
            for row in self._rows(
                "SELECT id FROM directory_withdrawals WHERE status = 'pending' AND "
                "requested_at < now() - make_interval(secs => %s) ORDER BY requested_at LIMIT %s",
                (grace_seconds, limit),
            )
        ]

    def dead_letters(self, after: int | None, limit: int) -> list[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if after is not None:
            clauses.append("id > %s")
            params.append(after)
        return self._select(
            "SELECT id, view, version, application, notification_id, topic, originator_id, "
            "error, at FROM dead_letters",
            clauses,
            params,
            limit,
        )

    @staticmethod
    def _page(after: Any, column: str = "id") -> tuple[list[str], list[Any]]:
        if after is None:
            return [], []
        return [f"{column} > %s"], [after]

    def _select(
        self, head: str, clauses: list[str], params: list[Any], limit: int
    ) -> list[dict[str, Any]]:
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._dicts(head + where + " ORDER BY id LIMIT %s", (*params, limit))

    def _dicts(self, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            cursor = conn.execute(SQL(query), params)
            names = [c.name for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _rows(self, query: str, params: tuple[Any, ...]) -> list[Any]:
        with self.pool.connection() as conn:
            return list(conn.execute(SQL(query), params).fetchall())
