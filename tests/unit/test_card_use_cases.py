"""The card use cases that move money outside the ledger, with fakes of the payment, payout
and member-token ports: what is charged, given back and paid out, and what is recorded."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from ledger import accounts
from ledger.cards.application import Cards
from ledger.errors import CardExpired, NotFound, PaymentDeclined, Unavailable
from ledger.money import Money
from tests.card_fakes import FakeMemberTokens, FakePayments, FakePayouts

PAY, BONUS, MAIN_BP = 100_000, 10_000, 8000


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 3, 10, 4, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Shop:
    """A tea house with one activity (pay 1000.00, bonus 100.00, 80%), an owner and a friend."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.payments, self.payouts, self.tokens = FakePayments(), FakePayouts(), FakeMemberTokens()
        self.app = Cards(
            env={},
            clock=self.clock,
            payments=self.payments,
            payouts=self.payouts,
            tokens=self.tokens,
        )
        self.merchant, self.activity = uuid4(), uuid4()
        self.app.register_merchant(self.merchant, "Tea house", "Asia/Shanghai")
        self.app.publish_activity(self.activity, self.merchant, Money(PAY), Money(BONUS), MAIN_BP)
        self.owner, self.friend = uuid4(), uuid4()
        self.app.register_member(self.owner, "Owner", "13800138000")
        self.app.register_member(self.friend, "Friend", "13800138001")

    def buy_card(self) -> UUID:
        return self.app.buy_card(uuid4(), self.owner, self.activity).id

    def share(self, card: UUID, **terms: datetime) -> UUID:
        return self.app.share_card(uuid4(), self.owner, card, 9000, 0, self.friend, **terms).id

    def owner_earns(self, amount: int) -> None:
        """The friend consumes on a card the owner shared at 90%: the owner earns 10%."""
        shared = self.share(self.buy_card())
        self.app.consume(uuid4(), self.merchant, shared, Money(amount * 10))

    def recorded(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def ledger(self, account: str) -> int:
        total = 0
        for notification in self.app.recorder.select_notifications(start=1, limit=100_000):
            postings = getattr(self.app.mapper.to_domain_event(notification), "postings", None)
            total += sum(leg.amount for leg in postings or () if leg.account == account)
        return total


@pytest.fixture
def shop() -> Shop:
    return Shop()


# buying a card


def test_buying_a_card_charges_the_activitys_pay_keyed_by_the_card(shop: Shop) -> None:
    card = shop.buy_card()
    assert shop.payments.charged == {card: Money(PAY)}
    assert shop.app.main_card(card).balance == PAY + BONUS
    assert shop.ledger(accounts.external_payments("CNY")) == -PAY


def test_a_declined_payment_records_nothing(shop: Shop) -> None:
    shop.payments.declining = True
    before, card = shop.recorded(), uuid4()
    with pytest.raises(PaymentDeclined):
        shop.app.buy_card(card, shop.owner, shop.activity)
    assert shop.recorded() == before
    assert shop.payments.kept == 0
    with pytest.raises(NotFound):
        shop.app.main_card(card)


def test_a_card_that_cannot_be_recorded_after_payment_gets_its_payment_back(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    def store_down(*_aggregates: object) -> None:
        raise OSError("the event store went away")

    monkeypatch.setattr(shop.app, "save", store_down)
    card = uuid4()
    with pytest.raises(OSError):
        shop.app.buy_card(card, shop.owner, shop.activity)
    assert shop.payments.refunded == [card]
    assert shop.payments.kept == 0


def test_buying_again_with_the_same_card_id_charges_once(shop: Shop) -> None:
    card = shop.buy_card()
    before = shop.recorded()
    again = shop.app.buy_card(card, shop.owner, shop.activity)
    assert again.id == card
    assert shop.payments.asked == [card]
    assert shop.recorded() == before


def test_an_unknown_activity_charges_nothing(shop: Shop) -> None:
    with pytest.raises(NotFound):
        shop.app.buy_card(uuid4(), shop.owner, uuid4())
    assert shop.payments.asked == []


# consuming with a shared card


def test_a_shared_cards_holder_pays_the_shared_discount_for_the_consumption(shop: Shop) -> None:
    shared = shop.share(shop.buy_card())
    consumption = shop.app.consume(uuid4(), shop.merchant, shared, Money(10_001))
    assert shop.payments.charged[consumption.id] == consumption.consumer_pays == Money(9001)


def test_a_shared_consumption_refused_after_the_holder_paid_gives_the_payment_back(
    shop: Shop,
) -> None:
    shared = shop.share(shop.buy_card(), expires_at=shop.clock.now + timedelta(hours=1))
    kept, before, consumption = shop.payments.kept, shop.recorded(), uuid4()

    def slow_payment() -> None:
        shop.clock.now += timedelta(hours=2)  # the card expires while the payment is in flight

    shop.payments.while_charging = slow_payment
    with pytest.raises(CardExpired):
        shop.app.consume(consumption, shop.merchant, shared, Money(1000))
    assert shop.payments.refunded == [consumption]
    assert shop.payments.kept == kept
    assert shop.recorded() == before


def test_a_declined_payment_at_the_till_records_nothing(shop: Shop) -> None:
    shared = shop.share(shop.buy_card())
    shop.payments.declining = True
    before = shop.recorded()
    with pytest.raises(PaymentDeclined):
        shop.app.consume(uuid4(), shop.merchant, shared, Money(1000))
    assert shop.recorded() == before
    assert shop.app.wallet(shop.owner).posted == {}


def test_a_repeated_consumption_id_charges_the_holder_once(shop: Shop) -> None:
    shared = shop.share(shop.buy_card())
    consumption = uuid4()
    first = shop.app.consume(consumption, shop.merchant, shared, Money(1000))
    before = shop.recorded()
    again = shop.app.consume(consumption, shop.merchant, shared, Money(1000))
    assert again.id == first.id
    assert shop.payments.asked.count(consumption) == 1
    assert shop.recorded() == before


def test_a_main_card_consumption_charges_nobody(shop: Shop) -> None:
    card = shop.buy_card()
    shop.app.consume(uuid4(), shop.merchant, card, Money(1000))
    assert shop.payments.asked == [card]


# refunds


def test_refunding_a_shared_consumption_gives_the_holder_their_payment_back(shop: Shop) -> None:
    shared = shop.share(shop.buy_card())
    consumption = shop.app.consume(uuid4(), shop.merchant, shared, Money(1000))
    refund_id = uuid4()
    shop.app.refund_consumption(refund_id, shop.merchant, consumption.id)
    shop.app.refund_consumption(refund_id, shop.merchant, consumption.id)
    assert shop.payments.refunded == [consumption.id]
    assert shop.app.consumption(consumption.id).refunded
    assert shop.app.wallet(shop.owner).posted["CNY"] == 0


def test_refunding_a_main_card_consumption_gives_no_payment_back(shop: Shop) -> None:
    card = shop.buy_card()
    consumption = shop.app.consume(uuid4(), shop.merchant, card, Money(1000))
    shop.app.refund_consumption(uuid4(), shop.merchant, consumption.id)
    assert shop.payments.refunded == []
    assert shop.app.main_card(card).balance == PAY + BONUS


# withdrawals


def test_a_paid_withdrawal_moves_the_money_out_of_the_wallet(shop: Shop) -> None:
    shop.owner_earns(3000)
    withdrawal = shop.app.withdraw(uuid4(), shop.owner, Money(1000))
    assert withdrawal.status == "paid"
    assert shop.payouts.asked == [withdrawal.id]
    assert shop.app.wallet(shop.owner).available("CNY") == 2000


def test_a_payout_that_fails_releases_the_hold(shop: Shop) -> None:
    shop.owner_earns(3000)
    shop.payouts.refusing = True
    withdrawal = shop.app.withdraw(uuid4(), shop.owner, Money(1000))
    assert (withdrawal.status, withdrawal.failure) == ("failed", "the bank said no")
    wallet = shop.app.wallet(shop.owner)
    assert (wallet.posted["CNY"], wallet.held["CNY"], wallet.available("CNY")) == (3000, 0, 3000)
    assert shop.payouts.paid_out == 0


def test_a_payout_whose_answer_is_lost_is_paid_once_when_the_withdrawal_is_retried(
    shop: Shop,
) -> None:
    shop.owner_earns(3000)
    shop.payouts.answers_to_lose = 1
    withdrawal = uuid4()
    with pytest.raises(ConnectionError):
        shop.app.withdraw(withdrawal, shop.owner, Money(1000))
    assert shop.app.withdrawal(withdrawal).status == "pending"
    assert shop.app.wallet(shop.owner).held["CNY"] == 1000

    retried = shop.app.withdraw(withdrawal, shop.owner, Money(1000))

    assert retried.status == "paid"
    assert shop.payouts.asked == [withdrawal, withdrawal]
    assert shop.payouts.paid_out == 1000
    wallet = shop.app.wallet(shop.owner)
    assert (wallet.posted["CNY"], wallet.held["CNY"]) == (2000, 0)
    assert shop.ledger(accounts.external_payouts("CNY")) == 1000


def test_a_finished_withdrawal_asked_again_asks_the_payout_nothing(shop: Shop) -> None:
    shop.owner_earns(3000)
    withdrawal = shop.app.withdraw(uuid4(), shop.owner, Money(1000)).id
    again = shop.app.withdraw(withdrawal, shop.owner, Money(1000))
    assert again.status == "paid"
    assert shop.payouts.asked == [withdrawal]


# members


def test_registering_a_member_issues_a_token_of_which_only_the_hash_is_kept(shop: Shop) -> None:
    member_id = uuid4()
    member, token = shop.app.register_member(member_id, "Dave", "13800138002")
    assert member.id == member_id
    assert shop.tokens.hashes[member_id] == hashlib.sha256(token.encode()).digest()
    assert token.encode() not in shop.tokens.hashes.values()


# without the ports


def test_without_gateways_or_a_token_store_the_use_cases_are_unavailable(shop: Shop) -> None:
    bare = Cards(env={}, clock=shop.clock)
    bare.register_merchant(shop.merchant, "Tea house", "Asia/Shanghai")
    bare.publish_activity(shop.activity, shop.merchant, Money(PAY), None, MAIN_BP)
    before = bare.recorder.max_notification_id()
    with pytest.raises(Unavailable):
        bare.register_member(shop.owner, "Owner", "13800138000")
    with pytest.raises(Unavailable):
        bare.buy_card(uuid4(), shop.owner, shop.activity)
    with pytest.raises(Unavailable):
        bare.withdraw(uuid4(), shop.owner, Money(1000))
    assert bare.recorder.max_notification_id() == before
