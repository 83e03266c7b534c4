"""A channel's export of an inactive code batch for printing: its codes as CSV, once."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Response

from adapters.audit_log import AuditLine
from api.auth import require
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.presenters import batch_csv
from api.routes.distribution import parse_id
from ledger.errors import NotFound, StateConflict

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["codes"])


@router.post(
    "/code-batches/{batch_id}/export",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "batch_id,code per line"}},
)
def export_batch(
    batch_id: str,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Response:
    """The codes of the channel's own inactive batch, once (a second export is a
    `state_conflict`); the export is written to the audit log. A retry with the same
    Idempotency-Key (its answer lost) gets the same CSV again, kept sealed."""
    principal, request = call.principal, call.request
    require(principal, "channel")
    assert principal.channel_id is not None
    channel_id = principal.channel_id
    batch = services.distribution.code_batch(parse_id(batch_id, "code batch"))
    if batch.channel_id != channel_id:
        raise NotFound(f"code batch {batch_id} not found")
    if not batch.inactive:
        raise StateConflict("only an inactive batch's codes are exported")

    def audit(count: int) -> None:
        services.audit_log.write(
            AuditLine(
                kind="batch_export",
                principal=principal.scope,
                channel_id=channel_id,
                request_id=request.headers.get("X-Request-Id"),
                method=request.method,
                path=request.url.path,
                detail=f"{count} codes of batch {batch.id} exported for printing",
            )
        )

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        codes = services.sealed_codes.export(batch.id, channel_id, audit)
        return 200, {"csv": batch_csv(batch.id, codes)}

    answer = call.run(command, sealed=True)
    if answer.status_code != 200:
        return answer
    return Response(json.loads(bytes(answer.body))["csv"], media_type="text/csv")
