"""Member cards: merchants, members, activities, main, shared and intimate cards, consumptions,
refunds, wallets and withdrawals (seed 001)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request

from adapters.payments import PaymentGateway, PayoutGateway
from adapters.signing import key_secret
from api.auth import Principal, authenticate, new_token, require, token_hash
from api.card_schemas import (
    ActivityIn,
    CardIn,
    CardOut,
    ConsumptionIn,
    ConsumptionOut,
    IntimateCardIn,
    MemberCreated,
    MemberIn,
    MerchantCreated,
    MerchantIn,
    PassIn,
    SharedCardIn,
    WithdrawalIn,
    WithdrawalOut,
)
from api.idempotency import IdempotentCall, idempotent
from api.problems import Problem
from api.routes.distribution import parse_id
from api.schemas import Balance, Created, Currency, MoneyOut
from ledger import accounts
from ledger.cards.application import Card, Cards
from ledger.cards.cards import MainCard
from ledger.cards.consumptions import Consumption
from ledger.cards.intimate import IntimateCard
from ledger.cards.shared import SharedCard
from ledger.errors import DomainError, NotFound
from ledger.money import Money

router = APIRouter(prefix="/v1", tags=["member cards"])

Answer = tuple[int, dict[str, Any]]
Limit = Query(50, ge=1, le=100)


def cards_of(request: Request) -> Cards:
    return request.app.state.cards  # type: ignore[no-any-return]


def payments_of(request: Request) -> PaymentGateway:
    gateway: PaymentGateway | None = request.app.state.payments
    if gateway is None:
        raise Problem("unavailable", "no payment gateway is configured (LEDGER_SANDBOX=true)")
    return gateway


def payouts_of(request: Request) -> PayoutGateway:
    gateway: PayoutGateway | None = request.app.state.payouts
    if gateway is None:
        raise Problem("unavailable", "no payout gateway is configured (LEDGER_SANDBOX=true)")
    return gateway


def acting(principal: Principal, role: str) -> UUID:
    """The member or merchant making the call."""
    require(principal, role)  # type: ignore[arg-type]
    assert principal.subject is not None
    return principal.subject


# parties and activities


@router.post("/merchants", status_code=201, response_model=MerchantCreated)
def register_merchant(
    body: MerchantIn, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    require(call.principal, "operator")

    def command(command_id: UUID) -> Answer:
        merchant = cards_of(request).register_merchant(command_id, body.name, body.timezone)
        secret = key_secret(request.app.state.settings.secret_bytes, merchant.key_id)
        created = MerchantCreated(id=str(merchant.id), key_id=merchant.key_id, key_secret=secret)
        return 201, created.model_dump()

    return call.run(command, sealed=True)


@router.post("/members", status_code=201, response_model=MemberCreated)
def register_member(
    body: MemberIn, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    """A member and their bearer token, shown once (a rerun after a crash issues a new one)."""
    require(call.principal, "operator")

    def command(command_id: UUID) -> Answer:
        member = cards_of(request).register_member(command_id, body.name, body.phone)
        token = new_token()
        with request.app.state.pool.connection() as conn:
            conn.execute(
                "INSERT INTO api_tokens (id, token_hash, role, subject) "
                "VALUES (%s, %s, 'member', %s) "
                "ON CONFLICT (id) DO UPDATE SET token_hash = EXCLUDED.token_hash",
                (f"tok_{member.id.hex}", token_hash(token), str(member.id)),
            )
        return 201, MemberCreated(id=str(member.id), token=token).model_dump()

    return call.run(command, sealed=True)


@router.get("/merchants/{merchant_id}")
def get_merchant(
    merchant_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> Any:
    merchant = cards_of(request).merchant(parse_id(merchant_id, "merchant"))
    return {
        "id": str(merchant.id),
        "name": merchant.name,
        "timezone": merchant.timezone,
        "activities": [
            activity_view(cards_of(request), activity_id) for activity_id in merchant.activity_ids
        ],
    }


@router.post("/merchants/{merchant_id}/activities", status_code=201, response_model=Created)
def publish_activity(
    merchant_id: str, body: ActivityIn, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    me = acting(call.principal, "merchant")
    if parse_id(merchant_id, "merchant") != me:
        raise NotFound(f"merchant {merchant_id} not found")
    bonus = body.bonus.to_money() if body.bonus else None

    def command(command_id: UUID) -> Answer:
        activity = cards_of(request).publish_activity(
            command_id, me, body.pay.to_money(), bonus, body.discount_bp, body.shared_cap_bp
        )
        return 201, {"id": str(activity.id)}

    return call.run(command)


@router.get("/activities/{activity_id}")
def get_activity(
    activity_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> Any:
    return activity_view(cards_of(request), parse_id(activity_id, "activity"))


def activity_view(cards: Cards, activity_id: UUID) -> dict[str, Any]:
    activity = cards.activity(activity_id)
    return {
        "id": str(activity.id),
        "merchant_id": str(activity.merchant_id),
        "pay": activity.pay.as_dict(),
        "bonus": activity.bonus.as_dict(),
        "discount_bp": activity.discount_bp,
        "shared_cap_bp": activity.shared_cap_bp,
    }


# main cards


@router.post("/cards", status_code=201, response_model=CardOut)
def open_card(body: CardIn, request: Request, call: IdempotentCall = Depends(idempotent)) -> Any:
    """Pay for a card under an activity through the payment adapter; the card holds pay + bonus."""
    me = acting(call.principal, "member")
    activity_id = parse_id(body.activity_id, "activity")
    payments = payments_of(request)

    def command(command_id: UUID) -> Answer:
        cards = cards_of(request)
        activity = cards.activity(activity_id)
        cards.member(me)
        receipt = payments.charge(command_id, me, activity.pay)
        card = cards.open_card(command_id, me, activity.id, receipt.reference)
        out = CardOut(
            id=str(card.id),
            balance=MoneyOut.of(card.balance_money()),
            discount_bp=card.discount_bp,
        )
        return 201, out.model_dump()

    return call.run(command)


@router.get("/cards")
def my_cards(
    request: Request,
    limit: int = Limit,
    after: str | None = None,
    principal: Principal = Depends(authenticate),
) -> Any:
    """The member's own cards: main cards they own, shared and intimate cards they hold."""
    me = acting(principal, "member")
    cards = cards_of(request)
    ids, next_cursor = page(cards.member(me).card_ids, limit, after)
    return {
        "items": [summary(cards.card(i), me, cards.clock()) for i in ids],
        "next_cursor": next_cursor,
    }


