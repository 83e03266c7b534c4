"""Every error leaves the API as RFC 9457 problem details with a stable `code`.

This module is the one place where domain errors become HTTP statuses.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.database import DATABASE_ERRORS, RETRY_AFTER_SECONDS
from api.audit import refusal_recorded
from ledger.commands import ConflictPersisted
from ledger.errors import DomainError, LockedOut, RateLimited, Unavailable

log = logging.getLogger("api")

PROBLEM_JSON = "application/problem+json"

STATUS_BY_CODE: dict[str, int] = {
    "not_found": 404,
    "forbidden": 403,
    "unauthorized": 401,
    "signature_invalid": 401,
    "idempotency_key_missing": 400,
    "idempotency_key_reused": 422,
    "request_in_flight": 409,
    "validation_failed": 422,
    "address_not_allowed": 422,
    "invalid_amount": 422,
    "currency_mismatch": 422,
    "channel_tree_too_deep": 422,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "insufficient_funds": 409,
    "insufficient_stock": 409,
    "channel_suspended": 409,
    "price_not_set": 409,
    "already_exists": 409,
    "state_conflict": 409,
    "conflict": 503,
    "method_not_allowed": 405,
    "rate_limited": 429,
    "code_malformed": 422,
    "code_invalid": 422,
    "code_expired": 422,
    "code_in_use": 409,
    "code_already_redeemed": 409,
    "refund_not_allowed": 409,
    "refund_already_requested": 409,
    "verification_failed": 422,
    "verification_locked": 423,
    "invalid_ratio": 422,
    "invalid_timezone": 422,
    "invalid_outcome": 422,
    "invalid_period": 422,
    "period_not_closed": 422,
    "discount_below_main": 422,
    "insufficient_balance": 409,
    "limit_exceeded": 409,
    "card_frozen": 409,
    "card_expired": 409,
    "card_revoked": 409,
    "card_not_accepted": 409,
    "card_not_passable": 409,
    "share_depth_exceeded": 409,
    "not_card_holder": 403,
    "payment_declined": 402,
    "internal_error": 500,
    "unavailable": 503,
}


class Problem(Exception):
    """An error raised by the API layer itself (authentication, idempotency, limits)."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra


def problem_response(
    request: Request,
    code: str,
    detail: str,
    status: int | None = None,
    *,
    audit_kind: str | None = None,
    audited: bool = True,
    **extra: Any,
) -> JSONResponse:
    """Every refusal passes here, so here it is written to the audit log (but for a database
    that is away, where the line could not be written either)."""
    status = status or STATUS_BY_CODE.get(code, 400)
    body = {
        "type": f"/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id(request),
        **extra,
    }
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else None
    line = (
        refusal_recorded(request, body["request_id"], code, detail, audit_kind, **extra)
        if audited
        else None
    )
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_JSON, headers=headers, background=line
    )


def database_unavailable(request: Request) -> JSONResponse:
    """503 `unavailable` while the database is away: the request may be sent again."""
    return problem_response(
        request,
        "unavailable",
        "the database is unavailable; send the request again shortly",
        audited=False,
        retry_after=RETRY_AFTER_SECONDS,
    )


def domain_problem(request: Request, refusal: DomainError) -> JSONResponse:
    extra: dict[str, Any] = (
        {"retry_after": refusal.wait_seconds} if isinstance(refusal, RateLimited) else {}
    )
    kind = "lockout" if isinstance(refusal, LockedOut) else None
    return problem_response(request, refusal.code, refusal.detail, audit_kind=kind, **extra)


def is_transient(refusal: DomainError) -> bool:
    """A refusal that may succeed later (a rate limit, a gateway not configured yet) is never
    stored as the answer to an idempotency key: the same request is let through later."""
    return isinstance(refusal, RateLimited | Unavailable)


def request_id(request: Request) -> str:
    if not hasattr(request.state, "request_id"):
        request.state.request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    return str(request.state.request_id)


async def give_up_unran_claim(request: Request) -> None:
    """A request refused before its command ran gives its Idempotency-Key's claim up (api/
    idempotency.py) before its answer is sent, so that the key is free again as it was."""
    call = getattr(request.state, "idempotent_call", None)
    request.state.idempotent_call = None  # the request and the call hold each other
    if call is not None and call.claimed and not call.ran:
        try:
            await run_in_threadpool(call.give_up_unran)
        except Exception:  # noqa: BLE001 - the database away: the claim lapses in 60 s
            log.warning("claim of request %s not given up", request_id(request), exc_info=True)


Handler = Callable[[Request, Any], Awaitable[JSONResponse]]


def install(app: FastAPI) -> None:
    def handles(kind: type[Exception]) -> Callable[[Handler], Handler]:
        """Register a handler for `kind` that first gives up an unran claim."""

        def register(handler: Handler) -> Handler:
            async def handle(request: Request, exc: Any) -> JSONResponse:
                await give_up_unran_claim(request)
                return await handler(request, exc)

            app.add_exception_handler(kind, handle)
            return handler

        return register

    @handles(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return domain_problem(request, exc)

    @handles(Problem)
    async def api_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.code, exc.detail, **exc.extra)

    @handles(ConflictPersisted)
    async def conflict(request: Request, exc: ConflictPersisted) -> JSONResponse:
        return problem_response(request, "conflict", str(exc), retry_after=1)

    @handles(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in exc.errors()
        ]
        return problem_response(
            request, "validation_failed", "the request has invalid fields", errors=errors
        )

    @handles(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        code = codes.get(exc.status_code, "bad_request")
        return problem_response(request, code, str(exc.detail), status=exc.status_code)

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        """A broken connection, or none in time: 503, and the process answers 503 at once
        until its database answers again. Any other database error is unexpected."""
        health = getattr(request.app.state, "health", None)
        if health is not None and health.report(exc):
            return database_unavailable(request)
        return await unexpected(request, exc)

    for database_error_class in DATABASE_ERRORS:
        handles(database_error_class)(database_error)

    @handles(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s failed", request_id(request), exc_info=exc)
        return problem_response(request, "internal_error", "an unexpected error occurred")
