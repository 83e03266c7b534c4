"""Every POST (an Idempotency-Key's call) in one hop to a worker thread.

FastAPI runs a POST in two hops from the event loop to its thread pool: one for the
`idempotent` dependency's blocking part (who calls, the key claimed), then one for the sync
endpoint, with the body parsed and validated on the event loop between them. `KeyedRoute`
keeps the route as declared (its path parameters, body model, dependencies and OpenAPI
description are FastAPI's) and serves it in one hop, in the same order: the caller
authenticated and the key claimed, then the body validated (a 422 gives the claim up, as it
did), then the endpoint. That took 16-21 % off the API's CPU per acceptance and let one
API process accept 16-28 % more recharges a second (benchmarks/api_pair.py; benchmarks/
README.md, "One hop per POST").

A keyed route may take only what the hop knows: path parameters (str), one body model, `Request`,
and the `idempotent` (or `idempotent_page`) and `get_services` dependencies (and a router's
`declared_filters_only`, which checks GET lists only); any other parameter is refused when
the route is declared. Routes without a key are FastAPI's own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from api.auth import has_credentials
from api.container import get_services, services_of
from api.idempotency import arrive, idempotent, idempotent_page
from api.problems import Problem
from api.query_filters import declared_filters_only

UNSET = object()
"""No body was sent."""


class KeyedRoute(APIRoute):
    """An APIRoute whose keyed POSTs run in one hop (module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        calls = [dependency.call for dependency in self.dependant.dependencies]
        if idempotent not in calls and idempotent_page not in calls:
            return super().get_route_handler()
        return OneHop(self).handle


class OneHop:
    """What a keyed route's request needs, read from its declaration once."""

    def __init__(self, route: APIRoute) -> None:
        dependant = route.dependant
        self.endpoint = route.endpoint
        self.page = idempotent_page in [d.call for d in dependant.dependencies]
        self.body_field = route.body_field
        self.body_name = dependant.body_params[0].name if dependant.body_params else None
        self.path_names = [param.name for param in dependant.path_params]
        self.request_name = dependant.request_param_name
        call_name = self.services_name = None
        for dependency in dependant.dependencies:
            if dependency.call in (idempotent, idempotent_page):
                call_name = dependency.name
            elif dependency.call is get_services:
                self.services_name = dependency.name
            elif dependency.call is declared_filters_only:
                continue  # a router's, for its GET lists: nothing to do for a POST
            else:
                raise TypeError(f"{route.path}: a keyed route takes no {dependency.call}")
        if any(param.field_info.annotation is not str for param in dependant.path_params):
            raise TypeError(f"{route.path}: a keyed route's path parameters are str")
        extra = dependant.query_params or dependant.header_params or dependant.cookie_params
        if extra or len(dependant.body_params) > 1:
            raise TypeError(f"{route.path}: a keyed route takes path parameters and one body")
        if call_name is None:
            raise TypeError(f"{route.path}: the key's dependency has no parameter name")
        self.call_name: str = call_name

    async def handle(self, request: Request) -> Response:
        if not self.page and not has_credentials(request):
            raise Problem("unauthorized", "a bearer token or a signed request is needed")
        body = await request.body()
        digest = hashlib.sha256(f"{request.method}\n{request.url.path}\n".encode() + body).digest()
        return await run_in_threadpool(self.serve, request, body, digest)

    def serve(self, request: Request, body: bytes, digest: bytes) -> Response:
        """On the worker thread: the key claimed, the body validated, the endpoint run."""
        call = arrive(request, body, digest)
        request.state.idempotent_call = call
        arguments: dict[str, Any] = {name: request.path_params[name] for name in self.path_names}
        arguments[self.call_name] = call
        if self.services_name:
            arguments[self.services_name] = services_of(request)
        if self.request_name:
            arguments[self.request_name] = request
        if self.body_field is not None and self.body_name is not None:
            arguments[self.body_name] = self.validated(request, body)
        response = self.endpoint(**arguments)
        if not isinstance(response, Response):
            raise TypeError(f"{request.url.path}: a keyed route answers with call.run's response")
        return response

    def validated(self, request: Request, body: bytes) -> Any:
        """The body as FastAPI reads and validates it (422 `validation_failed` as from
        FastAPI): JSON when declared so or undeclared, the model checked at loc ("body",)."""
        assert self.body_field is not None
        value: Any = UNSET
        if body:
            content_type = request.headers.get("content-type")
            value = (
                json.loads(body) if content_type is not None and json_type(content_type) else body
            )
        if value is UNSET:
            if self.body_field.field_info.is_required():
                raise RequestValidationError(
                    [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
                )
            return self.body_field.field_info.get_default(call_default_factory=True)
        parsed, errors = self.body_field.validate(value, {}, loc=("body",))
        if errors:
            raise RequestValidationError(errors)
        return parsed


def json_type(content_type: str) -> bool:
    """application/json or application/*+json (StrictJsonBodies refused the rest)."""
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
