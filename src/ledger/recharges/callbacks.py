"""The platform's order callbacks as news of a recharge's outcome: pure decisions.

A platform may call back about an order (our recharge id is its order number) late, twice or
out of order. A callback is news of the outcome exactly like the answer to a status query:
while the saga is pending (or waits in review for want of an answer) a definite callback ends
it the way `decisions.outcome_of` ends it for a query's answer. Once the recharge is final only
legal transitions apply:

* the same (order number, status) again is a duplicate: nothing new is recorded, and the
  platform gets the same answer;
* news that agrees with the final state is a duplicate too (a success after success);
* a success for a recharge we failed (whose code was released for another try) is a
  `late_success` discrepancy for an operator: never a second credit, never dropped;
* a reversal of a succeeded recharge is recorded and booked like an accepted refund
  (`refunds`): the recharge is refunded, its unit returns to the channel's stock on hand;
* anything else (a failure after success, a reversal of an order never credited) is not a
  legal transition: recorded once as ignored.

`processing` carries no outcome and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ledger.recharges.decisions import Fail, StepResult, Succeed, outcome_of

CallbackStatus = Literal["success", "failed", "processing", "reversed", "accepted", "rejected"]
CALLBACK_STATUSES: tuple[CallbackStatus, ...] = ("success", "failed", "processing", "reversed")
"""The order's statuses; `accepted` and `rejected` are a refund's (`refunds`), with its
`refund_no`."""
REFUND_CALLBACK_STATUSES: tuple[CallbackStatus, ...] = ("accepted", "rejected")


@dataclass(frozen=True)
class Callback:
    """What the platform says of one order; `success` carries the membership it credited."""

    status: CallbackStatus
    platform_order_id: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    reason: str | None = None
    refund_no: str | None = None

    def as_result(self) -> StepResult:
        """The callback as the answer a status query would have given."""
        if self.status == "success":
            return StepResult(
                outcome="succeeded",
                platform_order_id=self.platform_order_id,
                starts_at=self.starts_at,
                ends_at=self.ends_at,
            )
        if self.status == "failed":
            return StepResult(
                outcome="failed",
                reason=self.reason or "the platform reported the order failed",
                platform_order_id=self.platform_order_id,
            )
        return StepResult(outcome="unknown", reason=self.status, cause="processing")


@dataclass(frozen=True)
class Apply:
    """News of the outcome: the saga ends as a query's answer would end it."""

    decision: Succeed | Fail


@dataclass(frozen=True)
class Duplicate:
    """Nothing new: nothing is recorded."""

    reason: str


@dataclass(frozen=True)
class Ignore:
    """Not a legal transition: recorded once, changes nothing."""

    reason: str


@dataclass(frozen=True)
class Discrepancy:
    """The platform credited an order we failed and released: a case for an operator."""

    kind: Literal["late_success"]
    reason: str


@dataclass(frozen=True)
class Reversal:
    """The platform took back a credited order: booked like an accepted refund."""

    reason: str


CallbackDecision = Apply | Duplicate | Ignore | Discrepancy | Reversal


def after_callback(
    status: str, heard: frozenset[str] | set[str], callback: Callback
) -> CallbackDecision:
    """What a callback does to a recharge in `status` that has already recorded callbacks
    with the statuses in `heard`."""
    news = callback.status
    if news in heard:
        return Duplicate(f"a {news} callback for this order was already recorded")
    if news == "processing":
        return Duplicate("processing carries no outcome")
    if status in ("pending", "review"):
        if news == "reversed":
            return Ignore(f"a reversal of an order that is {status}, not credited")
        decision = outcome_of(callback.as_result())
        assert decision is not None, "success and failed are definite"
        return Apply(decision)
    if status == "succeeded":
        if news == "success":
            return Duplicate("the recharge succeeded already")
        if news == "reversed":
            return Reversal("the platform reversed a credited order")
        return Ignore("a failure reported after the recharge succeeded")
    if status == "refunded":
        if news in ("success", "reversed"):
            return Duplicate(f"the recharge was credited, then refunded: {news} is not news")
        return Ignore(f"a {news} callback for a refunded recharge")
    if status == "failed":
        if news == "failed":
            return Duplicate("the recharge failed already")
        if news == "success":
            return Discrepancy(
                "late_success",
                "the platform credited an order we failed and whose code was released",
            )
        return Ignore("a reversal of an order that failed")
    return Ignore(f"a {news} callback for a recharge in status {status}")
