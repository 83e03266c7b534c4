"""What the member-card API shows of merchants, activities, cards, consumptions and withdrawals."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from api.card_schemas import CardOut, ConsumptionOut, SplitOut, WithdrawalOut
from api.input_rules import canonical_uuid
from api.schemas import MoneyOut
from ledger.cards.application import Card, Cards
from ledger.cards.cards import MainCard
from ledger.cards.consumptions import Consumption, ConsumptionRefund
from ledger.cards.intimate import IntimateCard
from ledger.cards.merchants import Merchant
from ledger.cards.shared import SharedCard
from ledger.cards.wallets import Withdrawal
from ledger.errors import NotFound
from ledger.money import Money

View = dict[str, Any]


def page(ids: list[UUID], limit: int, after: str | None) -> tuple[list[UUID], str | None]:
    """Cursor pagination over a list of ids: the cursor is the last id of the page."""
    start = 0
    if after is not None:
        cursor = canonical_uuid(after)
        if cursor is None or cursor not in ids:
            raise NotFound(f"cursor {after} not found")
        start = ids.index(cursor) + 1
    chosen = ids[start : start + limit]
    more = start + limit < len(ids)
    return chosen, str(chosen[-1]) if more and chosen else None


def merchant_view(cards: Cards, merchant: Merchant) -> View:
    return {
        "id": str(merchant.id),
        "name": merchant.name,
        "timezone": merchant.timezone,
        "activities": [activity_view(cards, i) for i in merchant.activity_ids],
    }


def activity_view(cards: Cards, activity_id: UUID) -> View:
    activity = cards.activity(activity_id)
    return {
        "id": str(activity.id),
        "merchant_id": str(activity.merchant_id),
        "pay": activity.pay.as_dict(),
        "bonus": activity.bonus.as_dict(),
        "discount_bp": activity.discount_bp,
        "shared_cap_bp": activity.shared_cap_bp,
    }


def card_bought(card: MainCard) -> View:
    return CardOut(
        id=str(card.id), balance=MoneyOut.of(card.balance_money()), discount_bp=card.discount_bp
    ).model_dump()


def cards_page(cards: Cards, me: UUID, limit: int, after: str | None) -> View:
    """The member's own cards: main cards they own, shared and intimate cards they hold."""
    ids, next_cursor = page(cards.member(me).card_ids, limit, after)
    now = cards.clock()
    return {"items": [summary(cards.card(i), me, now) for i in ids], "next_cursor": next_cursor}


def card_view(cards: Cards, card: Card, me: UUID, limit: int, after: str | None) -> View:
    """A card with its own cards (of a main card) and a page of the consumptions `me` sees."""
    now = cards.clock()
    view = summary(card, me, now)
    if isinstance(card, MainCard):
        view["shared_cards"] = [summary(cards.card(i), me, now) for i in card.shared_card_ids]
        view["intimate_cards"] = [summary(cards.card(i), me, now) for i in card.intimate_card_ids]
    ids, next_cursor = page(cards.consumptions_seen_by(me, card), limit, after)
    view["consumptions"] = [consumption_view(cards.consumption(i)) for i in ids]
    view["next_cursor"] = next_cursor
    return view


def summary(card: Card, me: UUID, now: datetime) -> View:
    if isinstance(card, MainCard):
        return {
            "id": str(card.id),
            "kind": "main",
            "role": "owner",
            "merchant_id": str(card.merchant_id),
            "activity_id": str(card.activity_id),
            "balance": card.balance_money().as_dict(),
            "discount_bp": card.discount_bp,
            "shared_consumed": Money(card.shared_consumed, card.currency).as_dict(),
        }
    common = {
        "id": str(card.id),
        "role": "owner" if me == card.owner_id else "holder",
        "merchant_id": str(card.merchant_id),
        "main_card_id": str(card.main_card_id),
        "holder_id": str(card.holder_id) if card.holder_id else None,
    }
    if isinstance(card, SharedCard):
        return common | shared_summary(card)
    return common | intimate_summary(card, now)


def shared_summary(card: SharedCard) -> View:
    return shared_terms(card) | {
        "kind": "shared",
        "sharer_id": str(card.sharer_id) if card.sharer_id else None,
        "published": card.is_listing,
        "depth": card.depth,
        "spent": card.spent,
        "uses": card.uses,
    }


def intimate_summary(card: IntimateCard, now: datetime) -> View:
    currency = card.monthly_limit.currency
    return {
        "kind": "intimate",
        "status": card.status(now),
        "monthly_limit": card.monthly_limit.as_dict(),
        "per_use_limit": card.per_use_limit.as_dict() if card.per_use_limit else None,
        "total_limit": card.total_limit.as_dict() if card.total_limit else None,
        "show_details": card.show_details,
        "drawn_total": Money(card.drawn_total, currency).as_dict(),
        "drawn_by_month": [
            {"month": month, "drawn": Money(drawn, currency).as_dict()}
            for month, drawn in sorted(card.drawn_by_month.items())
        ],
        "offered_at": card.offered_at.isoformat(),
    }


def shared_terms(card: SharedCard) -> View:
    return {
        "discount_bp": card.discount_bp,
        "commission_bp": card.commission_bp,
        "expires_at": card.expires_at.isoformat() if card.expires_at else None,
        "cap": card.cap.as_dict() if card.cap else None,
        "max_uses": card.max_uses,
    }


def listings_page(listings: list[SharedCard], limit: int, after: str | None) -> View:
    published = {card.id: card for card in listings}
    ids, next_cursor = page(list(published), limit, after)
    items = [
        {"id": str(i), "merchant_id": str(published[i].merchant_id), **shared_terms(published[i])}
        for i in ids
    ]
    return {"items": items, "next_cursor": next_cursor}


def consumption_view(consumption: Consumption) -> View:
    return ConsumptionOut(
        id=str(consumption.id),
        card_id=str(consumption.card_id),
        card_kind=consumption.card_kind,
        price=MoneyOut.of(consumption.price),
        consumer_pays=MoneyOut.of(consumption.consumer_pays),
        card_debited=MoneyOut.of(consumption.card_debited),
        splits=[SplitOut(**split) for split in consumption.splits],
        refunded=consumption.refunded,
        recorded_at=consumption.created_on.isoformat(),
    ).model_dump()


def refund_view(refund: ConsumptionRefund, consumption_id: UUID) -> View:
    return {
        "id": str(refund.id),
        "consumption_id": str(consumption_id),
        "reversed": [{"account": leg.account, "amount": leg.amount} for leg in refund.postings],
    }


def withdrawal_view(withdrawal: Withdrawal) -> View:
    return WithdrawalOut(
        id=str(withdrawal.id),
        status=withdrawal.status,
        amount=MoneyOut.of(withdrawal.amount),
        failure=withdrawal.failure or None,
    ).model_dump()