@router.get("/cards/{card_id}")
def get_card(
    card_id: str,
    request: Request,
    limit: int = Limit,
    after: str | None = None,
    principal: Principal = Depends(authenticate),
) -> Any:
    """A card its owner or holder sees; anyone else's card does not exist for them."""
    me = acting(principal, "member")
    cards = cards_of(request)
    card = cards.card_for(me, parse_id(card_id, "card"))
    view = summary(card, me, cards.clock())
    if isinstance(card, MainCard):
        view["shared_cards"] = [
            summary(cards.card(i), me, cards.clock()) for i in card.shared_card_ids
        ]
        view["intimate_cards"] = [
            summary(cards.card(i), me, cards.clock()) for i in card.intimate_card_ids
        ]
        shown = [c for c, used in card.consumptions if owner_sees(cards, card, used)]
    elif isinstance(card, SharedCard):
        shown = card.consumption_ids
    else:
        shown = card.consumption_ids if me == card.holder_id or card.show_details else []
    ids, next_cursor = page(shown, limit, after)
    view["consumptions"] = [consumption_view(cards.consumption(i)) for i in ids]
    view["next_cursor"] = next_cursor
    return view


def owner_sees(cards: Cards, main: MainCard, used: UUID) -> bool:
    """Intimate cards show their consumptions to the owner only when set to; totals always."""
    if used == main.id:
        return True
    card = cards.card(used)
    return not isinstance(card, IntimateCard) or card.show_details


