"""Refunds of succeeded recharges: every decision of the refund flow as a pure function, the
saga's refund events, and the use cases (steps, settlement, callbacks) with in-memory fakes
of the platform, the step queue and the webhooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import accounts
from ledger.errors import NotFound
from ledger.postings import Postings
from ledger.recharges.callbacks import Callback
from ledger.recharges.platform_news import PlatformNews
from ledger.recharges.refunds import (
    AcceptRefund,
    NewsDuplicate,
    NewsIgnored,
    RefundAlreadyRequested,
    RefundAnswer,
    RefundNews,
    RefundNotAllowed,
    RefundStep,
    RejectRefund,
    ScheduleRefundStep,
    after_refund_answer,
    after_refund_news,
    first_refund_step,
    is_refund_step,
    news_key,
    refund_number,
    refund_refusal,
    reversal_number,
    step_to_run,
)
from ledger.recharges.saga import Recharge
from tests.unit.test_recharge_steps import CREDITED, Desk, FakePlatform

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
PENDING = RefundAnswer("pending")
ACCEPTED = RefundAnswer("accepted")
REJECTED = RefundAnswer("rejected", reason="refund_rejected: the membership was used")
LOST = RefundAnswer("unknown", reason="timeout", cause="timeout")
NOT_FOUND = RefundAnswer("not_found", reason="no such refund")


# --- decisions ------------------------------------------------------------------------------


def test_only_a_succeeded_recharge_without_a_live_refund_may_be_refunded():
    assert refund_refusal("succeeded", None) is None
    assert refund_refusal("succeeded", "rejected") is None  # a new request after a rejection
    for status in ("pending", "review", "failed"):
        assert isinstance(refund_refusal(status, None), RefundNotAllowed)
    assert isinstance(refund_refusal("succeeded", "pending"), RefundAlreadyRequested)
    assert isinstance(refund_refusal("refunded", "accepted"), RefundAlreadyRequested)
    assert RefundNotAllowed.code == "refund_not_allowed"
    assert RefundAlreadyRequested.code == "refund_already_requested"


def test_refund_numbers_are_fixed_by_the_request_and_told_apart_from_reversals():
    refund_id, recharge_id = uuid4(), uuid4()
    assert refund_number(refund_id) == refund_number(refund_id) == f"RF{refund_id.hex}"
    assert refund_number(refund_id) != refund_number(uuid4())
    assert reversal_number(recharge_id).startswith("RV")
    assert len(refund_number(refund_id)) <= 64


def test_the_first_step_sends_the_refund_and_its_id_marks_it_as_a_refund_step():
    step = first_refund_step(NOW)
    assert step == RefundStep(1, "refund", NOW)
    assert step.id == "refund-1-refund"
    assert is_refund_step(step.id)
    assert not is_refund_step("1-recharge")


def test_a_refund_step_that_may_have_reached_the_platform_asks_its_status_instead():
    step = first_refund_step(NOW)
    assert step_to_run(step, sent=False) == "refund"
    assert step_to_run(step, sent=True) == "refund_query"
    query = RefundStep(2, "refund_query", NOW)
    assert step_to_run(query, sent=False) == "refund_query"


def test_definite_answers_end_the_refund():
    step = first_refund_step(NOW)
    assert after_refund_answer(step, ACCEPTED, now=NOW, unsure_in_a_row=0) == AcceptRefund("answer")
    assert after_refund_answer(step, REJECTED, now=NOW, unsure_in_a_row=0) == RejectRefund(
        REJECTED.reason or ""
    )
    no_reason = after_refund_answer(step, RefundAnswer("rejected"), now=NOW, unsure_in_a_row=0)
    assert isinstance(no_reason, RejectRefund) and no_reason.reason


def test_a_pending_review_is_polled_at_a_steady_pace():
    step = first_refund_step(NOW)
    decision = after_refund_answer(step, PENDING, now=NOW, unsure_in_a_row=0)
    assert decision == ScheduleRefundStep(RefundStep(2, "refund_query", NOW + timedelta(seconds=2)))
    again = after_refund_answer(decision.step, PENDING, now=NOW, unsure_in_a_row=0)
    assert isinstance(again, ScheduleRefundStep)
    assert again.step.due_at - NOW == timedelta(seconds=2)


def test_a_long_review_is_polled_every_minute_after_its_first_minute():
    step = first_refund_step(NOW)
    waits = [
        after_refund_answer(step, PENDING, now=NOW, unsure_in_a_row=0, pending_answers=n)
        for n in (1, 30, 31, 500)
    ]
    assert [w.step.due_at - NOW for w in waits] == [  # type: ignore[union-attr]
        timedelta(seconds=s) for s in (2, 2, 60, 60)
    ]


def test_the_saga_counts_pending_answers_since_the_refund_was_asked():
    recharge = succeeded()
    recharge.request_refund(uuid4(), "why", "op", NOW)
    now = NOW
    for _ in range(31):
        step = recharge.refund_step
        assert step is not None
        now = step.due_at
        recharge.record_refund_answer(step.id, step.kind, PENDING, now)
    step = recharge.refund_step
    assert step is not None and step.due_at - now == timedelta(seconds=60)
    assert recharge.refund_pending_answers == 31


def test_an_answer_we_cannot_trust_is_followed_by_a_status_query_with_growing_backoff():
    step = first_refund_step(NOW)
    waits = []
    for unsure in (1, 2, 3, 4, 20):
        decision = after_refund_answer(step, LOST, now=NOW, unsure_in_a_row=unsure)
        assert isinstance(decision, ScheduleRefundStep)
        assert decision.step.kind == "refund_query"  # never a blind resend
        waits.append((decision.step.due_at - NOW).total_seconds())
    assert waits == [1, 2, 4, 8, 60]


def test_a_refund_the_platform_never_got_is_sent_again_under_the_same_number():
    query = RefundStep(3, "refund_query", NOW)
    decision = after_refund_answer(query, NOT_FOUND, now=NOW, unsure_in_a_row=0)
    assert decision == ScheduleRefundStep(RefundStep(4, "refund", NOW + timedelta(seconds=1)))


def test_refund_news_decides_a_pending_refund_like_a_polls_answer():
    accepted = RefundNews("accepted", "RF1")
    rejected = RefundNews("rejected", "RF1", "used")
    assert after_refund_news("succeeded", "RF1", "pending", set(), accepted) == AcceptRefund(
        "callback"
    )
    assert after_refund_news("succeeded", "RF1", "pending", set(), rejected) == RejectRefund("used")


def test_refund_news_repeated_or_out_of_order_applies_only_legal_transitions():
    accepted = RefundNews("accepted", "RF1")
    rejected = RefundNews("rejected", "RF1")
    heard = {news_key(accepted)}
    assert isinstance(
        after_refund_news("refunded", "RF1", "accepted", heard, accepted), NewsDuplicate
    )
    # the same outcome learnt from a poll first: no news
    assert isinstance(
        after_refund_news("refunded", "RF1", "accepted", set(), accepted), NewsDuplicate
    )
    # a decided refund does not change its mind
    assert isinstance(
        after_refund_news("refunded", "RF1", "accepted", set(), rejected), NewsIgnored
    )
    assert isinstance(
        after_refund_news("succeeded", "RF1", "rejected", set(), accepted), NewsIgnored
    )
    # another refund's number, or no refund asked at all
    assert isinstance(
        after_refund_news("succeeded", "RF1", "pending", set(), RefundNews("accepted", "RF2")),
        NewsIgnored,
    )
    assert isinstance(after_refund_news("succeeded", None, None, set(), accepted), NewsIgnored)


def test_a_reversal_of_a_succeeded_recharge_is_an_accepted_refund_and_nothing_else_is():
    reversal = RefundNews("reversed")
    assert after_refund_news("succeeded", None, None, set(), reversal) == AcceptRefund("reversal")
    assert after_refund_news("succeeded", "RF1", "pending", set(), reversal) == AcceptRefund(
        "reversal"
    )
    assert after_refund_news("succeeded", "RF1", "rejected", set(), reversal) == AcceptRefund(
        "reversal"
    )
    assert isinstance(
        after_refund_news("refunded", "RF1", "accepted", set(), reversal), NewsDuplicate
    )
    for status in ("pending", "review", "failed"):
        assert isinstance(after_refund_news(status, None, None, set(), reversal), NewsIgnored)


# --- the saga's refund events ---------------------------------------------------------------


def succeeded() -> Recharge:
    recharge = Recharge.request(
        uuid4(), uuid4(), uuid4(), uuid4(), "13800138000", None, NOW, NOW + timedelta(minutes=10)
    )
    assert recharge.step is not None
    recharge.record(recharge.step.id, CREDITED, NOW)
    recharge.collect_events()
    return recharge


def names(recharge: Recharge) -> list[str]:
    return [type(e).__name__ for e in recharge.collect_events()]


def test_a_refund_request_records_its_number_and_schedules_the_refund_call():
    recharge = succeeded()
    refund_id = uuid4()
    assert recharge.request_refund(refund_id, "customer changed mind", "operator:1", NOW)
    events = recharge.collect_events()
    assert [type(e).__name__ for e in events] == ["RefundRequested", "RefundStepScheduled"]
    requested = events[0]
    assert isinstance(requested, Recharge.RefundRequested)
    assert (requested.refund_id, requested.refund_no, requested.reason, requested.by) == (
        refund_id,
        refund_number(refund_id),
        "customer changed mind",
        "operator:1",
    )
    assert recharge.refund_step == first_refund_step(NOW)
    assert recharge.refund is not None and recharge.refund["status"] == "pending"
    assert recharge.status == "succeeded"


def test_the_same_request_again_records_nothing_and_another_is_refused_while_pending():
    recharge = succeeded()
    refund_id = uuid4()
    recharge.request_refund(refund_id, "why", "op", NOW)
    recharge.collect_events()
    assert recharge.request_refund(refund_id, "why", "op", NOW) is False
    with pytest.raises(RefundAlreadyRequested):
        recharge.request_refund(uuid4(), "again", "op", NOW)
    assert names(recharge) == []


def test_a_recharge_that_did_not_succeed_cannot_be_refunded():
    recharge = Recharge.request(
        uuid4(), uuid4(), uuid4(), uuid4(), "13800138000", None, NOW, NOW + timedelta(minutes=10)
    )
    recharge.collect_events()
    with pytest.raises(RefundNotAllowed):
        recharge.request_refund(uuid4(), "why", "op", NOW)
    assert names(recharge) == []


def test_accepted_the_recharge_is_refunded_and_a_second_refund_is_refused():
    recharge = succeeded()
    recharge.request_refund(uuid4(), "why", "op", NOW)
    step = recharge.refund_step
    assert step is not None
    recharge.collect_events()
    later = NOW + timedelta(seconds=3)
    assert recharge.record_refund_answer(step.id, "refund", ACCEPTED, later)
    events = recharge.collect_events()
    assert [type(e).__name__ for e in events] == ["RefundStepCompleted", "RefundAccepted"]
    accepted = events[-1]
    assert isinstance(accepted, Recharge.RefundAccepted)
    assert accepted.refund_no == recharge.refund["refund_no"]  # type: ignore[index]
    assert recharge.status == "refunded" and recharge.refund_step is None
    assert recharge.refund is not None and recharge.refund["decided_at"] == later
    # a late repeat of the step's answer changes nothing
    assert not recharge.record_refund_answer(step.id, "refund", REJECTED, later)
    with pytest.raises(RefundAlreadyRequested):
        recharge.request_refund(uuid4(), "again", "op", NOW)


def test_rejected_the_recharge_stays_succeeded_shows_why_and_may_be_asked_again():
    recharge = succeeded()
    first = uuid4()
    recharge.request_refund(first, "why", "op", NOW)
    assert recharge.refund_step is not None
    recharge.record_refund_answer(recharge.refund_step.id, "refund", REJECTED, NOW)
    assert names(recharge)[-1] == "RefundRejected"
    assert recharge.status == "succeeded"
    assert recharge.refund is not None
    assert recharge.refund["status"] == "rejected"
    assert recharge.refund["rejection"] == REJECTED.reason
    second = uuid4()
    assert recharge.request_refund(second, "once more", "op", NOW)
    assert recharge.refund["refund_no"] == refund_number(second)
    assert recharge.refunds[str(first)]["status"] == "rejected"


def test_a_refund_callback_decides_it_once_and_a_stale_poll_answer_after_it_is_ignored():
    recharge = succeeded()
    recharge.request_refund(uuid4(), "why", "op", NOW)
    assert recharge.refund is not None and recharge.refund_step is not None
    step_id, refund_no = recharge.refund_step.id, recharge.refund["refund_no"]
    recharge.collect_events()
    callback = Callback("accepted", refund_no=refund_no)
    assert recharge.hear(callback, NOW) == AcceptRefund("callback")
    assert names(recharge) == ["RefundNewsReceived", "RefundAccepted"]
    assert isinstance(recharge.hear(callback, NOW), NewsDuplicate)
    assert not recharge.record_refund_answer(step_id, "refund", PENDING, NOW)
    assert isinstance(recharge.hear(Callback("rejected", refund_no=refund_no), NOW), NewsIgnored)
    assert names(recharge) == ["RefundNewsIgnored"]
    assert recharge.status == "refunded"


def test_a_reversal_without_a_refund_of_ours_is_booked_under_the_platforms_number():
    recharge = succeeded()
    recharge.hear(Callback("reversed", refund_no="PLATFORM-7"), NOW)
    events = recharge.collect_events()
    assert [type(e).__name__ for e in events] == ["ReversalReported", "RefundAccepted"]
    assert isinstance(events[-1], Recharge.RefundAccepted)
    assert events[-1].refund_no == "PLATFORM-7" and events[-1].via == "reversal"
    assert recharge.status == "refunded"
    bare = succeeded()
    bare.hear(Callback("reversed"), NOW)
    assert bare.refund is not None and bare.refund["refund_no"] == reversal_number(bare.id)


# --- use cases with fakes -------------------------------------------------------------------


class RefundingPlatform(FakePlatform):
    """The fake platform with a refund API: each refund call is counted per refund number."""

    def __init__(self) -> None:
        super().__init__()
        self.refund_answer: RefundAnswer = PENDING
        self.status_answer: RefundAnswer = ACCEPTED

    def refund(self, order_no: str, refund_no: str, amount: int | None = None) -> RefundAnswer:
        self.calls.append(("refund", order_no, refund_no, amount))
        return self.refund_answer

    def refund_status(self, refund_no: str) -> RefundAnswer:
        self.calls.append(("refund_status", refund_no))
        return self.status_answer


class RefundDesk(Desk):
    def __init__(self, **applications: Any) -> None:
        super().__init__(webhook="https://shop.example/hooks", **applications)
        self.platform = RefundingPlatform()
        self.steps.gateways = self.platform

    def succeeded(self) -> UUID:
        recharge_id = self.reserve()
        self.steps.run_step(recharge_id, "1-recharge")
        self.steps.settle(recharge_id)
        assert self.recharge(recharge_id).status == "succeeded"
        return recharge_id

    def refund_step(self, recharge_id: UUID) -> RefundStep:
        step = self.recharge(recharge_id).refund_step
        assert step is not None
        return step

    def on_hand(self) -> int:
        return self.distribution.channel(self.shop).stock_of(self.product)

    def calls(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.platform.calls if c[0] == kind]


def test_an_accepted_refund_returns_the_consumed_unit_to_stock_on_hand_once():
    desk = RefundDesk()
    recharge_id = desk.succeeded()
    code_before = desk.code_of(recharge_id)
    assert code_before.status == "redeemed"
    on_hand = desk.on_hand()

    refund_id = uuid4()
    desk.recharges.request_refund(
        recharge_id, refund_id, "wrong account", "operator:1", desk.clock()
    )
    refund_no = refund_number(refund_id)
    desk.steps.run_step(recharge_id, "refund-1-refund")
    product = desk.distribution.product(desk.product)
    assert desk.calls("refund") == [
        ("refund", str(recharge_id), refund_no, product.wholesale_cost.amount)
    ]
    query = desk.refund_step(recharge_id)
    assert query.kind == "refund_query"

    desk.clock.now = query.due_at
    desk.steps.run_step(recharge_id, query.id)
    assert desk.calls("refund_status") == [("refund_status", refund_no)]
    recharge = desk.recharge(recharge_id)
    assert recharge.status == "refunded"

    event = desk.steps.settle_refund(recharge_id, refund_id)
    code = desk.code_of(recharge_id)
    assert code.status == "redeemed" and code.unit_returned  # the code stays spent
    assert code.postings == Postings.of(
        (
            accounts.channel_consumed(desk.shop, desk.product),
            accounts.channel_stock(desk.shop, desk.product),
            accounts.unit_asset(desk.product),
            1,
        )
    )
    assert desk.on_hand() == on_hand + 1
    assert event is not None and event["type"] == "recharge.refunded"
    assert event["data"]["refund"]["refund_no"] == refund_no

    # settled again (a message delivered twice): no second unit, the same event id
    version = code.version
    again = desk.steps.settle_refund(recharge_id, refund_id)
    assert desk.code_of(recharge_id).version == version
    assert desk.on_hand() == on_hand + 1
    assert again is not None and again["event_id"] == event["event_id"]
    returned = [
        e
        for e in desk.distribution.recorder.select_notifications(1, limit=1000)
        if e.topic.endswith("Code.UnitReturned")
    ]
    assert len(returned) == 1


def test_a_rejected_refund_leaves_the_unit_consumed_and_tells_the_channel_why():
    desk = RefundDesk()
    recharge_id = desk.succeeded()
    on_hand = desk.on_hand()
    refund_id = uuid4()
    desk.recharges.request_refund(recharge_id, refund_id, "why", "op", desk.clock())
    desk.platform.refund_answer = REJECTED
    desk.steps.run_step(recharge_id, "refund-1-refund")

    recharge = desk.recharge(recharge_id)
    assert recharge.status == "succeeded"
    assert recharge.refund is not None and recharge.refund["rejection"] == REJECTED.reason
    event = desk.steps.settle_refund(recharge_id, refund_id)
    assert event is not None and event["type"] == "recharge.refund_rejected"
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["refund"]["rejection"] == REJECTED.reason
    assert desk.on_hand() == on_hand
    assert not desk.code_of(recharge_id).unit_returned


def test_a_refund_step_run_again_after_a_crash_asks_the_status_and_sends_no_second_refund():
    """The process died after the refund went out and before its answer was recorded: the
    sending is on record, so the step's next run asks the platform instead of sending."""
    desk = RefundDesk()
    recharge_id = desk.succeeded()
    refund_id = uuid4()
    desk.recharges.request_refund(recharge_id, refund_id, "why", "op", desk.clock())
    # what the dead process did: recorded the sending, sent, never recorded the answer
    desk.recharges.refund_sending(recharge_id, "refund-1-refund")
    desk.platform.refund(str(recharge_id), refund_number(refund_id))

    desk.steps.run_step(recharge_id, "refund-1-refund")  # the sweeper's re-sent wake-up

    assert len(desk.calls("refund")) == 1
    assert desk.calls("refund_status") == [("refund_status", refund_number(refund_id))]
    assert desk.recharge(recharge_id).status == "refunded"


