"""Merchants and the activities under which their cards are sold."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends

from adapters.signing import key_secret
from api.auth import authenticate, require
from api.card_presenters import activity_view, merchant_view
from api.card_schemas import ActivityIn, MerchantCreated, MerchantIn
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.principals import Principal
from api.routes.acting import acting
from api.routes.distribution import parse_id
from api.schemas import Created
from ledger.errors import NotFound

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["member cards"])


@router.post("/merchants", status_code=201, response_model=MerchantCreated)
def register_merchant(
    body: MerchantIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "operator")

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        merchant = services.cards.register_merchant(command_id, body.name, body.timezone)
        secret = key_secret(services.settings.secret_bytes, merchant.key_id)
        created = MerchantCreated(id=str(merchant.id), key_id=merchant.key_id, key_secret=secret)
        return 201, created.model_dump()

    return call.run(command, sealed=True)


@router.get("/merchants/{merchant_id}")
def get_merchant(
    merchant_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """A merchant's profile and its activities: for the operator and the merchant itself;
    for anyone else it does not exist (404), as another party's card or channel."""
    wanted = parse_id(merchant_id, "merchant")
    itself = principal.role == "merchant" and principal.subject == wanted
    if principal.role != "operator" and not itself:
        raise NotFound(f"merchant {merchant_id} not found")
    return merchant_view(services.cards, services.cards.merchant(wanted))


@router.post("/merchants/{merchant_id}/activities", status_code=201, response_model=Created)
def publish_activity(
    merchant_id: str,
    body: ActivityIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    me = acting(call.principal, "merchant")
    if parse_id(merchant_id, "merchant") != me:
        raise NotFound(f"merchant {merchant_id} not found")
    bonus = body.bonus.to_money() if body.bonus else None

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        activity = services.cards.publish_activity(
            command_id, me, body.pay.to_money(), bonus, body.discount_bp, body.shared_cap_bp
        )
        return 201, {"id": str(activity.id)}

    return call.run(command)


@router.get("/activities/{activity_id}")
def get_activity(
    activity_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    return activity_view(services.cards, parse_id(activity_id, "activity"))
