"""Movements: each one is a journal entry whose single event carries balanced postings.

A movement's id is given by the caller (derived from the request's idempotency key), so the
event store's uniqueness on (id, version 1) makes a repeated command a no-op, even across
processes and after a crash between saving and answering.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import accounts
from ledger.money import Money
from ledger.postings import Postings


class Deposit(Aggregate):
    """Funds paid in by a channel, recorded from the payment adapter."""

    @event("Recorded")
    def __init__(self, id: UUID, channel_id: UUID, amount: Money, postings: Postings) -> None:
        self.channel_id = channel_id
        self.amount = amount
        self.postings = postings

    @classmethod
    def record(cls, movement_id: UUID, channel_id: UUID, amount: Money) -> Deposit:
        postings = Postings.of(
            (
                accounts.external_deposits(amount.currency),
                accounts.channel_funds(channel_id),
                amount.currency,
                amount.amount,
            )
        )
        return cls(id=movement_id, channel_id=channel_id, amount=amount, postings=postings)


class StockPurchase(Aggregate):
    """Units of a product bought by a channel, from its platform or from its parent channel."""

    @event("Recorded")
    def __init__(
        self,
        id: UUID,
        buyer_id: UUID,
        seller: str,
        product_id: UUID,
        quantity: int,
        unit_price: Money,
        postings: Postings,
    ) -> None:
        self.buyer_id = buyer_id
        self.seller = seller
        self.product_id = product_id
        self.quantity = quantity
        self.unit_price = unit_price
        self.postings = postings

    @property
    def total(self) -> Money:
        return self.unit_price * self.quantity

    @classmethod
    def from_platform(
        cls,
        movement_id: UUID,
        buyer_id: UUID,
        platform_id: UUID,
        product_id: UUID,
        quantity: int,
        wholesale_cost: Money,
    ) -> StockPurchase:
        """A top-level channel buys at wholesale; the operator now owes the platform."""
        return cls._bought(
            movement_id, buyer_id, product_id, quantity, wholesale_cost,
            seller=f"platform:{platform_id}",
            paid_to=accounts.platform_payable(platform_id),
            units_from=accounts.platform_supply(platform_id, product_id),
        )

    @classmethod
    def from_parent(
        cls,
        movement_id: UUID,
        buyer_id: UUID,
        parent_id: UUID,
        product_id: UUID,
        quantity: int,
        price: Money,
    ) -> StockPurchase:
        """A sub-channel buys at its parent's price: funds go up the tree, units come down."""
        return cls._bought(
            movement_id, buyer_id, product_id, quantity, price,
            seller=f"channel:{parent_id}",
            paid_to=accounts.channel_funds(parent_id),
            units_from=accounts.channel_stock(parent_id, product_id),
        )

    @classmethod
    def _bought(
        cls,
        movement_id: UUID,
        buyer_id: UUID,
        product_id: UUID,
        quantity: int,
        unit_price: Money,
        *,
        seller: str,
        paid_to: str,
        units_from: str,
    ) -> StockPurchase:
        total = unit_price * quantity
        postings = Postings.of(
            (accounts.channel_funds(buyer_id), paid_to, total.currency, total.amount),
            (
                units_from,
                accounts.channel_stock(buyer_id, product_id),
                accounts.unit_asset(product_id),
                quantity,
            ),
        )
        return cls(
            id=movement_id,
            buyer_id=buyer_id,
            seller=seller,
            product_id=product_id,
            quantity=quantity,
            unit_price=unit_price,
            postings=postings,
        )