def test_a_refund_step_that_is_not_current_or_not_due_asks_nothing():
    desk = RefundDesk()
    recharge_id = desk.succeeded()
    desk.recharges.request_refund(recharge_id, uuid4(), "why", "op", desk.clock())
    desk.steps.run_step(recharge_id, "refund-7-refund_query")
    assert desk.calls("refund") == [] and desk.calls("refund_status") == []
    desk.steps.run_step(recharge_id, "refund-1-refund")
    query = desk.refund_step(recharge_id)
    desk.queue.enqueued.clear()
    desk.steps.run_step(recharge_id, query.id)  # due in 2 s: put back for its time
    assert desk.queue.enqueued == [(recharge_id, query.id, query.due_at)]
    assert desk.calls("refund_status") == []


def test_a_reversal_callback_books_the_refund_and_the_unit_comes_back():
    desk = RefundDesk()
    recharge_id = desk.succeeded()
    on_hand = desk.on_hand()
    product = desk.distribution.product(desk.product)
    news = PlatformNews(desk.recharges, desk.distribution, clock=desk.clock)
    news.hear(product.platform_id, str(recharge_id), Callback("reversed", refund_no="P-1"))
    recharge = desk.recharge(recharge_id)
    assert recharge.status == "refunded"
    assert recharge.refund is not None
    desk.steps.settle_refund(recharge_id, UUID(recharge.refund["id"]))
    assert desk.on_hand() == on_hand + 1
    assert desk.calls("refund") == []  # nothing asked of the platform: it did it itself


