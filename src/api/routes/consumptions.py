"""Consumptions at a merchant's till, and their refunds."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends

from api.auth import authenticate
from api.card_presenters import consumption_view, refund_view
from api.card_schemas import ConsumptionIn, ConsumptionOut
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.principals import Principal
from api.routes.acting import acting
from api.routes.distribution import parse_id

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["member cards"])


@router.post("/consumptions", status_code=201, response_model=ConsumptionOut)
def consume(
    body: ConsumptionIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """At the merchant's till: a main or intimate card draws round(P x d_m) from the main card;
    a shared card's holder pays round(P x d_s) through the payment gateway, split as stored."""
    me = acting(call.principal, "merchant")
    card_id = parse_id(body.card_id, "card")
    price = body.price.to_money()

    def command(consumption_id: UUID) -> tuple[int, dict[str, Any]]:
        consumption = services.cards.consume(consumption_id, me, card_id, price)
        return 201, consumption_view(consumption)

    return call.run(command)


@router.get("/consumptions/{consumption_id}", response_model=ConsumptionOut)
def get_consumption(
    consumption_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    me = acting(principal, "merchant")
    target = parse_id(consumption_id, "consumption")
    return consumption_view(services.cards.consumption_at(me, target))


@router.post("/consumptions/{consumption_id}/refunds", status_code=201)
def refund(
    consumption_id: str,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """Reverse the consumption's stored splits exactly; the consumer's payment goes back."""
    me = acting(call.principal, "merchant")
    target = parse_id(consumption_id, "consumption")

    def command(refund_id: UUID) -> tuple[int, dict[str, Any]]:
        refund = services.cards.refund_consumption(refund_id, me, target)
        return 201, refund_view(refund, target)

    return call.run(command)
