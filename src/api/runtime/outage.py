"""While this process knows its database is away, every request but liveness, readiness and
metrics is answered 503 `unavailable` with Retry-After at once, without waiting on a pool.

The process learns the database is away when a request meets a broken connection or none
in time (api/problems.py reports it to `DatabaseHealth`); a probe then tries to reach the
database every half second, and requests go through again as soon as it answers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

PASS_THROUGH = ("/health", "/metrics")
"""Liveness, readiness (`/health/ready` answers for itself) and metrics."""


def health_of(app: Any) -> Any:
    """The `DatabaseHealth` of the app's runtime (None before the lifespan built it)."""
    return getattr(app.state, "health", None)


class DatabaseGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(PASS_THROUGH):
            health = health_of(scope["app"])
            if health is not None and health.down:
                from api.problems import database_unavailable

                response = database_unavailable(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