def test_a_recharge_settled_after_its_refund_settles_as_it_succeeded():
    """The dispatcher fell behind: the Succeeded event is settled once the recharge is
    refunded already. The code is redeemed and the final-state webhook is the succeeded one."""
    desk = RefundDesk()
    recharge_id = desk.reserve()
    desk.steps.run_step(recharge_id, "1-recharge")
    product = desk.distribution.product(desk.product)
    PlatformNews(desk.recharges, desk.distribution).hear(
        product.platform_id, str(recharge_id), Callback("reversed")
    )
    event = desk.steps.settle(recharge_id)
    assert event is not None and event["type"] == "recharge.succeeded"
    assert desk.code_of(recharge_id).status == "redeemed"
    refund = desk.recharge(recharge_id).refund
    assert refund is not None
    desk.steps.settle_refund(recharge_id, UUID(refund["id"]))
    assert desk.code_of(recharge_id).unit_returned


def test_an_unknown_refund_is_not_settled():
    desk = RefundDesk()
    recharge_id = desk.succeeded()
    with pytest.raises(Exception, match="not decided"):
        desk.steps.settle_refund(recharge_id, uuid4())
    with pytest.raises(NotFound):
        desk.recharges.request_refund(uuid4(), uuid4(), "why", "op", NOW)


