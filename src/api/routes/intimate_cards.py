"""Intimate cards: offered by a main card's owner, accepted by the holder, frozen, revoked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends

from api.card_presenters import summary
from api.card_schemas import IntimateCardIn
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.routes.acting import acting
from api.routes.distribution import parse_id
from api.schemas import Created
from ledger.cards.application import Cards
from ledger.cards.intimate import IntimateCard

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["member cards"])

Change = Callable[[Cards, UUID, UUID], IntimateCard]


@router.post("/cards/{card_id}/intimate-cards", status_code=201, response_model=Created)
def offer_intimate(
    card_id: str,
    body: IntimateCardIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    me = acting(call.principal, "member")
    main = parse_id(card_id, "card")
    holder = parse_id(body.holder_member_id, "member")
    per_use = body.per_use_limit.to_money() if body.per_use_limit else None
    total = body.total_limit.to_money() if body.total_limit else None

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        card = services.cards.offer_intimate(
            command_id,
            me,
            main,
            holder,
            body.monthly_limit.to_money(),
            per_use,
            total,
            body.show_details,
        )
        return 201, {"id": str(card.id)}

    return call.run(command)


def intimate_change(change: Change) -> Callable[..., Any]:
    def endpoint(
        card_id: str,
        call: IdempotentCall = Depends(idempotent),
        services: Services = Depends(get_services),
    ) -> Any:
        me = acting(call.principal, "member")
        target = parse_id(card_id, "card")

        def command(_: UUID) -> tuple[int, dict[str, Any]]:
            card = change(services.cards, target, me)
            return 200, summary(card, me, services.cards.clock())

        return call.run(command)

    return endpoint


CHANGES: list[tuple[str, Change, str]] = [
    ("acceptance", Cards.accept_intimate, "The holder accepts, within 24 hours of the offer"),
    ("freeze", Cards.freeze, "The owner freezes the card: consumptions are refused"),
    ("unfreeze", Cards.unfreeze, "The owner unfreezes the card"),
    ("revocation", Cards.revoke, "The owner revokes the card, for good"),
]

for path, change, summary_text in CHANGES:
    router.add_api_route(
        f"/intimate-cards/{{card_id}}/{path}",
        intimate_change(change),
        methods=["POST"],
        summary=summary_text,
        name=f"intimate_{change.__name__}",
    )
