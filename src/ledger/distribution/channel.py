"""A sales channel: a node of the channel tree with its funds, stock and price list."""

from __future__ import annotations

from copy import deepcopy
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.errors import (
    ChannelSuspended,
    CurrencyMismatch,
    InsufficientFunds,
    InsufficientStock,
    PriceNotSet,
)
from ledger.money import Money


class Channel(Aggregate):
    """Funds and stock on hand are the balances a channel spends from: they never go negative.

    `ancestry` lists the channel's ancestors from the top-level channel down, fixed at
    registration, so subtree checks need no tree walk.
    """

    @event("Registered")
    def __init__(
        self, id: UUID, name: str, parent_id: UUID | None, ancestry: list[UUID], key_id: str
    ):
        self.name = name
        self.parent_id = parent_id
        self.ancestry = list(ancestry)
        self.key_id = key_id
        self.suspended = False
        self.webhook_url: str | None = None
        self.funds: dict[str, int] = {}
        self.on_hand: dict[str, int] = {}
        self.prices: dict[str, Money] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Channel:
        """The repository deep-copies a channel for every read (so a command's changes never
        reach its cache). A channel's state is immutable values (ids, names, counts, Money)
        and lists and dicts of them: new lists and dicts sharing those values are as safe,
        at a small part of the cost; anything else is deep-copied."""
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        for name, value in self.__dict__.items():
            copied.__dict__[name] = _copy(value, memo)
        return copied

    @property
    def is_top_level(self) -> bool:
        return self.parent_id is None

    def is_within(self, ancestor_id: UUID) -> bool:
        """True when this channel is `ancestor_id` or lies below it."""
        return self.id == ancestor_id or ancestor_id in self.ancestry

    def funds_in(self, currency: str) -> int:
        """A balance, in minor units: it may grow past what one command may move."""
        return self.funds.get(currency, 0)

    def stock_of(self, product_id: UUID) -> int:
        return self.on_hand.get(str(product_id), 0)

    def price_for_children(self, product_id: UUID) -> Money:
        try:
            return self.prices[str(product_id)]
        except KeyError:
            raise PriceNotSet(f"channel {self.id} has set no price for {product_id}") from None

    def check_active(self) -> None:
        if self.suspended:
            raise ChannelSuspended(f"channel {self.id} is suspended")

    @event("FundsDeposited")
    def deposit(self, movement_id: UUID, amount: Money) -> None:
        self.funds[amount.currency] = self.funds.get(amount.currency, 0) + amount.amount

    def buy(self, movement_id: UUID, product_id: UUID, quantity: int, cost: Money) -> None:
        if self.funds_in(cost.currency) < cost.amount:
            raise InsufficientFunds(
                f"{cost.amount} {cost.currency} needed, {self.funds_in(cost.currency)} available"
            )
        self._bought(movement_id, product_id, quantity, cost)

    @event("StockBought")
    def _bought(self, movement_id: UUID, product_id: UUID, quantity: int, cost: Money) -> None:
        self.funds[cost.currency] = self.funds.get(cost.currency, 0) - cost.amount
        self.on_hand[str(product_id)] = self.stock_of(product_id) + quantity

    def sell(self, movement_id: UUID, product_id: UUID, quantity: int, proceeds: Money) -> None:
        if self.stock_of(product_id) < quantity:
            raise InsufficientStock(f"{quantity} units needed, {self.stock_of(product_id)} on hand")
        self._sold(movement_id, product_id, quantity, proceeds)

    @event("StockSold")
    def _sold(self, movement_id: UUID, product_id: UUID, quantity: int, proceeds: Money) -> None:
        self.funds[proceeds.currency] = self.funds.get(proceeds.currency, 0) + proceeds.amount
        self.on_hand[str(product_id)] = self.stock_of(product_id) - quantity

    def hold_for_codes(self, batch_id: UUID, product_id: UUID, quantity: int) -> None:
        """Issued codes each hold a unit: they come out of the stock on hand."""
        if self.stock_of(product_id) < quantity:
            raise InsufficientStock(f"{quantity} units needed, {self.stock_of(product_id)} on hand")
        self._held_for_codes(batch_id, product_id, quantity)

    @event("UnitsHeldForCodes")
    def _held_for_codes(self, batch_id: UUID, product_id: UUID, quantity: int) -> None:
        self.on_hand[str(product_id)] = self.stock_of(product_id) - quantity

    @event("UnitsReturned")
    def return_units(self, code_ids: list[UUID], product_id: UUID, quantity: int) -> None:
        """Units of voided or unsold expired codes are on hand again."""
        self.on_hand[str(product_id)] = self.stock_of(product_id) + quantity

    def set_price(self, product_id: UUID, price: Money, currency: str) -> None:
        if price.currency != currency:
            raise CurrencyMismatch(f"the product is priced in {currency}")
        price.require_positive()
        self._price_set(product_id, price)

    @event("PriceSet")
    def _price_set(self, product_id: UUID, price: Money) -> None:
        self.prices[str(product_id)] = price

    @event("Suspended")
    def suspend(self) -> None:
        self.suspended = True

    @event("Resumed")
    def resume(self) -> None:
        self.suspended = False

    @event("WebhookSet")
    def set_webhook(self, url: str) -> None:
        self.webhook_url = url


_IMMUTABLE = frozenset({str, int, bool, type(None), UUID, datetime, Money})


def _copy(value: Any, memo: dict[int, Any]) -> Any:
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is list and all(type(item) in _IMMUTABLE for item in value):
        return list(value)
    if kind is dict and all(type(item) in _IMMUTABLE for item in value.values()):
        return dict(value)
    return deepcopy(value, memo)
