"""Verification codes and recharges: what the recharge page and API clients call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request

from adapters.rate_limits import Limit
from api.auth import Principal, authenticate, require
from api.idempotency import IdempotentCall, idempotent, idempotent_page
from api.problems import Problem
from api.routes.distribution import app_of, parse_id, visible_channel
from api.schemas import RechargeIn, RechargeOut, ResolutionIn, VerificationIn
from ledger.distribution.channel import Channel
from ledger.errors import CodeAlreadyRedeemed, CodeExpired, CodeInvalid, CodeMalformed, DomainError
from ledger.recharges.saga import Recharge

router = APIRouter(prefix="/v1", tags=["recharges"])

WRONG_CODES = (CodeMalformed, CodeInvalid, CodeExpired, CodeAlreadyRedeemed)


class RateLimited(DomainError):
    code = "rate_limited"
    transient = True

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def acting_channel(request: Request, principal: Principal, channel_ref: str | None) -> Channel:
    """A signed channel acts for itself; the web page names the channel it is the page of."""
    app = app_of(request)
    if principal.role == "channel":
        assert principal.channel_id is not None
        channel = app.channel(principal.channel_id)
    elif principal.role == "web":
        if not channel_ref:
            raise Problem("validation_failed", "channel_id is needed", status=422)
        channel = app.channel(parse_id(channel_ref, "channel"))
    else:
        raise Problem("forbidden", "recharges are placed by a channel or its recharge page")
    app.check_line_active(channel)
    return channel


@router.post("/verification-codes", status_code=202)
def send_verification_code(
    body: VerificationIn, request: Request, call: IdempotentCall = Depends(idempotent_page)
) -> Any:
    channel = acting_channel(request, call.principal, body.channel_id)
    state = request.app.state

    def command(_: UUID) -> tuple[int, dict[str, Any]]:
        check_limit(request, f"sms-address:{client_address(request)}", "address")
        state.verification.send(channel.id, channel.name, body.account)
        return 202, {"account": body.account, "expires_in": 300}

    return call.run(command)


@router.post("/recharges", status_code=202)
def place_recharge(
    body: RechargeIn, request: Request, call: IdempotentCall = Depends(idempotent_page)
) -> Any:
    """Every check of SPEC 3.3, then the code is reserved atomically and the saga starts."""
    channel = acting_channel(request, call.principal, body.channel_id)
    state = request.app.state
    address = client_address(request)

    def command(recharge_id: UUID) -> tuple[int, dict[str, Any]]:
        check_locked_out(request, address)
        check_limit(request, f"recharge-account:{body.account}", "account")
        check_limit(request, f"recharge-address:{address}", "address")
        check_limit(request, f"recharge-channel:{channel.id}", "channel")
        state.verification.check(channel.id, body.account, body.verification_code)
        distribution = app_of(request)
        try:
            code = distribution.find_code(body.code)
            distribution.reserve_code(
                code.id, recharge_id, body.account, channel.id, datetime.now(UTC), body.user
            )
        except WRONG_CODES:
            state.limiter.hit(f"wrong-codes:{address}", lockout(request))
            raise
        state.verification.use(channel.id, body.account)
        return 202, {"id": str(recharge_id), "status": "pending"}

    return call.run(command)


@router.get("/recharges/{recharge_id}", response_model=RechargeOut)
def get_recharge(
    recharge_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> Any:
    require(principal, "channel", "operator")
    recharge = find_recharge(request, parse_id(recharge_id, "recharge"))
    if principal.role == "channel":
        visible_channel(request, principal, str(recharge.channel_id))
    return recharge_out(recharge)


@router.get("/recharges")
def list_recharges(
    request: Request,
    status: str | None = Query(None, pattern="^(pending|succeeded|failed|review)$"),
    limit: int = Query(50, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
    channel_id: str | None = Query(None, max_length=64),
    principal: Principal = Depends(authenticate),
) -> Any:
    require(principal, "channel", "operator")
    if principal.role == "channel":
        channel = visible_channel(request, principal, channel_id or str(principal.channel_id))
    elif channel_id:
        channel = visible_channel(request, principal, channel_id)
    else:
        raise Problem("validation_failed", "channel_id is needed", status=422)
    request.app.state.views.recharges_caught_up()
    cursor = parse_id(after, "cursor") if after else None
    rows = request.app.state.views.recharges.of_channel(channel.id, status, cursor, limit + 1)
    items = [
        {**{k: str(v) if v is not None else None for k, v in row.items()}} for row in rows[:limit]
    ]
    return {"items": items, "next_cursor": items[-1]["id"] if len(rows) > limit else None}


@router.post("/recharges/{recharge_id}/resolution")
def resolve_recharge(
    recharge_id: str, body: ResolutionIn, request: Request,
    call: IdempotentCall = Depends(idempotent),
) -> Any:
    require(call.principal, "operator")
    target = find_recharge(request, parse_id(recharge_id, "recharge")).id
    return call.run(
        lambda _: (
            200,
            recharge_out(
                request.app.state.recharges.resolve(
                    target, body.outcome, body.note, call.principal.scope
                )
            ).model_dump(),
        )
    )


@router.get("/sandbox/sms")
def sandbox_sms(
    request: Request,
    account: str = Query(..., min_length=3, max_length=64),
    principal: Principal = Depends(authenticate),
) -> Any:
    if not request.app.state.settings.sandbox:
        raise Problem("not_found", "sandbox endpoints exist only in sandbox mode")
    require(principal, "operator")
    code = request.app.state.sms.last_code(account)
    if code is None:
        raise Problem("not_found", f"no message was sent to {account}")
    return {"account": account, "code": code}


def find_recharge(request: Request, recharge_id: UUID) -> Recharge:
    """A recharge just accepted may not have its saga yet: wait for it (bounded)."""
    recharges = request.app.state.recharges
    try:
        return recharges.recharge(recharge_id)  # type: ignore[no-any-return]
    except DomainError:
        request.app.state.views.recharges_caught_up()
        return recharges.recharge(recharge_id)  # type: ignore[no-any-return]


def recharge_out(recharge: Recharge) -> RechargeOut:
    membership = None
    if recharge.membership:
        membership = {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in recharge.membership.items()
        }
    return RechargeOut(
        id=str(recharge.id),
        status=recharge.status,
        product_id=str(recharge.product_id),
        account=recharge.account,
        channel_id=str(recharge.channel_id),
        failure=recharge.failure or recharge.review_reason,
        membership=membership,
        requested_at=recharge.requested_at.isoformat(),
    )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_limit(request: Request, scope: str, kind: str) -> None:
    settings = request.app.state.settings
    per_minute = {
        "account": settings.ledger_rate_account_per_minute,
        "address": settings.ledger_rate_address_per_minute,
        "channel": settings.ledger_rate_channel_per_minute,
    }[kind]
    wait = request.app.state.limiter.hit(scope, Limit(per_minute, 60))
    if wait is not None:
        raise RateLimited(f"too many requests for this {kind}; try again in {wait} s", wait)


def lockout(request: Request) -> Limit:
    return Limit(request.app.state.settings.ledger_lockout_wrong_codes, 900)


def check_locked_out(request: Request, address: str) -> None:
    limit = lockout(request)
    hits, wait = request.app.state.limiter.count(f"wrong-codes:{address}", limit)
    if hits >= limit.hits:
        raise RateLimited(f"too many wrong codes from this address; try again in {wait} s", wait)
