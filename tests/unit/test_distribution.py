"""Channels, funds, prices and stock purchases, in the domain's words, on the in-memory store."""

from __future__ import annotations

import contextlib
from collections import Counter
from copy import deepcopy
from dataclasses import dataclass
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate

from ledger import accounts
from ledger.distribution.application import MAX_TREE_DEPTH, ChannelTreeTooDeep, Distribution
from ledger.distribution.catalogue import Product
from ledger.distribution.channel import Channel
from ledger.errors import (
    ChannelSuspended,
    CurrencyMismatch,
    DomainError,
    InsufficientFunds,
    InsufficientStock,
    InvalidAmount,
    NotFound,
    PriceNotSet,
)
from ledger.money import MAX_AMOUNT, MAX_QUANTITY, Money
from ledger.postings import Posting, Postings

WHOLESALE = 2000
FACE_VALUE = 3000


@dataclass
class World:
    """One platform with one product, a top-level channel, a sub-channel and a grandchild."""

    app: Distribution
    platform: UUID
    product: UUID
    top: UUID
    sub: UUID
    leaf: UUID

    def recorded(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def events(self) -> list[object]:
        notifications = self.app.recorder.select_notifications(start=1, limit=10_000)
        return [self.app.mapper.to_domain_event(n) for n in notifications]

    def funds(self, channel: UUID, currency: str = "CNY") -> int:
        return self.app.channel(channel).funds.get(currency, 0)

    def on_hand(self, channel: UUID) -> int:
        return self.app.channel(channel).stock_of(self.product)

    def deposit(self, channel: UUID, amount: int) -> None:
        self.app.deposit(uuid4(), channel, Money(amount))

    def buy(self, channel: UUID, quantity: int) -> object:
        purchase, _ = self.app.purchase_stock(uuid4(), channel, self.product, quantity)
        return purchase


@pytest.fixture
def world() -> World:
    app = Distribution(env={"CODE_HASH_KEY": "unit-test-code-key"})
    platform, product, top, sub, leaf = uuid4(), uuid4(), uuid4(), uuid4(), uuid4()
    app.register_platform(platform, "iQiyi", "https://gateway.iqiyi.example")
    app.register_product(product, platform, "VIP monthly", 30, Money(FACE_VALUE), Money(WHOLESALE))
    app.register_channel(top, "East region")
    app.register_channel(sub, "Shanghai reseller", parent_id=top)
    app.register_channel(leaf, "Pudong shop", parent_id=sub)
    return World(app, platform, product, top, sub, leaf)


@pytest.fixture
def stocked(world: World) -> World:
    """The top-level channel holds 10 units and sells them to sub-channels at 2500 each."""
    world.deposit(world.top, 100_000)
    world.buy(world.top, 10)
    world.app.set_price(world.top, world.product, Money(2500))
    return world


# Deposits


def test_a_deposit_adds_to_the_channels_funds_from_the_outside_world(world: World) -> None:
    movement = uuid4()
    channel = world.app.deposit(movement, world.sub, Money(12_345))
    assert channel.funds == {"CNY": 12_345}
    assert world.funds(world.sub) == 12_345
    deposit = world.app.repository.get(movement)
    assert deposit.postings == Postings.of(
        (accounts.external_deposits("CNY"), accounts.channel_funds(world.sub), "CNY", 12_345)
    )


def test_deposits_in_different_currencies_are_kept_apart(world: World) -> None:
    world.app.deposit(uuid4(), world.top, Money(100, "USD"))
    world.app.deposit(uuid4(), world.top, Money(700, "CNY"))
    world.app.deposit(uuid4(), world.top, Money(50, "USD"))
    assert world.app.channel(world.top).funds == {"USD": 150, "CNY": 700}


# Top-level purchases


def test_top_level_purchase_at_wholesale_creates_the_platform_payable(world: World) -> None:
    world.deposit(world.top, 100_000)
    movement = uuid4()

    purchase, buyer = world.app.purchase_stock(movement, world.top, world.product, 10)

    assert purchase.unit_price == Money(WHOLESALE)
    assert purchase.total == Money(10 * WHOLESALE)
    assert purchase.seller == f"platform:{world.platform}"
    assert buyer.funds == {"CNY": 100_000 - 10 * WHOLESALE}
    assert buyer.stock_of(world.product) == 10
    assert world.app.stock_purchase(movement).quantity == 10
    unit = accounts.unit_asset(world.product)
    assert set(purchase.postings.legs) == {
        Posting(accounts.channel_funds(world.top), "CNY", -20_000),
        Posting(accounts.platform_payable(world.platform), "CNY", 20_000),
        Posting(accounts.platform_supply(world.platform, world.product), unit, -10),
        Posting(accounts.channel_stock(world.top, world.product), unit, 10),
    }


def test_top_level_purchase_ignores_any_price_the_channel_set_for_its_children(
    world: World,
) -> None:
    world.deposit(world.top, 100_000)
    world.app.set_price(world.top, world.product, Money(9_999))
    purchase = world.buy(world.top, 1)
    assert purchase.unit_price == Money(WHOLESALE)  # type: ignore[attr-defined]
    assert world.funds(world.top) == 100_000 - WHOLESALE


def test_a_purchase_may_spend_the_last_fen(world: World) -> None:
    world.deposit(world.top, 3 * WHOLESALE)
    world.buy(world.top, 3)
    assert world.funds(world.top) == 0
    assert world.on_hand(world.top) == 3


# Sub-channel purchases


def test_sub_channel_buys_at_its_parents_price(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 30_000)
    top_funds_before = w.funds(w.top)

    purchase = w.buy(w.sub, 4)

    assert purchase.unit_price == Money(2500)  # type: ignore[attr-defined]
    assert purchase.seller == f"channel:{w.top}"  # type: ignore[attr-defined]
    assert w.funds(w.sub) == 30_000 - 4 * 2500
    assert w.on_hand(w.sub) == 4
    assert w.funds(w.top) == top_funds_before + 4 * 2500
    assert w.on_hand(w.top) == 10 - 4
    unit = accounts.unit_asset(w.product)
    assert set(purchase.postings.legs) == {  # type: ignore[attr-defined]
        Posting(accounts.channel_funds(w.sub), "CNY", -10_000),
        Posting(accounts.channel_funds(w.top), "CNY", 10_000),
        Posting(accounts.channel_stock(w.top, w.product), unit, -4),
        Posting(accounts.channel_stock(w.sub, w.product), unit, 4),
    }


def test_sub_channel_purchase_leaves_the_platform_out(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 30_000)
    purchase = w.buy(w.sub, 1)
    assert not any(
        leg.account.startswith("platform:")
        for leg in purchase.postings  # type: ignore[attr-defined]
    )


def test_grandchild_buys_from_its_own_parent_not_from_the_top(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 30_000)
    w.buy(w.sub, 5)
    w.app.set_price(w.sub, w.product, Money(2800))
    w.deposit(w.leaf, 10_000)
    top_before = (w.funds(w.top), w.on_hand(w.top))

    purchase = w.buy(w.leaf, 3)

    assert purchase.unit_price == Money(2800)  # type: ignore[attr-defined]
    assert w.on_hand(w.leaf) == 3
    assert w.funds(w.leaf) == 10_000 - 3 * 2800
    assert w.on_hand(w.sub) == 2
    assert w.funds(w.sub) == 30_000 - 5 * 2500 + 3 * 2800
    assert (w.funds(w.top), w.on_hand(w.top)) == top_before


def test_a_purchase_by_a_grandchild_reads_each_channel_of_its_line_once(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 30_000)
    w.buy(w.sub, 5)
    w.app.set_price(w.sub, w.product, Money(2800))
    w.deposit(w.leaf, 10_000)
    reads: Counter[UUID] = Counter()
    read = w.app.channel

    def channel(channel_id: UUID) -> Channel:
        reads[channel_id] += 1
        return read(channel_id)

    w.app.channel = channel  # type: ignore[method-assign]
    w.buy(w.leaf, 1)

    assert reads == {w.leaf: 1, w.sub: 1, w.top: 1}


def test_a_product_is_read_once_for_all_its_purchases(world: World) -> None:
    w = world
    reads: list[UUID] = []
    read = w.app.product

    def product(product_id: UUID) -> Product:
        reads.append(product_id)
        return read(product_id)

    w.app.product = product  # type: ignore[method-assign]
    w.deposit(w.top, 100_000)
    w.buy(w.top, 3)
    w.app.set_price(w.top, w.product, Money(2500))
    w.deposit(w.sub, 30_000)
    w.buy(w.sub, 1)
    w.buy(w.top, 1)

    assert reads == [w.product, w.product]  # the first purchase's, and the price's
    assert (w.on_hand(w.top), w.on_hand(w.sub)) == (3, 1)


def test_a_product_records_nothing_after_its_registration() -> None:
    """Purchases keep a product as they first read it: were a product ever changed, they
    would have to read it again."""
    changes = [
        name
        for name, kind in vars(Product).items()
        if isinstance(kind, type)
        and issubclass(kind, Product.Event)
        and kind is not Product.Event
        and not issubclass(kind, Aggregate.Created)
    ]
    assert changes == []


def test_a_new_price_applies_to_later_purchases_only(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 30_000)
    first = w.buy(w.sub, 1)
    w.app.set_price(w.top, w.product, Money(2600))
    second = w.buy(w.sub, 1)
    assert first.unit_price == Money(2500)  # type: ignore[attr-defined]
    assert second.unit_price == Money(2600)  # type: ignore[attr-defined]
    assert w.app.stock_purchase(first.id).unit_price == Money(2500)  # type: ignore[attr-defined]
    assert w.funds(w.sub) == 30_000 - 2500 - 2600


# Refusals: nothing is recorded


def test_insufficient_funds_refuses_and_records_nothing(world: World) -> None:
    world.deposit(world.top, 3 * WHOLESALE - 1)
    before = world.recorded()
    with pytest.raises(InsufficientFunds) as refused:
        world.buy(world.top, 3)
    assert refused.value.code == "insufficient_funds"
    assert world.recorded() == before
    assert world.funds(world.top) == 3 * WHOLESALE - 1
    assert world.on_hand(world.top) == 0


def test_a_channel_with_no_funds_at_all_cannot_buy(world: World) -> None:
    before = world.recorded()
    with pytest.raises(InsufficientFunds):
        world.buy(world.top, 1)
    assert world.recorded() == before


def test_funds_in_another_currency_do_not_pay_for_stock(world: World) -> None:
    world.app.deposit(uuid4(), world.top, Money(1_000_000, "USD"))
    before = world.recorded()
    with pytest.raises(InsufficientFunds):
        world.buy(world.top, 1)
    assert world.recorded() == before


def test_sub_channel_with_too_little_funds_changes_neither_side(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 2 * 2500 - 1)
    before = w.recorded()
    parent_before = (w.funds(w.top), w.on_hand(w.top))
    with pytest.raises(InsufficientFunds):
        w.buy(w.sub, 2)
    assert w.recorded() == before
    assert (w.funds(w.top), w.on_hand(w.top)) == parent_before
    assert (w.funds(w.sub), w.on_hand(w.sub)) == (2 * 2500 - 1, 0)


def test_insufficient_stock_at_the_parent_refuses_and_records_nothing(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 100_000)
    before = w.recorded()
    with pytest.raises(InsufficientStock) as refused:
        w.buy(w.sub, 11)
    assert refused.value.code == "insufficient_stock"
    assert w.recorded() == before
    assert (w.funds(w.sub), w.on_hand(w.sub)) == (100_000, 0)
    assert w.on_hand(w.top) == 10


def test_a_refused_purchase_leaves_the_buyer_able_to_buy_what_is_there(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 100_000)
    with pytest.raises(InsufficientStock):
        w.buy(w.sub, 11)
    w.buy(w.sub, 10)
    assert (w.funds(w.sub), w.on_hand(w.sub), w.on_hand(w.top)) == (75_000, 10, 0)


def test_parent_with_stock_but_no_price_refuses_with_price_not_set(world: World) -> None:
    world.deposit(world.top, 100_000)
    world.buy(world.top, 5)
    world.deposit(world.sub, 100_000)
    before = world.recorded()
    with pytest.raises(PriceNotSet) as refused:
        world.buy(world.sub, 1)
    assert refused.value.code == "price_not_set"
    assert world.recorded() == before


def test_a_price_set_by_another_channel_does_not_count(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 30_000)
    w.buy(w.sub, 5)
    w.deposit(w.leaf, 30_000)
    # The top-level channel has a price, but the leaf buys from `sub`, which has none.
    with pytest.raises(PriceNotSet):
        w.buy(w.leaf, 1)


def test_a_price_must_be_positive_and_in_the_products_currency(world: World) -> None:
    before = world.recorded()
    with pytest.raises(InvalidAmount):
        world.app.set_price(world.top, world.product, Money(0))
    with pytest.raises(InvalidAmount):
        world.app.set_price(world.top, world.product, Money(-1))
    with pytest.raises(CurrencyMismatch):
        world.app.set_price(world.top, world.product, Money(2500, "USD"))
    assert world.recorded() == before
    assert world.app.channel(world.top).prices == {}


# Copies


def test_a_copy_of_a_channel_changes_apart_from_the_channel(stocked: World) -> None:
    w = stocked
    channel, as_it_was = w.app.channel(w.top), w.app.channel(w.top)

    changed = deepcopy(channel)
    changed.deposit(uuid4(), Money(7, "USD"))
    changed.sell(uuid4(), w.product, 1, Money(2500))
    changed.set_price(w.product, Money(2600), "CNY")
    changed.set_price(uuid4(), Money(99), "CNY")
    changed.suspend()
    changed.ancestry.append(uuid4())

    assert channel.__dict__ == as_it_was.__dict__
    assert changed.__dict__ != channel.__dict__
    assert (changed.funds_in("USD"), changed.stock_of(w.product)) == (7, 9)
    assert w.app.channel(w.top).__dict__ == as_it_was.__dict__


# Suspension


def test_a_suspended_channel_cannot_buy(world: World) -> None:
    world.deposit(world.top, 100_000)
    world.app.suspend(world.top)
    before = world.recorded()
    with pytest.raises(ChannelSuspended) as refused:
        world.buy(world.top, 1)
    assert refused.value.code == "channel_suspended"
    assert world.recorded() == before
    assert world.funds(world.top) == 100_000


@pytest.mark.parametrize("buyer", ["sub", "leaf"])
def test_nothing_below_a_suspended_channel_can_buy(stocked: World, buyer: str) -> None:
    w = stocked
    w.deposit(w.sub, 50_000)
    w.buy(w.sub, 5)
    w.app.set_price(w.sub, w.product, Money(2800))
    w.deposit(w.leaf, 50_000)
    w.app.suspend(w.top)
    before = w.recorded()
    with pytest.raises(ChannelSuspended):
        w.buy(getattr(w, buyer), 1)
    assert w.recorded() == before


def test_suspending_a_sub_channel_stops_its_subtree_but_not_its_parent(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 50_000)
    w.buy(w.sub, 5)
    w.app.set_price(w.sub, w.product, Money(2800))
    w.deposit(w.leaf, 50_000)
    w.app.suspend(w.sub)
    with pytest.raises(ChannelSuspended):
        w.buy(w.sub, 1)
    with pytest.raises(ChannelSuspended):
        w.buy(w.leaf, 1)
    w.buy(w.top, 1)
    assert w.on_hand(w.top) == 6


def test_a_sibling_of_a_suspended_channel_still_buys(stocked: World) -> None:
    w = stocked
    sibling = uuid4()
    w.app.register_channel(sibling, "Hangzhou reseller", parent_id=w.top)
    w.deposit(sibling, 10_000)
    w.app.suspend(w.sub)
    w.buy(sibling, 2)
    assert w.on_hand(sibling) == 2


def test_resume_lets_the_channel_and_its_subtree_buy_again(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 50_000)
    w.app.suspend(w.top)
    with pytest.raises(ChannelSuspended):
        w.buy(w.sub, 1)
    channel = w.app.resume(w.top)
    assert channel.suspended is False
    w.buy(w.sub, 1)
    w.buy(w.top, 1)
    assert (w.on_hand(w.sub), w.on_hand(w.top)) == (1, 10)


def test_suspending_twice_records_one_suspension(world: World) -> None:
    world.app.suspend(world.sub)
    before = world.recorded()
    assert world.app.suspend(world.sub).suspended is True
    assert world.recorded() == before
    world.app.resume(world.sub)
    after_resume = world.recorded()
    world.app.resume(world.sub)
    assert world.recorded() == after_resume == before + 1


# A repeated movement id records once


def test_second_purchase_with_the_same_command_id_records_nothing(world: World) -> None:
    world.deposit(world.top, 100_000)
    movement = uuid4()
    first, _ = world.app.purchase_stock(movement, world.top, world.product, 3)
    before = world.recorded()

    again, buyer = world.app.purchase_stock(movement, world.top, world.product, 3)

    assert world.recorded() == before
    assert again.id == first.id == movement
    assert again.quantity == 3
    assert buyer.stock_of(world.product) == 3
    assert world.funds(world.top) == 100_000 - 3 * WHOLESALE


def test_a_repeated_command_id_returns_the_first_purchase_even_if_the_request_differs(
    world: World,
) -> None:
    world.deposit(world.top, 100_000)
    movement = uuid4()
    world.app.purchase_stock(movement, world.top, world.product, 3)
    before = world.recorded()

    again, _ = world.app.purchase_stock(movement, world.top, world.product, 7)

    assert world.recorded() == before
    assert again.quantity == 3
    assert world.on_hand(world.top) == 3


def test_a_repeated_purchase_is_not_refused_after_the_funds_are_spent(world: World) -> None:
    world.deposit(world.top, 5 * WHOLESALE)
    movement = uuid4()
    world.app.purchase_stock(movement, world.top, world.product, 5)
    assert world.funds(world.top) == 0
    again, _ = world.app.purchase_stock(movement, world.top, world.product, 5)
    assert again.quantity == 5


def test_second_deposit_with_the_same_command_id_records_nothing(world: World) -> None:
    movement = uuid4()
    world.app.deposit(movement, world.top, Money(500))
    before = world.recorded()
    channel = world.app.deposit(movement, world.top, Money(500))
    assert world.recorded() == before
    assert channel.funds == {"CNY": 500}


def test_a_deposit_reusing_a_purchases_command_id_is_not_silently_dropped(world: World) -> None:
    world.deposit(world.top, 100_000)
    movement = uuid4()
    world.app.purchase_stock(movement, world.top, world.product, 1)
    funds = world.funds(world.top)
    try:
        channel = world.app.deposit(movement, world.top, Money(500))
    except DomainError:
        return  # refusing the reused id is a right answer
    assert channel.funds["CNY"] == funds + 500


def test_registering_the_same_channel_twice_records_it_once(world: World) -> None:
    before = world.recorded()
    again = world.app.register_channel(world.sub, "Shanghai reseller", parent_id=world.top)
    assert again.id == world.sub
    assert world.recorded() == before


# Unknown ids


def test_a_deposit_to_an_unknown_channel_is_not_found(world: World) -> None:
    before = world.recorded()
    with pytest.raises(NotFound) as refused:
        world.app.deposit(uuid4(), uuid4(), Money(100))
    assert refused.value.code == "not_found"
    assert world.recorded() == before


def test_a_purchase_by_an_unknown_channel_or_of_an_unknown_product_is_not_found(
    world: World,
) -> None:
    world.deposit(world.top, 100_000)
    before = world.recorded()
    with pytest.raises(NotFound):
        world.app.purchase_stock(uuid4(), uuid4(), world.product, 1)
    with pytest.raises(NotFound):
        world.app.purchase_stock(uuid4(), world.top, uuid4(), 1)
    assert world.recorded() == before


def test_an_id_of_another_kind_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        world.app.channel(world.product)
    with pytest.raises(NotFound):
        world.app.product(world.top)
    with pytest.raises(NotFound):
        world.app.platform(world.product)
    with pytest.raises(NotFound):
        world.app.purchase_stock(uuid4(), world.product, world.product, 1)
    with pytest.raises(NotFound):
        world.app.deposit(uuid4(), world.platform, Money(1))


def test_lookups_of_unknown_ids_are_not_found(world: World) -> None:
    for lookup in (
        world.app.platform,
        world.app.product,
        world.app.channel,
        world.app.stock_purchase,
    ):
        with pytest.raises(NotFound):
            lookup(uuid4())


def test_registrations_against_unknown_parents_are_not_found(world: World) -> None:
    before = world.recorded()
    with pytest.raises(NotFound):
        world.app.register_channel(uuid4(), "Orphan", parent_id=uuid4())
    with pytest.raises(NotFound):
        world.app.register_product(uuid4(), uuid4(), "Plan", 30, Money(3000), Money(2000))
    with pytest.raises(NotFound):
        world.app.set_price(world.top, uuid4(), Money(1))
    with pytest.raises(NotFound):
        world.app.set_price(uuid4(), world.product, Money(1))
    with pytest.raises(NotFound):
        world.app.suspend(uuid4())
    assert world.recorded() == before


# Bad amounts and quantities: nothing is recorded


@pytest.mark.parametrize("quantity", [0, -1, MAX_QUANTITY + 1, 1.5, True, "1"], ids=repr)
def test_a_purchase_of_a_bad_quantity_is_refused(world: World, quantity: object) -> None:
    world.deposit(world.top, 100_000)
    before = world.recorded()
    with pytest.raises(InvalidAmount):
        world.app.purchase_stock(uuid4(), world.top, world.product, quantity)  # type: ignore[arg-type]
    assert world.recorded() == before
    assert world.funds(world.top) == 100_000


@pytest.mark.parametrize("amount", [0, -1, -MAX_AMOUNT])
def test_a_deposit_that_is_not_positive_is_refused(world: World, amount: int) -> None:
    before = world.recorded()
    with pytest.raises(InvalidAmount):
        world.app.deposit(uuid4(), world.top, Money(amount))
    assert world.recorded() == before
    assert world.funds(world.top) == 0


def test_a_purchase_whose_total_is_past_the_limit_is_refused(world: World) -> None:
    dear = uuid4()
    world.app.register_product(
        dear, world.platform, "Lifetime", 3660, Money(10**9 + 1), Money(10**9)
    )
    world.app.deposit(uuid4(), world.top, Money(MAX_AMOUNT))
    before = world.recorded()
    with pytest.raises(InvalidAmount):
        world.app.purchase_stock(uuid4(), world.top, dear, MAX_QUANTITY)
    assert world.recorded() == before
    assert world.funds(world.top) == MAX_AMOUNT


def test_the_largest_purchase_within_the_limit_goes_through(world: World) -> None:
    dear = uuid4()
    world.app.register_product(dear, world.platform, "Lifetime", 3660, Money(10**8), Money(10**8))
    world.app.deposit(uuid4(), world.top, Money(MAX_AMOUNT))
    purchase, buyer = world.app.purchase_stock(uuid4(), world.top, dear, MAX_QUANTITY)
    assert purchase.total == Money(MAX_AMOUNT)
    assert buyer.funds == {"CNY": 0}


def test_funds_past_one_commands_limit_never_leave_a_channel_unable_to_buy(
    world: World,
) -> None:
    world.app.deposit(uuid4(), world.top, Money(MAX_AMOUNT))
    with contextlib.suppress(InvalidAmount):  # capping balances is one acceptable answer
        world.app.deposit(uuid4(), world.top, Money(MAX_AMOUNT))
    funds = world.funds(world.top)
    world.buy(world.top, 1)
    assert world.funds(world.top) == funds - WHOLESALE
    assert world.app.channel(world.top).funds_in("CNY") == funds - WHOLESALE


@pytest.mark.parametrize(
    ("duration", "face", "wholesale"),
    [
        (0, Money(3000), Money(2000)),
        (3661, Money(3000), Money(2000)),
        (30, Money(0), Money(2000)),
        (30, Money(3000), Money(0)),
        (30, Money(3000), Money(2000, "USD")),
    ],
)
def test_a_product_with_bad_terms_is_refused(
    world: World, duration: int, face: Money, wholesale: Money
) -> None:
    before = world.recorded()
    with pytest.raises(InvalidAmount):
        world.app.register_product(uuid4(), world.platform, "Plan", duration, face, wholesale)
    assert world.recorded() == before


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_a_channel_needs_a_name(world: World, name: str) -> None:
    before = world.recorded()
    with pytest.raises(InvalidAmount):
        world.app.register_channel(uuid4(), name, parent_id=world.top)
    assert world.recorded() == before


def test_channel_trees_have_a_depth_limit(world: World) -> None:
    parent = world.top
    for depth in range(MAX_TREE_DEPTH):
        child = uuid4()
        world.app.register_channel(child, f"level {depth + 1}", parent_id=parent)
        parent = child
    assert len(world.app.channel(parent).ancestry) == MAX_TREE_DEPTH
    before = world.recorded()
    with pytest.raises(ChannelTreeTooDeep):
        world.app.register_channel(uuid4(), "too deep", parent_id=parent)
    assert world.recorded() == before


# The whole story balances


def test_every_movement_balances_and_the_ledger_matches_the_channels(stocked: World) -> None:
    w = stocked
    w.deposit(w.sub, 40_000)
    w.buy(w.sub, 6)
    w.app.set_price(w.sub, w.product, Money(2700))
    w.deposit(w.leaf, 9_000)
    w.buy(w.leaf, 3)

    balances: Counter[tuple[str, str]] = Counter()
    for event in w.events():
        postings = getattr(event, "postings", None)
        if postings is None:
            continue
        per_asset: Counter[str] = Counter()
        for leg in postings:
            balances[(leg.account, leg.asset)] += leg.amount
            per_asset[leg.asset] += leg.amount
        assert all(total == 0 for total in per_asset.values())

    unit = accounts.unit_asset(w.product)
    for channel_id in (w.top, w.sub, w.leaf):
        channel = w.app.channel(channel_id)
        assert balances[(accounts.channel_funds(channel_id), "CNY")] == channel.funds["CNY"]
        assert balances[(accounts.channel_stock(channel_id, w.product), unit)] == (
            channel.stock_of(w.product)
        )
    assert balances[(accounts.platform_payable(w.platform), "CNY")] == 10 * WHOLESALE
    assert (w.on_hand(w.top), w.on_hand(w.sub), w.on_hand(w.leaf)) == (4, 3, 3)
    trial: Counter[str] = Counter()
    for (_, asset), amount in balances.items():
        trial[asset] += amount
    assert set(trial.values()) == {0}
