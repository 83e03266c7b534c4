"""Health and metrics, for load balancers and Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import authenticate, require
from api.container import Services, get_services
from api.presenters import standings_page
from api.principals import Principal
from api.problems import Problem
from api.query_filters import declared_filters_only
from api.runtime.dispatcher import DISPATCHER_FEED
from api.runtime.outage import health_of

router = APIRouter(tags=["operations"])


@router.get("/health")
def health(services: Services = Depends(get_services)) -> Any:
    """Liveness: this process answers. It asks nothing of the database, so a balancer or a
    supervisor never drains or restarts every process at once while the database is away."""
    return {"status": "ok", "sandbox": services.settings.sandbox}


@router.get("/health/ready")
def ready(request: Request, services: Services = Depends(get_services)) -> Any:
    """Readiness for the load balancer: 503 while the database is away, so no request is sent
    to a process that could not record it (at once while this process knows it is away)."""
    health = health_of(request.app)
    if health is not None and health.down:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
    error = services.views.database_error()
    if error is not None:
        return JSONResponse({"status": "unavailable", "database": f"error: {error}"}, 503)
    return {"status": "ready", "database": "ok"}


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/projections", dependencies=[Depends(declared_filters_only)])
def projections(
    limit: int = Query(50, ge=1, le=100),
    after: str | None = Query(None, max_length=200),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Where every view stands: version, position, head, lag, status, dead letters; paged,
    the cursor naming the last row's view and application."""
    require(principal, "operator")
    rows = [row.as_dict() for row in services.views.standings([DISPATCHER_FEED])]
    try:
        return standings_page(rows, limit, after)
    except ValueError:
        detail = "after is not a cursor of this list"
        raise Problem("validation_failed", detail, status=422) from None
