"""Properties of the ledger over random sequences of deposits, prices and purchases.

A small channel tree (two top-level channels, three below them) and two products in two
currencies live in the in-memory application. A plain model predicts what each command should
do; refusals are ordinary outcomes. After every step the whole notification log is checked:
every movement balances per asset, the postings summed per account are the channels' funds and
stock, nothing a channel spends from is negative, and the trial balance is zero per asset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from ledger import accounts
from ledger.distribution.application import Distribution
from ledger.errors import (
    ChannelSuspended,
    DomainError,
    InsufficientFunds,
    InsufficientStock,
    InvalidAmount,
    PriceNotSet,
)
from ledger.money import MAX_QUANTITY, Money

# The tree: top1 -> a -> b, top1 -> c, and top2 on its own.
CHANNELS = ("top1", "a", "b", "c", "top2")
PARENT: dict[str, str | None] = {"top1": None, "a": "top1", "b": "a", "c": "top1", "top2": None}
PRODUCTS = {"p_cny": ("CNY", 2000), "p_usd": ("USD", 700)}
CURRENCIES = ("CNY", "USD")


@dataclass
class Recorded:
    channel: str
    product: str
    quantity: int


@dataclass
class Harness:
    """The application, the ids, a model of what it should hold, and the checks."""

    app: Distribution = field(default_factory=Distribution)
    ids: dict[str, UUID] = field(default_factory=dict)
    platform: UUID = field(default_factory=uuid4)
    funds: Counter[tuple[str, str]] = field(default_factory=Counter)
    on_hand: Counter[tuple[str, str]] = field(default_factory=Counter)
    prices: dict[tuple[str, str], int] = field(default_factory=dict)
    suspended: set[str] = field(default_factory=set)
    purchases: dict[UUID, Recorded] = field(default_factory=dict)
    ledger: Counter[tuple[str, str]] = field(default_factory=Counter)
    read_up_to: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.app.register_platform(self.platform, "Tencent Video", "https://gw.example")
        for name, (currency, wholesale) in PRODUCTS.items():
            self.ids[name] = uuid4()
            self.app.register_product(
                self.ids[name],
                self.platform,
                name,
                30,
                Money(wholesale + 1000, currency),
                Money(wholesale, currency),
            )
        for name in CHANNELS:
            self.ids[name] = uuid4()
            parent = PARENT[name]
            self.app.register_channel(
                self.ids[name], name, None if parent is None else self.ids[parent]
            )

    def run(self, command: tuple[Any, ...]) -> None:
        kind, *args = command
        if kind == "deposit":
            self.deposit(*args)
        elif kind == "price":
            self.set_price(*args)
        elif kind == "buy":
            self.purchase(*args)
        else:
            self.toggle(*args)

    # commands, each checked against the model

    def saw(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        if currently_in_test_context():
            event(outcome)

    def recorded(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def deposit(self, channel: str, currency: str, amount: int) -> None:
        before = self.recorded()
        self.app.deposit(uuid4(), self.ids[channel], Money(amount, currency))
        self.funds[(channel, currency)] += amount
        assert self.recorded() == before + 2
        self.saw("deposit")

    def set_price(self, channel: str, product: str, price: int) -> None:
        currency = PRODUCTS[product][0]
        self.app.set_price(self.ids[channel], self.ids[product], Money(price, currency))
        self.prices[(channel, product)] = price
        self.saw("set_price")

    def toggle(self, channel: str, suspend: bool) -> None:
        if suspend:
            self.app.suspend(self.ids[channel])
            self.suspended.add(channel)
        else:
            self.app.resume(self.ids[channel])
            self.suspended.discard(channel)

    def line(self, channel: str) -> list[str]:
        """The channel and its ancestors."""
        found: list[str] = []
        current: str | None = channel
        while current is not None:
            found.append(current)
            current = PARENT[current]
        return found

    def purchase(self, channel: str, product: str, quantity: int) -> UUID | None:
        """Buy; return the movement id if it went through, None if it was refused."""
        currency, wholesale = PRODUCTS[product]
        parent = PARENT[channel]
        expected: set[type[DomainError]] = set()
        if any(c in self.suspended for c in self.line(channel)):
            expected.add(ChannelSuspended)
        if parent is None:
            unit_price: int | None = wholesale
        else:
            unit_price = self.prices.get((parent, product))
            if unit_price is None:
                expected.add(PriceNotSet)
            if self.on_hand[(parent, product)] < quantity:
                expected.add(InsufficientStock)
        if unit_price is not None and self.funds[(channel, currency)] < unit_price * quantity:
            expected.add(InsufficientFunds)

        movement = uuid4()
        before = self.recorded()
        try:
            purchase, buyer = self.app.purchase_stock(
                movement, self.ids[channel], self.ids[product], quantity
            )
        except DomainError as refusal:
            assert expected, f"refused with {refusal!r} though the model expected success"
            assert type(refusal) in expected, f"{refusal!r} is none of {expected}"
            assert self.recorded() == before, "a refused purchase recorded something"
            self.saw(type(refusal).__name__)
            return None
        assert not expected, f"went through though the model expected one of {expected}"
        assert unit_price is not None
        total = unit_price * quantity
        assert purchase.unit_price == Money(unit_price, currency)
        assert purchase.quantity == quantity
        assert self.recorded() == before + (2 if parent is None else 3)
        self.funds[(channel, currency)] -= total
        self.on_hand[(channel, product)] += quantity
        if parent is not None:
            self.funds[(parent, currency)] += total
            self.on_hand[(parent, product)] -= quantity
        assert buyer.funds.get(currency, 0) == self.funds[(channel, currency)]
        self.purchases[movement] = Recorded(channel, product, quantity)
        self.saw("top-level" if parent is None else "sub-channel")
        return movement

    def repeat(self, movement: UUID, quantity: int) -> None:
        """The same command id again (maybe with another quantity) records nothing."""
        first = self.purchases[movement]
        before = self.recorded()
        purchase, _ = self.app.purchase_stock(
            movement, self.ids[first.channel], self.ids[first.product], quantity
        )
        assert purchase.id == movement
        assert purchase.quantity == first.quantity
        assert self.recorded() == before
        self.saw("repeat")

    def bad_quantity(self, channel: str, product: str, quantity: int) -> None:
        before = self.recorded()
        with pytest.raises(InvalidAmount):
            self.app.purchase_stock(uuid4(), self.ids[channel], self.ids[product], quantity)
        assert self.recorded() == before

    # the checks

    def check(self) -> None:
        self._fold_new_events()
        trial: Counter[str] = Counter()
        for (_, asset), amount in self.ledger.items():
            trial[asset] += amount
        assert all(total == 0 for total in trial.values()), f"trial balance {trial}"

        for name in CHANNELS:
            channel = self.app.channel(self.ids[name])
            for currency in CURRENCIES:
                held = channel.funds.get(currency, 0)
                assert held >= 0, f"{name} funds {held} {currency}"
                assert held == self.funds[(name, currency)]
                assert held == self.ledger[(accounts.channel_funds(self.ids[name]), currency)]
            for product in PRODUCTS:
                units = channel.stock_of(self.ids[product])
                assert units >= 0, f"{name} holds {units} of {product}"
                assert units == self.on_hand[(name, product)]
                stock_account = accounts.channel_stock(self.ids[name], self.ids[product])
                assert units == self.ledger[(stock_account, accounts.unit_asset(self.ids[product]))]
            assert channel.suspended == (name in self.suspended)

        channel_accounts = {a for a, _ in self.ledger if a.startswith("channel:")}
        known = {accounts.channel_funds(self.ids[n]) for n in CHANNELS} | {
            accounts.channel_stock(self.ids[n], self.ids[p]) for n in CHANNELS for p in PRODUCTS
        }
        assert channel_accounts <= known

        for product, (currency, wholesale) in PRODUCTS.items():
            bought_from_platform = sum(
                r.quantity
                for r in self.purchases.values()
                if r.product == product and PARENT[r.channel] is None
            )
            payable = self.ledger[(accounts.platform_payable(self.platform), currency)]
            supply = accounts.platform_supply(self.platform, self.ids[product])
            assert payable == wholesale * bought_from_platform
            units_out = -self.ledger[(supply, accounts.unit_asset(self.ids[product]))]
            assert units_out == bought_from_platform

    def _fold_new_events(self) -> None:
        for notification in self.app.recorder.select_notifications(
            start=self.read_up_to + 1, limit=1000
        ):
            domain_event = self.app.mapper.to_domain_event(notification)
            self.read_up_to = notification.id
            postings = getattr(domain_event, "postings", None)
            if postings is None:
                continue
            per_asset: Counter[str] = Counter()
            for leg in postings:
                assert type(leg.amount) is int and leg.amount != 0
                per_asset[leg.asset] += leg.amount
                self.ledger[(leg.account, leg.asset)] += leg.amount
            assert all(total == 0 for total in per_asset.values()), (
                f"{type(domain_event).__qualname__} does not balance: {per_asset}"
            )


# A plain property over a random list of commands

channels = st.sampled_from(CHANNELS)
products = st.sampled_from(sorted(PRODUCTS))
quantities = st.integers(min_value=1, max_value=6)
amounts = st.integers(min_value=1, max_value=200_000)
prices = st.integers(min_value=1, max_value=4000)


@st.composite
def openings(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Stock at the top-level channels, prices at most parents and funds in most channels, so
    that the commands that follow reach sub-channel purchases and not only refusals."""
    opening: list[tuple[Any, ...]] = []
    for top in (c for c in CHANNELS if PARENT[c] is None):
        for currency in CURRENCIES:
            opening.append(("deposit", top, currency, draw(st.integers(60_000, 200_000))))
        for product in sorted(PRODUCTS):
            opening.append(("buy", top, product, draw(st.integers(min_value=1, max_value=25))))
    for parent in sorted({p for p in PARENT.values() if p is not None}):
        for product in sorted(PRODUCTS):
            if draw(st.integers(min_value=0, max_value=4)):  # mostly, not always
                opening.append(("price", parent, product, draw(prices)))
    for channel in (c for c in CHANNELS if PARENT[c] is not None):
        for currency in CURRENCIES:
            amount = draw(st.integers(min_value=0, max_value=60_000))
            if amount > 100:
                opening.append(("deposit", channel, currency, amount))
    return opening


