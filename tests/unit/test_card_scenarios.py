"""Member cards as scenarios in the domain's words, on the in-memory event store."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from ledger import accounts
from ledger.cards.application import Cards
from ledger.cards.consumptions import Consumption
from ledger.cards.intimate import IntimateCard
from ledger.errors import (
    AlreadyExists,
    CardExpired,
    CardFrozen,
    CardNotAccepted,
    CardNotPassable,
    CardRevoked,
    CurrencyMismatch,
    DiscountBelowMain,
    InsufficientBalance,
    InvalidAmount,
    InvalidRatio,
    InvalidTimezone,
    LimitExceeded,
    NotCardHolder,
    NotFound,
    NotPermitted,
    ShareDepthExceeded,
    StateConflict,
)
from ledger.money import Money
from ledger.postings import Postings
from tests.card_fakes import FakeMemberTokens, FakePayments, FakePayouts

PAY, BONUS, MAIN_BP = 100_000, 10_000, 8000


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Shop:
    """A tea house in Shanghai with one activity (pay 1000.00, bonus 100.00, 80%), and members."""

    def __init__(self, env: dict[str, str] | None = None, shared_cap_bp: int | None = None):
        self.clock = Clock(datetime(2024, 3, 10, 4, 0, tzinfo=UTC))
        self.payments = FakePayments()
        self.app = Cards(
            env=env,
            clock=self.clock,
            payments=self.payments,
            payouts=FakePayouts(),
            tokens=FakeMemberTokens(),
        )
        self.merchant = uuid4()
        self.app.register_merchant(self.merchant, "Tea house", "Asia/Shanghai")
        self.activity = uuid4()
        self.app.publish_activity(
            self.activity, self.merchant, Money(PAY), Money(BONUS), MAIN_BP, shared_cap_bp
        )
        self.owner, self.alice, self.bob, self.carol = (self.member(n) for n in "OABC")

    def member(self, name: str) -> UUID:
        member_id = uuid4()
        self.app.register_member(member_id, name, "13800138000")
        return member_id

    def open_card(self, owner: UUID | None = None) -> UUID:
        return self.app.buy_card(uuid4(), owner or self.owner, self.activity).id

    def share(
        self, card: UUID, to: UUID | None, bp: int = 9000, ratio: int = 3000, **terms: Any
    ) -> UUID:
        return self.app.share_card(uuid4(), self.owner, card, bp, ratio, to, **terms).id

    def consume(self, card: UUID, price: int) -> Consumption:
        return self.app.consume(uuid4(), self.merchant, card, Money(price))

    def balance(self, card: UUID) -> int:
        return self.app.main_card(card).balance

    def wallet(self, member: UUID) -> int:
        return self.app.wallet(member).posted.get("CNY", 0)

    def recorded(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def ledger(self) -> Counter[str]:
        """Every posting in the log, summed per account."""
        totals: Counter[str] = Counter()
        for notification in self.app.recorder.select_notifications(start=1, limit=100_000):
            postings = getattr(self.app.mapper.to_domain_event(notification), "postings", None)
            for leg in postings or ():
                totals[leg.account] += leg.amount
        return totals


@pytest.fixture
def shop() -> Shop:
    return Shop()


# main cards


def test_opening_a_card_stores_what_was_paid_plus_the_merchants_bonus(shop: Shop) -> None:
    card = shop.open_card()
    assert shop.balance(card) == PAY + BONUS
    ledger = shop.ledger()
    assert ledger[accounts.card_balance(card)] == PAY + BONUS
    assert ledger[accounts.external_payments("CNY")] == -PAY
    assert ledger[accounts.merchant_promotions(shop.merchant)] == -BONUS
    assert shop.app.member(shop.owner).card_ids == [card]


def test_the_owner_consumes_at_the_main_discount_rounded_half_up(shop: Shop) -> None:
    card = shop.open_card()
    consumption = shop.consume(card, 10001)
    assert consumption.card_debited == Money(8001)
    assert consumption.consumer_pays == Money(0)
    assert [(s["account"], s["amount"]) for s in consumption.splits] == [
        (accounts.merchant_payable(shop.merchant), 8001)
    ]
    assert shop.balance(card) == PAY + BONUS - 8001


def test_a_consumption_past_the_balance_is_refused_and_records_nothing(shop: Shop) -> None:
    card = shop.open_card()
    shop.consume(card, 137_500)  # draws 110000, all of it
    before = shop.recorded()
    with pytest.raises(InsufficientBalance):
        shop.consume(card, 2)
    assert shop.recorded() == before
    assert shop.balance(card) == 0


def test_bad_input_is_refused_and_records_nothing(shop: Shop) -> None:
    card = shop.open_card()
    before = shop.recorded()
    with pytest.raises(InvalidAmount):
        shop.consume(card, -100)
    with pytest.raises(InvalidAmount):
        shop.consume(card, 0)
    with pytest.raises(CurrencyMismatch):
        shop.app.consume(uuid4(), shop.merchant, card, Money(100, "USD"))
    with pytest.raises(InvalidRatio):
        shop.app.publish_activity(uuid4(), shop.merchant, Money(100), None, 10_001)
    with pytest.raises(InvalidRatio):
        shop.share(card, shop.alice, bp=9000, ratio=10_000)
    with pytest.raises(DiscountBelowMain):
        shop.share(card, shop.alice, bp=7999)
    with pytest.raises(InvalidTimezone):
        shop.app.register_merchant(uuid4(), "Nowhere", "Mars/Olympus")
    with pytest.raises(NotFound):
        shop.app.consume(uuid4(), uuid4(), card, Money(100))
    assert shop.recorded() == before


def test_another_merchants_till_does_not_know_the_card(shop: Shop) -> None:
    card = shop.open_card()
    other = uuid4()
    shop.app.register_merchant(other, "Noodle bar", "Asia/Shanghai")
    with pytest.raises(NotFound):
        shop.app.consume(uuid4(), other, card, Money(1000))


def test_a_member_sees_only_their_own_cards(shop: Shop) -> None:
    card = shop.open_card()
    assert shop.app.card_for(shop.owner, card).id == card
    with pytest.raises(NotFound):
        shop.app.card_for(shop.alice, card)
    with pytest.raises(NotFound):
        shop.app.share_card(uuid4(), shop.alice, card, 9000, 3000, shop.bob)


def test_a_repeated_command_records_once(shop: Shop) -> None:
    card = shop.open_card()
    consumption_id = uuid4()
    shop.app.consume(consumption_id, shop.merchant, card, Money(1000))
    before = shop.recorded()
    again = shop.app.consume(consumption_id, shop.merchant, card, Money(1000))
    assert again.id == consumption_id
    assert shop.recorded() == before
    assert shop.balance(card) == PAY + BONUS - 800


# shared cards


def test_a_shared_consumption_splits_what_the_consumer_pays(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    passed = shop.app.pass_on(uuid4(), shop.alice, shared, shop.bob).id

    consumption = shop.consume(passed, 10001)

    assert consumption.consumer_pays == Money(9001)
    assert consumption.card_debited == Money(0)
    lines = {s["party"]: s["amount"] for s in consumption.splits}
    assert lines == {"merchant": 8001, "sharer": 300, "owner": 700}
    assert shop.balance(card) == PAY + BONUS, "the main card's balance is not drawn"
    assert shop.wallet(shop.alice) == 300
    assert shop.wallet(shop.owner) == 700
    assert shop.ledger()[accounts.user_wallet(shop.alice)] == 300


def test_a_card_the_owner_shared_earns_the_owner_the_whole_margin(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    consumption = shop.consume(shared, 10000)
    assert {s["party"]: s["amount"] for s in consumption.splits} == {
        "merchant": 8000,
        "owner": 1000,
    }


def test_passing_on_needs_commission(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice, ratio=0)
    with pytest.raises(CardNotPassable):
        shop.app.pass_on(uuid4(), shop.alice, shared, shop.bob)


def test_a_shared_card_is_passed_on_at_most_once_after_the_owner_by_default(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    passed = shop.app.pass_on(uuid4(), shop.alice, shared, shop.bob).id
    with pytest.raises(ShareDepthExceeded):
        shop.app.pass_on(uuid4(), shop.bob, passed, shop.carol)


def test_the_depth_of_passing_on_is_a_setting() -> None:
    shop = Shop(env={"CARDS_SHARE_DEPTH": "2"})
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    passed = shop.app.pass_on(uuid4(), shop.alice, shared, shop.bob).id
    again = shop.app.pass_on(uuid4(), shop.bob, passed, shop.carol)
    assert (again.sharer_id, again.depth) == (shop.bob, 2)
    consumption = shop.consume(again.id, 10000)
    assert {s["party"]: s["amount"] for s in consumption.splits} == {
        "merchant": 8000,
        "sharer": 300,
        "owner": 700,
    }, "one level of commission only: the holder who passed it on"


def test_only_the_holder_passes_a_card_on(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    with pytest.raises(NotCardHolder):
        shop.app.pass_on(uuid4(), shop.owner, shared, shop.bob)
    with pytest.raises(NotFound):
        shop.app.pass_on(uuid4(), shop.carol, shared, shop.bob)


def test_expiry_total_cap_and_uses_of_a_shared_card(shop: Shop) -> None:
    card = shop.open_card()
    expiring = shop.share(card, shop.alice, expires_at=shop.clock.now + timedelta(days=1))
    capped = shop.share(card, shop.bob, cap=Money(10_000))
    once = shop.share(card, shop.carol, max_uses=1)

    shop.consume(capped, 10_000)  # pays 9000
    with pytest.raises(LimitExceeded):
        shop.consume(capped, 2000)  # would pay 1800 more
    shop.consume(once, 100)
    with pytest.raises(LimitExceeded):
        shop.consume(once, 100)
    shop.consume(expiring, 100)
    shop.clock.advance(days=1)
    with pytest.raises(CardExpired):
        shop.consume(expiring, 100)


def test_the_merchant_may_cap_shared_consumption_per_main_card() -> None:
    shop = Shop(shared_cap_bp=5000)  # prices up to half of what the owner paid: 50000
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    shop.consume(shared, 40_000)
    with pytest.raises(LimitExceeded):
        shop.consume(shared, 10_001)
    shop.consume(shared, 10_000)


def test_a_published_card_is_listed_and_each_member_claims_their_own(shop: Shop) -> None:
    card = shop.open_card()
    listing = shop.share(card, None)
    assert [c.id for c in shop.app.listings()] == [listing]

    mine = shop.app.claim(uuid4(), shop.alice, listing)
    assert (mine.holder_id, mine.sharer_id, mine.source_id) == (shop.alice, None, listing)
    with pytest.raises(AlreadyExists):
        shop.app.claim(uuid4(), shop.alice, listing)
    with pytest.raises(NotPermitted):
        shop.app.claim(uuid4(), shop.owner, listing)
    with pytest.raises(NotCardHolder):
        shop.consume(listing, 1000)
    assert shop.consume(mine.id, 1000).consumer_pays == Money(900)


def test_a_holder_publishes_a_pass_and_earns_on_whoever_claims_it(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    listing = shop.app.pass_on(uuid4(), shop.alice, shared, None).id
    claimed = shop.app.claim(uuid4(), shop.bob, listing)
    shop.consume(claimed.id, 10_000)
    assert shop.wallet(shop.alice) == 300


def test_expired_listings_are_not_listed_nor_claimed(shop: Shop) -> None:
    card = shop.open_card()
    listing = shop.share(card, None, expires_at=shop.clock.now + timedelta(hours=1))
    shop.clock.advance(hours=2)
    assert shop.app.listings() == []
    with pytest.raises(CardExpired):
        shop.app.claim(uuid4(), shop.alice, listing)


# refunds


def test_a_refund_reverses_the_stored_lines_exactly(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    passed = shop.app.pass_on(uuid4(), shop.alice, shared, shop.bob).id
    consumption = shop.consume(passed, 10001)

    refund = shop.app.refund_consumption(uuid4(), shop.merchant, consumption.id)

    reversed_legs = {(leg.account, -leg.amount) for leg in consumption.postings}
    assert {(leg.account, leg.amount) for leg in refund.postings} == reversed_legs
    assert shop.wallet(shop.alice) == 0
    assert shop.wallet(shop.owner) == 0
    assert shop.app.shared_card(passed).uses == 0
    with pytest.raises(StateConflict):
        shop.app.refund_consumption(uuid4(), shop.merchant, consumption.id)
    ledger = shop.ledger()
    assert ledger[accounts.merchant_payable(shop.merchant)] == 0


def test_commission_already_withdrawn_leaves_a_negative_wallet_that_later_commission_repays(
    shop: Shop,
) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    consumption = shop.consume(shared, 10_000)  # owner earns 1000
    withdrawal = shop.app.request_withdrawal(uuid4(), shop.owner, Money(1000))
    shop.app.finish_withdrawal(withdrawal.id, paid=True, detail="ref-1")

    shop.app.refund_consumption(uuid4(), shop.merchant, consumption.id)
    assert shop.wallet(shop.owner) == -1000
    with pytest.raises(InsufficientBalance):
        shop.app.request_withdrawal(uuid4(), shop.owner, Money(1))

    shop.consume(shared, 20_000)  # owner earns 2000
    assert shop.wallet(shop.owner) == 1000


def test_refunding_a_main_card_consumption_restores_the_balance(shop: Shop) -> None:
    card = shop.open_card()
    consumption = shop.consume(card, 10_000)
    shop.app.refund_consumption(uuid4(), shop.merchant, consumption.id)
    assert shop.balance(card) == PAY + BONUS
    with pytest.raises(NotFound):
        shop.app.refund_consumption(uuid4(), uuid4(), consumption.id)


# intimate cards


def offer(shop: Shop, card: UUID, monthly: int = 50_000, **limits: int) -> IntimateCard:
    money = {name: Money(amount) for name, amount in limits.items()}
    return shop.app.offer_intimate(
        uuid4(),
        shop.owner,
        card,
        shop.alice,
        Money(monthly),
        money.get("per_use_limit"),
        money.get("total_limit"),
        show_details=False,
    )


def test_an_intimate_card_draws_from_the_main_card_and_the_holder_pays_nothing(
    shop: Shop,
) -> None:
    card = shop.open_card()
    intimate = offer(shop, card).id
    shop.app.accept_intimate(intimate, shop.alice)
    consumption = shop.consume(intimate, 10_000)
    assert (consumption.consumer_pays, consumption.card_debited) == (Money(0), Money(8000))
    assert shop.balance(card) == PAY + BONUS - 8000
    assert shop.app.intimate_card(intimate).drawn_total == 8000


def test_an_intimate_card_is_used_only_after_acceptance_within_24_hours(shop: Shop) -> None:
    card = shop.open_card()
    first = offer(shop, card).id
    with pytest.raises(CardNotAccepted):
        shop.consume(first, 1000)
    with pytest.raises(NotCardHolder):
        shop.app.accept_intimate(first, shop.owner)
    shop.clock.advance(hours=23, minutes=59)
    shop.app.accept_intimate(first, shop.alice)

    late = offer(shop, card).id
    shop.clock.advance(hours=24, seconds=1)
    with pytest.raises(CardExpired):
        shop.app.accept_intimate(late, shop.alice)
    with pytest.raises(CardExpired):
        shop.consume(late, 1000)
    assert shop.app.intimate_card(late).status(shop.clock.now) == "lapsed"


def test_limits_per_use_per_month_and_in_total(shop: Shop) -> None:
    card = shop.open_card()
    intimate = offer(shop, card, monthly=10_000, per_use_limit=6000, total_limit=15_000).id
    shop.app.accept_intimate(intimate, shop.alice)
    with pytest.raises(LimitExceeded):
        shop.consume(intimate, 7600)  # draws 6080 > 6000 per use
    shop.consume(intimate, 7500)  # 6000
    with pytest.raises(LimitExceeded):
        shop.consume(intimate, 5001)  # 4001 > 4000 left this month
    shop.consume(intimate, 5000)  # 4000: month full
    shop.clock.now = datetime(2024, 3, 31, 16, 0, tzinfo=UTC)  # April 1st, 00:00 in Shanghai
    shop.consume(intimate, 5000)  # 4000 of a new month; 14000 in total
    with pytest.raises(LimitExceeded):
        shop.consume(intimate, 1500)  # 1200 > 1000 left in total
    assert shop.app.intimate_card(intimate).drawn_by_month == {"2024-03": 10_000, "2024-04": 4000}


def test_the_month_is_the_merchants_calendar_month(shop: Shop) -> None:
    card = shop.open_card()
    intimate = offer(shop, card, monthly=8000).id
    shop.app.accept_intimate(intimate, shop.alice)
    shop.clock.now = datetime(2024, 3, 31, 15, 59, tzinfo=UTC)  # 23:59 on March 31st there
    shop.consume(intimate, 10_000)
    shop.clock.advance(minutes=1)  # midnight in Shanghai, still March in UTC
    shop.consume(intimate, 10_000)


def test_the_balance_bounds_an_intimate_card_too(shop: Shop) -> None:
    card = shop.open_card()
    intimate = offer(shop, card, monthly=1_000_000).id
    shop.app.accept_intimate(intimate, shop.alice)
    shop.consume(card, 100_000)  # draws 80000; 30000 left
    with pytest.raises(InsufficientBalance):
        shop.consume(intimate, 40_000)  # 32000


def test_freeze_unfreeze_and_revoke(shop: Shop) -> None:
    card = shop.open_card()
    intimate = offer(shop, card).id
    shop.app.accept_intimate(intimate, shop.alice)
    with pytest.raises(NotPermitted):
        shop.app.freeze(intimate, shop.alice)
    shop.app.freeze(intimate, shop.owner)
    with pytest.raises(CardFrozen):
        shop.consume(intimate, 1000)
    shop.app.unfreeze(intimate, shop.owner)
    shop.consume(intimate, 1000)
    shop.app.revoke(intimate, shop.owner)
    with pytest.raises(CardRevoked):
        shop.consume(intimate, 1000)
    with pytest.raises(CardRevoked):
        shop.app.unfreeze(intimate, shop.owner)
    with pytest.raises(NotFound):
        shop.app.freeze(intimate, shop.bob)


def test_refunding_an_intimate_consumption_gives_back_balance_and_limit(shop: Shop) -> None:
    card = shop.open_card()
    intimate = offer(shop, card, monthly=8000).id
    shop.app.accept_intimate(intimate, shop.alice)
    consumption = shop.consume(intimate, 10_000)
    shop.app.refund_consumption(uuid4(), shop.merchant, consumption.id)
    assert shop.balance(card) == PAY + BONUS
    shop.consume(intimate, 10_000)


# wallets


def test_a_withdrawal_holds_then_pays_out_or_releases(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    shop.consume(shared, 30_000)  # owner earns 3000
    paid = shop.app.request_withdrawal(uuid4(), shop.owner, Money(1000))
    wallet = shop.app.wallet(shop.owner)
    assert (wallet.posted["CNY"], wallet.held["CNY"], wallet.available("CNY")) == (3000, 1000, 2000)
    with pytest.raises(InsufficientBalance):
        shop.app.request_withdrawal(uuid4(), shop.owner, Money(2001))
    failed = shop.app.request_withdrawal(uuid4(), shop.owner, Money(2000))

    shop.app.finish_withdrawal(paid.id, paid=True, detail="ref")
    shop.app.finish_withdrawal(failed.id, paid=False, detail="bank said no")
    again = shop.app.finish_withdrawal(paid.id, paid=False, detail="late")

    assert again.status == "paid"
    wallet = shop.app.wallet(shop.owner)
    assert (wallet.posted["CNY"], wallet.held["CNY"]) == (2000, 0)
    ledger = shop.ledger()
    assert ledger[accounts.user_wallet(shop.owner)] == 2000
    assert ledger[accounts.external_payouts("CNY")] == 1000


def test_every_movement_balances_and_the_trial_balance_is_zero(shop: Shop) -> None:
    card = shop.open_card()
    shared = shop.share(card, shop.alice)
    consumption = shop.consume(shared, 12_345)
    shop.consume(card, 999)
    shop.app.refund_consumption(uuid4(), shop.merchant, consumption.id)
    events = [
        shop.app.mapper.to_domain_event(n)
        for n in shop.app.recorder.select_notifications(start=1, limit=1000)
    ]
    moved = [e.postings for e in events if isinstance(getattr(e, "postings", None), Postings)]
    assert len(moved) == 4
    assert sum(shop.ledger().values()) == 0
