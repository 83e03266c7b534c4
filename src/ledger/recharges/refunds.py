"""Refunds of a succeeded recharge: pure decisions of the recharge saga's refund flow.

A refund goes through the platform's refund API under our refund number (`refund_no`),
which is the platform's idempotency key and is reused on every retry of the call. The
platform reviews it: `pending`, then `accepted` or `rejected`. The saga polls the review
(and hears refund callbacks, which are news exactly like a poll's answer):

* a refund is asked only of a `succeeded` recharge, and only one at a time: while one is
  pending or once one was accepted, another is refused (after a rejection a new one may be
  asked, under a new number);
* the first step sends the refund; a step that may already have reached the platform (its
  process died after sending) asks the refund's status instead of sending again, so the
  platform sees one request per refund number;
* `pending` is polled every 2 s for a minute, then every minute; an answer we cannot trust
  is followed by a status query with the recharge saga's backoff; `not_found` to a status
  query (the platform never got the refund) sends it again, under the same number;
* `accepted` ends the refund: the recharge is `refunded` and the consumed unit returns to the
  issuing channel's stock on hand (the code stays spent); `rejected` ends it with the
  platform's reason and the recharge stays `succeeded`.

A platform's `reversed` callback for a succeeded recharge is booked like an accepted refund:
of the pending refund if there is one, else under the number the platform gives (or one
derived from the order), and a later refund callback or answer changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from ledger.errors import DomainError
from ledger.recharges.decisions import BACKOFF_SECONDS, Cause

RefundOutcome = Literal["pending", "accepted", "rejected", "unknown", "not_found"]
RefundStepKind = Literal["refund", "refund_query"]
RefundStatus = Literal["pending", "accepted", "rejected"]

REVIEW_POLL_SECONDS = 2
REVIEW_POLLS_AT_FIRST_PACE = 30
"""A review's first minute is polled every 2 s; a longer one (real platforms take hours or
days) every `SLOW_REVIEW_POLL_SECONDS`, and a refund callback still ends it at once."""
SLOW_REVIEW_POLL_SECONDS = 60
RESEND_AFTER_SECONDS = 1
STEP_PREFIX = "refund-"


class RefundNotAllowed(DomainError):
    """Only a succeeded recharge can be refunded."""

    code = "refund_not_allowed"


class RefundAlreadyRequested(DomainError):
    """A refund of this recharge is pending or was accepted."""

    code = "refund_already_requested"


@dataclass(frozen=True)
class RefundAnswer:
    """The platform's answer to a refund call or a refund status query."""

    outcome: RefundOutcome
    reason: str | None = None
    cause: Cause | None = None

    @property
    def definite(self) -> bool:
        return self.outcome in ("accepted", "rejected")


@dataclass(frozen=True)
class RefundStep:
    number: int
    kind: RefundStepKind
    due_at: datetime

    @property
    def id(self) -> str:
        return f"{STEP_PREFIX}{self.number}-{self.kind}"


@dataclass(frozen=True)
class AcceptRefund:
    """The platform accepted (or reversed) the refund: the recharge is refunded."""

    via: str


@dataclass(frozen=True)
class RejectRefund:
    reason: str


@dataclass(frozen=True)
class ScheduleRefundStep:
    step: RefundStep


RefundDecision = AcceptRefund | RejectRefund | ScheduleRefundStep


def is_refund_step(step_id: str) -> bool:
    return step_id.startswith(STEP_PREFIX)


def refund_number(refund_id: UUID) -> str:
    """Our refund number: one per refund request, derived from its id (so a retried request
    has the same number), and told apart from order numbers at a glance."""
    return f"RF{refund_id.hex}"


def reversal_number(recharge_id: UUID) -> str:
    """The refund number of a reversal the platform made on its own, without one of ours."""
    return f"RV{recharge_id.hex}"


