"""Order callbacks from the video platforms: `POST /v1/platform-callbacks/{platform_id}`.

The platform signs its callback the way our partner API calls to it are signed
(`adapters.platform_gateway`: `X-Partner-Id`, `X-Timestamp`, `X-Nonce`, `X-Signature` =
HMAC-SHA256 with the partner secret over `timestamp\\nnonce\\nsha256(body)`), each nonce
accepted once. Besides an order's statuses (`success`, `failed`, `processing`, `reversed`: a
reversal of a credited order is booked like an accepted refund), a refund's review outcome is
called back as `accepted` or `rejected` with its `refund_no`: news like a refund poll's answer.
A callback that is signed and names one of the platform's orders is answered
200 `{"received": true}` whatever it changed (a duplicate gets the same answer), so the platform
stops retrying; a refusal (unknown platform or order, bad signature, bad body) is
problem+json, written to the audit log as `callback_refused`, and records nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from adapters.platform_gateway import partner_signature_problem
from api.container import Services, get_services
from api.problems import Problem
from api.routes.distribution import parse_id
from ledger.recharges.callbacks import REFUND_CALLBACK_STATUSES, Callback, CallbackStatus

router = APIRouter(prefix="/v1", tags=["platform callbacks"])

MAX_CALLBACK_BYTES = 16_384


class PlatformCallbackIn(BaseModel):
    """`success` names the platform's order and the membership it credited."""

    model_config = ConfigDict(extra="ignore")

    order_no: str = Field(min_length=1, max_length=64)
    status: CallbackStatus
    platform_order_id: str | None = Field(default=None, min_length=1, max_length=64)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    reason: str | None = Field(default=None, max_length=500)
    refund_no: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _success_is_complete(self) -> PlatformCallbackIn:
        if self.status in REFUND_CALLBACK_STATUSES and not self.refund_no:
            raise ValueError("a refund's accepted or rejected names its refund_no")
        if self.status == "success":
            if not (self.platform_order_id and self.starts_at and self.ends_at):
                raise ValueError("success needs platform_order_id, starts_at and ends_at")
            if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
                raise ValueError("starts_at and ends_at carry their offset")
            if self.ends_at <= self.starts_at:
                raise ValueError("ends_at is after starts_at")
        return self

    def callback(self) -> Callback:
        return Callback(
            status=self.status,
            platform_order_id=self.platform_order_id,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            reason=self.reason,
            refund_no=self.refund_no,
        )


@router.post(
    "/platform-callbacks/{platform_id}",
    responses={200: {"content": {"application/json": {"example": {"received": True}}}}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PlatformCallbackIn.model_json_schema()}},
        }
    },
)
async def platform_callback(
    platform_id: str, request: Request, services: Services = Depends(get_services)
) -> Any:
    """A platform's news of one of its orders (our recharge id is its order number), signed
    with the partner secret as the partner API is: `X-Partner-Id`, `X-Timestamp`, `X-Nonce`,
    `X-Signature` = hex HMAC-SHA256 of `timestamp\nnonce\nsha256_hex(body)`. Idempotent by
    (platform, order number, status), no Idempotency-Key: the same news answers the same and
    records nothing more. Callers: the platform."""
    platform = parse_id(platform_id, "platform")
    await run_in_threadpool(services.platform_news.platform_known, platform)
    body = await request.body()
    if len(body) > MAX_CALLBACK_BYTES:
        raise Problem("body_too_large", f"a callback is at most {MAX_CALLBACK_BYTES} bytes")
    settings = services.settings
    problem = partner_signature_problem(
        request.headers,
        body,
        settings.ledger_platform_secret,
        settings.ledger_platform_partner_id,
        settings.ledger_signature_window_seconds,
    )
    if problem is not None:
        raise Problem("signature_invalid", problem[1])
    await run_in_threadpool(
        services.authenticator.accept_nonce_once,
        f"platform:{platform}",
        request.headers["X-Nonce"],
    )
    try:
        news = PlatformCallbackIn.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None
    await run_in_threadpool(services.platform_news.hear, platform, news.order_no, news.callback())
    return {"received": True}
