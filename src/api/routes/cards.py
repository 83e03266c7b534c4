"""Main cards bought under an activity, and the cards a member owns or holds."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from api.auth import authenticate
from api.card_presenters import card_bought, card_view, cards_page
from api.card_schemas import CardIn, CardOut
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.principals import Principal
from api.query_filters import declared_filters_only
from api.routes.acting import acting
from api.routes.distribution import parse_id

router = APIRouter(
    route_class=KeyedRoute,
    prefix="/v1",
    tags=["member cards"],
    dependencies=[Depends(declared_filters_only)],
)

Limit = Query(50, ge=1, le=100)


@router.post("/cards", status_code=201, response_model=CardOut)
def open_card(
    body: CardIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """Pay for a card under an activity through the payment gateway; it holds pay + bonus."""
    me = acting(call.principal, "member")
    activity_id = parse_id(body.activity_id, "activity")

    def command(card_id: UUID) -> tuple[int, dict[str, Any]]:
        return 201, card_bought(services.cards.buy_card(card_id, me, activity_id))

    return call.run(command)


@router.get("/cards")
def my_cards(
    limit: int = Limit,
    after: str | None = None,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """The member's own cards: main cards they own, shared and intimate cards they hold."""
    return cards_page(services.cards, acting(principal, "member"), limit, after)


@router.get("/cards/{card_id}")
def get_card(
    card_id: str,
    limit: int = Limit,
    after: str | None = None,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """A card its owner or holder sees; anyone else's card does not exist for them."""
    me = acting(principal, "member")
    card = services.cards.card_for(me, parse_id(card_id, "card"))
    return card_view(services.cards, card, me, limit, after)
