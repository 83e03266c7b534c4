"""The recharge saga's decisions: pure functions of its state, a step's result and the time.

The platform is asked to recharge with the recharge id as its order number. An answer we
cannot trust (timeout, 5xx, a lost reply) is never retried blindly: the order's status is
queried first, with backoff, and only an order the platform never saw is sent again. Past the
deadline an unknown outcome goes to an operator for review.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Outcome = Literal["succeeded", "failed", "unknown", "not_found"]
StepKind = Literal["recharge", "query"]

QUERY_BACKOFF_SECONDS = (1, 2, 4, 8, 16, 30, 60)
MAX_RECHARGE_ATTEMPTS = 3
DEADLINE = timedelta(minutes=10)


@dataclass(frozen=True)
class StepResult:
    outcome: Outcome
    reason: str | None = None
    platform_order_id: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None


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


def query_delay(queries_so_far: int) -> timedelta:
    index = min(queries_so_far, len(QUERY_BACKOFF_SECONDS) - 1)
    return timedelta(seconds=QUERY_BACKOFF_SECONDS[index])


def after_step(
    step: Step,
    result: StepResult,
    *,
    recharges_sent: int,
    queries_made: int,
    deadline: datetime,
    now: datetime,
) -> Decision:
    """What the saga does once `step` has answered `result`."""
    if result.outcome == "succeeded":
        return Succeed(result)
    if result.outcome == "failed":
        return Fail(result.reason or "the platform refused the recharge")
    if now >= deadline:
        return Review(f"no certain answer from the platform by the deadline ({result.outcome})")
    if result.outcome == "not_found":
        if recharges_sent >= MAX_RECHARGE_ATTEMPTS:
            return Review("the platform never received the order after repeated attempts")
        return Schedule(Step(step.number + 1, "recharge", now))
    return Schedule(Step(step.number + 1, "query", now + query_delay(queries_made)))


def at_deadline(now: datetime, deadline: datetime) -> Decision | None:
    """A saga still pending past its deadline goes to review (the sweeper asks)."""
    if now >= deadline:
        return Review("no certain answer from the platform by the deadline")
    return None