def summary(card: Card, me: UUID, now: datetime) -> dict[str, Any]:
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
        return (
            common
            | shared_terms(card)
            | {
                "kind": "shared",
                "sharer_id": str(card.sharer_id) if card.sharer_id else None,
                "published": card.is_listing,
                "depth": card.depth,
                "spent": card.spent,
                "uses": card.uses,
            }
        )
    currency = card.monthly_limit.currency
    return common | {
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


def shared_terms(card: SharedCard) -> dict[str, Any]:
    return {
        "discount_bp": card.discount_bp,
        "commission_bp": card.commission_bp,
        "expires_at": card.expires_at.isoformat() if card.expires_at else None,
        "cap": card.cap.as_dict() if card.cap else None,
        "max_uses": card.max_uses,
    }


def page(ids: list[UUID], limit: int, after: str | None) -> tuple[list[UUID], str | None]:
    """Cursor pagination over a list of ids: the cursor is the last id of the page."""
    start = 0
    if after is not None:
        cursor = parse_id(after, "cursor")
        if cursor not in ids:
            raise NotFound(f"cursor {after} not found")
        start = ids.index(cursor) + 1
    chosen = ids[start : start + limit]
    more = start + limit < len(ids)
    return chosen, str(chosen[-1]) if more and chosen else None


# shared cards


@router.post("/cards/{card_id}/shared-cards", status_code=201, response_model=Created)
def share_card(
    card_id: str, body: SharedCardIn, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    me = acting(call.principal, "member")
    main = parse_id(card_id, "card")
    to = parse_id(body.to_member_id, "member") if body.to_member_id else None

    def command(command_id: UUID) -> Answer:
        card = cards_of(request).share_card(
            command_id,
            me,
            main,
            body.discount_bp,
            body.commission_bp,
            to,
            body.expires_at,
            body.cap.to_money() if body.cap else None,
            body.max_uses,
        )
        return 201, {"id": str(card.id)}

    return call.run(command)


@router.get("/sharing-platform/listings")
def listings(
    request: Request,
    limit: int = Limit,
    after: str | None = None,
    principal: Principal = Depends(authenticate),
) -> Any:
    acting(principal, "member")
    published = {card.id: card for card in cards_of(request).listings()}
    ids, next_cursor = page(list(published), limit, after)
    items = [
        {"id": str(i), "merchant_id": str(published[i].merchant_id), **shared_terms(published[i])}
        for i in ids
    ]
    return {"items": items, "next_cursor": next_cursor}


@router.post("/shared-cards/{card_id}/claims", status_code=201, response_model=Created)
def claim(card_id: str, request: Request, call: IdempotentCall = Depends(idempotent)) -> Any:
    me = acting(call.principal, "member")
    listing = parse_id(card_id, "listing")
    return call.run(
        lambda command_id: (
            201,
            {"id": str(cards_of(request).claim(command_id, me, listing).id)},
        )
    )


@router.post("/shared-cards/{card_id}/passes", status_code=201, response_model=Created)
def pass_on(
    card_id: str, body: PassIn, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    me = acting(call.principal, "member")
    source = parse_id(card_id, "card")
    to = parse_id(body.to_member_id, "member") if body.to_member_id else None
    return call.run(
        lambda command_id: (
            201,
            {"id": str(cards_of(request).pass_on(command_id, me, source, to).id)},
        )
    )


# intimate cards


@router.post("/cards/{card_id}/intimate-cards", status_code=201, response_model=Created)
def offer_intimate(
    card_id: str, body: IntimateCardIn, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    me = acting(call.principal, "member")
    main = parse_id(card_id, "card")
    holder = parse_id(body.holder_member_id, "member")

    def command(command_id: UUID) -> Answer:
        card = cards_of(request).offer_intimate(
            command_id,
            me,
            main,
            holder,
            body.monthly_limit.to_money(),
            body.per_use_limit.to_money() if body.per_use_limit else None,
            body.total_limit.to_money() if body.total_limit else None,
            body.show_details,
        )
        return 201, {"id": str(card.id)}

    return call.run(command)


def intimate_change(change: str) -> Any:
    def endpoint(card_id: str, request: Request, call: IdempotentCall = Depends(idempotent)) -> Any:
        me = acting(call.principal, "member")
        target = parse_id(card_id, "card")

        def command(_: UUID) -> Answer:
            cards = cards_of(request)
            card = getattr(cards, change)(target, me)
            return 200, summary(card, me, cards.clock())

        return call.run(command)

    return endpoint


for path, change, summary_text in [
    ("acceptance", "accept_intimate", "The holder accepts, within 24 hours of the offer"),
    ("freeze", "freeze", "The owner freezes the card: consumptions are refused"),
    ("unfreeze", "unfreeze", "The owner unfreezes the card"),
    ("revocation", "revoke", "The owner revokes the card, for good"),
]:
    router.add_api_route(
        f"/intimate-cards/{{card_id}}/{path}",
        intimate_change(change),
        methods=["POST"],
        summary=summary_text,
        name=f"intimate_{change}",
    )


# consumption and refunds


@router.post("/consumptions", status_code=201, response_model=ConsumptionOut)
def consume(
    body: ConsumptionIn, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    """At the merchant's till: a main or intimate card draws round(P x d_m) from the main card;
    a shared card's holder pays round(P x d_s) through the payment adapter, split as stored."""
    me = acting(call.principal, "merchant")
    card_id = parse_id(body.card_id, "card")
    price = body.price.to_money()

    def command(command_id: UUID) -> Answer:
        cards = cards_of(request)
        recorded = cards.recorded_consumption(me, command_id)
        if recorded is not None:
            return 201, consumption_view(recorded)
        quote = cards.quote(me, card_id, price)
        card = cards.card(card_id)
        payer = card.holder_id if isinstance(card, SharedCard) else None
        if payer is not None:
            payments_of(request).charge(command_id, payer, quote.consumer_pays)
        try:
            consumption = cards.consume(command_id, me, card_id, price)
        except DomainError:
            if payer is not None:
                payments_of(request).refund(command_id)
            raise
        return 201, consumption_view(consumption)

    return call.run(command)


@router.get("/consumptions/{consumption_id}", response_model=ConsumptionOut)
def get_consumption(
    consumption_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> Any:
    me = acting(principal, "merchant")
    return consumption_view(
        cards_of(request).consumption_at(me, parse_id(consumption_id, "consumption"))
    )


@router.post("/consumptions/{consumption_id}/refunds", status_code=201)
def refund(
    consumption_id: str, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    """Reverse the consumption's stored splits exactly; the consumer's payment goes back."""
    me = acting(call.principal, "merchant")
    target = parse_id(consumption_id, "consumption")

    def command(command_id: UUID) -> Answer:
        cards = cards_of(request)
        refund = cards.refund(command_id, me, target)
        consumption = cards.consumption(target)
        if consumption.consumer_pays.amount:
            payments_of(request).refund(consumption.id)
        return 201, {
            "id": str(refund.id),
            "consumption_id": str(target),
            "reversed": [{"account": leg.account, "amount": leg.amount} for leg in refund.postings],
        }

    return call.run(command)


def consumption_view(consumption: Consumption) -> dict[str, Any]:
    return ConsumptionOut(
        id=str(consumption.id),
        card_id=str(consumption.card_id),
        card_kind=consumption.card_kind,
        price=MoneyOut.of(consumption.price),
        consumer_pays=MoneyOut.of(consumption.consumer_pays),
        card_debited=MoneyOut.of(consumption.card_debited),
        splits=consumption.splits,  # type: ignore[arg-type]
        refunded=consumption.refunded,
        recorded_at=consumption.created_on.isoformat(),
    ).model_dump()


# wallets and withdrawals


@router.get("/wallet", response_model=Balance)
def wallet(
    request: Request,
    currency: Currency = Query("CNY"),
    principal: Principal = Depends(authenticate),
) -> Any:
    """Commission: posted, pending (held by withdrawals in flight) and available."""
    me = acting(principal, "member")
    request.app.state.views.catch_up()
    posted, pending = request.app.state.views.balances.of_account(accounts.user_wallet(me)).get(
        currency, (0, 0)
    )
    return Balance(
        posted=MoneyOut(amount=posted, currency=currency),
        pending=MoneyOut(amount=pending, currency=currency),
        available=MoneyOut(amount=posted - pending, currency=currency),
    )


@router.post("/withdrawals", status_code=201, response_model=WithdrawalOut)
def withdraw(
    body: WithdrawalIn, request: Request, call: IdempotentCall = Depends(idempotent)
) -> Any:
    """Hold the amount, pay it out through the payout adapter, then post it or release it."""
    me = acting(call.principal, "member")
    amount = body.amount.to_money()
    payouts = payouts_of(request)

    def command(command_id: UUID) -> Answer:
        cards = cards_of(request)
        withdrawal = cards.request_withdrawal(command_id, me, amount)
        if withdrawal.status == "pending":
            result = payouts.pay_out(withdrawal.id, me, withdrawal.amount)
            detail = result.reference if result.paid else result.reason
            withdrawal = cards.finish_withdrawal(withdrawal.id, result.paid, detail)
        return 201, withdrawal_view(withdrawal)

    return call.run(command)


@router.get("/withdrawals/{withdrawal_id}", response_model=WithdrawalOut)
def get_withdrawal(
    withdrawal_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> Any:
    me = acting(principal, "member")
    return withdrawal_view(
        cards_of(request).withdrawal_of(me, parse_id(withdrawal_id, "withdrawal"))
    )


def withdrawal_view(withdrawal: Any) -> dict[str, Any]:
    return WithdrawalOut(
        id=str(withdrawal.id),
        status=withdrawal.status,
        amount=MoneyOut.of(withdrawal.amount),
        failure=withdrawal.failure or None,
    ).model_dump()
