"""Merchant settlement as scenarios: a tea house in Shanghai settles its days (Asia/Shanghai),
is paid out of its payable once per settlement, and carries refunds of days already paid."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ledger import accounts
from ledger.cards.application import Cards
from ledger.cards.merchant_settlement import (
    InvalidPeriod,
    MerchantSettlement,
    StatementLine,
    payout_id,
    settlement_id,
    statement_line,
)
from ledger.cards.ports import PayoutResult
from ledger.cards.settlements import MerchantSettlements
from ledger.errors import InsufficientBalance, NotFound, PeriodNotClosed, Unavailable
from ledger.money import Money
from tests.unit.test_card_scenarios import Shop

# 2024-03-10 04:00 UTC is 12:00 in Shanghai; the day there ends at 16:00 UTC.
DAY, NEXT_DAY = "2024-03-10", "2024-03-11"


class FakeStatementLines:
    """The read model in memory: follows the cards log and marks the lines a settlement
    collected. Each line is dated by `clock` when it is seen (the shop's clock in scenarios),
    or without one by its event's time, as the real view dates it."""

    def __init__(self, app: Cards, clock: Callable[[], datetime] | None = None) -> None:
        self.app = app
        self.clock = clock
        self.position = 0
        self.lines: dict[UUID, tuple[StatementLine, UUID | None]] = {}

    def follow(self) -> None:
        app = self.app
        for notification in app.recorder.select_notifications(start=self.position + 1, limit=1000):
            self.position = notification.id
            event: Any = app.mapper.to_domain_event(notification)
            line = statement_line(event)
            if line is not None:
                at = self.clock() if self.clock else line.at
                dated = StatementLine(
                    line.id, line.merchant_id, line.kind, line.consumption_id, line.amount, at
                )
                self.lines[line.id] = (dated, None)
            elif isinstance(event, MerchantSettlement.Collected):  # type: ignore[attr-defined]
                for row in event.lines:
                    line_id = UUID(row[0])
                    self.lines[line_id] = (self.lines[line_id][0], event.originator_id)

    def unsettled(self, merchant_id: UUID, before: datetime, limit: int) -> list[StatementLine]:
        self.follow()
        found = [
            line
            for line, settled in self.lines.values()
            if line.merchant_id == merchant_id and settled is None and line.at < before
        ]
        return sorted(found, key=lambda line: line.at)[:limit]


class Till:
    """The shop with its settlements: consumptions at its till are seen by the read model as
    they happen."""

    def __init__(self) -> None:
        self.shop = Shop()
        self.lines = FakeStatementLines(self.shop.app, self.shop.clock)
        self.settlements = MerchantSettlements(self.shop.app, self.lines)
        self.card = self.shop.open_card()

    @property
    def payouts(self) -> Any:
        return self.shop.app.payouts

    def consume(self, price: int) -> UUID:
        consumption = uuid4()
        self.shop.app.consume(consumption, self.shop.merchant, self.card, Money(price))
        self.lines.follow()
        return consumption

    def refund(self, consumption: UUID) -> None:
        self.shop.app.refund_consumption(uuid4(), self.shop.merchant, consumption)
        self.lines.follow()

    def at(self, text: str) -> None:
        self.shop.clock.now = datetime.fromisoformat(text).replace(tzinfo=UTC)

    def settle(self, period: str, close_now: bool = False) -> MerchantSettlement:
        return self.settlements.open(self.shop.merchant, period, close_now)

    def payable(self) -> int:
        return self.balance(accounts.merchant_payable(self.shop.merchant))

    def balance(self, account: str) -> int:
        return self.shop.ledger()[account]


@pytest.fixture
def till() -> Till:
    return Till()


def test_a_closed_day_is_paid_what_its_consumptions_owe_the_merchant(till: Till) -> None:
    till.consume(10_000)  # 80 % of 100.00 to the merchant
    till.consume(5_000)
    till.at("2024-03-10T17:00:00")

    settlement = till.settle(DAY)

    assert settlement.status == "paid"
    assert settlement.id == settlement_id(till.shop.merchant, datetime(2024, 3, 10).date())
    total = settlement.totals["CNY"]
    assert (total.consumptions, total.refunds, total.amount) == (12_000, 0, 12_000)
    assert till.payouts.asked == [payout_id(settlement.id, "CNY")]
    assert till.payouts.paid_out == 12_000
    assert till.payable() == 0
    assert till.balance(accounts.external_payouts("CNY")) == 12_000


def test_each_day_takes_only_what_was_recorded_before_it_ended_in_the_merchants_zone(
    till: Till,
) -> None:
    till.consume(10_000)
    till.at("2024-03-10T16:30:00")  # 00:30 on the 11th in Shanghai
    till.consume(2_500)
    till.at("2024-03-12T01:00:00")

    first = till.settle(DAY)
    second = till.settle(NEXT_DAY)

    assert first.totals["CNY"].amount == 8_000
    assert second.totals["CNY"].amount == 2_000
    assert till.payouts.paid_out == 10_000
    assert till.payable() == 0


def test_a_day_not_over_in_the_merchants_zone_is_refused_and_records_nothing(till: Till) -> None:
    till.consume(10_000)
    till.at("2024-03-10T15:59:59")
    recorded = till.shop.app.recorder.max_notification_id()

    with pytest.raises(PeriodNotClosed):
        till.settle(DAY)
    with pytest.raises(InvalidPeriod):
        till.settle("2024-3-10")
    with pytest.raises(InvalidPeriod):
        till.settle("2024-02-30")
    with pytest.raises(PeriodNotClosed):
        till.settle("9999-12-31")
    with pytest.raises(NotFound):
        till.settlements.open(uuid4(), "2024-03-01")
    with pytest.raises(Unavailable):
        MerchantSettlements(Cards(env={}), till.lines).open(till.shop.merchant, "2024-03-01")

    assert till.shop.app.recorder.max_notification_id() == recorded
    assert till.payouts.asked == []


def test_close_now_settles_today_as_if_it_had_ended_and_a_later_line_goes_to_the_next_day(
    till: Till,
) -> None:
    till.consume(10_000)
    till.at("2024-03-10T05:00:00")

    today = till.settle(DAY, close_now=True)
    till.consume(1_000)
    till.at("2024-03-11T17:00:00")
    tomorrow = till.settle(NEXT_DAY)

    assert today.totals["CNY"].amount == 8_000
    assert tomorrow.totals["CNY"].amount == 800
    assert till.payouts.paid_out == 8_800
    with pytest.raises(PeriodNotClosed):
        till.settle("2024-03-13", close_now=True)  # not today: close_now settles today only


def test_opening_the_same_period_again_answers_the_same_settlement_and_pays_nothing_more(
    till: Till,
) -> None:
    till.consume(10_000)
    till.at("2024-03-11T00:00:00")
    first = till.settle(DAY)
    till.consume(10_000)  # on the 11th: not this settlement's

    again = till.settle(DAY)

    assert again.id == first.id
    assert again.version == first.version
    assert again.totals["CNY"].amount == 8_000
    assert till.payouts.asked == [payout_id(first.id, "CNY")]


def test_a_refund_of_a_consumption_settled_earlier_reduces_the_next_period(till: Till) -> None:
    paid_then = till.consume(10_000)
    till.at("2024-03-10T17:00:00")
    till.settle(DAY)
    till.consume(5_000)
    till.refund(paid_then)
    till.at("2024-03-11T17:00:00")

    later = till.settle(NEXT_DAY)

    total = later.totals["CNY"]
    assert (total.consumptions, total.refunds, total.amount) == (4_000, -8_000, -4_000)
    assert later.status == "paid" and later.unpaid() == []
    assert till.payouts.paid_out == 8_000
    assert till.payable() == -4_000  # the merchant owes it back: carried, never paid negative


def test_a_negative_period_is_carried_and_taken_from_the_next_payout(till: Till) -> None:
    paid_then = till.consume(10_000)
    till.at("2024-03-10T17:00:00")
    till.settle(DAY)
    till.refund(paid_then)
    till.at("2024-03-11T17:00:00")
    carried = till.settle(NEXT_DAY)
    till.consume(15_000)
    till.at("2024-03-12T17:00:00")

    after = till.settle("2024-03-12")

    assert carried.totals["CNY"].carried_forward == -8_000
    total = after.totals["CNY"]
    assert (total.consumptions, total.carried_in, total.amount) == (12_000, -8_000, 4_000)
    assert till.payouts.paid_out == 8_000 + 4_000
    assert till.payable() == 0


def test_a_refund_in_the_same_period_cancels_its_consumption(till: Till) -> None:
    refunded = till.consume(10_000)
    till.consume(2_000)
    till.refund(refunded)
    till.at("2024-03-10T17:00:00")

    settlement = till.settle(DAY)

    total = settlement.totals["CNY"]
    assert (total.consumptions, total.refunds, total.amount) == (9_600, -8_000, 1_600)
    kinds = sorted(line.kind for line in settlement.lines)
    assert kinds == ["consumption", "consumption", "refund"]
    assert till.payouts.paid_out == 1_600


def test_a_payout_whose_answer_is_lost_stays_paying_and_is_paid_once_by_the_retry(
    till: Till,
) -> None:
    till.consume(10_000)
    till.at("2024-03-10T17:00:00")
    till.payouts.answers_to_lose = 1

    left = till.settle(DAY)
    assert left.status == "paying"
    assert till.payable() == 8_000
    assert till.shop.app.repository.get(left.id).payouts["CNY"]["status"] == "pending"

    retried = till.settlements.advance(left.id)

    assert retried.status == "paid"
    assert till.payouts.asked == [payout_id(left.id, "CNY")] * 2
    assert till.payouts.paid_out == 8_000
    assert till.payable() == 0


class RefusingOnce:
    """A payout provider that refuses the first time (the operator's account was short) and
    pays when asked again with the same id."""

    def __init__(self) -> None:
        self.asked: list[UUID] = []

    def pay_out(self, payout: UUID, payee_id: UUID, amount: Money) -> PayoutResult:
        self.asked.append(payout)
        if len(self.asked) == 1:
            return PayoutResult(paid=False, reason="insufficient funds at the bank")
        return PayoutResult(paid=True, reference=f"bank-{payout.hex}")


def test_a_refused_payout_keeps_the_settlement_paying_and_is_asked_again_with_its_id(
    till: Till,
) -> None:
    bank = RefusingOnce()
    till.shop.app.payouts = bank
    till.consume(10_000)
    till.at("2024-03-10T17:00:00")

    refused = till.settle(DAY)
    assert refused.status == "paying"
    assert refused.payouts["CNY"]["failure"] == "insufficient funds at the bank"
    assert till.payable() == 8_000

    paid = till.settlements.advance(refused.id)

    assert paid.status == "paid"
    assert bank.asked == [payout_id(refused.id, "CNY")] * 2
    assert till.payable() == 0


def test_a_day_without_lines_is_paid_nothing(till: Till) -> None:
    till.at("2024-03-10T17:00:00")

    settlement = till.settle(DAY)

    assert settlement.status == "paid"
    assert settlement.totals == {}
    assert till.payouts.asked == []


def test_a_merchant_sees_its_own_settlements_only(till: Till) -> None:
    till.consume(10_000)
    till.at("2024-03-10T17:00:00")
    settlement = till.settle(DAY)

    assert till.settlements.settlement_of(till.shop.merchant, settlement.id) == settlement
    with pytest.raises(NotFound):
        till.settlements.settlement_of(uuid4(), settlement.id)
    with pytest.raises(NotFound):
        till.settlements.settlement(uuid4())


def test_every_settlement_movement_is_balanced_and_the_trial_balance_stays_zero(
    till: Till,
) -> None:
    first = till.consume(10_000)
    till.at("2024-03-10T17:00:00")
    till.settle(DAY)
    till.refund(first)
    till.consume(30_000)
    till.at("2024-03-11T17:00:00")
    till.settle(NEXT_DAY)

    totals: dict[str, int] = {}
    for notification in till.shop.app.recorder.select_notifications(start=1, limit=10_000):
        event = till.shop.app.mapper.to_domain_event(notification)
        for leg in getattr(event, "postings", None) or ():
            totals[leg.asset] = totals.get(leg.asset, 0) + leg.amount
    assert totals == {"CNY": 0}
    assert till.payable() == 0
    assert till.payouts.paid_out == 8_000 + 24_000 - 8_000


def test_each_currency_is_paid_by_a_payout_of_its_own(till: Till) -> None:
    shop = till.shop
    dollars = uuid4()
    shop.app.publish_activity(dollars, shop.merchant, Money(10_000, "USD"), None, 9000)
    usd_card = shop.app.buy_card(uuid4(), shop.owner, dollars).id
    till.consume(10_000)
    shop.app.consume(uuid4(), shop.merchant, usd_card, Money(1_000, "USD"))
    till.lines.follow()
    till.at("2024-03-10T17:00:00")

    settlement = till.settle(DAY)

    assert {c: t.amount for c, t in settlement.totals.items()} == {"CNY": 8_000, "USD": 900}
    assert sorted(till.payouts.asked) == sorted(
        [payout_id(settlement.id, "CNY"), payout_id(settlement.id, "USD")]
    )
    assert settlement.status == "paid"
    assert till.balance(accounts.external_payouts("USD")) == 900


# ---------------------------------------------------------------------------------------------
# A state machine over days: consumptions, refunds, settlements of closed days in any order,
# payout answers lost. After every step: no line is in two settlements, no payout is negative
# or made twice, and the merchant's payable is exactly what is not paid yet.


class SettlementMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.till = Till()
        self.consumptions: list[UUID] = []
        self.refunded: set[UUID] = set()
        self.opened: set[UUID] = set()

    @initialize(price=st.integers(min_value=1, max_value=50_000))
    def the_first_consumption(self, price: int) -> None:
        self.consume(price)

    @rule(price=st.integers(min_value=1, max_value=50_000))
    def consume(self, price: int) -> None:
        try:
            self.consumptions.append(self.till.consume(price))
        except InsufficientBalance:
            return

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        open_ones = [c for c in self.consumptions if c not in self.refunded]
        if not open_ones:
            return
        chosen = data.draw(st.sampled_from(open_ones))
        self.till.refund(chosen)
        self.refunded.add(chosen)

    @rule(hours=st.sampled_from([6, 12]))
    def time_passes(self, hours: int) -> None:
        self.till.shop.clock.advance(hours=hours)

    @rule(lose=st.booleans())
    def a_day_passes_and_is_settled(self, lose: bool) -> None:
        self.till.shop.clock.advance(hours=24)
        self.settle(back=0, lose=lose)

    @rule(back=st.integers(min_value=1, max_value=3), lose=st.booleans())
    def an_earlier_day_is_settled(self, back: int, lose: bool) -> None:
        self.settle(back, lose)

    def settle(self, back: int, lose: bool) -> None:
        now = self.till.shop.clock()
        day = now.astimezone(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=1 + back)
        self.till.payouts.answers_to_lose = 1 if lose else 0
        self.opened.add(self.till.settle(day.isoformat()).id)

    @rule()
    def sweep(self) -> None:
        self.till.payouts.answers_to_lose = 0
        for settlement in self.settlements():
            self.till.settlements.advance(settlement.id)

    def settlements(self) -> list[MerchantSettlement]:
        return [self.till.settlements.settlement(opened) for opened in self.opened]

    @invariant()
    def each_line_is_settled_once_and_the_payable_is_what_is_not_paid(self) -> None:
        self.till.lines.follow()
        settlements = self.settlements()
        taken = [line.id for s in settlements for line in s.lines]
        assert len(taken) == len(set(taken)), "a line was settled twice"
        payouts = self.till.payouts
        owed_payouts = {
            payout_id(s.id, c): p["amount"] for s in settlements for c, p in s.payouts.items()
        }
        for made, (_, amount) in payouts.answers.items():
            assert owed_payouts[made] == amount.amount > 0, "a payout of a settlement, positive"
        paid = sum(
            p["amount"] for s in settlements for p in s.payouts.values() if p["status"] == "paid"
        )
        made_unrecorded = sum(
            amount.amount
            for s in settlements
            for made, amount in s.unpaid()
            if made in payouts.answers
        )
        assert payouts.paid_out == paid + made_unrecorded, "made once, recorded or to be"
        merchant = self.till.shop.merchant
        all_lines = self.till.lines.lines.values()
        owed = sum(line.amount.amount for line, _ in all_lines if line.merchant_id == merchant)
        assert self.till.payable() == owed - paid
        unsettled = sum(
            line.amount.amount
            for line, settled in all_lines
            if settled is None and line.merchant_id == merchant
        )
        in_flight = sum(amount.amount for s in settlements for _, amount in s.unpaid())
        book = self.till.settlements.book(merchant)
        assert self.till.payable() == unsettled + in_flight + sum(book.carry.values())
        assert all(v < 0 for v in book.carry.values())


SettlementMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSettlementMachine = SettlementMachine.TestCase
