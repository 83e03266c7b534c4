"""The recharge saga's decisions: pure functions of its state, a step's result and the time.

The platform is asked to recharge with the recharge id as its order number. The retry policy,
by what the last answer was:

* a definite answer (credited, or an explicit failure) ends the saga;
* an answer we cannot trust (transport error, timeout, 5xx or 4xx, a bad signature) or
  `processing` never leads to a blind resend: the order's status is queried, with backoff
  (`processing` is polled at a short steady pace: the platform has the order);
* `not_found` to a status query (the platform definitely has no order) sends the order again,
  with the same order number, after a short pause; an answer to it we cannot trust is queried
  with the backoff, so the cycle slows down as it repeats.

No count of answers sends a recharge to review: only the deadline does, so review means "we
could not learn the outcome by the deadline", never "three unlucky answers". Steps are never
scheduled past the deadline; the last one runs at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Outcome = Literal["succeeded", "failed", "unknown", "not_found"]
StepKind = Literal["recharge", "query"]
Cause = Literal["transport", "timeout", "server_error", "refused", "untrusted", "processing"]
"""Why an outcome is unknown: the error class the retry policy paces by."""

BACKOFF_SECONDS = (1, 2, 4, 8, 16, 30, 60)
PROCESSING_POLL_SECONDS = 2
RESEND_AFTER_SECONDS = 1
"""A short pause before resending an order the platform said it never saw; the cycle stays
paced by the growing backoff of the query that follows any answer we cannot trust."""
DEADLINE = timedelta(minutes=10)


@dataclass(frozen=True)
class StepResult:
    outcome: Outcome
    reason: str | None = None
    platform_order_id: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    cause: Cause | None = None

    @property
    def definite(self) -> bool:
        return self.outcome in ("succeeded", "failed")


@dataclass(frozen=True)
class Step:
    number: int
    kind: StepKind
    due_at: datetime

    @property
    def id(self) -> str:
        return f"{self.number}-{self.kind}"


@dataclass(frozen=True)
class Succeed:
    result: StepResult


@dataclass(frozen=True)
class Fail:
    reason: str


@dataclass(frozen=True)
class Schedule:
    step: Step


@dataclass(frozen=True)
class Review:
    reason: str


Decision = Succeed | Fail | Schedule | Review


def first_step(now: datetime) -> Step:
    return Step(1, "recharge", now)


def backoff(unsure_answers: int) -> timedelta:
    """The wait before the next step, growing with the answers we could not trust in a row
    (capped): a platform that is down is asked less and less often."""
    index = min(max(unsure_answers - 1, 0), len(BACKOFF_SECONDS) - 1)
    return timedelta(seconds=BACKOFF_SECONDS[index])


def query_delay(queries_so_far: int) -> timedelta:
    return backoff(queries_so_far + 1)


def after_step(
    step: Step,
    result: StepResult,
    *,
    recharges_sent: int,
    queries_made: int,
    deadline: datetime,
    now: datetime,
    unsure_in_a_row: int | None = None,
) -> Decision:
    """What the saga does once `step` has answered `result`. `unsure_in_a_row`: the answers
    we could not trust since the platform last answered for certain, this one included (the
    saga counts them; by default every step so far), which paces the backoff."""
    definite = outcome_of(result)
    if definite is not None:
        return definite
    if now >= deadline:
        return Review(
            f"the outcome could not be learnt by the deadline (last answer: {describe(result)})"
        )
    unsure = recharges_sent + queries_made if unsure_in_a_row is None else unsure_in_a_row
    if result.outcome == "not_found" and step.kind == "query":
        wait = timedelta(seconds=RESEND_AFTER_SECONDS)
        return Schedule(Step(step.number + 1, "recharge", min(now + wait, deadline)))
    if result.cause == "processing":
        wait = timedelta(seconds=PROCESSING_POLL_SECONDS)
    else:
        wait = backoff(unsure)
    return Schedule(Step(step.number + 1, "query", min(now + wait, deadline)))


def outcome_of(result: StepResult) -> Succeed | Fail | None:
    """What a definite answer decides, whoever brings it (a step's answer or a callback)."""
    if result.outcome == "succeeded":
        return Succeed(result)
    if result.outcome == "failed":
        return Fail(result.reason or "the platform refused the recharge")
    return None


def describe(result: StepResult) -> str:
    if result.cause is not None:
        return f"{result.outcome}, {result.cause}"
    return result.outcome


def at_deadline(now: datetime, deadline: datetime) -> Decision | None:
    """A saga still pending past its deadline goes to review (the sweeper asks)."""
    if now >= deadline:
        return Review("no certain answer from the platform by the deadline")
    return None
