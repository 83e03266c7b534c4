"""The recharges application: started by code reservations in the distribution log, driven
by the results of its steps, resolved by operators."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.projection import EventSourcedProjection

from ledger.applications import LedgerApplication, read_first
from ledger.distribution.codes import Code
from ledger.errors import InvalidAmount
from ledger.recharges.callbacks import Callback, CallbackDecision
from ledger.recharges.decisions import DEADLINE, StepResult
from ledger.recharges.refunds import NewsDecision, RefundAnswer, RefundStepKind
from ledger.recharges.saga import Recharge


class Recharges(LedgerApplication, EventSourcedProjection[UUID]):
    """Each reserved code starts a saga, recorded atomically with the tracking of the
    reservation, so no reservation is ever missed or started twice."""

    name = "recharges"
    # No topic filter: tracking then advances over every distribution event, so a reader
    # can wait for the saga of a reservation just made by comparing with the log's head.

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        seconds = self.env.get("RECHARGE_DEADLINE_SECONDS")
        self.deadline = timedelta(seconds=int(seconds)) if seconds else DEADLINE

    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        if isinstance(domain_event, Code.Reserved):
            now = domain_event.timestamp
            processing_event.collect_events(
                Recharge.request(
                    domain_event.recharge_id,
                    domain_event.originator_id,
                    domain_event.channel_id,
                    domain_event.product_id,
                    domain_event.account,
                    domain_event.user,
                    now,
                    now + self.deadline,
                )
            )

    def record_step_result(
        self,
        recharge_id: UUID,
        step_id: str,
        result: StepResult,
        now: datetime,
        read: Recharge | None = None,
    ) -> Recharge:
        """`read`, the recharge as the step read it before its call, is decided on first."""
        return self._change(
            recharge_id, read_first(read, self.recharge), lambda r: r.record(step_id, result, now)
        )

    def record_platform_news(
        self, recharge_id: UUID, callback: Callback, now: datetime | None = None
    ) -> tuple[Recharge, CallbackDecision | NewsDecision]:
        """A platform's callback about the recharge, applied as news of its outcome (like a
        status query's answer) or of its refund; a duplicate records nothing."""
        decisions: list[CallbackDecision | NewsDecision] = []
        recharge = self._change(
            recharge_id, self.recharge, lambda r: decisions.append(r.hear(callback, now))
        )
        return recharge, decisions[-1]

    def request_refund(
        self, recharge_id: UUID, refund_id: UUID, reason: str, by: str, now: datetime
    ) -> Recharge:
        """Ask the platform to refund a succeeded recharge (RefundNotAllowed otherwise;
        RefundAlreadyRequested while one is pending or once one was accepted); the same
        refund id again records nothing."""
        return self._change(
            recharge_id, self.recharge, lambda r: r.request_refund(refund_id, reason, by, now)
        )

    def refund_sending(
        self, recharge_id: UUID, step_id: str, read: Recharge | None = None
    ) -> Recharge:
        return self._change(
            recharge_id, read_first(read, self.recharge), lambda r: r.refund_sending(step_id)
        )

    def record_refund_answer(
        self,
        recharge_id: UUID,
        step_id: str,
        asked: RefundStepKind,
        answer: RefundAnswer,
        now: datetime,
        read: Recharge | None = None,
    ) -> Recharge:
        return self._change(
            recharge_id,
            read_first(read, self.recharge),
            lambda r: r.record_refund_answer(step_id, asked, answer, now),
        )

    def check_deadline(self, recharge_id: UUID, now: datetime) -> Recharge:
        return self._change(recharge_id, self.recharge, lambda r: r.check_deadline(now))

    def resolve(self, recharge_id: UUID, outcome: str, note: str, by: str) -> Recharge:
        if outcome not in ("succeeded", "failed"):
            raise InvalidAmount("outcome is succeeded or failed")
        return self._change(recharge_id, self.recharge, lambda r: r.resolve(outcome, note, by))

    def recharge(self, recharge_id: UUID) -> Recharge:
        found: Recharge = self._get(recharge_id, Recharge, "recharge")
        return found
