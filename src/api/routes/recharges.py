"""Verification codes and recharges: what the recharge page and API clients call."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request

from api.auth import authenticate, require
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent, idempotent_page
from api.keyed_route import KeyedRoute
from api.presenters import recharge_out, recharges_page
from api.principals import Principal
from api.problems import Problem
from api.query_filters import declared_filters_only
from api.routes.distribution import parse_cursor, parse_id, visible_channel
from api.schemas import (
    EndUserIn,
    RechargeIn,
    RechargeOut,
    RefundRequestIn,
    ResolutionIn,
    VerificationIn,
)
from ledger.clock import utc_now
from ledger.distribution.channel import Channel
from ledger.errors import NotFound
from ledger.recharges.saga import Recharge

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["recharges"])


def acting_channel(services: Services, principal: Principal, channel_ref: str | None) -> Channel:
    """A signed channel acts for itself; the web page names the channel it is the page of."""
    if principal.role == "channel":
        assert principal.channel_id is not None
        channel_id = principal.channel_id
        read = principal.party  # read to check the request's key, a moment ago: not again
        if isinstance(read, Channel) and read.id == channel_id:
            services.distribution.check_line_active(read)
            return read
    elif principal.role == "web":
        if not channel_ref:
            raise Problem("validation_failed", "channel_id is needed", status=422)
        channel_id = parse_id(channel_ref, "channel")
    else:
        raise Problem("forbidden", "recharges are placed by a channel or its recharge page")
    return services.distribution.active_channel(channel_id)


@router.post("/verification-codes", status_code=202)
def send_verification_code(
    body: VerificationIn,
    request: Request,
    call: IdempotentCall = Depends(idempotent_page),
    services: Services = Depends(get_services),
) -> Any:
    channel = acting_channel(services, call.principal, body.channel_id)
    address = end_user_address(request, call.principal, None)

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        valid = services.placement.send_verification_code(channel, body.account, address)
        return 202, {"account": body.account, "expires_in": valid}

    return call.run(command)


@router.post("/recharges", status_code=202)
def place_recharge(
    body: RechargeIn,
    request: Request,
    call: IdempotentCall = Depends(idempotent_page),
    services: Services = Depends(get_services),
) -> Any:
    """Every check of SPEC 3.3, then the code is reserved atomically and the saga starts."""
    channel = acting_channel(services, call.principal, body.channel_id)
    address = end_user_address(request, call.principal, body.user)
    shown_as = body.user.name if body.user else None

    def command(recharge_id: UUID) -> tuple[int, dict[str, Any]]:
        services.placement.place(
            recharge_id,
            channel,
            body.account,
            body.code,
            body.verification_code,
            address,
            shown_as,
        )
        return 202, {"id": str(recharge_id), "status": "pending"}

    return call.run(command)


@router.get("/recharges/{recharge_id}", response_model=RechargeOut)
def get_recharge(
    recharge_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "channel", "operator")
    recharge = find_recharge(services, parse_id(recharge_id, "recharge"))
    if principal.role == "channel":
        visible_channel(services.distribution, principal, str(recharge.channel_id))
    return recharge_out(recharge)


@router.get("/recharges", dependencies=[Depends(declared_filters_only)])
def list_recharges(
    status: str | None = Query(None, pattern="^(pending|succeeded|failed|review|refunded)$"),
    limit: int = Query(50, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
    channel_id: str | None = Query(None, max_length=64),
    account: str | None = Query(None, min_length=1, max_length=64),
    discrepancy: str | None = Query(None, pattern="^late_success$"),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """The operator sees every channel's (its review queue is `?status=review`; recharges a
    platform's callback contradicted, `?discrepancy=late_success`); a channel sees its
    subtree's."""
    require(principal, "channel", "operator")
    channel_ids: list[UUID] | None = None
    if channel_id:
        channel_ids = [visible_channel(services.distribution, principal, channel_id).id]
    elif principal.role == "channel":
        assert principal.channel_id is not None
        channel_ids = services.views.directory.subtree(principal.channel_id)
    cursor = parse_cursor(after)
    services.views.recharges_caught_up()
    rows = services.views.recharges.listing(
        channel_ids, status, account, cursor, limit + 1, discrepancy
    )
    return recharges_page(rows, limit)


@router.post("/recharges/{recharge_id}/resolution")
def resolve_recharge(
    recharge_id: str,
    body: ResolutionIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "operator")
    target = find_recharge(services, parse_id(recharge_id, "recharge")).id

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        resolved = services.recharges.resolve(target, body.outcome, body.note, call.principal.scope)
        return 200, recharge_out(resolved).model_dump()

    return call.run(command)


@router.post("/recharges/{recharge_id}/refund-requests", status_code=202)
def request_refund(
    recharge_id: str,
    body: RefundRequestIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """Ask the platform to refund a succeeded recharge, under a refund number of ours that
    every retry reuses; the platform's review ends it `accepted` (the recharge is `refunded`,
    its unit back in the issuing channel's stock on hand) or `rejected` (it stays `succeeded`,
    the refund says why): see `refund` in GET /v1/recharges/{id}. Refused with
    `refund_not_allowed` unless the recharge succeeded, `refund_already_requested` while a
    refund is pending or once one was accepted. Callers: the channel owning the recharge's
    subtree, or an operator."""
    require(call.principal, "channel", "operator")
    recharge = find_recharge(services, parse_id(recharge_id, "recharge"))
    if call.principal.role == "channel":
        visible_channel(services.distribution, call.principal, str(recharge.channel_id))

    def command(refund_id: UUID) -> tuple[int, dict[str, Any]]:
        services.recharges.request_refund(
            recharge.id, refund_id, body.reason, call.principal.scope, utc_now()
        )
        return 202, {"id": str(refund_id), "status": "pending"}

    return call.run(command)


@router.get("/sandbox/sms")
def sandbox_sms(
    account: str = Query(..., min_length=3, max_length=64),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    if services.sandbox_sms is None:
        raise Problem("not_found", "sandbox endpoints exist only in sandbox mode")
    require(principal, "operator")
    code = services.sandbox_sms.last_code(account)
    if code is None:
        raise Problem("not_found", f"no message was sent to {account}")
    return {"account": account, "code": code}


def find_recharge(services: Services, recharge_id: UUID) -> Recharge:
    """A recharge just accepted may not have its saga yet: wait for it (bounded)."""
    try:
        return services.recharges.recharge(recharge_id)
    except NotFound:
        services.views.recharges_caught_up()
        return services.recharges.recharge(recharge_id)


def client_address(request: Request) -> str:
    """The client's address; behind a trusted proxy (LEDGER_TRUSTED_PROXIES) uvicorn has
    already taken it from X-Forwarded-For."""
    return request.client.host if request.client else "unknown"


def end_user_address(request: Request, principal: Principal, user: EndUserIn | None) -> str | None:
    """Whom the per-address limits and the lock-out apply to: the recharge page's client, or
    the `user.ip` a channel's server passes; never the channel server's own address (None when
    it passes none: those limits are skipped)."""
    if principal.role == "web":
        return client_address(request)
    return str(user.ip) if user is not None and user.ip is not None else None
