"""Members: registered by the operator, each given a bearer token shown once."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends

from api.auth import require
from api.card_schemas import MemberCreated, MemberIn
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["member cards"])


@router.post("/members", status_code=201, response_model=MemberCreated)
def register_member(
    body: MemberIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """A member and their bearer token, shown once (a rerun after a crash issues a new one)."""
    require(call.principal, "operator")

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        member, token = services.cards.register_member(command_id, body.name, body.phone)
        return 201, MemberCreated(id=str(member.id), token=token).model_dump()

    return call.run(command, sealed=True)
