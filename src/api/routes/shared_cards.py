"""Shared cards: sent to a member or published on the sharing platform, claimed, passed on."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from api.auth import authenticate
from api.card_presenters import listings_page
from api.card_schemas import PassIn, SharedCardIn
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.principals import Principal
from api.query_filters import declared_filters_only
from api.routes.acting import acting
from api.routes.distribution import parse_id
from api.schemas import Created

router = APIRouter(
    route_class=KeyedRoute,
    prefix="/v1",
    tags=["member cards"],
    dependencies=[Depends(declared_filters_only)],
)


@router.post("/cards/{card_id}/shared-cards", status_code=201, response_model=Created)
def share_card(
    card_id: str,
    body: SharedCardIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    me = acting(call.principal, "member")
    main = parse_id(card_id, "card")
    to = parse_id(body.to_member_id, "member") if body.to_member_id else None
    cap = body.cap.to_money() if body.cap else None

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        card = services.cards.share_card(
            command_id,
            me,
            main,
            body.discount_bp,
            body.commission_bp,
            to,
            body.expires_at,
            cap,
            body.max_uses,
        )
        return 201, {"id": str(card.id)}

    return call.run(command)


@router.get("/sharing-platform/listings")
def listings(
    limit: int = Query(50, ge=1, le=100),
    after: str | None = None,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    acting(principal, "member")
    return listings_page(services.cards.listings(), limit, after)


@router.post("/shared-cards/{card_id}/claims", status_code=201, response_model=Created)
def claim(
    card_id: str,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    me = acting(call.principal, "member")
    listing = parse_id(card_id, "listing")

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        return 201, {"id": str(services.cards.claim(command_id, me, listing).id)}

    return call.run(command)


@router.post("/shared-cards/{card_id}/passes", status_code=201, response_model=Created)
def pass_on(
    card_id: str,
    body: PassIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    me = acting(call.principal, "member")
    source = parse_id(card_id, "card")
    to = parse_id(body.to_member_id, "member") if body.to_member_id else None

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        return 201, {"id": str(services.cards.pass_on(command_id, me, source, to).id)}

    return call.run(command)
