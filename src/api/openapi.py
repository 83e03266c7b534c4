"""The OpenAPI document generated clients are written from, and /docs served without a CDN.

FastAPI describes paths and bodies; this adds what it cannot see: who may call (a bearer token,
a signed request, or anyone: learnt from the `authenticate`, `authenticate_or_page` and
`idempotent` dependencies and the roles a route `require`s), the `Idempotency-Key` every POST
needs, and the problem+json answers each operation can give with their stable codes.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from api.auth import authenticate, authenticate_or_page
from api.idempotency import MAX_KEY_LENGTH, idempotent, idempotent_page
from api.problems import PROBLEM_JSON, STATUS_BY_CODE

STATIC_URL = "/docs/static"
STATIC_FILES = Path(fastapi_offline.__file__).parent / "static"

BEARER = "bearer"
SIGNED = ("signedKeyId", "signedTimestamp", "signedNonce", "signedSignature")
SIGNED_ROLES = {"channel", "merchant"}
BEARER_ROLES = {"operator", "finance", "member"}

SIGNING = (
    "Channels and merchants sign each request with their key secret. `X-Signature` is the "
    "lowercase hex HMAC-SHA256, under the key secret, of\n\n"
    "`METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nIDEMPOTENCY_KEY\\nSHA256_HEX(BODY)`\n\n"
    "where PATH?QUERY is the percent-decoded path, then `?` and the query string as sent "
    "(no `?` when there is none), "
    "TIMESTAMP is `X-Timestamp` (unix seconds in 1-12 ASCII digits, within ±300 s of the "
    "server's clock), NONCE is "
    "`X-Nonce` (16-64 characters of `[A-Za-z0-9_-]`, fresh for every request), "
    "IDEMPOTENCY_KEY is the `Idempotency-Key` header or empty, and SHA256_HEX(BODY) is the "
    "lowercase hex SHA-256 of the raw body (of the empty string when there is none). A wrong "
    "signature, a stale timestamp or a (key, nonce) pair seen before is 401 `signature_invalid`."
)

SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "Operator and finance tokens (from `ledger tokens create`), member "
        "tokens (from POST /v1/members). Stored hashed; shown once.",
    },
    "signedKeyId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Key-Id",
        "description": "A channel's (`ck_…`) or merchant's key id. " + SIGNING,
    },
    "signedTimestamp": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Timestamp",
        "description": "Unix seconds when the request was signed, 1-12 ASCII digits (±300 s).",
    },
    "signedNonce": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Nonce",
        "description": "16-64 characters of `[A-Za-z0-9_-]`, never reused with the same key.",
    },
    "signedSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": SIGNING,
    },
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details with a stable, snake_case `code`.",
    "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {
        "type": {"type": "string", "examples": ["/problems/validation_failed"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "examples": ["validation_failed"]},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "The bad fields, on `validation_failed`.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "retry_after": {"type": "integer", "description": "Seconds, on `rate_limited`."},
    },
}

IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "Scoped to the caller. The same key and body answer the first response "
    "again; the same key with another body is 422 `idempotency_key_reused`; while the first "
    "request runs, 409 `request_in_flight`. Missing: 400 `idempotency_key_missing`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}

DOMAIN_CODES: dict[tuple[str, str], tuple[str, ...]] = {
    ("post", "/v1/products"): ("invalid_amount",),
    ("post", "/v1/channels/{channel_id}/subchannels"): (
        "channel_tree_too_deep",
        "channel_suspended",
    ),
    ("post", "/v1/channels/{channel_id}/deposits"): ("invalid_amount", "currency_mismatch"),
    ("put", "/v1/channels/{channel_id}/prices/{product_id}"): ("invalid_amount",),
    ("put", "/v1/channels/{channel_id}/webhook"): ("address_not_allowed",),
    ("post", "/v1/stock-purchases"): (
        "invalid_amount",
        "insufficient_funds",
        "price_not_set",
        "channel_suspended",
    ),
    ("post", "/v1/code-batches"): ("insufficient_stock", "channel_suspended", "state_conflict"),
    ("post", "/v1/code-activations"): ("code_invalid", "state_conflict"),
    ("post", "/v1/code-voids"): ("code_invalid", "state_conflict"),
    ("post", "/v1/code-batches/{batch_id}/export"): ("state_conflict",),
    ("post", "/v1/verification-codes"): ("channel_suspended", "rate_limited"),
    ("post", "/v1/recharges"): (
        "code_malformed",
        "code_invalid",
        "code_expired",
        "code_in_use",
        "code_already_redeemed",
        "verification_failed",
        "verification_locked",
        "channel_suspended",
        "rate_limited",
    ),
    ("post", "/v1/recharges/{recharge_id}/resolution"): ("state_conflict",),
    ("post", "/v1/recharges/{recharge_id}/refund-requests"): (
        "refund_not_allowed",
        "refund_already_requested",
    ),
    ("post", "/v1/platform-callbacks/{platform_id}"): ("signature_invalid",),
    ("post", "/v1/merchants"): ("invalid_timezone",),
    ("post", "/v1/merchants/{merchant_id}/activities"): ("invalid_amount", "invalid_ratio"),
    ("post", "/v1/cards"): ("payment_declined", "unavailable"),
    ("post", "/v1/cards/{card_id}/shared-cards"): (
        "invalid_ratio",
        "discount_below_main",
        "not_card_holder",
        "card_frozen",
    ),
    ("post", "/v1/shared-cards/{card_id}/claims"): ("state_conflict", "limit_exceeded"),
    ("post", "/v1/shared-cards/{card_id}/passes"): (
        "card_not_passable",
        "share_depth_exceeded",
        "not_card_holder",
    ),
    ("post", "/v1/cards/{card_id}/intimate-cards"): ("invalid_amount", "not_card_holder"),
    ("post", "/v1/consumptions"): (
        "insufficient_balance",
        "limit_exceeded",
        "card_frozen",
        "card_expired",
        "card_revoked",
        "card_not_accepted",
    ),
    ("post", "/v1/consumptions/{consumption_id}/refunds"): ("state_conflict",),
    ("post", "/v1/withdrawals"): ("insufficient_balance", "unavailable"),
    ("post", "/v1/merchant-settlements"): ("invalid_period", "period_not_closed", "unavailable"),
}
"""Refusals from the domain that routes cannot show; the rest follows from the dependencies."""


def install(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Serve /openapi.json with the additions above, /docs and /redoc from packaged files
    (the app is created with `openapi_url`, `docs_url` and `redoc_url` off)."""
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]

    document: dict[str, Any] = {}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        if not document:
            generated = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            document.update(describe(generated, routes))
        return JSONResponse(document)

    app.mount(STATIC_URL, StaticFiles(directory=STATIC_FILES), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} · API",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} · API",
            redoc_js_url=f"{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )


