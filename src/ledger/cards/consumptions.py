"""Consumptions at a merchant's till, and their refunds: movements with stored split lines.

A consumption stores its split lines (who received what) and the postings that moved it; a
refund is a movement of its own whose postings are the stored ones reversed, never
recomputed from today's terms.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import accounts
from ledger.cards.splits import SharedSplit
from ledger.errors import StateConflict
from ledger.money import Money
from ledger.postings import Posting, Postings

Split = dict[str, Any]
"""One line: {"party": merchant | sharer | owner, "account": …, "amount": int}."""


class Consumption(Aggregate):
    """`consumer_pays` came in through the payment adapter (shared cards); `card_debited` came
    from the main card's balance (main and intimate cards). The splits sum to their total."""

    @event("Recorded")
    def __init__(
        self,
        id: UUID,
        merchant_id: UUID,
        card_id: UUID,
        card_kind: str,
        main_card_id: UUID,
        owner_id: UUID,
        sharer_id: UUID | None,
        price: Money,
        consumer_pays: Money,
        card_debited: Money,
        month: str,
        splits: list[Split],
        postings: Postings,
    ) -> None:
        self.merchant_id = merchant_id
        self.card_id = card_id
        self.card_kind = card_kind
        self.main_card_id = main_card_id
        self.owner_id = owner_id
        self.sharer_id = sharer_id
        self.price = price
        self.consumer_pays = consumer_pays
        self.card_debited = card_debited
        self.month = month
        self.splits = splits
        self.postings = postings
        self.refund_id: UUID | None = None

    @property
    def refunded(self) -> bool:
        return self.refund_id is not None

    def wallet_lines(self) -> list[tuple[UUID, int]]:
        """(member, amount) of each commission line, as stored."""
        lines = []
        for line in self.splits:
            member = {"sharer": self.sharer_id, "owner": self.owner_id}.get(line["party"])
            if line["party"] != "merchant":
                assert member is not None, line
                lines.append((member, int(line["amount"])))
        return lines

    def mark_refunded(self, refund_id: UUID) -> None:
        if self.refunded:
            raise StateConflict(f"consumption {self.id} was already refunded")
        self._refunded(refund_id)

    @event("Refunded")
    def _refunded(self, refund_id: UUID) -> None:
        self.refund_id = refund_id

    @classmethod
    def from_balance(
        cls,
        consumption_id: UUID,
        merchant_id: UUID,
        card_id: UUID,
        card_kind: str,
        main_card_id: UUID,
        owner_id: UUID,
        price: Money,
        drawn: int,
        month: str,
    ) -> Consumption:
        """A main or intimate card: round(P x d_m) goes from the main card to the merchant."""
        payable = accounts.merchant_payable(merchant_id)
        currency = price.currency
        return cls(
            id=consumption_id,
            merchant_id=merchant_id,
            card_id=card_id,
            card_kind=card_kind,
            main_card_id=main_card_id,
            owner_id=owner_id,
            sharer_id=None,
            price=price,
            consumer_pays=Money(0, currency),
            card_debited=Money(drawn, currency),
            month=month,
            splits=[{"party": "merchant", "account": payable, "amount": drawn}],
            postings=Postings.of((accounts.card_balance(main_card_id), payable, currency, drawn)),
        )

    @classmethod
    def paid_by_consumer(
        cls,
        consumption_id: UUID,
        merchant_id: UUID,
        card_id: UUID,
        main_card_id: UUID,
        owner_id: UUID,
        sharer_id: UUID | None,
        price: Money,
        split: SharedSplit,
        month: str,
    ) -> Consumption:
        """A shared card: the consumer's payment is split to merchant, sharer and owner."""
        parties: list[tuple[str, str, int]] = [
            ("merchant", accounts.merchant_payable(merchant_id), split.merchant),
            ("sharer", accounts.user_wallet(sharer_id) if sharer_id else "", split.sharer),
            ("owner", accounts.user_wallet(owner_id), split.owner),
        ]
        splits = [
            {"party": party, "account": account, "amount": amount}
            for party, account, amount in parties
            if amount > 0
        ]
        payments = accounts.external_payments(price.currency)
        transfers = [(payments, account, price.currency, amount) for _, account, amount in parties]
        return cls(
            id=consumption_id,
            merchant_id=merchant_id,
            card_id=card_id,
            card_kind="shared",
            main_card_id=main_card_id,
            owner_id=owner_id,
            sharer_id=sharer_id,
            price=price,
            consumer_pays=Money(split.consumer_pays, price.currency),
            card_debited=Money(0, price.currency),
            month=month,
            splits=splits,
            postings=Postings.of(*(transfer for transfer in transfers if transfer[3] > 0)),
        )


class ConsumptionRefund(Aggregate):
    """A merchant's refund: the consumption's stored postings, every leg reversed."""

    @event("Recorded")
    def __init__(
        self, id: UUID, consumption_id: UUID, merchant_id: UUID, postings: Postings
    ) -> None:
        self.consumption_id = consumption_id
        self.merchant_id = merchant_id
        self.postings = postings

    @classmethod
    def reversing(cls, refund_id: UUID, consumption: Consumption) -> ConsumptionRefund:
        legs = tuple(Posting(leg.account, leg.asset, -leg.amount) for leg in consumption.postings)
        return cls(
            id=refund_id,
            consumption_id=consumption.id,
            merchant_id=consumption.merchant_id,
            postings=Postings(legs),
        )
