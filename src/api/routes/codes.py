"""Code batches, activations and voids: a channel's redemption codes."""

from __future__ import annotations

import os
import signal
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends

from api.auth import require
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.presenters import code_batch_issued
from api.routes.distribution import parse_id
from api.schemas import CodeBatchIn, CodesIn, CodeVoidIn

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["codes"])


@router.post("/code-batches", status_code=201)
def issue_codes(
    body: CodeBatchIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """The codes are in this answer only (and in its idempotent replays, stored sealed); they
    are stored nowhere in clear. A retry whose first answer was lost after the batch was saved
    gets the same codes, kept sealed until an answer is stored."""
    require(call.principal, "channel")
    assert call.principal.channel_id is not None
    channel_id = call.principal.channel_id
    product_id = parse_id(body.product_id, "product")

    def command(batch_id: UUID) -> tuple[int, dict[str, Any]]:
        batch, codes = services.distribution.issue_codes(
            batch_id, channel_id, product_id, body.quantity, body.expires_at, body.inactive
        )
        if batch.inactive:
            services.sealed_codes.keep(batch.id, channel_id, codes)  # for its one export
        if services.settings.sandbox and services.settings.ledger_sandbox_batch_exit:
            os.kill(os.getpid(), signal.SIGKILL)  # crash tests: saved, answer not stored
        return 201, code_batch_issued(batch, codes)

    answer = call.run(command, sealed=True)
    if answer.status_code == 201:
        services.distribution.codes_shown(call.command_id)
    return answer


@router.post("/code-activations")
def activate_codes(
    body: CodesIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "channel")
    assert call.principal.channel_id is not None
    channel_id = call.principal.channel_id
    return call.run(
        lambda _: (
            200,
            {"activated": len(services.distribution.activate_codes(channel_id, body.codes))},
        )
    )


@router.post("/code-voids")
def void_codes(
    body: CodeVoidIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "channel")
    assert call.principal.channel_id is not None
    channel_id = call.principal.channel_id

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        app = services.distribution
        if body.batch_id is not None:
            voided = app.void_batch(channel_id, parse_id(body.batch_id, "code batch"))
        else:
            voided = app.void_codes(channel_id, body.codes or [])
        return 200, {"voided": len(voided)}

    return call.run(command)