def test_a_code_not_redeemed_by_the_recharge_returns_no_unit():
    desk = RefundDesk()
    recharge_id = desk.succeeded()
    code = desk.code_of(recharge_id)
    with pytest.raises(Exception, match="not redeemed by recharge"):
        desk.distribution.return_refunded_unit(code.id, uuid4(), "RF1")
    assert not desk.code_of(recharge_id).unit_returned


# --- any interleaving of requests, answers and callbacks ----------------------------------


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("request"), st.integers(0, 2)),
            st.tuples(
                st.just("answer"),
                st.sampled_from(["pending", "accepted", "rejected", "unknown", "not_found"]),
            ),
            st.tuples(
                st.just("callback"), st.sampled_from(["accepted", "rejected", "reversed", "stale"])
            ),
        ),
        max_size=25,
    )
)
@settings(max_examples=300)
def test_any_interleaving_refunds_at_most_once_and_decides_each_refund_once(actions):
    """Requests (three idempotency keys), the current step's answers and callbacks (about the
    current refund, a reversal, or a stale number) in any order: at most one RefundAccepted
    in the whole life, each refund decided at most once, `refunded` exactly when one was
    accepted, and a refund is asked only of a succeeded recharge with no live refund."""
    from ledger.errors import DomainError

    recharge = succeeded()
    keys = [uuid4() for _ in range(3)]
    now = NOW
    decided: dict[str, str] = {}
    for kind, what in actions:
        now += timedelta(seconds=1)
        before = recharge.status, recharge.refund_status
        if kind == "request":
            try:
                recharge.request_refund(keys[what], "why", "op", now)
            except DomainError:
                assert before[0] == "refunded" or before[1] == "pending"
        elif kind == "answer":
            step = recharge.refund_step
            if step is not None:
                recharge.record_refund_answer(step.id, step.kind, RefundAnswer(what), now)
        else:
            number = (recharge.refund or {}).get("refund_no") if what != "stale" else "RF-old"
            status = "accepted" if what == "stale" else what
            recharge.hear(Callback(status, refund_no=number), now)  # type: ignore[arg-type]
        for refund_id, refund in recharge.refunds.items():
            if refund["status"] != "pending":
                assert decided.setdefault(refund_id, refund["status"]) == refund["status"]
    names = [type(e).__name__ for e in recharge.collect_events()]
    accepted = [r for r in recharge.refunds.values() if r["status"] == "accepted"]
    assert names.count("RefundAccepted") == len(accepted) <= 1
    assert (recharge.status == "refunded") == bool(accepted)
    assert names.count("RefundRejected") == sum(
        1 for r in recharge.refunds.values() if r["status"] == "rejected"
    )
