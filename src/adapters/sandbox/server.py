"""The sandbox video platform as a real HTTP server speaking the partner API of
`adapters.platform_gateway`, with its fault switches (`adapters.sandbox.faults`).

``GET /sandbox/faults`` shows the switches and ``POST /sandbox/faults`` sets them,
``GET /sandbox/credits?account=`` lists the credits (so a test can assert "credited exactly
once"), ``GET /sandbox/refunds?order_no=`` the refunds with the requests each got,
``GET /sandbox/callbacks`` the order callbacks posted (`adapters.sandbox.callbacks`),
``GET /sandbox/payments`` the settlement payments received (`adapters.sandbox.statements`),
``POST /sandbox/reset`` forgets every order, credit and nonce and restores the faults
given at start. The sandbox endpoints are unauthenticated: bind to localhost.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from adapters.platform_gateway import (
    ORDER_STATUS_PATH,
    RECHARGE_PATH,
    REFUND_PATH,
    REFUND_STATUS_PATH,
)
from adapters.sandbox.faults import Faults, FaultsUpdate
from adapters.sandbox.platform import Refused, SandboxPlatform
from adapters.sandbox.statements import add_statement_routes

MAX_BODY_BYTES = 16_384


def create_sandbox_app(secret: str, partner_id: str, faults: Faults | None = None) -> FastAPI:
    """The sandbox platform as an ASGI app; ``app.state.platform`` is its `SandboxPlatform`."""
    platform = SandboxPlatform(secret, partner_id, faults)
    app = FastAPI(title="Sandbox video platform", docs_url=None, redoc_url=None)
    app.state.platform = platform

    async def partner_call(
        request: Request, handle: Callable[[dict[str, Any], str], Any]
    ) -> Response:
        faults = platform.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if platform.answers_unavailable():
            return JSONResponse(
                {"status": "error", "code": "unavailable", "message": "injected 503"},
                status_code=503,
            )
        body = await request.body()
        try:
            if len(body) > MAX_BODY_BYTES:
                raise Refused(413, "too_large", "the body is too large")
            payload = platform.verify(request.headers, body)
            return await handle(payload, payload["nonce"])
        except Refused as refused:
            return platform.signed_response(
                refused.status_code,
                {"status": "error", "code": refused.code, "message": refused.message},
            )

    async def do_recharge(payload: dict[str, Any], request_nonce: str) -> Response:
        order, hang = platform.recharge(payload)
        if hang:
            await asyncio.sleep(platform.faults.hang_seconds)
        return platform.signed_response(200, order.answer(request_nonce))

    async def do_order_status(payload: dict[str, Any], request_nonce: str) -> Response:
        answer = platform.order_status(payload)
        return platform.signed_response(200, answer | {"request_nonce": request_nonce})

    async def do_refund(payload: dict[str, Any], request_nonce: str) -> Response:
        return platform.signed_response(200, platform.refund(payload, request_nonce))

    async def do_refund_status(payload: dict[str, Any], request_nonce: str) -> Response:
        return platform.signed_response(200, platform.refund_status(payload, request_nonce))

    @app.post(RECHARGE_PATH)
    async def recharge(request: Request) -> Response:
        return await partner_call(request, do_recharge)

    @app.post(REFUND_PATH)
    async def refund(request: Request) -> Response:
        return await partner_call(request, do_refund)

    @app.post(REFUND_STATUS_PATH)
    async def refund_status(request: Request) -> Response:
        return await partner_call(request, do_refund_status)

    @app.post(ORDER_STATUS_PATH)
    async def order_status(request: Request) -> Response:
        return await partner_call(request, do_order_status)

    @app.get("/sandbox/faults")
    async def get_faults() -> dict[str, Any]:
        return platform.faults.as_json()

    @app.post("/sandbox/faults")
    async def post_faults(update: FaultsUpdate) -> dict[str, Any]:
        return platform.set_faults(update).as_json()

    @app.get("/sandbox/credits")
    async def get_credits(account: str | None = None) -> dict[str, Any]:
        return {"credits": [credit.credit_json() for credit in platform.credits(account)]}

    @app.get("/sandbox/refunds")
    async def get_refunds(order_no: str | None = None) -> dict[str, Any]:
        """Every refund taken, with how many requests each refund number got."""
        return {"refunds": platform.refunds(order_no)}

    @app.get("/sandbox/callbacks")
    async def get_callbacks() -> dict[str, Any]:
        """Every callback post so far: order, status, attempt, the answer's HTTP status."""
        return {"callbacks": platform.callbacks.sent()}

    statements = add_statement_routes(app, platform, partner_call)

    @app.post("/sandbox/reset")
    async def reset() -> dict[str, Any]:
        statements.reset()
        return {"faults": platform.reset().as_json()}

    return app


def serve(
    port: int,
    host: str = "127.0.0.1",
    *,
    secret: str,
    partner_id: str,
    faults: Faults | None = None,
    log_level: str = "warning",
    sock: socket.socket | None = None,
) -> None:
    """Run the sandbox platform in this process until it is stopped: on `sock` when given (a
    socket already bound, e.g. by the `ledger serve` that started it), else on host:port."""
    import uvicorn

    app = create_sandbox_app(secret, partner_id, faults)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=1
    )
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
