"""The recharge saga's retry policy, simulated: how many recharges reach review before their
deadline, with the policy of main before issue 10 and with the current one.

Pure policy, no I/O: each recharge is a `Recharge` aggregate driven step by step on a simulated
clock against a model of the sandbox platform, whose `--error-rate` answers that fraction of
calls 503 before doing anything; every other call is answered truthfully after a latency. An
outage makes every call fail for its length. Run by hand:

    .venv/bin/python benchmarks/recharge_retry_policy.py [--recharges 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from ledger.recharges import saga
from ledger.recharges.decisions import (
    Fail,
    Review,
    Schedule,
    Step,
    StepResult,
    Succeed,
    after_step,
    query_delay,
)

START = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
DEADLINE_SECONDS = 600


def previous_after_step(
    step: Step, result: StepResult, *, recharges_sent: int, queries_made: int,
    deadline: datetime, now: datetime, unsure_in_a_row: int | None = None,
) -> Any:
    """The policy of main before issue 10, verbatim in effect: `not_found` resends at once,
    and a third resend the platform never saw sends the recharge to review."""
    if result.outcome == "succeeded":
        return Succeed(result)
    if result.outcome == "failed":
        return Fail(result.reason or "the platform refused the recharge")
    if now >= deadline:
        return Review("deadline")
    if result.outcome == "not_found":
        if recharges_sent >= 3:
            return Review("the platform never received the order after repeated attempts")
        return Schedule(Step(step.number + 1, "recharge", now))
    return Schedule(Step(step.number + 1, "query", now + query_delay(queries_made)))


def simulate(
    rng: random.Random, error_rate: float, outage: tuple[float, float] | None
) -> tuple[str, float, int]:
    """(final status, seconds from request to that status, calls made) of one recharge."""
    deadline = START + timedelta(seconds=DEADLINE_SECONDS)
    recharge = saga.Recharge.request(
        uuid4(), uuid4(), uuid4(), uuid4(), "13800000000", None, START, deadline
    )
    credited = False
    now = START
    calls = 0
    while recharge.status == "pending":
        step = recharge.step
        assert step is not None
        now = max(now, step.due_at) + timedelta(seconds=rng.uniform(0.0, 0.1))  # queue
        if recharge.check_deadline(now):
            break
        calls += 1
        elapsed = (now - START).total_seconds()
        down = outage is not None and outage[0] <= elapsed < outage[1]
        if down or rng.random() < error_rate:
            result = StepResult("unknown", reason="http 503", cause="server_error")
        elif step.kind == "recharge" or credited:
            credited = True
            result = StepResult("succeeded", platform_order_id="P", starts_at=now, ends_at=now)
        else:
            result = StepResult("not_found")
        now += timedelta(seconds=rng.uniform(0.02, 0.3))
        recharge.record(step.id, result, now)
    return recharge.status, (now - START).total_seconds(), calls


def run(policy: Callable[..., Any], name: str, args: argparse.Namespace) -> None:
    saga.after_step = policy  # type: ignore[assignment]
    for label, error_rate, outage in (
        ("10 % errors", 0.10, None),
        ("30 % errors", 0.30, None),
        ("15 s outage at the first call", 0.0, (0.0, 15.0)),
        ("15 s outage, 10 % errors", 0.10, (0.0, 15.0)),
    ):
        rng = random.Random(args.seed)
        outcomes = [simulate(rng, error_rate, outage) for _ in range(args.recharges)]
        statuses = Counter(status for status, _, _ in outcomes)
        early = [s for status, s, _ in outcomes if status == "review" and s < DEADLINE_SECONDS]
        calls = sorted(c for _, _, c in outcomes)
        done = sorted(s for status, s, _ in outcomes if status == "succeeded")
        print(
            f"{name:>8} | {label:<30} | review before the deadline: {len(early):>5} of "
            f"{args.recharges} (first after {min(early, default=0):.0f} s) | "
            f"succeeded {statuses['succeeded']:>5} | review {statuses['review']:>5} | "
            f"calls p50 {calls[len(calls) // 2]} max {calls[-1]} | "
            f"succeeded by p99 {done[int(len(done) * 0.99)]:.0f} s, max {done[-1]:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recharges", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    run(previous_after_step, "before", args)
    run(after_step, "after", args)


if __name__ == "__main__":
    main()