def describe(document: dict[str, Any], routes: list[APIRoute]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for route in routes:
        for method in sorted(route.methods or ()):
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                describe_operation(operation, method.lower(), route)
    return document


def describe_operation(operation: dict[str, Any], method: str, route: APIRoute) -> None:
    calls = set(dependency_calls(route.dependant))
    anyone = bool(calls & {authenticate_or_page, idempotent_page})
    authenticated = anyone or bool(calls & {authenticate, idempotent})
    keyed = bool(calls & {idempotent, idempotent_page})
    roles = required_roles(route.endpoint)
    codes: list[str] = []
    if authenticated:
        operation["security"] = security(roles, anyone)
        codes += ["unauthorized", "signature_invalid", "forbidden"]
    if keyed:
        operation.setdefault("parameters", []).insert(0, IDEMPOTENCY_KEY)
        codes += ["idempotency_key_missing", "idempotency_key_reused", "request_in_flight"]
    if operation.get("parameters") or "requestBody" in operation:
        codes.append("validation_failed")
    if "requestBody" in operation:
        codes += ["body_too_large", "unsupported_media_type"]
    if "{" in route.path_format or authenticated:
        codes.append("not_found")
    codes += DOMAIN_CODES.get((method, route.path_format), ())
    codes += ["conflict", "unavailable"]  # unavailable: the database is away (Retry-After)
    operation["responses"] = {
        **{k: v for k, v in operation["responses"].items() if k != "422"},
        **problem_responses(codes),
    }
    if roles:
        operation["x-callers"] = sorted(roles)
        who = ", ".join(sorted(roles))
        operation["description"] = f"{operation.get('description', '')}\n\nCallers: {who}.".strip()


def security(roles: set[str], anyone: bool) -> list[dict[str, list[str]]]:
    bearer = not roles or bool(roles & BEARER_ROLES)
    signed = not roles or bool(roles & SIGNED_ROLES)
    requirements: list[dict[str, list[str]]] = []
    if bearer:
        requirements.append({BEARER: []})
    if signed:
        requirements.append({name: [] for name in SIGNED})
    if anyone:
        requirements.append({})
    return requirements


def problem_responses(codes: list[str]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(STATUS_BY_CODE.get(code, 400), []).append(code)
    responses: dict[str, Any] = {}
    for status, named in sorted(by_status.items()):
        listed = ", ".join(f"`{code}`" for code in named)
        response: dict[str, Any] = {
            "description": f"{HTTPStatus(status).phrase}: {listed}",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "x-problem-codes": named,
        }
        if status in (429, 503):
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer"},
                }
            }
        responses[str(status)] = response
    return responses


def dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from dependency_calls(dependency)


@cache
def required_roles(endpoint: Callable[..., Any]) -> set[str]:
    """The roles named in the endpoint's `require(...)` or `acting(...)` calls (empty: any)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(endpoint)))
    except (OSError, TypeError, SyntaxError):
        return set()
    return {
        argument.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("require", "acting")
        for argument in node.args
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str)
    }
