"""Platform settlements: the operator opens one per (platform, closed UTC day) and approves
payment while cases are open; finance and the operator read them and their lines. The saga
itself is moved along by the runtime's sweeper, not by these routes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from api.auth import authenticate, require
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.presenters import page_of
from api.principals import Principal
from api.problems import Problem
from api.query_filters import declared_filters_only
from api.routes.distribution import parse_cursor, parse_id
from api.settlement_presenters import (
    SettlementIn,
    line_view,
    parse_period,
    settlement_view,
)

router = APIRouter(
    route_class=KeyedRoute,
    prefix="/v1",
    tags=["settlements"],
    dependencies=[Depends(declared_filters_only)],
)


@router.post("/settlements", status_code=202)
def open_settlement(
    body: SettlementIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """One settlement per (platform, period): the same pair answers the same settlement."""
    require(call.principal, "operator")
    platform_id = parse_id(body.platform_id, "platform")
    period = parse_period(body.period)
    if body.close_now and not services.settings.sandbox:
        raise Problem("validation_failed", "close_now is accepted in sandbox mode only", status=422)

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        settlement = services.settlement_steps.open(platform_id, period, body.close_now)
        return 202, {"id": str(settlement.id), "status": settlement.status}

    return call.run(command)


@router.get("/settlements")
def list_settlements(
    platform_id: str | None = Query(None, max_length=64),
    limit: int = Query(50, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Newest period first."""
    require(principal, "operator", "finance")
    platform = parse_id(platform_id, "platform") if platform_id else None
    services.views.catch_up("settlements")
    ids = services.views.settlements.listing(platform, parse_cursor(after), limit + 1)
    items = [settlement_view(services.settlements.settlement(i)) for i in ids]
    return page_of(items, limit)


@router.get("/settlements/{settlement_id}")
def get_settlement(
    settlement_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "operator", "finance")
    return settlement_view(services.settlements.settlement(parse_id(settlement_id, "settlement")))


@router.get("/settlements/{settlement_id}/lines")
def settlement_lines(
    settlement_id: str,
    limit: int = Query(100, ge=1, le=1000),
    after: str | None = Query(None, pattern=r"^\d{1,9}$"),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """The matched lines in matching order; the cursor is how many lines came before."""
    require(principal, "operator", "finance")
    settlement = services.settlements.settlement(parse_id(settlement_id, "settlement"))
    offset = int(after) if after else 0
    rows = services.settlements.results(settlement, offset, limit + 1)
    items = [line_view(currency, row) for currency, row in rows[:limit]]
    next_cursor = str(offset + limit) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


@router.post("/settlements/{settlement_id}/approval")
def approve_settlement(
    settlement_id: str,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """Pay the agreed amount while cases are open; a case resolved later is paid on its own."""
    require(call.principal, "operator")
    target = services.settlements.settlement(parse_id(settlement_id, "settlement")).id

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        approved = services.settlements.approve(target, call.principal.scope)
        return 200, settlement_view(approved)

    return call.run(command)
