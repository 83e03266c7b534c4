"""The recharge saga's retry policy over random sequences of platform answers (hypothesis).

A model platform answers each call of the saga (a `Recharge` aggregate, driven step by step
on a simulated clock) with a drawn fault: the call is lost before the platform processed it
(transport error, 5xx), processed but its answer lost (timeout), `processing`, or answered
truthfully. The model credits every recharge it processes, with no order-number idempotency,
so that never crediting twice rests on the policy alone: a recharge is sent again only after
the platform said it has no order. And review must mean the deadline passed without a
definite answer, never a count of unlucky answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.recharges.decisions import Step, StepResult
from ledger.recharges.saga import Recharge

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
DEADLINE_SECONDS = 600
MAX_STEPS = 200
FAULTS = ("answered", "lost_before", "server_error", "lost_after", "processing", "declined")


@dataclass
class ModelPlatform:
    credits: int = 0
    declined: bool = False
    processing: bool = False

    @property
    def has_order(self) -> bool:
        return self.credits > 0 or self.declined or self.processing

    def call(self, step: Step, fault: str) -> StepResult:
        if fault == "lost_before":
            return StepResult("unknown", reason="connection refused", cause="transport")
        if fault == "server_error":
            return StepResult("unknown", reason="http 503", cause="server_error")
        if step.kind == "recharge":
            self.process(fault)
        elif self.processing and fault != "processing":
            self.processing, self.credits = False, self.credits + 1
        if fault == "lost_after":
            return StepResult("unknown", reason="timeout (ReadTimeout)", cause="timeout")
        return self.truth()

    def process(self, fault: str) -> None:
        """A recharge: credited (every time: no idempotency here), declined, or in progress."""
        if fault == "declined" and not self.has_order:
            self.declined = True
        elif fault == "processing":
            self.processing = True
        else:
            self.credits += 1

    def truth(self) -> StepResult:
        if self.credits:
            return StepResult("succeeded", platform_order_id="P1", starts_at=NOW, ends_at=NOW)
        if self.declined:
            return StepResult("failed", reason="account closed")
        if self.processing:
            return StepResult("unknown", reason="processing", cause="processing")
        return StepResult("not_found")


@dataclass
class Run:
    recharge: Recharge
    platform: ModelPlatform
    steps: list[tuple[Step, StepResult, datetime]] = field(default_factory=list)
    ended_at: datetime | None = None

    @property
    def deadline(self) -> datetime:
        return self.recharge.deadline

    def definite_answers(self) -> list[StepResult]:
        return [result for _, result, _ in self.steps if result.definite]


def drive(faults: st.DataObject, outage_until: float = 0.0) -> Run:
    """Run the saga to its end: each step at its due time (or later, after the last answer),
    answered after a drawn latency; the sweeper sends it to review past the deadline."""
    deadline = NOW + timedelta(seconds=DEADLINE_SECONDS)
    recharge = Recharge.request(uuid4(), uuid4(), uuid4(), uuid4(), "13800000000", None, NOW,
                                deadline)
    run = Run(recharge, ModelPlatform())
    now = NOW
    while recharge.status == "pending":
        assert len(run.steps) < MAX_STEPS, "the saga keeps stepping"
        step = recharge.step
        assert step is not None
        assert step.due_at <= deadline, "a step is never scheduled past the deadline"
        now = max(now, step.due_at)
        if recharge.check_deadline(now):
            break
        in_outage = (now - NOW).total_seconds() < outage_until
        fault = "lost_before" if in_outage else faults.draw(st.sampled_from(FAULTS), label="fault")
        result = run.platform.call(step, fault)
        now += timedelta(seconds=faults.draw(st.integers(0, 6), label="latency"))
        assert recharge.record(step.id, result, now)
        run.steps.append((step, result, now))
    run.ended_at = now
    return run


def check_policy(run: Run) -> None:
    recharge, platform = run.recharge, run.platform
    assert platform.credits <= 1, "credited twice"
    for (before, answer, _), (step, _, _) in zip(run.steps, run.steps[1:], strict=False):
        if step.kind == "recharge":
            assert before.kind == "query" and answer.outcome == "not_found", (
                "a recharge was sent again without the platform saying it has no order"
            )
    if recharge.status == "review":
        assert run.ended_at is not None and run.ended_at >= run.deadline, "review before deadline"
        assert run.definite_answers() == [], "review although the platform had answered"
    if recharge.status == "succeeded":
        assert platform.credits == 1
    if recharge.status == "failed":
        assert platform.credits == 0 and platform.declined


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_answer_sequence_credits_at_most_once_and_reviews_only_past_the_deadline(
    data: st.DataObject,
) -> None:
    check_policy(drive(data))


@settings(max_examples=50, deadline=None)
@given(st.data(), st.floats(0, 120))
def test_an_outage_shorter_than_the_deadline_ends_in_a_definite_state(
    data: st.DataObject, outage_seconds: float
) -> None:
    """Every call fails for the outage's length, then the platform answers every call
    truthfully: the recharge is credited or declined well before the deadline."""

    class Answering:
        def draw(self, strategy: object, label: str = "") -> object:
            return "answered" if label == "fault" else data.draw(st.integers(0, 6))

    run = drive(Answering(), outage_until=outage_seconds)  # type: ignore[arg-type]
    check_policy(run)
    assert run.recharge.status == "succeeded"
    assert run.ended_at is not None and run.ended_at < NOW + timedelta(seconds=300)


def test_three_unlucky_answers_do_not_send_a_recharge_to_review() -> None:
    """Issue 10's case: 503 to the recharge, not_found to the query, 503 to the resend, and
    again, all within 13 s; the saga keeps asking, and the platform's recovery credits it."""
    deadline = NOW + timedelta(seconds=DEADLINE_SECONDS)
    recharge = Recharge.request(uuid4(), uuid4(), uuid4(), uuid4(), "13800000000", None, NOW,
                                deadline)
    unlucky = [
        StepResult("unknown", reason="http 503", cause="server_error"),
        StepResult("not_found"),
    ] * 3
    now = NOW
    for result in unlucky:
        assert recharge.step is not None
        now = max(now, recharge.step.due_at)
        assert recharge.record(recharge.step.id, result, now)
    assert recharge.status == "pending"
    assert recharge.step is not None and recharge.step.kind == "recharge"
    assert recharge.recharges_sent == 4
    assert (now - NOW).total_seconds() < 30
    recharge.record(
        recharge.step.id,
        StepResult("succeeded", platform_order_id="P1", starts_at=NOW, ends_at=NOW),
        max(now, recharge.step.due_at),
    )
    assert recharge.status == "succeeded"


def test_the_backoff_grows_while_the_platform_is_away_and_starts_over_once_it_answers() -> None:
    deadline = NOW + timedelta(seconds=DEADLINE_SECONDS)
    recharge = Recharge.request(uuid4(), uuid4(), uuid4(), uuid4(), "13800000000", None, NOW,
                                deadline)
    away = StepResult("unknown", reason="http 503", cause="server_error")
    waits = []
    now = NOW
    for result in [away] * 5 + [StepResult("not_found"), away]:
        assert recharge.step is not None
        now = recharge.step.due_at
        assert recharge.record(recharge.step.id, result, now)
        assert recharge.step is not None
        waits.append((recharge.step.kind, (recharge.step.due_at - now).total_seconds()))
    assert waits == [
        ("query", 1), ("query", 2), ("query", 4), ("query", 8), ("query", 16),
        ("recharge", 1),  # the platform answered for certain: it has no order
        ("query", 1),  # and it is asked again soon
    ]
