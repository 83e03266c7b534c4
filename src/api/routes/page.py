"""The channel's recharge web page, and the status its page follows.

`GET /r/{channel_id}` is what an end user opens on a phone: the channel's name, the account,
a button that sends the verification code, the redemption code, submit. The page then calls
the two public endpoints of routes/recharges.py as an anonymous caller (the page) and follows
the recharge through `GET /r/{channel_id}/recharges/{recharge_id}`, which says the status and a
message in plain words only: never the account, the product or anything else of the recharge.
"""

from __future__ import annotations

import secrets
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api.container import Services, get_services
from api.routes.recharges import find_recharge
from ledger.distribution.application import Distribution
from ledger.distribution.channel import Channel
from ledger.errors import ChannelSuspended, NotFound

router = APIRouter(prefix="/r", tags=["recharge page"], include_in_schema=True)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

FINAL = ("succeeded", "failed", "review", "refunded")

STATUS_MESSAGES = {
    "pending": "We are adding the membership to your account. This usually takes a few seconds.",
    "succeeded": "Done! The membership has been added to your account. Enjoy watching.",
    "review": (
        "The video platform has not confirmed your recharge yet, so our staff are checking it. "
        "The membership will be added, or your code given back, once they have. "
        "Please keep your code until then."
    ),
    "refunded": "This recharge was refunded. The membership has been taken back.",
}

FAILURE_MESSAGES = (
    (
        "account_not_eligible",
        "The video platform cannot add a membership to this account. "
        "Please check the account. Your code was not used: you can try it again.",
    ),
    (
        "resolved by an operator",
        "Our staff checked this recharge and it could not be completed. "
        "Your code was not used: you can try it again.",
    ),
)
FAILED = (
    "The video platform could not add the membership. Your code was not used: you can try it again."
)


@cache
def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page with a fresh nonce: the Content-Security-Policy allows only its own inline code."""
    nonce = secrets.token_urlsafe(16)
    html = templates().get_template(name).render(nonce=nonce, **context)
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def page_channel(distribution: Distribution, channel_ref: str) -> Channel | None:
    try:
        return distribution.channel(UUID(channel_ref))
    except (ValueError, NotFound):
        return None


@router.get("/{channel_id}", response_class=HTMLResponse)
def recharge_page(
    channel_id: str, request: Request, services: Services = Depends(get_services)
) -> HTMLResponse:
    """The channel's recharge page, in its name; a plain 404 page for an unknown channel."""
    channel = page_channel(services.distribution, channel_id)
    if channel is None:
        return render("recharge.html", 404, channel=None, suspended=False, base="")
    try:
        services.distribution.check_line_active(channel)
        suspended = False
    except ChannelSuspended:
        suspended = True
    base = str(request.scope.get("root_path", "")).rstrip("/")
    return render("recharge.html", channel=channel, suspended=suspended, base=base)


@router.get("/{channel_id}/recharges/{recharge_id}")
def recharge_status(
    channel_id: str, recharge_id: str, services: Services = Depends(get_services)
) -> JSONResponse:
    """Status and a message for the page; a recharge of another channel does not exist here."""
    channel = page_channel(services.distribution, channel_id)
    try:
        wanted = UUID(recharge_id)
    except ValueError:
        wanted = None
    recharge = None
    if channel is not None and wanted is not None:
        try:
            recharge = find_recharge(services, wanted)
        except NotFound:
            recharge = None
    if recharge is None or channel is None or recharge.channel_id != channel.id:
        raise NotFound("no such recharge on this page")
    status = str(recharge.status)
    body = {"status": status, "final": status in FINAL, "message": message_of(recharge)}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def message_of(recharge: Any) -> str:
    if recharge.status == "failed":
        reason = recharge.failure or ""
        for prefix, message in FAILURE_MESSAGES:
            if reason.startswith(prefix):
                return message
        return FAILED
    return STATUS_MESSAGES.get(recharge.status, STATUS_MESSAGES["pending"])
