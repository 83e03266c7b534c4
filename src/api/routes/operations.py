"""Health and metrics, for load balancers and Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import Principal, authenticate, require
from api.container import Services, get_services
from api.runtime.dispatcher import DISPATCHER_FEED

router = APIRouter(tags=["operations"])


@router.get("/health")
def health(services: Services = Depends(get_services)) -> Any:
    error = services.views.database_error()
    if error is not None:
        body = {"status": "unavailable", "database": f"error: {error}"}
        return JSONResponse(body, status_code=503)
    return {"status": "ok", "database": "ok", "sandbox": services.settings.sandbox}


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/projections")
def projections(
    principal: Principal = Depends(authenticate), services: Services = Depends(get_services)
) -> Any:
    """Where every view stands: version, position, head, lag, status, dead letters."""
    require(principal, "operator")
    return [row.as_dict() for row in services.views.standings([DISPATCHER_FEED])]
