"""Health and metrics, for load balancers and Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import Principal, authenticate, require
from api.container import Services, get_services
from api.runtime.dispatcher import DISPATCHER_FEED
from projections.status import standings

router = APIRouter(tags=["operations"])


@router.get("/health")
def health(services: Services = Depends(get_services)) -> Any:
    try:
        with services.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means the database is not usable
        return JSONResponse(
            {"status": "unavailable", "database": f"error: {type(error).__name__}"},
            status_code=503,
        )
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
    with services.pool.connection() as conn:
        rows = standings(conn, [DISPATCHER_FEED])
    return [row.as_dict() for row in rows]
