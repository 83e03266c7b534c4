"""Settlements and cases: one row per settlement saga (lists, and the sweeper's due
settlements) and one per case (the operators' queue)."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from ledger.settlement.cases import Case
from ledger.settlement.saga import Settlement
from projections.base import View

S: Any = Settlement  # its event classes are made by @event, out of mypy's sight
C: Any = Case

UNFINISHED = ("collecting", "awaiting_statement", "reconciling", "paying")

SETTLEMENT_STATEMENTS: dict[type[Any], str] = {
    S.Opened: (
        "INSERT INTO {s} (id, platform_id, period, status, opened_at, updated_at) "
        "VALUES (%(id)s, %(platform_id)s, %(period)s, 'collecting', %(at)s, %(at)s) "
        "ON CONFLICT (id) DO NOTHING"
    ),
    S.Deferred: "UPDATE {s} SET due_at = %(until)s, updated_at = %(at)s WHERE id = %(id)s",
    S.OursCollected: (
        "UPDATE {s} SET status = 'awaiting_statement', due_at = NULL, updated_at = %(at)s "
        "WHERE id = %(id)s"
    ),
    S.StatementFetched: (
        "UPDATE {s} SET status = 'reconciling', due_at = NULL, consistent = %(consistent)s, "
        "updated_at = %(at)s WHERE id = %(id)s"
    ),
    S.Reconciled: (
        "UPDATE {s} SET open_cases = %(cases)s, due_at = NULL, updated_at = %(at)s, "
        "status = CASE WHEN %(cases)s = 0 AND consistent THEN 'paying' "
        "ELSE 'awaiting_approval' END WHERE id = %(id)s"
    ),
    S.CaseResolved: (
        "UPDATE {s} SET open_cases = open_cases - 1, updated_at = %(at)s, "
        "adjustments_due = adjustments_due + CASE WHEN payment_fixed AND %(pay)s > 0 "
        "THEN 1 ELSE 0 END, "
        "status = CASE WHEN status = 'awaiting_approval' AND open_cases = 1 AND consistent "
        "THEN 'paying' ELSE status END WHERE id = %(id)s"
    ),
    S.Approved: "UPDATE {s} SET status = 'paying', updated_at = %(at)s WHERE id = %(id)s",
    S.PaymentRequested: (
        "UPDATE {s} SET payment_fixed = true, updated_at = %(at)s WHERE id = %(id)s"
    ),
    S.Paid: (
        "UPDATE {s} SET status = 'paid', due_at = NULL, updated_at = %(at)s WHERE id = %(id)s"
    ),
    S.AdjustmentPaid: (
        "UPDATE {s} SET adjustments_due = adjustments_due - 1, updated_at = %(at)s "
        "WHERE id = %(id)s"
    ),
    C.Opened: (
        "INSERT INTO {c} (id, settlement_id, platform_id, kind, status, order_no, opened_at, "
        "updated_at) VALUES (%(id)s, %(settlement_id)s, %(platform_id)s, %(kind)s, 'open', "
        "%(order_no)s, %(at)s, %(at)s) ON CONFLICT (id) DO NOTHING"
    ),
    C.Resolved: ("UPDATE {c} SET status = 'resolved', updated_at = %(at)s WHERE id = %(id)s"),
}


class SettlementsView(View):
    view_name = "settlements"
    tables = ("settlements", "settlement_cases")
    keys = {"settlements": "id", "settlement_cases": "id"}

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        statement = SETTLEMENT_STATEMENTS.get(type(event))
        if statement is None:
            return
        row = {
            "id": event.originator_id,
            "at": event.timestamp,
            **{name: getattr(event, name, None) for name in FIELDS},
        }
        if isinstance(event, S.StatementFetched):
            row["consistent"] = event.total == event.lines_total
        curs.execute(self.sql(statement, s="settlements", c="settlement_cases"), row)


FIELDS = ("platform_id", "period", "until", "cases", "pay", "settlement_id", "kind", "order_no")


class SettlementsReader:
    """Queries over the live settlements and cases."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.settlements = Identifier("settlements")
        self.cases = Identifier("settlement_cases")

    def due(self, limit: int = 100) -> list[Any]:
        """Settlements with a step to run now: unfinished and past their due time (or
        without one), or paid with adjustments still to pay."""
        query = SQL(
            "SELECT id FROM {s} WHERE (status = ANY(%s) AND (due_at IS NULL OR due_at <= now())) "
            "OR (status = 'paid' AND adjustments_due > 0) ORDER BY period, id LIMIT %s"
        ).format(s=self.settlements)
        with self.pool.connection() as conn:
            return [r[0] for r in conn.execute(query, (list(UNFINISHED), limit)).fetchall()]

    def listing(self, platform_id: Any, after: Any, limit: int) -> list[Any]:
        """Settlement ids, newest period first."""
        clauses, params = [], []
        if platform_id is not None:
            clauses.append("platform_id = %s")
            params.append(platform_id)
        if after is not None:
            clauses.append("(period, id) < (SELECT period, id FROM {s} WHERE id = %s)")
            params.append(after)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = SQL(
            "SELECT id FROM {s} " + where + " ORDER BY period DESC, id DESC LIMIT %s"
        ).format(s=self.settlements)
        with self.pool.connection() as conn:
            return [r[0] for r in conn.execute(query, (*params, limit)).fetchall()]

    def case_listing(
        self, status: str | None, kind: str | None, after: Any, limit: int
    ) -> list[Any]:
        """Case ids, oldest first (a queue)."""
        clauses, params = [], []
        if status:
            clauses.append("status = %s")
            params.append(status)
        if kind:
            clauses.append("kind = %s")
            params.append(kind)
        if after is not None:
            clauses.append("(opened_at, id) > (SELECT opened_at, id FROM {c} WHERE id = %s)")
            params.append(after)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = SQL("SELECT id FROM {c} " + where + " ORDER BY opened_at, id LIMIT %s").format(
            c=self.cases
        )
        with self.pool.connection() as conn:
            return [r[0] for r in conn.execute(query, (*params, limit)).fetchall()]
