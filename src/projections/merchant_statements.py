"""Merchant statements: every line that moved a merchant's payable (consumptions, refunds),
marked with the settlement that collected it, and one row per merchant settlement for lists
and the sweeper. The lines not yet collected are what the next settlement takes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg import Cursor

from ledger.cards.application import Cards
from ledger.cards.merchant_settlement import MerchantSettlement, StatementLine, statement_line
from ledger.errors import Unavailable
from ledger.money import Money
from projections.base import View
from projections.positions import wait_until_caught_up

Opened: Any = MerchantSettlement.Opened  # type: ignore[attr-defined]
Collected: Any = MerchantSettlement.Collected  # type: ignore[attr-defined]
PayoutPaid: Any = MerchantSettlement.PayoutPaid  # type: ignore[attr-defined]
PayoutFailed: Any = MerchantSettlement.PayoutFailed  # type: ignore[attr-defined]


class MerchantStatementsView(View):
    view_name = "merchant_statements"
    tables = ("merchant_statement_lines", "merchant_settlements")
    keys = {"merchant_statement_lines": "id", "merchant_settlements": "id"}

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        line = statement_line(event)
        if line is not None:
            self._run(
                curs,
                "INSERT INTO {t} (id, merchant_id, kind, consumption_id, currency, amount, "
                "recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                "merchant_statement_lines",
                (
                    line.id,
                    line.merchant_id,
                    line.kind,
                    line.consumption_id,
                    line.amount.currency,
                    line.amount.amount,
                    line.at,
                ),
            )
        elif isinstance(event, Opened):
            self._run(
                curs,
                "INSERT INTO {t} (id, merchant_id, period, status, cutoff, lines, totals, "
                "opened_at, updated_at) VALUES (%s, %s, %s, 'collecting', %s, 0, '{{}}', %s, %s)",
                "merchant_settlements",
                (
                    event.originator_id,
                    event.merchant_id,
                    event.period,
                    event.cutoff,
                    event.timestamp,
                    event.timestamp,
                ),
            )
        elif isinstance(event, Collected):
            self._collected(curs, event)
        elif isinstance(event, PayoutPaid | PayoutFailed):
            self._payout(curs, event)

    def _collected(self, curs: Cursor[Any], event: Any) -> None:
        lines = [row[0] for row in event.lines]
        totals: dict[str, int] = dict(event.carried_in)
        for row in event.lines:
            totals[row[3]] = totals.get(row[3], 0) + int(row[4])
        status = "paying" if event.payouts else "paid"
        self._run(
            curs,
            "UPDATE {t} SET status = %s, lines = %s, totals = %s, updated_at = %s WHERE id = %s",
            "merchant_settlements",
            (status, len(lines), json.dumps(totals), event.timestamp, event.originator_id),
        )
        self._run(
            curs,
            "UPDATE {t} SET settlement_id = %s WHERE id = ANY(%s::uuid[])",
            "merchant_statement_lines",
            (event.originator_id, lines),
        )

    def _payout(self, curs: Cursor[Any], event: Any) -> None:
        # the last payout paid makes the settlement paid; a failure leaves it paying
        paid = isinstance(event, PayoutPaid)
        self._run(
            curs,
            "UPDATE {t} SET paid_currencies = CASE WHEN %s THEN "
            "array_append(paid_currencies, %s) ELSE paid_currencies END, "
            "failure = CASE WHEN %s THEN NULL ELSE %s END, updated_at = %s WHERE id = %s",
            "merchant_settlements",
            (
                paid,
                event.currency,
                paid,
                None if paid else event.reason,
                event.timestamp,
                event.originator_id,
            ),
        )
        self._run(
            curs,
            "UPDATE {t} SET status = 'paid' WHERE id = %s AND status = 'paying' AND "
            "cardinality(paid_currencies) = (SELECT count(*) FROM jsonb_each(totals) "
            "WHERE value::bigint > 0)",
            "merchant_settlements",
            (event.originator_id,),
        )

    def _run(self, curs: Cursor[Any], statement: str, table: str, row: tuple[Any, ...]) -> None:
        curs.execute(self.sql(statement, t=table), row)


class MerchantStatementsReader:
    """The lines a settlement may take (the `StatementLines` port), the settlements' list,
    and those the sweeper must move on."""

    def __init__(self, pool: Any, catch_up_seconds: float = 5.0) -> None:
        self.pool = pool
        self.catch_up_seconds = catch_up_seconds

    def unsettled(self, merchant_id: UUID, before: datetime, limit: int) -> list[StatementLine]:
        caught_up = wait_until_caught_up(
            self.pool,
            [Cards.name],
            view_name=MerchantStatementsView.view_name,
            timeout=self.catch_up_seconds,
        )
        if not caught_up:
            raise Unavailable("the merchant statements are behind the cards log; try again")
        rows = self._rows(
            "SELECT id, kind, consumption_id, currency, amount, recorded_at "
            "FROM merchant_statement_lines WHERE merchant_id = %s AND settlement_id IS NULL "
            "AND recorded_at < %s ORDER BY recorded_at, id LIMIT %s",
            (merchant_id, before, limit),
        )
        return [
            StatementLine(line_id, merchant_id, kind, consumption, Money(amount, currency), at)
            for line_id, kind, consumption, currency, amount, at in rows
        ]

    def settlements(
        self, merchant_id: UUID | None, after: UUID | None, limit: int
    ) -> list[dict[str, Any]]:
        clauses, params = [], []
        if merchant_id is not None:
            clauses.append("merchant_id = %s")
            params.append(merchant_id)
        if after is not None:
            clauses.append("id > %s")
            params.append(after)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = (
            "SELECT id, merchant_id, period, status, cutoff, lines, totals, failure, opened_at, "
            f"updated_at FROM merchant_settlements {where} ORDER BY id LIMIT %s"
        )
        with self.pool.connection() as conn, conn.cursor() as curs:
            curs.execute(query, (*params, limit))
            names = [column.name for column in curs.description or ()]
            return [dict(zip(names, row, strict=True)) for row in curs.fetchall()]

    def unfinished(self, grace_seconds: float, limit: int = 100) -> list[UUID]:
        """Settlements still collecting or paying past the grace period: their process died
        or their payout's answer was lost."""
        rows = self._rows(
            "SELECT id FROM merchant_settlements WHERE status IN ('collecting', 'paying') AND "
            "updated_at < now() - make_interval(secs => %s) ORDER BY updated_at LIMIT %s",
            (grace_seconds, limit),
        )
        return [row[0] for row in rows]

    def _rows(self, query: str, params: tuple[Any, ...]) -> list[Any]:
        with self.pool.connection() as conn:
            return list(conn.execute(query, params).fetchall())