commands = st.sampled_from(["deposit", "price", "buy", "buy", "buy", "buy", "suspend"]).flatmap(
    lambda kind: {
        "deposit": st.tuples(st.just(kind), channels, st.sampled_from(CURRENCIES), amounts),
        "price": st.tuples(st.just(kind), channels, products, prices),
        "buy": st.tuples(st.just(kind), channels, products, quantities),
        "suspend": st.tuples(st.just(kind), channels, st.booleans()),
    }[kind]
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(openings(), st.lists(commands, min_size=5, max_size=30))
def test_any_sequence_of_commands_keeps_the_ledger_balanced_and_true(
    opening: list[tuple[Any, ...]], sequence: list[tuple[Any, ...]]
) -> None:
    harness = Harness()
    harness.check()
    for command in opening + sequence:
        harness.run(command)
        harness.check()


# A state machine: the same model, with repeats of earlier command ids


class LedgerMachine(RuleBasedStateMachine):
    movements = Bundle("movements")

    @initialize(opening=openings())
    def start(self, opening: list[tuple[Any, ...]]) -> None:
        self.harness = Harness()
        for command in opening:
            self.harness.run(command)

    @rule(channel=channels, currency=st.sampled_from(CURRENCIES), amount=amounts)
    def deposit(self, channel: str, currency: str, amount: int) -> None:
        self.harness.deposit(channel, currency, amount)

    @rule(channel=channels, product=products, price=prices)
    def set_price(self, channel: str, product: str, price: int) -> None:
        self.harness.set_price(channel, product, price)

    @rule(target=movements, channel=channels, product=products, quantity=quantities)
    def purchase(self, channel: str, product: str, quantity: int) -> Any:
        movement = self.harness.purchase(channel, product, quantity)
        return multiple() if movement is None else movement

    @rule(target=movements, channel=channels, product=products, quantity=quantities)
    def another_purchase(self, channel: str, product: str, quantity: int) -> Any:
        """A second purchase rule, so that purchases are as frequent as the rest together."""
        return self.purchase(channel, product, quantity)

    @rule(movement=movements, quantity=quantities)
    def repeat_a_purchase(self, movement: UUID, quantity: int) -> None:
        self.harness.repeat(movement, quantity)

    @rule(channel=channels, suspend=st.booleans())
    def suspend_or_resume(self, channel: str, suspend: bool) -> None:
        self.harness.toggle(channel, suspend)

    @rule(
        channel=channels,
        product=products,
        quantity=st.sampled_from([0, -1, MAX_QUANTITY + 1]),
    )
    def purchase_of_a_bad_quantity(self, channel: str, product: str, quantity: int) -> None:
        self.harness.bad_quantity(channel, product, quantity)

    @invariant()
    def ledger_is_balanced_and_matches_the_channels(self) -> None:
        self.harness.check()


LedgerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestLedgerMachine = LedgerMachine.TestCase


def test_the_model_sees_every_kind_of_outcome() -> None:
    """Guard against a vacuous property: a fixed walk reaches refusals and both purchase kinds."""
    h = Harness()
    assert h.purchase("top1", "p_cny", 1) is None  # no funds
    h.deposit("top1", "CNY", 50_000)
    assert h.purchase("top1", "p_cny", 10) is not None
    h.deposit("a", "CNY", 50_000)
    assert h.purchase("a", "p_cny", 1) is None  # no price
    h.set_price("top1", "p_cny", 2500)
    assert h.purchase("a", "p_cny", 11) is None  # not enough stock
    first = h.purchase("a", "p_cny", 4)
    assert first is not None
    h.repeat(first, 9)
    h.toggle("top1", True)
    assert h.purchase("b", "p_cny", 1) is None  # suspended above
    h.toggle("top1", False)
    h.check()
    assert {"InsufficientFunds", "PriceNotSet", "InsufficientStock", "ChannelSuspended"} <= set(
        h.outcomes
    )
    assert h.outcomes["top-level"] == 1 and h.outcomes["sub-channel"] == 1
    assert h.funds[("top1", "CNY")] == 50_000 - 20_000 + 4 * 2500
