"""Recharges: one row per saga, for lists, the review queue and the sweeper of due steps
(a recharge's, and a refund's while the platform reviews it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from ledger.recharges.refunds import RefundStep
from ledger.recharges.saga import Recharge
from projections.base import View, columns


class RechargesView(View):
    view_name = "recharges"
    tables = ("recharges",)
    keys = {"recharges": "id"}

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        self.apply_all(curs, [(event, tracking)])

    def apply_all(self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]) -> None:
        """A run in passes: a recharge's n-th event of the run in the n-th pass, so a pass
        changes each recharge once and its rows in any order. In a pass, the recharges
        requested are inserted in one statement, those scheduled and those ended updated in
        one statement each, and the rarer events one statement each."""
        passes: list[dict[str, list[Any]]] = []
        seen: dict[Any, int] = {}
        for event, _ in events:
            change = self.change(event)
            if change is None:
                continue
            n = seen.get(event.originator_id, 0)
            seen[event.originator_id] = n + 1
            if n == len(passes):
                passes.append({})
            statement, row = change
            passes[n].setdefault(statement, []).append(row)
        for each in passes:
            for statement, rows in each.items():
                if statement in BATCHED:
                    width, text = BATCHED[statement]
                    curs.execute(self.sql(text, t="recharges"), columns(rows, width))
                else:
                    for row in rows:
                        curs.execute(self.sql(statement, t="recharges"), row)

    @staticmethod
    def change(e: Any) -> tuple[str, Any] | None:
        """The statement an event needs (a key of BATCHED, or a statement of its own) and
        its row."""
        if isinstance(e, Recharge.Requested):
            requested = (e.originator_id, e.channel_id, e.code_id, e.product_id, e.account)
            return REQUESTED, (*requested, e.deadline, e.timestamp)
        if isinstance(e, Recharge.StepScheduled):
            return SCHEDULED, (e.originator_id, f"{e.number}-{e.kind}", e.due_at, e.timestamp)
        if type(e) in STATUS_AFTER:
            status, failure = STATUS_AFTER[type(e)], getattr(e, "reason", None)
            return ENDED, (e.originator_id, status, failure, e.timestamp)
        row: dict[str, Any] = {"id": e.originator_id, "at": e.timestamp}
        if isinstance(e, Recharge.RefundRequested):
            statement = (
                "UPDATE {t} SET refund_no = %(no)s, refund_status = 'pending', "
                "updated_at = %(at)s WHERE id = %(id)s"
            )
            row |= {"no": e.refund_no}
        elif isinstance(e, Recharge.RefundStepScheduled):
            statement = (
                "UPDATE {t} SET refund_step_id = %(step)s, refund_step_due_at = %(due)s, "
                "updated_at = %(at)s WHERE id = %(id)s"
            )
            row |= {"step": RefundStep(e.number, e.kind, e.due_at).id, "due": e.due_at}
        elif isinstance(e, Recharge.RefundAccepted | Recharge.RefundRejected):
            accepted = isinstance(e, Recharge.RefundAccepted)
            statement = (
                "UPDATE {t} SET refund_no = %(no)s, refund_status = %(refund)s, "
                "status = CASE WHEN %(accepted)s THEN 'refunded' ELSE status END, "
                "refund_step_id = NULL, refund_step_due_at = NULL, updated_at = %(at)s "
                "WHERE id = %(id)s"
            )
            row |= {
                "no": e.refund_no,
                "refund": "accepted" if accepted else "rejected",
                "accepted": accepted,
            }
        elif isinstance(e, Recharge.DiscrepancyFound):
            statement = (
                "UPDATE {t} SET discrepancy = %(kind)s, updated_at = %(at)s WHERE id = %(id)s"
            )
            row |= {"kind": e.kind}
        else:
            return None
        return statement, row


REQUESTED, SCHEDULED, ENDED = "requested", "scheduled", "ended"
BATCHED = {
    REQUESTED: (
        7,
        "INSERT INTO {t} (id, channel_id, code_id, product_id, account, status, deadline, "
        "requested_at, updated_at) SELECT id, channel_id, code_id, product_id, account, "
        "'pending', deadline, at, at FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], "
        "%s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[]) "
        "AS u(id, channel_id, code_id, product_id, account, deadline, at)",
    ),
    SCHEDULED: (
        4,
        "UPDATE {t} AS r SET step_id = u.step, step_due_at = u.due, updated_at = u.at "
        "FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[]) "
        "AS u(id, step, due, at) WHERE r.id = u.id",
    ),
    ENDED: (
        4,
        "UPDATE {t} AS r SET status = u.status, failure = u.failure, step_id = NULL, "
        "step_due_at = NULL, updated_at = u.at FROM unnest(%s::uuid[], %s::text[], "
        "%s::text[], %s::timestamptz[]) AS u(id, status, failure, at) WHERE r.id = u.id",
    ),
}
"""The statements of the frequent events, each for many recharges at once (its columns,
its text)."""


STATUS_AFTER = {
    Recharge.Succeeded: "succeeded",
    Recharge.Failed: "failed",
    Recharge.SentToReview: "review",
}


class RechargesReader:
    def __init__(self, pool: Any, table: str = "recharges") -> None:
        self.pool = pool
        self.table = Identifier(table)

    def overdue_steps(self, grace_seconds: float, limit: int = 500) -> list[tuple[Any, str]]:
        query = SQL(
            "SELECT id, step_id FROM {t} WHERE status = 'pending' AND step_due_at < "
            "now() - make_interval(secs => %s) ORDER BY step_due_at LIMIT %s"
        ).format(t=self.table)
        with self.pool.connection() as conn:
            return [tuple(r) for r in conn.execute(query, (grace_seconds, limit)).fetchall()]

    def overdue_refund_steps(self, grace_seconds: float, limit: int = 500) -> list[tuple[Any, str]]:
        """Refund steps still waiting well past their time (a lost wake-up, a dead worker)."""
        query = SQL(
            "SELECT id, refund_step_id FROM {t} WHERE refund_step_id IS NOT NULL AND "
            "refund_step_due_at < now() - make_interval(secs => %s) "
            "ORDER BY refund_step_due_at LIMIT %s"
        ).format(t=self.table)
        with self.pool.connection() as conn:
            return [tuple(r) for r in conn.execute(query, (grace_seconds, limit)).fetchall()]

    def past_deadline(self, limit: int = 500) -> list[Any]:
        query = SQL(
            "SELECT id FROM {t} WHERE status = 'pending' AND deadline < now() LIMIT %s"
        ).format(t=self.table)
        with self.pool.connection() as conn:
            return [r[0] for r in conn.execute(query, (limit,)).fetchall()]

    def of_channel(
        self, channel_id: Any, status: str | None, after: Any, limit: int
    ) -> list[dict[str, Any]]:
        return self.listing([channel_id], status, None, after, limit)

    def listing(
        self,
        channel_ids: list[Any] | None,
        status: str | None,
        account: str | None,
        after: Any,
        limit: int,
        discrepancy: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `channel_ids` None means every channel (the operator's queue);
        `discrepancy` keeps the recharges with one of that kind (`late_success`)."""
        clauses: list[str] = []
        params: list[Any] = []
        if channel_ids is not None:
            clauses.append("channel_id = ANY(%s)")
            params.append(list(channel_ids))
        if status:
            clauses.append("status = %s")
            params.append(status)
        if account:
            clauses.append("account = %s")
            params.append(account)
        if discrepancy:
            clauses.append("discrepancy = %s")
            params.append(discrepancy)
        if after:
            clauses.append("(requested_at, id) < (SELECT requested_at, id FROM {t} WHERE id = %s)")
            params.append(after)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = SQL(
            "SELECT id, status, product_id, account, channel_id, failure, requested_at, "
            "discrepancy, refund_no, refund_status "
            "FROM {t} " + where + " ORDER BY requested_at DESC, id DESC LIMIT %s"
        ).format(t=self.table)
        with self.pool.connection() as conn:
            cursor = conn.execute(query, (*params, limit))
            names = [c.name for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
