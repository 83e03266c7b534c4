"""Merchant settlements: the operator settles a merchant's closed day; the operator, finance
and the merchant itself read the statement (JSON or CSV) and list them."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

from api.auth import authenticate, require
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.merchant_settlement_presenters import (
    MerchantSettlementIn,
    settlement_csv,
    settlement_view,
)
from api.presenters import page_of, row_out
from api.principals import Principal
from api.problems import Problem
from api.query_filters import declared_filters_only
from api.routes.distribution import parse_cursor, parse_id
from ledger.cards.merchant_settlement import MerchantSettlement
from ledger.errors import NotFound

router = APIRouter(
    route_class=KeyedRoute,
    prefix="/v1",
    tags=["merchant settlements"],
    dependencies=[Depends(declared_filters_only)],
)


@router.post("/merchant-settlements", status_code=202)
def settle_merchant(
    body: MerchantSettlementIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """One settlement per (merchant, period): the same pair answers the same settlement. It
    collects the merchant's unsettled lines up to the end of the day (in the merchant's time
    zone) and pays what is due through the payout gateway; a payout not answered yet leaves
    it `paying`, asked again by the sweeper with the same payout id."""
    require(call.principal, "operator")
    merchant_id = parse_id(body.merchant_id, "merchant")
    if body.close_now and not services.settings.sandbox:
        raise Problem("validation_failed", "close_now is accepted in sandbox mode only", status=422)

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        settlement = services.merchant_settlements.open(merchant_id, body.period, body.close_now)
        return 202, {"id": str(settlement.id), "status": settlement.status}

    return call.run(command)


@router.get(
    "/merchant-settlements/{settlement_id}",
    responses={200: {"content": {"text/csv": {}}, "description": "with ?format=csv"}},
)
def get_merchant_settlement(
    settlement_id: str,
    format: Literal["json", "csv"] = Query("json"),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Consumptions, refunds, totals per currency and payouts; `?format=csv` gives the
    statement as CSV. A merchant reads its own only (any other is not found)."""
    settlement = visible_settlement(services, principal, parse_id(settlement_id, "settlement"))
    if format == "csv":
        return Response(settlement_csv(settlement), media_type="text/csv")
    return settlement_view(settlement)


@router.get("/merchant-settlements")
def list_merchant_settlements(
    merchant_id: str | None = Query(None, max_length=64),
    limit: int = Query(50, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Settlements ordered by id; a merchant lists its own."""
    require(principal, "operator", "finance", "merchant")
    cursor = parse_cursor(after)
    wanted = parse_id(merchant_id, "merchant") if merchant_id else None
    if principal.role == "merchant":
        if wanted is not None and wanted != principal.subject:
            raise NotFound(f"merchant {merchant_id} not found")
        wanted = principal.subject
    services.views.catch_up("merchant_statements")
    rows = services.merchant_statements.settlements(wanted, cursor, limit + 1)
    return page_of([settlement_row(row) for row in rows], limit)


def settlement_row(row: dict[str, Any]) -> dict[str, Any]:
    shown = row_out({k: v for k, v in row.items() if k != "totals"})
    shown["totals"] = [
        {"amount": amount, "currency": currency} for currency, amount in row["totals"].items()
    ]
    return shown


def visible_settlement(
    services: Services, principal: Principal, settlement_id: UUID
) -> MerchantSettlement:
    require(principal, "operator", "finance", "merchant")
    if principal.role == "merchant":
        assert principal.subject is not None
        return services.merchant_settlements.settlement_of(principal.subject, settlement_id)
    try:
        return services.merchant_settlements.settlement(settlement_id)
    except NotFound:
        raise NotFound(f"merchant settlement {settlement_id} not found") from None
