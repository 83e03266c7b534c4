"""Who is calling: bearer tokens for operator and finance, signed requests for channels.
The principal and the authenticator are in `api.principals`; here a request becomes one."""

from __future__ import annotations

from functools import partial

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.audit import record_use
from api.container import services_of
from api.principals import Principal, Role
from api.problems import Problem, request_id


async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller, kept for the audit log, which also records each use
    of an operator's or finance's token."""
    return await authenticated(request, spend_nonce=True)


async def authenticated(request: Request, *, spend_nonce: bool) -> Principal:
    if not has_credentials(request):
        raise Problem("unauthorized", "a bearer token or a signed request is needed")
    body = await request.body() if "X-Key-Id" in request.headers else b""
    return await run_in_threadpool(partial(identified, spend_nonce=spend_nonce), request, body)


def identified(request: Request, body: bytes, *, spend_nonce: bool) -> Principal:
    """The caller, from a bearer token or a signed request (its `body` read already), its
    token's use audited: the blocking part of authentication, on one worker thread."""
    authenticator = services_of(request).authenticator
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        principal = authenticator.bearer(authorization[7:].strip())
    elif "X-Key-Id" in request.headers:
        principal = authenticator.signed(request, body, spend_nonce=spend_nonce)
    else:
        raise Problem("unauthorized", "a bearer token or a signed request is needed")
    record_use(request, principal, request_id(request))
    return principal


def has_credentials(request: Request) -> bool:
    return "Authorization" in request.headers or "X-Key-Id" in request.headers


def page_principal(request: Request) -> Principal:
    """An anonymous caller of the recharge page's two calls: the page, known by its address
    (the page's limits are per address)."""
    address = request.client.host if request.client else "unknown"
    page = Principal(role="web", id=address)
    request.state.principal = page
    return page


async def authenticate_or_page(request: Request) -> Principal:
    """For the two calls the recharge web page makes: an anonymous caller is the page,
    known by its address (the page's limits are per address)."""
    return await page_or(request, spend_nonce=True)


async def page_or(request: Request, *, spend_nonce: bool) -> Principal:
    if has_credentials(request):
        return await authenticated(request, spend_nonce=spend_nonce)
    return page_principal(request)


def require(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise Problem("forbidden", f"this needs the role {' or '.join(roles)}")
