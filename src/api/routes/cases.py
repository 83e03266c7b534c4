"""The case queue: differences settlements could not agree on and late successes, listed
for operators and finance, resolved by an operator with an outcome and a note."""

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
from api.query_filters import declared_filters_only
from api.routes.distribution import parse_cursor, parse_id
from api.settlement_presenters import CaseResolutionIn, case_view
from ledger.clock import utc_now

router = APIRouter(
    route_class=KeyedRoute,
    prefix="/v1",
    tags=["cases"],
    dependencies=[Depends(declared_filters_only)],
)


@router.get("/cases")
def list_cases(
    status: str | None = Query(None, pattern="^(open|resolved)$"),
    kind: str | None = Query(None, pattern="^(ours_only|theirs_only|amount_differs|late_success)$"),
    limit: int = Query(50, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Oldest first: a queue."""
    require(principal, "operator", "finance")
    services.views.catch_up("settlements")
    ids = services.views.settlements.case_listing(status, kind, parse_cursor(after), limit + 1)
    return page_of([case_view(services.settlements.case(i)) for i in ids], limit)


@router.get("/cases/{case_id}")
def get_case(
    case_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "operator", "finance")
    return case_view(services.settlements.case(parse_id(case_id, "case")))


@router.post("/cases/{case_id}/resolution")
def resolve_case(
    case_id: str,
    body: CaseResolutionIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """Recorded with its postings; the settlement reconciles again and pays once no case of
    it is open (the sweeper pays)."""
    require(call.principal, "operator")
    target = services.settlements.case(parse_id(case_id, "case")).id

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        resolved = services.settlements.resolve_case(
            target, body.outcome, body.note, call.principal.scope, utc_now()
        )
        return 200, case_view(resolved)

    return call.run(command)
