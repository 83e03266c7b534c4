"""Platform order callbacks as news of a recharge's outcome: the pure decisions, and the saga
hearing them (legal transitions, duplicates, the late-success discrepancy), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger.recharges.callbacks import (
    CALLBACK_STATUSES,
    Apply,
    Callback,
    Discrepancy,
    Duplicate,
    Ignore,
    Reversal,
    after_callback,
)
from ledger.recharges.decisions import Fail, StepResult, Succeed, after_step, outcome_of
from ledger.recharges.saga import Recharge

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(minutes=10)
SUCCESS = Callback(
    "success", platform_order_id="PO1", starts_at=NOW, ends_at=NOW + timedelta(days=31)
)
FAILED = Callback("failed", reason="account_not_eligible")
REVERSED = Callback("reversed", platform_order_id="PO1")
PROCESSING = Callback("processing")


def new_recharge() -> Recharge:
    return Recharge.request(uuid4(), uuid4(), uuid4(), uuid4(), "13800000001", None, NOW, DEADLINE)


def recharge_in(status: str) -> Recharge:
    recharge = new_recharge()
    if status == "succeeded":
        assert recharge.step is not None
        recharge.record(recharge.step.id, SUCCESS.as_result(), NOW)
    elif status == "failed":
        assert recharge.step is not None
        recharge.record(recharge.step.id, StepResult("failed", reason="refused"), NOW)
    elif status == "review":
        recharge.check_deadline(DEADLINE)
    assert recharge.status == status
    return recharge


def event_names(recharge: Recharge) -> list[str]:
    return [type(e).__name__ for e in recharge.collect_events()]


# --- the pure decisions -----------------------------------------------------------------


@pytest.mark.parametrize("status", ["pending", "review"])
def test_a_definite_callback_decides_like_a_query_answer(status):
    for callback in (SUCCESS, FAILED):
        decision = after_callback(status, set(), callback)
        assert decision == Apply(outcome_of(callback.as_result()))  # type: ignore[arg-type]
        answered = after_step(
            new_recharge().step,  # type: ignore[arg-type]
            callback.as_result(),
            recharges_sent=1,
            queries_made=1,
            deadline=DEADLINE,
            now=NOW,
        )
        assert decision.decision == answered  # type: ignore[union-attr]
    assert isinstance(after_callback(status, set(), SUCCESS).decision, Succeed)  # type: ignore[union-attr]
    assert after_callback(status, set(), FAILED).decision == Fail("account_not_eligible")  # type: ignore[union-attr]


def test_the_same_status_again_is_a_duplicate_whatever_the_state():
    for status in ("pending", "review", "succeeded", "failed"):
        for callback in (SUCCESS, FAILED, REVERSED):
            decision = after_callback(status, {callback.status}, callback)
            assert isinstance(decision, Duplicate)


def test_a_success_after_success_is_a_duplicate_and_a_failure_after_it_is_ignored():
    assert isinstance(after_callback("succeeded", set(), SUCCESS), Duplicate)
    assert isinstance(after_callback("succeeded", set(), FAILED), Ignore)


def test_a_success_for_a_failed_recharge_is_a_late_success_discrepancy():
    decision = after_callback("failed", set(), SUCCESS)
    assert isinstance(decision, Discrepancy)
    assert decision.kind == "late_success"
    assert isinstance(after_callback("failed", set(), FAILED), Duplicate)


def test_a_reversal_is_recorded_only_for_a_credited_order():
    assert isinstance(after_callback("succeeded", set(), REVERSED), Reversal)
    for status in ("pending", "review", "failed"):
        assert isinstance(after_callback(status, set(), REVERSED), Ignore)


def test_processing_is_no_news():
    for status in ("pending", "review", "succeeded", "failed"):
        assert isinstance(after_callback(status, set(), PROCESSING), Duplicate)


def test_a_callback_in_an_unknown_state_is_ignored_not_applied():
    assert isinstance(after_callback("archived", set(), SUCCESS), Ignore)


def test_a_refunded_recharge_hears_success_and_reversal_as_no_news_and_ignores_a_failure():
    assert isinstance(after_callback("refunded", set(), SUCCESS), Duplicate)
    assert isinstance(after_callback("refunded", set(), REVERSED), Duplicate)
    assert isinstance(after_callback("refunded", set(), FAILED), Ignore)


# --- the saga hearing callbacks -----------------------------------------------------------


def test_a_success_callback_ends_a_pending_saga_with_the_membership():
    recharge = new_recharge()
    recharge.collect_events()
    recharge.hear(SUCCESS)
    assert recharge.status == "succeeded"
    assert recharge.step is None
    assert recharge.membership == {
        "platform_order_id": "PO1",
        "starts_at": NOW,
        "ends_at": NOW + timedelta(days=31),
    }
    assert event_names(recharge) == ["CallbackReceived", "Succeeded"]


def test_a_failure_callback_ends_a_saga_in_review():
    recharge = recharge_in("review")
    recharge.collect_events()
    recharge.hear(FAILED)
    assert recharge.status == "failed"
    assert recharge.failure == "account_not_eligible"
    assert event_names(recharge) == ["CallbackReceived", "Failed"]


def test_a_step_answer_after_a_callback_ended_the_saga_is_ignored():
    recharge = new_recharge()
    step = recharge.step
    assert step is not None
    recharge.hear(FAILED)
    recharge.collect_events()
    assert recharge.record(step.id, SUCCESS.as_result(), NOW) is False
    assert recharge.status == "failed"
    assert event_names(recharge) == []


def test_a_late_success_after_failure_records_one_discrepancy_and_credits_nothing():
    recharge = recharge_in("failed")
    recharge.collect_events()
    for _ in range(3):
        recharge.hear(SUCCESS)
    assert recharge.status == "failed"
    assert recharge.membership is None
    assert recharge.discrepancy is not None
    assert recharge.discrepancy["kind"] == "late_success"
    assert recharge.discrepancy["platform_order_id"] == "PO1"
    assert event_names(recharge) == ["DiscrepancyFound"]


def test_duplicates_record_nothing_new():
    recharge = new_recharge()
    recharge.hear(SUCCESS)
    recharge.collect_events()
    for callback in (SUCCESS, SUCCESS, PROCESSING):
        assert isinstance(recharge.hear(callback), Duplicate)
    assert event_names(recharge) == []
    assert isinstance(recharge.hear(FAILED), Ignore)
    assert isinstance(recharge.hear(FAILED), Duplicate)
    assert isinstance(recharge.hear(REVERSED), Reversal)
    assert isinstance(recharge.hear(REVERSED), Duplicate)
    # a reversal is booked like an accepted refund (`refunds`)
    assert event_names(recharge) == ["CallbackIgnored", "ReversalReported", "RefundAccepted"]
    assert recharge.status == "refunded"
    assert recharge.reversal == {
        "reason": "the platform reversed a credited order",
        "platform_order_id": "PO1",
    }


@given(
    st.sampled_from(["pending", "review", "succeeded", "failed"]),
    st.lists(st.sampled_from(CALLBACK_STATUSES), max_size=12),
)
def test_any_sequence_of_callbacks_credits_at_most_once_and_repeats_record_nothing(start, statuses):
    """Late, repeated and out-of-order callbacks: at most one Succeeded in the whole life, a
    failed recharge never becomes succeeded, each status records at most once, and a final
    state is never left for another."""
    recharge = recharge_in(start)
    before = [type(e).__name__ for e in recharge.collect_events()]
    callbacks = {c.status: c for c in (SUCCESS, FAILED, REVERSED, PROCESSING)}
    recorded: list[str] = []
    for status in statuses:
        final_before = (
            recharge.status if recharge.status in ("succeeded", "failed", "refunded") else None
        )
        events = len(recharge.pending_events)
        decision = recharge.hear(callbacks[status])
        if isinstance(decision, Duplicate):
            assert len(recharge.pending_events) == events
        else:
            recorded.append(status)
        if final_before is not None:
            # only a reversal (not one heard before) takes a succeeded recharge on, to
            # refunded: it is booked like an accepted refund
            reversed_now = (
                final_before == "succeeded"
                and status == "reversed"
                and not isinstance(decision, Duplicate)
            )
            assert recharge.status == ("refunded" if reversed_now else final_before)
    names = before + [type(e).__name__ for e in recharge.collect_events()]
    assert names.count("Succeeded") <= 1
    assert len(recorded) == len(set(recorded))
    if start == "failed":
        assert recharge.status == "failed"
        assert recharge.membership is None
        assert names.count("DiscrepancyFound") == (1 if "success" in statuses else 0)


# --- steps and callbacks interleaved, against a model platform ------------------------------


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("step"), st.sampled_from(["truth", "lost"])),
            st.tuples(st.just("platform"), st.sampled_from(["success", "failed"])),
            st.tuples(st.just("callback"), st.sampled_from(["current", "stale", "processing"])),
        ),
        max_size=30,
    )
)
@example(  # the late success, for sure: failed by the answer, credited, called back
    [("platform", "failed"), ("step", "truth"), ("platform", "success"), ("callback", "current")]
)
@example(  # news by callback only, then a stale failure and the step's late answer
    [("platform", "success"), ("callback", "current"), ("callback", "stale"), ("step", "truth")]
)
@settings(max_examples=300)
def test_steps_and_callbacks_interleaved_never_credit_twice_nor_drop_a_late_success(actions):
    """The platform's order moves processing → success | failed, and may credit a failed one
    later (a late success). The saga's steps get its truth or lose the answer; callbacks carry
    its current status, a stale one from its history, or `processing`. Whatever the order: at
    most one Succeeded, only for an order the platform credited; a recharge that failed stays
    failed; a success heard after our failure is one discrepancy, never dropped."""
    recharge = new_recharge()
    history: list[str] = ["processing"]
    heard_success_after_failure = False
    now = NOW
    names: list[str] = []
    for kind, what in actions:
        now += timedelta(seconds=1)
        if kind == "platform":
            current = history[-1]
            if current == "processing" or (current == "failed" and what == "success"):
                history.append(what)
            continue
        if kind == "step":
            step = recharge.step
            if recharge.status != "pending" or step is None:
                continue
            status = history[-1]
            if what == "lost":
                result = StepResult("unknown", reason="timeout", cause="timeout")
            elif status == "success":
                result = SUCCESS.as_result()
            elif status == "failed":
                result = StepResult("failed", reason="declined")
            else:
                result = StepResult("unknown", reason="processing", cause="processing")
            recharge.record(step.id, result, now)
        else:
            stale = history[-2] if len(history) > 1 else history[0]
            status = {"current": history[-1], "stale": stale, "processing": "processing"}[what]
            callback = {"success": SUCCESS, "failed": FAILED}.get(status, PROCESSING)
            failed_before = recharge.status == "failed"
            recharge.hear(callback)
            if failed_before and status == "success":
                heard_success_after_failure = True
        names += [type(e).__name__ for e in recharge.collect_events()]
    assert names.count("Succeeded") <= 1
    if recharge.status == "succeeded":
        assert "success" in history
    if "Failed" in names:
        assert recharge.status == "failed" and "Succeeded" not in names
        assert names.count("DiscrepancyFound") == (1 if heard_success_after_failure else 0)
