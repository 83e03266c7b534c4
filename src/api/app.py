"""The FastAPI application: pools and applications opened in the lifespan, routers, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.settings import Settings
from api import openapi, problems
from api.input_rules import PlainQueries, StrictJsonBodies
from api.metrics import RequestMetrics
from api.problems import problem_response
from api.routes import ROUTERS
from api.runtime.background import start_background
from api.runtime.heap import settle_heap
from api.runtime.outage import DatabaseGate
from api.runtime.services import build_services


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
        background = start_background(
            settings,
            database_url,
            with_worker=not settings.broker_url,
            run_projections=settings.ledger_run_projections,
        )
        app.state.services = build_services(settings, database_url, background.runtime)
        app.state.health = background.runtime.health
        settle_heap()
        try:
            yield
        finally:
            background.stop()
            app.state.services.close()

    app = FastAPI(
        title="Membership-card ledger",
        version="1.0",
        description="Event-sourced, double-entry ledger for selling third-party membership cards.",
        lifespan=lifespan,
        # metrics are Prometheus's (api/metrics.py); FastAPI's own OpenTelemetry has no
        # provider here and, on, still asked for one on every request (3 % of a process's time)
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    openapi.install(app, ROUTERS)
    app.add_middleware(StrictJsonBodies)
    app.add_middleware(PlainQueries)
    app.add_middleware(DatabaseGate)
    app.add_middleware(BodyLimit, max_bytes=settings.ledger_max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app
