"""The FastAPI application: pools and applications opened in the lifespan, routers, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.database import event_store_env, open_pool
from adapters.settings import Settings
from api import problems
from api.auth import Authenticator
from api.problems import problem_response
from api.routes import distribution, ledger, operations
from ledger.distribution.application import Distribution
from projections.catalog import FEEDS, Views
from projections.runner import SupervisedRunner


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
                raise BodyTooLarge
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


class BodyTooLarge(Exception):
    pass


def create_app(settings: Settings, database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        env = event_store_env(database_url)
        pool = open_pool(database_url, size=settings.ledger_pool_size)
        app.state.settings = settings
        app.state.pool = pool
        app.state.distribution = Distribution(env=env)
        app.state.authenticator = Authenticator(
            pool, settings.secret_bytes, settings.ledger_signature_window_seconds
        )
        app.state.authenticator.accept_keys(
            "ck_",
            "channel",
            lambda channel_id, key_id: app.state.distribution.channel(channel_id).key_id == key_id,
        )
        app.state.views = Views(pool)
        runners: list[SupervisedRunner] = []
        if settings.ledger_run_projections:
            runner_env = event_store_env(
                database_url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="2"
            )
            runners = [SupervisedRunner(feed, database_url, runner_env) for feed in FEEDS]
            for runner in runners:
                runner.start()
        try:
            yield
        finally:
            for runner in runners:
                runner.stop()
            for runner in runners:
                runner.join(timeout=10)
            app.state.distribution.close()
            pool.close()

    app = FastAPI(
        title="Membership-card ledger",
        version="1.0",
        description="Event-sourced, double-entry ledger for selling third-party membership cards.",
        lifespan=lifespan,
    )
    problems.install(app)
    for module in (distribution, ledger, operations):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.ledger_max_body_bytes)
    return app