def refund_refusal(status: str, refund_status: str | None) -> DomainError | None:
    """Why a refund cannot be asked of a recharge in `status` whose latest refund is in
    `refund_status` (None: never asked), or None when it can."""
    if status == "refunded" or refund_status == "accepted":
        return RefundAlreadyRequested("this recharge was refunded already")
    if status != "succeeded":
        return RefundNotAllowed(f"only a succeeded recharge can be refunded; this one is {status}")
    if refund_status == "pending":
        return RefundAlreadyRequested("a refund of this recharge is pending")
    return None


def first_refund_step(now: datetime) -> RefundStep:
    return RefundStep(1, "refund", now)


def step_to_run(step: RefundStep, sent: bool) -> RefundStepKind:
    """What a due step asks the platform: a refund step that may already have reached it
    (its sending was recorded, the answer was not) asks the refund's status instead."""
    if step.kind == "refund" and sent:
        return "refund_query"
    return step.kind


def after_refund_answer(
    step: RefundStep,
    answer: RefundAnswer,
    *,
    now: datetime,
    unsure_in_a_row: int,
    pending_answers: int = 1,
) -> RefundDecision:
    """What the refund flow does once `step` has answered `answer`. `unsure_in_a_row`: the
    answers we could not trust in a row, this one included; `pending_answers`: the `pending`
    answers since the refund was asked, this one included."""
    if answer.outcome == "accepted":
        return AcceptRefund("answer")
    if answer.outcome == "rejected":
        return RejectRefund(answer.reason or "the platform rejected the refund")
    if answer.outcome == "not_found":
        wait = timedelta(seconds=RESEND_AFTER_SECONDS)
        return ScheduleRefundStep(RefundStep(step.number + 1, "refund", now + wait))
    if answer.outcome == "pending":
        wait = review_poll_wait(pending_answers)
    else:
        index = min(max(unsure_in_a_row - 1, 0), len(BACKOFF_SECONDS) - 1)
        wait = timedelta(seconds=BACKOFF_SECONDS[index])
    return ScheduleRefundStep(RefundStep(step.number + 1, "refund_query", now + wait))


def review_poll_wait(pending_answers: int) -> timedelta:
    """The wait before asking again about a refund still in review."""
    if pending_answers <= REVIEW_POLLS_AT_FIRST_PACE:
        return timedelta(seconds=REVIEW_POLL_SECONDS)
    return timedelta(seconds=SLOW_REVIEW_POLL_SECONDS)


@dataclass(frozen=True)
class RefundNews:
    """A platform's refund callback (`accepted` or `rejected` of `refund_no`), or its
    `reversed` callback for the order (`refund_no` optional)."""

    status: Literal["accepted", "rejected", "reversed"]
    refund_no: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class NewsDuplicate:
    reason: str


@dataclass(frozen=True)
class NewsIgnored:
    """Not a legal transition: recorded once, changes nothing."""

    reason: str


NewsDecision = AcceptRefund | RejectRefund | NewsDuplicate | NewsIgnored


def after_refund_news(
    status: str,
    refund_no: str | None,
    refund_status: str | None,
    heard: frozenset[str] | set[str],
    news: RefundNews,
) -> NewsDecision:
    """What refund news does to a recharge in `status` whose latest refund (`refund_no`) is
    in `refund_status`; `heard` holds the keys (`news_key`) of news already recorded."""
    if news_key(news) in heard:
        return NewsDuplicate("this news was already recorded")
    if news.status == "reversed":
        if status == "refunded":
            return NewsDuplicate("the recharge was refunded already")
        if status != "succeeded":
            return NewsIgnored(f"a reversal of an order that is {status}, not credited")
        return AcceptRefund("reversal")
    if refund_no is None or news.refund_no != refund_no:
        return NewsIgnored(f"refund {news.refund_no} is not this recharge's current refund")
    if refund_status == "pending":
        if news.status == "accepted":
            return AcceptRefund("callback")
        return RejectRefund(news.reason or "the platform rejected the refund")
    if refund_status == news.status:
        return NewsDuplicate(f"the refund was {refund_status} already")
    return NewsIgnored(f"a refund {news.status} after it was {refund_status}")


def news_key(news: RefundNews) -> str:
    return f"refund:{news.refund_no or ''}:{news.status}"
