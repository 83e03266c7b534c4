"""Discrepancy cases: a difference a settlement could not agree on, or a late success a
platform's callback reported, waiting for an operator's resolution.

Resolution postings (see `decisions.resolution`): money moves only between the platform's
accrued payable and the operator's settlement differences, so the trial balance stays zero;
the payment itself is booked by the settlement when it pays. A `late_success` case carries no
figures (the platform bills the order, if at all, on a statement, where it is matched like
any other line): its resolution records the decision and moves nothing.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import accounts
from ledger.errors import InvalidOutcome, StateConflict
from ledger.postings import Postings
from ledger.settlement.decisions import OUTCOMES, Resolution, Result, resolution

LATE_SUCCESS_NAMESPACE = uuid.UUID("0b7c3a52-6e1d-4f0a-9c2b-5a8e1d3f7b64")


def case_id(settlement_id: UUID, result: Result, number: int = 0) -> UUID:
    """The same difference of the same settlement is the same case (`number` tells apart a
    key that is on one side more than once)."""
    return uuid.uuid5(settlement_id, f"case:{result.order_no}:{result.kind}:{number}")


def late_success_case_id(recharge_id: UUID) -> UUID:
    return uuid.uuid5(LATE_SUCCESS_NAMESPACE, str(recharge_id))


class Case(Aggregate):
    """status: open → resolved; kinds `ours_only`, `theirs_only`, `amount_differs`,
    `late_success`. `ours`/`theirs` are signed minor units (None: not on that side)."""

    @event("Opened")
    def __init__(
        self,
        id: UUID,
        kind: str,
        platform_id: UUID,
        settlement_id: UUID | None,
        period: date | None,
        order_no: str,
        line_kind: str,
        ours: int | None,
        theirs: int | None,
        currency: str,
        opened_at: datetime,
        detail: str,
    ) -> None:
        self.kind = kind
        self.platform_id = platform_id
        self.settlement_id = settlement_id
        self.period = period
        self.order_no = order_no
        self.line_kind = line_kind
        self.ours = ours
        self.theirs = theirs
        self.currency = currency
        self.opened_at = opened_at
        self.detail = detail
        self.status = "open"
        self.resolution: dict[str, Any] | None = None

    @classmethod
    def of_difference(
        cls,
        settlement_id: UUID,
        platform_id: UUID,
        period: date,
        result: Result,
        currency: str,
        now: datetime,
        number: int = 0,
    ) -> Case:
        return cls(
            id=case_id(settlement_id, result, number),
            kind=result.match,
            platform_id=platform_id,
            settlement_id=settlement_id,
            period=period,
            order_no=result.order_no,
            line_kind=result.kind,
            ours=result.ours_signed if result.ours else None,
            theirs=result.theirs_signed if result.theirs else None,
            currency=currency,
            opened_at=now,
            detail=_describe(result),
        )

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def theirs_figure(self) -> int:
        return self.theirs or 0

    def resolve(self, outcome: str, note: str, by: str, now: datetime) -> Resolution:
        """The operator's decision; what it pays and its postings are recorded with it."""
        if outcome not in OUTCOMES:
            raise InvalidOutcome(f"outcome is one of {', '.join(OUTCOMES)}")
        if not self.is_open:
            raise StateConflict(f"case {self.id} is already resolved")
        if self.kind == "late_success":
            decided = Resolution(0, 0)
        else:
            decided = resolution(outcome, self.ours or 0, self.theirs or 0)
        self._resolved(outcome, note, by, now, decided.pay, self._postings(decided.to_payable))
        return decided

    def _postings(self, to_payable: int) -> Postings | None:
        if to_payable == 0:
            return None
        payable = accounts.platform_payable(self.platform_id)
        differences = accounts.operator_settlement_differences(self.currency)
        source, destination = (differences, payable) if to_payable > 0 else (payable, differences)
        return Postings.of((source, destination, self.currency, abs(to_payable)))

    @event("Resolved")
    def _resolved(
        self,
        outcome: str,
        note: str,
        by: str,
        resolved_at: datetime,
        pay: int,
        postings: Postings | None,
    ) -> None:
        self.status = "resolved"
        self.postings = postings
        self.resolution = {
            "outcome": outcome,
            "note": note,
            "by": by,
            "at": resolved_at,
            "pay": pay,
        }


def _describe(result: Result) -> str:
    if result.match == "amount_differs":
        return f"we recorded {result.ours_signed}, the platform billed {result.theirs_signed}"
    if result.match == "ours_only":
        return "on our side only: the platform has not billed it"
    return "on the platform's statement only"
