"""The settlement saga's use cases over fakes of our side, the platform's statements and the
payments, with the in-memory event store: scenarios step by step."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from uuid import uuid4

import pytest

from ledger import accounts
from ledger.errors import InvalidOutcome, NotFound, PeriodNotClosed, StateConflict
from ledger.money import Money
from ledger.settlement.cases import Case
from ledger.settlement.saga import settlement_id
from tests.settlement_fakes import DAY, PaymentCrashed, SettlementDesk, at, line

NEXT = DAY + timedelta(days=1)


def balances(desk: SettlementDesk) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for postings in desk.postings():
        for leg in postings:
            totals[(leg.account, leg.asset)] += leg.amount
    return {key: amount for key, amount in totals.items() if amount}


def payable(desk: SettlementDesk) -> int:
    return balances(desk).get((accounts.platform_payable(desk.platform), "CNY"), 0)


def test_a_day_that_matches_line_by_line_is_paid_without_anyone_asking():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000), line("B", 3000))
    desk.statements.publish(DAY, line("A", 2000), line("B", 3000))

    settlement = desk.settle()

    assert settlement.status == "paid"
    assert (settlement.owed, settlement.statement, settlement.agreed, settlement.paid) == (
        5000,
        5000,
        5000,
        5000,
    )
    assert settlement.counts["matched"] == 2
    assert desk.payments.paid == {settlement.id: Money(5000)}
    assert payable(desk) == -5000  # the accrual drawn down by what was paid
    assert balances(desk)[(accounts.external_platform_settlements("CNY"), "CNY")] == 5000


def test_the_same_platform_and_day_answer_the_same_settlement():
    desk = SettlementDesk()
    first = desk.steps.open(desk.platform, DAY)

    assert desk.steps.open(desk.platform, DAY).id == first.id == settlement_id(desk.platform, DAY)


def test_a_statement_not_ready_is_asked_again_after_the_wait_then_settled():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000))

    settlement = desk.settle()
    assert settlement.status == "awaiting_statement"
    assert settlement.waiting_for == "statement not ready"
    assert desk.steps.advance(settlement.id).status == "awaiting_statement"
    assert desk.statements.asked == 1  # not asked again before the due time

    desk.statements.publish(DAY, line("A", 2000))
    desk.later(121)
    assert desk.steps.advance(settlement.id).status == "paid"


def test_a_ledger_side_behind_the_period_end_is_waited_for():
    desk = SettlementDesk()
    desk.ours.behind = True
    settlement = desk.settle()
    assert settlement.status == "collecting"

    desk.ours.behind = False
    desk.statements.publish(DAY)
    desk.later(60)
    assert desk.steps.advance(settlement.id).status == "paid"


def test_each_difference_opens_one_case_and_the_settlement_waits_for_an_operator():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000), line("B", 2000), line("C", 2000))
    desk.ours.add(NEXT, line("C", 2000, NEXT))  # none of ours on the next day match D or E
    desk.statements.publish(DAY, line("A", 2000), line("B", 2500), line("D", 700))

    settlement = desk.settle()

    assert settlement.status == "awaiting_approval"
    cases = {(c.order_no, c.kind): c for c in desk.cases(settlement)}
    assert set(cases) == {("B", "amount_differs"), ("D", "theirs_only")}
    assert settlement.counts == {
        "matched": 1,
        "amount_differs": 1,
        "ours_only": 1,
        "theirs_only": 1,
    }
    assert settlement.carried_out_count == 1  # C: ours only, carried to the next day
    assert settlement.agreed + settlement.open_theirs == settlement.statement
    assert desk.payments.paid == {}


def test_resolving_the_last_case_pays_the_agreed_amount_with_its_postings():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000), line("B", 2000))
    desk.statements.publish(DAY, line("A", 2000), line("B", 2500), line("D", 700))
    settlement = desk.settle()
    cases = {c.order_no: c for c in desk.cases(settlement)}

    desk.settlements.resolve_case(cases["B"].id, "accept_theirs", "their price", "op", desk.clock())
    assert desk.steps.advance(settlement.id).status == "awaiting_approval"
    desk.settlements.resolve_case(cases["D"].id, "request_refund", "never sold", "op", desk.clock())
    settlement = desk.steps.advance(settlement.id)

    assert settlement.status == "paid"
    assert settlement.agreed == settlement.paid == 4500
    assert settlement.withheld == 700
    assert desk.payments.paid == {settlement.id: Money(4500)}
    differences = (accounts.operator_settlement_differences("CNY"), "CNY")
    assert balances(desk)[differences] == -500  # B's extra 5.00 came from the differences
    assert payable(desk) == -4000  # 4500 paid, 500 of it put in from the differences


def test_resolving_a_resolved_case_or_with_an_unknown_outcome_is_refused_and_records_nothing():
    desk = SettlementDesk()
    desk.statements.publish(DAY, line("D", 700))
    settlement = desk.settle()
    (case,) = desk.cases(settlement)

    with pytest.raises(InvalidOutcome):
        desk.settlements.resolve_case(case.id, "pay_twice", "", "op", desk.clock())
    desk.settlements.resolve_case(case.id, "write_off", "", "op", desk.clock())
    version = desk.settlements.case(case.id).version
    with pytest.raises(StateConflict):
        desk.settlements.resolve_case(case.id, "accept_theirs", "", "op", desk.clock())
    assert desk.settlements.case(case.id).version == version


def test_an_order_credited_late_on_our_day_and_billed_the_next_day_settles_without_a_case():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000), line("LATE", 2000))
    desk.statements.publish(DAY, line("A", 2000))
    desk.statements.publish(NEXT, line("LATE", 2000, NEXT), line("N", 100, NEXT))
    desk.ours.add(NEXT, line("N", 100, NEXT))

    first = desk.settle(DAY)
    second = desk.settle(NEXT)

    assert first.status == second.status == "paid"
    assert (first.paid, second.paid) == (2000, 2100)
    assert desk.cases(first) == desk.cases(second) == []
    assert second.counts["matched"] == 2


def test_their_line_a_day_early_is_carried_when_it_is_on_our_next_day():
    desk = SettlementDesk()
    desk.ours.add(NEXT, line("EARLY", 2000, NEXT))
    desk.statements.publish(DAY, line("EARLY", 2000))
    desk.statements.publish(NEXT)

    first = desk.settle(DAY)
    second = desk.settle(NEXT)

    assert (first.status, first.paid, first.carried_out) == ("paid", 0, 2000)
    assert (second.status, second.paid, second.carried_in) == ("paid", 2000, 2000)
    assert desk.cases(first) == desk.cases(second) == []


def test_a_carried_line_still_unmatched_the_next_day_opens_a_case_there():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("LOST", 2000))
    desk.statements.publish(DAY)
    desk.statements.publish(NEXT)

    desk.settle(DAY)
    second = desk.settle(NEXT)

    assert [(c.order_no, c.kind) for c in desk.cases(second)] == [("LOST", "ours_only")]


def test_the_next_day_waits_for_the_previous_day_to_reconcile():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("LATE", 2000))
    desk.statements.publish(NEXT, line("LATE", 2000, NEXT))
    first = desk.settle(DAY)  # its statement is not out yet
    assert first.status == "awaiting_statement"

    second = desk.settle(NEXT)
    assert (second.status, second.waiting_for) == ("reconciling", "previous day reconciling")

    desk.statements.publish(DAY)
    desk.later(3600)
    desk.steps.advance(first.id)
    second = desk.steps.advance(second.id)
    assert (second.status, second.paid) == ("paid", 2000)
    assert desk.cases(second) == []


def test_a_day_settled_after_its_next_day_carries_nothing_and_opens_cases():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("LATE", 2000))
    desk.statements.publish(DAY)
    desk.statements.publish(NEXT)
    desk.settle(NEXT)

    first = desk.settle(DAY)

    assert [(c.order_no, c.kind) for c in desk.cases(first)] == [("LATE", "ours_only")]


def test_a_crash_between_the_payment_and_its_record_pays_once():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000))
    desk.statements.publish(DAY, line("A", 2000))
    desk.payments.crash_after_paying = True

    with pytest.raises(PaymentCrashed):
        desk.settle()
    settlement = desk.settlements.settlement(settlement_id(desk.platform, DAY))
    assert (settlement.status, settlement.payment) == ("paying", 2000)

    settlement = desk.steps.advance(settlement.id)
    assert settlement.status == "paid"
    assert desk.payments.calls == 2
    assert desk.payments.paid == {settlement.id: Money(2000)}
    assert payable(desk) == -2000  # booked once


def test_a_failed_payment_stays_paying_and_is_tried_again_with_the_same_payment_id():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000))
    desk.statements.publish(DAY, line("A", 2000))
    desk.payments.failing = True

    settlement = desk.settle()
    assert (settlement.status, settlement.waiting_for) == ("paying", "payment failed")

    desk.payments.failing = False
    desk.later(60)
    assert desk.steps.advance(settlement.id).status == "paid"
    assert list(desk.payments.paid) == [settlement.id]


def test_advancing_twice_does_nothing_the_second_time():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000))
    desk.statements.publish(DAY, line("A", 2000))
    settlement = desk.settle()
    version = settlement.version

    assert desk.steps.advance(settlement.id).version == version
    assert desk.payments.calls == 1


def test_approval_pays_the_agreed_amount_and_a_later_resolution_is_paid_separately():
    desk = SettlementDesk()
    desk.ours.add(DAY, line("A", 2000), line("B", 2000))
    desk.statements.publish(DAY, line("A", 2000), line("B", 2500))
    settlement = desk.settle()
    (case,) = desk.cases(settlement)
    desk.settlements.approve(settlement.id, "op")
    with pytest.raises(StateConflict):
        desk.settlements.approve(settlement.id, "op")  # approved once

    settlement = desk.steps.advance(settlement.id)
    assert (settlement.status, settlement.paid, settlement.open_cases) == ("paid", 2000, 1)

    desk.settlements.resolve_case(case.id, "accept_theirs", "ok", "op", desk.clock())
    settlement = desk.steps.advance(settlement.id)
    assert (settlement.agreed, settlement.paid) == (4500, 4500)
    assert desk.payments.paid == {settlement.id: Money(2000), case.id: Money(2500)}
    assert payable(desk) == -4000


def test_open_refuses_an_unknown_platform_and_a_day_not_over():
    desk = SettlementDesk(now=at(DAY, 3600))

    with pytest.raises(NotFound):
        desk.steps.open(uuid4(), DAY - timedelta(days=1))
    with pytest.raises(PeriodNotClosed):
        desk.steps.open(desk.platform, DAY)
    with pytest.raises(PeriodNotClosed):
        desk.steps.open(desk.platform, DAY + timedelta(days=1), close_now=True)
    assert desk.settlements.find_settlement(settlement_id(desk.platform, DAY)) is None


def test_in_sandbox_mode_close_now_settles_the_current_day():
    desk = SettlementDesk(now=at(DAY, 3600))
    desk.statements.publish(DAY, line("A", 2000))
    desk.ours.add(DAY, line("A", 2000))

    settlement = desk.steps.open(desk.platform, DAY, close_now=True)

    assert desk.steps.advance(settlement.id).status == "paid"


def test_a_late_success_opens_one_case_per_recharge_and_its_resolution_moves_nothing():
    desk = SettlementDesk()
    recharge = uuid4()
    case = desk.settlements.open_late_success(
        recharge, desk.platform, "credited after we failed it", "CNY", desk.clock()
    )
    again = desk.settlements.open_late_success(
        recharge, desk.platform, "credited after we failed it", "CNY", desk.clock()
    )
    assert case.id == again.id and again.version == 1
    assert isinstance(desk.settlements.case(case.id), Case)

    desk.settlements.resolve_case(case.id, "accept_theirs", "sold twice", "op", desk.clock())
    assert desk.settlements.case(case.id).status == "resolved"
    assert desk.postings() == []


def test_a_late_success_heard_by_the_recharge_saga_opens_its_case_on_the_products_platform():
    from ledger.recharges.application import Recharges
    from ledger.recharges.callbacks import Callback
    from ledger.recharges.decisions import StepResult
    from ledger.recharges.saga import Recharge
    from ledger.settlement.late_successes import LateSuccesses

    desk = SettlementDesk()
    product = uuid4()
    desk.distribution.register_product(
        product, desk.platform, "VIP monthly", 30, Money(3000), Money(2000)
    )
    recharges = Recharges()
    now = desk.clock()
    recharge = Recharge.request(uuid4(), uuid4(), uuid4(), product, "138", None, now, now)
    assert recharge.step is not None
    recharge.record(recharge.step.id, StepResult("failed", reason="refused"), now)
    recharge.hear(Callback("success", platform_order_id="PO1"))
    recharges.save(recharge)
    assert recharge.discrepancy is not None
    late = LateSuccesses(desk.settlements, recharges, desk.distribution)

    case = late.open(recharge.id, recharge.discrepancy["reason"], now)

    assert (case.kind, case.platform_id, case.order_no) == (
        "late_success",
        desk.platform,
        str(recharge.id),
    )
    assert late.open(recharge.id, "again", now).id == case.id
