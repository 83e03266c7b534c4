"""The FastAPI application: pools and applications opened in the lifespan, routers, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.background import start_background
from adapters.database import application_env, open_pool
from adapters.payments import gateways
from adapters.rate_limits import RateLimiter
from adapters.settings import Settings
from adapters.sms import NoSmsProvider, SandboxSms
from adapters.verification import VerificationCodes
from api import problems
from api.auth import Authenticator
from api.metrics import RequestMetrics
from api.problems import problem_response
from api.routes import cards, codes, distribution, ledger, operations, page, recharges
from ledger.cards.application import Cards
from projections.catalog import Views


class BodyLimit:
    """Refuses request bodies past the limit before anything reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = problem_response(
            request, "body_too_large", f"request bodies are limited to {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


class BodyTooLarge(StarletteHTTPException):
    """An HTTP error, so FastAPI passes it on instead of calling it a body it cannot parse."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request bodies are limited to {max_bytes} bytes")


def create_app(settings: Settings, database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = open_pool(database_url, size=settings.ledger_pool_size)
        app.state.settings = settings
        app.state.pool = pool
        background = start_background(
            settings, database_url, with_worker=not settings.broker_url,
            run_projections=settings.ledger_run_projections,
        )
        runtime = background.runtime
        app.state.distribution = runtime.distribution
        app.state.recharges = runtime.recharges
        app.state.limiter = RateLimiter(pool)
        app.state.sms = SandboxSms(pool) if settings.sandbox else NoSmsProvider()
        app.state.verification = VerificationCodes(
            pool, settings.secret_bytes, app.state.sms, app.state.limiter
        )
        app.state.authenticator = Authenticator(
            pool, settings.secret_bytes, settings.ledger_signature_window_seconds
        )
        app.state.authenticator.accept_keys(
            "ck_",
            "channel",
            lambda channel_id, key_id: app.state.distribution.channel(channel_id).key_id == key_id,
        )
        app.state.cards = Cards(
            env=application_env(
                settings, database_url, POSTGRES_POOL_SIZE="2", POSTGRES_MAX_OVERFLOW="6"
            )
        )
        app.state.payments, app.state.payouts = gateways(settings.sandbox)
        app.state.authenticator.accept_keys(
            "mk_",
            "merchant",
            lambda merchant_id, key_id: app.state.cards.merchant(merchant_id).key_id == key_id,
        )
        app.state.views = Views(pool)
        try:
            yield
        finally:
            background.stop()
            app.state.cards.close()
            pool.close()

    app = FastAPI(
        title="Membership-card ledger",
        version="1.0",
        description="Event-sourced, double-entry ledger for selling third-party membership cards.",
        lifespan=lifespan,
    )
    problems.install(app)
    for module in (distribution, codes, recharges, cards, ledger, operations, page):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.ledger_max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app
