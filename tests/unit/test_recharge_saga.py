"""The recharge saga's decisions, and the saga as a process manager, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import StateConflict
from ledger.recharges.decisions import (
    Fail,
    Review,
    Schedule,
    Step,
    StepResult,
    Succeed,
    after_step,
)
from ledger.recharges.saga import Recharge

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(minutes=10)


def decide(step: Step, outcome: str, now: datetime = NOW, sent: int = 1, queries: int = 0):
    return after_step(
        step, StepResult(outcome), recharges_sent=sent, queries_made=queries,  # type: ignore[arg-type]
        deadline=DEADLINE, now=now,
    )


def test_a_credited_recharge_succeeds():
    assert isinstance(decide(Step(1, "recharge", NOW), "succeeded"), Succeed)


def test_a_refused_recharge_fails_with_the_platforms_reason():
    decision = after_step(
        Step(1, "recharge", NOW), StepResult("failed", reason="account closed"),
        recharges_sent=1, queries_made=0, deadline=DEADLINE, now=NOW,
    )
    assert decision == Fail("account closed")


def test_an_unknown_outcome_is_queried_before_anything_is_sent_again():
    decision = decide(Step(1, "recharge", NOW), "unknown")
    assert isinstance(decision, Schedule)
    assert decision.step.kind == "query"
    assert decision.step.due_at > NOW


def test_queries_back_off():
    delays = []
    for queries in range(6):
        decision = decide(Step(2, "query", NOW), "unknown", queries=queries)
        assert isinstance(decision, Schedule)
        delays.append(decision.step.due_at - NOW)
    assert delays == sorted(delays)
    assert delays[-1] > delays[0]


def test_an_order_the_platform_never_saw_is_sent_again_with_the_same_order_number():
    decision = decide(Step(2, "query", NOW), "not_found")
    assert isinstance(decision, Schedule)
    assert decision.step.kind == "recharge"


def test_resending_is_not_counted_only_the_deadline_sends_to_review():
    decision = decide(Step(6, "query", NOW), "not_found", sent=3, queries=3)
    assert isinstance(decision, Schedule) and decision.step.kind == "recharge"
    assert isinstance(decide(Step(6, "query", NOW), "not_found", now=DEADLINE, sent=3), Review)


def test_past_the_deadline_an_unknown_outcome_goes_to_review():
    assert isinstance(decide(Step(3, "query", NOW), "unknown", now=DEADLINE), Review)


@given(
    outcome=st.sampled_from(["succeeded", "failed", "unknown", "not_found"]),
    kind=st.sampled_from(["recharge", "query"]),
    sent=st.integers(1, 5),
    queries=st.integers(0, 20),
    seconds=st.integers(-10, 1200),
)
def test_a_second_recharge_is_never_sent_without_the_platform_saying_it_never_saw_the_first(
    outcome, kind, sent, queries, seconds
):
    now = NOW + timedelta(seconds=seconds)
    decision = decide(Step(2, kind, NOW), outcome, now=now, sent=sent, queries=queries)
    if isinstance(decision, Schedule) and decision.step.kind == "recharge":
        assert outcome == "not_found"
    if outcome == "succeeded":
        assert isinstance(decision, Succeed)


def new_recharge() -> Recharge:
    return Recharge.request(
        uuid4(), uuid4(), uuid4(), uuid4(), "13800000000", None, NOW, DEADLINE
    )


def test_a_saga_starts_by_scheduling_the_recharge_call():
    recharge = new_recharge()
    assert recharge.status == "pending"
    assert recharge.step == Step(1, "recharge", NOW)


def test_a_repeated_report_of_a_step_is_ignored():
    recharge = new_recharge()
    assert recharge.record("1-recharge", StepResult("unknown"), NOW)
    version = recharge.version
    assert not recharge.record("1-recharge", StepResult("succeeded"), NOW)
    assert recharge.version == version
    assert recharge.status == "pending"


def test_a_report_after_the_final_state_changes_nothing():
    recharge = new_recharge()
    recharge.record("1-recharge", StepResult("failed", reason="no such account"), NOW)
    assert recharge.status == "failed"
    assert not recharge.record("1-recharge", StepResult("succeeded"), NOW)
    assert recharge.status == "failed"


def test_timeout_then_query_finds_the_credit():
    recharge = new_recharge()
    recharge.record("1-recharge", StepResult("unknown", reason="timeout"), NOW)
    assert recharge.step is not None and recharge.step.kind == "query"
    recharge.record(recharge.step.id, StepResult("succeeded", platform_order_id="P9"), NOW)
    assert recharge.status == "succeeded"
    assert recharge.recharges_sent == 1
    assert recharge.membership is not None
    assert recharge.membership["platform_order_id"] == "P9"


def test_an_operator_resolves_a_recharge_in_review():
    recharge = new_recharge()
    assert recharge.check_deadline(DEADLINE + timedelta(seconds=1))
    assert recharge.status == "review"
    recharge.resolve("succeeded", "platform confirmed by phone", "operator:tok_1")
    assert recharge.status == "succeeded"
    assert recharge.resolution == {
        "outcome": "succeeded", "note": "platform confirmed by phone", "by": "operator:tok_1"
    }


def test_only_a_recharge_in_review_can_be_resolved():
    recharge = new_recharge()
    with pytest.raises(StateConflict):
        recharge.resolve("failed", "nope", "operator:x")
