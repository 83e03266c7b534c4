"""The recharge saga as an event-sourced process manager: every step, result and decision
is an event on the Recharge aggregate; what to do next comes from `decisions`."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.errors import StateConflict
from ledger.recharges.callbacks import (
    Apply,
    Callback,
    CallbackDecision,
    Discrepancy,
    Ignore,
    Reversal,
    after_callback,
)
from ledger.recharges.decisions import (
    Fail,
    Review,
    Schedule,
    Step,
    StepKind,
    StepResult,
    Succeed,
    after_step,
    at_deadline,
    first_step,
)

FINAL = frozenset({"succeeded", "failed"})


class Recharge(Aggregate):
    """status: pending → succeeded | failed | review; review → succeeded | failed."""

    @event("Requested")
    def __init__(
        self,
        id: UUID,
        code_id: UUID,
        channel_id: UUID,
        product_id: UUID,
        account: str,
        user: str | None,
        requested_at: datetime,
        deadline: datetime,
    ) -> None:
        self.code_id = code_id
        self.channel_id = channel_id
        self.product_id = product_id
        self.account = account
        self.user = user
        self.requested_at = requested_at
        self.deadline = deadline
        self.status = "pending"
        self.step: Step | None = None
        self.recharges_sent = 0
        self.queries_made = 0
        self.unsure_in_a_row = 0
        self.failure: str | None = None
        self.review_reason: str | None = None
        self.membership: dict[str, Any] | None = None
        self.resolution: dict[str, Any] | None = None
        self.callbacks_heard: set[str] = set()
        self.discrepancy: dict[str, Any] | None = None
        self.reversal: dict[str, Any] | None = None

    @classmethod
    def request(
        cls,
        recharge_id: UUID,
        code_id: UUID,
        channel_id: UUID,
        product_id: UUID,
        account: str,
        user: str | None,
        now: datetime,
        deadline: datetime,
    ) -> Recharge:
        recharge = cls(
            id=recharge_id,
            code_id=code_id,
            channel_id=channel_id,
            product_id=product_id,
            account=account,
            user=user,
            requested_at=now,
            deadline=deadline,
        )
        recharge._apply(Schedule(first_step(now)))
        return recharge

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def record(self, step_id: str, result: StepResult, now: datetime) -> bool:
        """A step's result; a late or repeated report of a step is ignored (False)."""
        if self.status != "pending" or self.step is None or self.step.id != step_id:
            return False
        step = self.step
        self._step_completed(
            step_id,
            result.outcome,
            result.reason,
            result.platform_order_id,
            result.starts_at,
            result.ends_at,
        )
        self._apply(
            after_step(
                step,
                result,
                recharges_sent=self.recharges_sent,
                queries_made=self.queries_made,
                deadline=self.deadline,
                now=now,
                unsure_in_a_row=self.unsure_in_a_row,
            )
        )
        return True

    def hear(self, callback: Callback) -> CallbackDecision:
        """A platform's callback about this order, as news of the outcome (see `callbacks`).
        A duplicate records nothing; everything else is recorded once."""
        decision = after_callback(self.status, self.callbacks_heard, callback)
        if isinstance(decision, Apply):
            self._callback_received(
                callback.status,
                callback.platform_order_id,
                callback.starts_at,
                callback.ends_at,
                callback.reason,
            )
            self._apply(decision.decision)
        elif isinstance(decision, Discrepancy):
            self._discrepancy_found(
                decision.kind,
                callback.status,
                decision.reason,
                callback.platform_order_id,
                callback.starts_at,
                callback.ends_at,
            )
        elif isinstance(decision, Reversal):
            self._reversal_reported(callback.status, decision.reason, callback.platform_order_id)
        elif isinstance(decision, Ignore):
            self._callback_ignored(callback.status, decision.reason)
        return decision

    def check_deadline(self, now: datetime) -> bool:
        if self.status != "pending":
            return False
        decision = at_deadline(now, self.deadline)
        if decision is None:
            return False
        self._apply(decision)
        return True

    def resolve(self, outcome: str, note: str, by: str) -> None:
        """An operator settles a recharge in review, after checking with the platform."""
        if self.status != "review":
            raise StateConflict(f"only a recharge in review is resolved; this one is {self.status}")
        self._resolved(outcome, note, by)
        if outcome == "succeeded":
            self._succeeded(None, None, None)
        else:
            self._failed(f"resolved by an operator: {note}")

    def _apply(self, decision: Succeed | Fail | Schedule | Review) -> None:
        if isinstance(decision, Succeed):
            r = decision.result
            self._succeeded(r.platform_order_id, r.starts_at, r.ends_at)
        elif isinstance(decision, Fail):
            self._failed(decision.reason)
        elif isinstance(decision, Review):
            self._sent_to_review(decision.reason)
        else:
            s = decision.step
            self._step_scheduled(s.number, s.kind, s.due_at)

    @event("StepScheduled")
    def _step_scheduled(self, number: int, kind: StepKind, due_at: datetime) -> None:
        self.step = Step(number, kind, due_at)
        if kind == "recharge":
            self.recharges_sent += 1
        else:
            self.queries_made += 1

    @event("StepCompleted")
    def _step_completed(
        self,
        step_id: str,
        outcome: str,
        reason: str | None,
        platform_order_id: str | None,
        starts_at: datetime | None,
        ends_at: datetime | None,
    ) -> None:
        """An answer we could not trust adds to the run that paces the backoff; `not_found`
        (the platform answered for certain) ends it."""
        unsure = getattr(self, "unsure_in_a_row", 0)
        self.unsure_in_a_row = unsure + 1 if outcome == "unknown" else 0

    @event("Succeeded")
    def _succeeded(
        self, platform_order_id: str | None, starts_at: datetime | None, ends_at: datetime | None
    ) -> None:
        self.status = "succeeded"
        self.step = None
        self.membership = {
            "platform_order_id": platform_order_id,
            "starts_at": starts_at,
            "ends_at": ends_at,
        }

    @event("Failed")
    def _failed(self, reason: str) -> None:
        self.status = "failed"
        self.step = None
        self.failure = reason

    @event("SentToReview")
    def _sent_to_review(self, reason: str) -> None:
        self.status = "review"
        self.step = None
        self.review_reason = reason

    @event("Resolved")
    def _resolved(self, outcome: str, note: str, by: str) -> None:
        self.resolution = {"outcome": outcome, "note": note, "by": by}

    @event("CallbackReceived")
    def _callback_received(
        self,
        status: str,
        platform_order_id: str | None,
        starts_at: datetime | None,
        ends_at: datetime | None,
        reason: str | None,
    ) -> None:
        """The platform's callback brought the outcome (the decision's event follows)."""
        self.callbacks_heard = self.callbacks_heard | {status}

    @event("CallbackIgnored")
    def _callback_ignored(self, status: str, reason: str) -> None:
        self.callbacks_heard = self.callbacks_heard | {status}

    @event("DiscrepancyFound")
    def _discrepancy_found(
        self,
        kind: str,
        status: str,
        reason: str,
        platform_order_id: str | None,
        starts_at: datetime | None,
        ends_at: datetime | None,
    ) -> None:
        """The status stays as it is: nothing is credited; an operator resolves the case."""
        self.callbacks_heard = self.callbacks_heard | {status}
        self.discrepancy = {
            "kind": kind,
            "reason": reason,
            "platform_order_id": platform_order_id,
            "starts_at": starts_at,
            "ends_at": ends_at,
        }

    @event("ReversalReported")
    def _reversal_reported(self, status: str, reason: str, platform_order_id: str | None) -> None:
        """Recorded for the refund flow, which books it like an accepted refund."""
        self.callbacks_heard = self.callbacks_heard | {status}
        self.reversal = {"reason": reason, "platform_order_id": platform_order_id}
