"""Main cards: stored value bought under a recharge activity, spent at the main discount."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import accounts
from ledger.cards.histories import CopiesHistoriesShallowly
from ledger.errors import InsufficientBalance, LimitExceeded
from ledger.money import Money
from ledger.postings import Postings

MAX_DERIVED_CARDS = 1000


class MainCard(CopiesHistoriesShallowly, Aggregate):
    """The balance is what every main-card and intimate-card consumption draws: never negative.

    Shared-card consumption draws nothing (the consumer pays) but counts against the merchant's
    cap on shared consumption, so this card is in the save of every consumption it backs.
    `consumptions` lists [consumption id, the card used] in the order they were recorded.
    """

    histories = ("consumptions", "shared_card_ids", "intimate_card_ids")

    @event("Opened")
    def __init__(
        self,
        id: UUID,
        merchant_id: UUID,
        activity_id: UUID,
        owner_id: UUID,
        discount_bp: int,
        balance: Money,
        shared_cap: int | None,
    ) -> None:
        self.merchant_id = merchant_id
        self.activity_id = activity_id
        self.owner_id = owner_id
        self.discount_bp = discount_bp
        self.currency = balance.currency
        self.balance = balance.amount
        self.shared_cap = shared_cap
        self.shared_consumed = 0
        self.shared_card_ids: list[UUID] = []
        self.intimate_card_ids: list[UUID] = []
        self.consumptions: list[tuple[UUID, UUID]] = []

    def balance_money(self) -> Money:
        return Money(self.balance, self.currency)

    def draw(self, consumption_id: UUID, amount: int, card_id: UUID) -> None:
        if amount > self.balance:
            raise InsufficientBalance(f"{amount} needed, {self.balance} on the card")
        self._drawn(consumption_id, amount, card_id)

    @event("Drawn")
    def _drawn(self, consumption_id: UUID, amount: int, card_id: UUID) -> None:
        self.balance -= amount
        self.consumptions.append((consumption_id, card_id))

    @event("Restored")
    def restore(self, consumption_id: UUID, amount: int) -> None:
        self.balance += amount

    def count_shared(self, consumption_id: UUID, price: int, card_id: UUID) -> None:
        if self.shared_cap is not None and self.shared_consumed + price > self.shared_cap:
            left = max(0, self.shared_cap - self.shared_consumed)
            raise LimitExceeded(f"the merchant caps shared consumption of this card; {left} left")
        self._shared_counted(consumption_id, price, card_id)

    @event("SharedConsumptionCounted")
    def _shared_counted(self, consumption_id: UUID, price: int, card_id: UUID) -> None:
        self.shared_consumed += price
        self.consumptions.append((consumption_id, card_id))

    @event("SharedConsumptionRefunded")
    def uncount_shared(self, consumption_id: UUID, price: int) -> None:
        self.shared_consumed -= price

    def add_shared_card(self, card_id: UUID) -> None:
        if len(self.shared_card_ids) >= MAX_DERIVED_CARDS:
            raise LimitExceeded(f"a main card has at most {MAX_DERIVED_CARDS} shared cards")
        self._shared_card_added(card_id)

    @event("SharedCardAdded")
    def _shared_card_added(self, card_id: UUID) -> None:
        self.shared_card_ids.append(card_id)

    def add_intimate_card(self, card_id: UUID) -> None:
        if len(self.intimate_card_ids) >= MAX_DERIVED_CARDS:
            raise LimitExceeded(f"a main card has at most {MAX_DERIVED_CARDS} intimate cards")
        self._intimate_card_added(card_id)

    @event("IntimateCardAdded")
    def _intimate_card_added(self, card_id: UUID) -> None:
        self.intimate_card_ids.append(card_id)


class CardPurchase(Aggregate):
    """The movement that opens a main card: what the owner paid, plus the merchant's bonus."""

    @event("Recorded")
    def __init__(
        self,
        id: UUID,
        card_id: UUID,
        owner_id: UUID,
        pay: Money,
        bonus: Money,
        payment_reference: str,
        postings: Postings,
    ) -> None:
        self.card_id = card_id
        self.owner_id = owner_id
        self.pay = pay
        self.bonus = bonus
        self.payment_reference = payment_reference
        self.postings = postings

    @classmethod
    def record(
        cls,
        movement_id: UUID,
        card_id: UUID,
        owner_id: UUID,
        merchant_id: UUID,
        pay: Money,
        bonus: Money,
        payment_reference: str,
    ) -> CardPurchase:
        card = accounts.card_balance(card_id)
        transfers = [(accounts.external_payments(pay.currency), card, pay.currency, pay.amount)]
        if bonus.amount:
            promotions = accounts.merchant_promotions(merchant_id)
            transfers.append((promotions, card, bonus.currency, bonus.amount))
        return cls(
            id=movement_id,
            card_id=card_id,
            owner_id=owner_id,
            pay=pay,
            bonus=bonus,
            payment_reference=payment_reference,
            postings=Postings.of(*transfers),
        )
