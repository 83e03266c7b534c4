"""The recharge saga as an event-sourced process manager: every step, result and decision
is an event on the Recharge aggregate; what to do next comes from `decisions`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.clock import utc_now
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
from ledger.recharges.refunds import (
    AcceptRefund,
    NewsDecision,
    NewsDuplicate,
    NewsIgnored,
    RefundAnswer,
    RefundNews,
    RefundStep,
    RefundStepKind,
    RejectRefund,
    ScheduleRefundStep,
    after_refund_answer,
    after_refund_news,
    first_refund_step,
    news_key,
    refund_number,
    refund_refusal,
    reversal_number,
)

FINAL = frozenset({"succeeded", "failed"})
REVERSAL_NAMESPACE = uuid.UUID("0b7f5c1e-6a2d-4c8e-9b3f-2e1d7a6c5b40")


class Recharge(Aggregate):
    """status: pending → succeeded | failed | review; review → succeeded | failed;
    succeeded → refunded (the platform accepted a refund, or reversed the order)."""

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
        self._start_refunds()

    def _start_refunds(self) -> None:
        self.refund: dict[str, Any] | None = None
        self.refunds: dict[str, dict[str, Any]] = {}
        self.refund_step: RefundStep | None = None
        self.refund_steps_sent: set[str] = set()
        self.refund_unsure_in_a_row = 0
        self.refund_pending_answers = 0

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

    def hear(
        self, callback: Callback, now: datetime | None = None
    ) -> CallbackDecision | NewsDecision:
        """A platform's callback about this order, as news of the outcome (see `callbacks`),
        or of its refund (`refunds`). A duplicate records nothing; everything else is
        recorded once."""
        if callback.status in ("accepted", "rejected"):
            news = RefundNews(callback.status, callback.refund_no, callback.reason)
            return self.hear_refund_news(news, now)
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
            reversal = RefundNews("reversed", callback.refund_no, decision.reason)
            self.hear_refund_news(reversal, now, recorded=True)
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

    # --- refunds (see `refunds`) ---------------------------------------------------------

    @property
    def refund_status(self) -> str | None:
        return self.refund["status"] if self.refund else None

    def request_refund(self, refund_id: UUID, reason: str, by: str, now: datetime) -> bool:
        """Ask the platform to refund this recharge, under a refund number of our own; the
        same request again (its id) records nothing (False)."""
        if str(refund_id) in self.refunds:
            return False
        refusal = refund_refusal(self.status, self.refund_status)
        if refusal is not None:
            raise refusal
        self._refund_requested(refund_id, refund_number(refund_id), reason, by, now)
        self._schedule_refund_step(first_refund_step(now))
        return True

    def refund_sending(self, step_id: str) -> None:
        """Recorded before a refund step's call leaves: a run of the step after a crash
        asks the refund's status instead of sending it again."""
        if step_id not in self.refund_steps_sent:
            self._refund_sending(step_id)

    def record_refund_answer(
        self, step_id: str, asked: RefundStepKind, answer: RefundAnswer, now: datetime
    ) -> bool:
        """A refund step's answer; a late or repeated one is ignored (False)."""
        step = self.refund_step
        if self.refund_status != "pending" or step is None or step.id != step_id:
            return False
        self._refund_step_completed(step_id, asked, answer.outcome, answer.reason)
        decision = after_refund_answer(
            step,
            answer,
            now=now,
            unsure_in_a_row=self.refund_unsure_in_a_row,
            pending_answers=self.refund_pending_answers,
        )
        self._apply_refund(decision, now)
        return True

    def hear_refund_news(
        self, news: RefundNews, now: datetime | None = None, *, recorded: bool = False
    ) -> NewsDecision:
        """News of a refund, like a poll's answer; `recorded`: the callback that brought it
        is recorded already (a reversal)."""
        refund_no = self.refund["refund_no"] if self.refund else None
        decision = after_refund_news(
            self.status, refund_no, self.refund_status, self.callbacks_heard, news
        )
        if isinstance(decision, NewsDuplicate):
            return decision
        moment = now or utc_now()
        if isinstance(decision, NewsIgnored):
            self._refund_news_ignored(news.refund_no, news.status, decision.reason)
            return decision
        if not recorded:
            self._refund_news_received(news.refund_no, news.status, news.reason)
        if isinstance(decision, AcceptRefund) and self.refund_status != "pending":
            # a reversal without a pending refund of ours: booked under the platform's number
            refund_id = uuid.uuid5(REVERSAL_NAMESPACE, f"{self.id}:{len(self.refunds)}")
            refund_no = news.refund_no or reversal_number(self.id)
            self._refund_accepted(refund_id, refund_no, decision.via, moment)
            return decision
        self._apply_refund(decision, moment)
        return decision

    def _apply_refund(
        self, decision: AcceptRefund | RejectRefund | ScheduleRefundStep, now: datetime
    ) -> None:
        if isinstance(decision, ScheduleRefundStep):
            self._schedule_refund_step(decision.step)
            return
        assert self.refund is not None, "a decided refund was requested"
        refund_id, refund_no = UUID(self.refund["id"]), self.refund["refund_no"]
        if isinstance(decision, AcceptRefund):
            self._refund_accepted(refund_id, refund_no, decision.via, now)
        else:
            self._refund_rejected(refund_id, refund_no, decision.reason, now)

    def _schedule_refund_step(self, step: RefundStep) -> None:
        self._refund_step_scheduled(step.number, step.kind, step.due_at)

    @event("RefundRequested")
    def _refund_requested(
        self, refund_id: UUID, refund_no: str, reason: str, by: str, requested_at: datetime
    ) -> None:
        self.refund = {
            "id": str(refund_id),
            "refund_no": refund_no,
            "status": "pending",
            "reason": reason,
            "by": by,
            "requested_at": requested_at,
            "decided_at": None,
            "rejection": None,
            "via": None,
        }
        self.refunds[str(refund_id)] = self.refund
        self.refund_unsure_in_a_row = 0
        self.refund_pending_answers = 0

    @event("RefundStepScheduled")
    def _refund_step_scheduled(self, number: int, kind: RefundStepKind, due_at: datetime) -> None:
        self.refund_step = RefundStep(number, kind, due_at)

    @event("RefundSending")
    def _refund_sending(self, step_id: str) -> None:
        self.refund_steps_sent = self.refund_steps_sent | {step_id}

    @event("RefundStepCompleted")
    def _refund_step_completed(
        self, step_id: str, asked: RefundStepKind, outcome: str, reason: str | None
    ) -> None:
        unsure = outcome == "unknown"
        self.refund_unsure_in_a_row = self.refund_unsure_in_a_row + 1 if unsure else 0
        if outcome == "pending":
            self.refund_pending_answers += 1

    @event("RefundAccepted")
    def _refund_accepted(
        self, refund_id: UUID, refund_no: str, via: str, decided_at: datetime
    ) -> None:
        """The platform took the membership back: the recharge is refunded. `via`: the
        platform's answer, its refund callback, or its reversal of the order."""
        refund = self.refunds.get(str(refund_id))
        if refund is None:  # a reversal the platform made on its own
            refund = {
                "id": str(refund_id),
                "refund_no": refund_no,
                "reason": None,
                "by": "platform",
                "requested_at": None,
                "rejection": None,
            }
            self.refunds[str(refund_id)] = refund
        refund |= {"status": "accepted", "decided_at": decided_at, "via": via}
        self.refund = refund
        self.refund_step = None
        self.status = "refunded"

    @event("RefundRejected")
    def _refund_rejected(
        self, refund_id: UUID, refund_no: str, reason: str, decided_at: datetime
    ) -> None:
        """The recharge stays succeeded; the refund shows why."""
        refund = self.refunds[str(refund_id)]
        refund |= {"status": "rejected", "decided_at": decided_at, "rejection": reason}
        self.refund = refund
        self.refund_step = None

    @event("RefundNewsReceived")
    def _refund_news_received(self, refund_no: str | None, status: str, reason: str | None) -> None:
        self.callbacks_heard = self.callbacks_heard | {
            news_key(RefundNews(status, refund_no))  # type: ignore[arg-type]
        }

    @event("RefundNewsIgnored")
    def _refund_news_ignored(self, refund_no: str | None, status: str, reason: str) -> None:
        self.callbacks_heard = self.callbacks_heard | {
            news_key(RefundNews(status, refund_no))  # type: ignore[arg-type]
        }

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
        self.succeeded_version = self.version + 1  # this event's: applied before it counts
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
