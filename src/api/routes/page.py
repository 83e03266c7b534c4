"""The channel's recharge web page, and the status its page follows.

`GET /r/{channel_id}` is what an end user opens on a phone: the channel's name, the account,
a button that sends the verification code, the redemption code, submit. The page then calls
the two public endpoints of routes/recharges.py as an anonymous caller (the page) and follows
the recharge through `GET /r/{channel_id}/recharges/{recharge_id}`, which says the status and a
message in plain words only: the plan and the membership period once it succeeded, never the
account or anything else of the recharge.

The page speaks Simplified Chinese unless English is asked for (api/i18n.py chooses); every word
of it is in the templates, translated in the message catalogues.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api import i18n
from api.container import Services, get_services
from api.input_rules import canonical_uuid
from api.routes.recharges import find_recharge
from ledger.distribution.application import Distribution
from ledger.distribution.channel import Channel
from ledger.errors import ChannelSuspended, NotFound

router = APIRouter(prefix="/r", tags=["recharge page"], include_in_schema=True)

FINAL = ("succeeded", "failed", "review", "refunded")

FAILURES = (
    ("account_not_eligible", "account_not_eligible"),
    ("resolved by an operator", "resolved"),
)
"""A failed recharge's reason, by its start, to the kind of message the page shows."""

LANGUAGE = Query(None, max_length=16, description="zh (the default) or en; others are ignored")


def language_of(request: Request, asked: str | None) -> i18n.Language:
    return i18n.choose(
        asked.lower() if asked else None,
        request.cookies.get(i18n.COOKIE),
        request.headers.get("Accept-Language"),
    )


def render(
    name: str, language: i18n.Language, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A page with a fresh nonce: the Content-Security-Policy allows only its own inline code."""
    nonce = secrets.token_urlsafe(16)
    other = next(known for known in i18n.LANGUAGES.values() if known != language)
    html = (
        i18n.environment(language.code)
        .get_template(name)
        .render(nonce=nonce, language=language, other=other, **context)
    )
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
            "Content-Language": language.tag,
            "Vary": "Accept-Language, Cookie",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def page_channel(distribution: Distribution, channel_ref: str) -> Channel | None:
    channel_id = canonical_uuid(channel_ref)
    if channel_id is None:
        return None
    try:
        return distribution.channel(channel_id)
    except NotFound:
        return None


@router.get("/{channel_id}", response_class=HTMLResponse)
def recharge_page(
    channel_id: str,
    request: Request,
    lang: str | None = LANGUAGE,
    services: Services = Depends(get_services),
) -> HTMLResponse:
    """The channel's recharge page, in its name and the reader's language (`?lang=` is the
    page's switch: it is remembered in a cookie); a plain 404 page for an unknown channel."""
    language = language_of(request, lang)
    channel = page_channel(services.distribution, channel_id)
    if channel is None:
        page = render("recharge.html", language, 404, channel=None, suspended=False, base="")
    else:
        try:
            services.distribution.check_line_active(channel)
            suspended = False
        except ChannelSuspended:
            suspended = True
        base = str(request.scope.get("root_path", "")).rstrip("/")
        page = render("recharge.html", language, channel=channel, suspended=suspended, base=base)
    if lang and lang.lower() == language.code:
        page.set_cookie(
            i18n.COOKIE,
            language.code,
            max_age=i18n.COOKIE_MAX_AGE,
            path="/r",
            httponly=True,
            samesite="lax",
        )
    return page


@router.get("/{channel_id}/recharges/{recharge_id}")
def recharge_status(
    channel_id: str,
    recharge_id: str,
    request: Request,
    lang: str | None = LANGUAGE,
    services: Services = Depends(get_services),
) -> JSONResponse:
    """Status and a message for the page; a recharge of another channel does not exist here.
    `slow`: still pending past LEDGER_PAGE_PENDING_NOTICE_SECONDS, and the message says so."""
    channel = page_channel(services.distribution, channel_id)
    wanted = canonical_uuid(recharge_id)
    recharge = None
    if channel is not None and wanted is not None:
        try:
            recharge = find_recharge(services, wanted)
        except NotFound:
            recharge = None
    if recharge is None or channel is None or recharge.channel_id != channel.id:
        raise NotFound("no such recharge on this page")
    status = str(recharge.status)
    waited = (datetime.now(UTC) - recharge.requested_at).total_seconds()
    slow = status == "pending" and waited >= services.settings.ledger_page_pending_notice_seconds
    message = status_message(services, recharge, language_of(request, lang), slow)
    body = {"status": status, "final": status in FINAL, "slow": slow, "message": message}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def status_message(services: Services, recharge: Any, language: i18n.Language, slow: bool) -> str:
    """The message of templates/recharge_status.txt for this recharge, in `language`."""
    context: dict[str, Any] = {
        "status": str(recharge.status),
        "slow": slow,
        "recharge_id": str(recharge.id),
        "failure": None,
        "plan": None,
        "days": None,
        "until": None,
    }
    if recharge.status == "failed":
        reason = recharge.failure or ""
        context["failure"] = next(
            (kind for prefix, kind in FAILURES if reason.startswith(prefix)), "other"
        )
    if recharge.status == "succeeded":
        product = services.distribution.product(recharge.product_id)
        ends_at = (recharge.membership or {}).get("ends_at")
        context["plan"] = product.name
        context["days"] = product.duration_days
        if isinstance(ends_at, str):
            ends_at = datetime.fromisoformat(ends_at)
        if isinstance(ends_at, datetime):
            context["until"] = i18n.long_date(ends_at, language)
    template = i18n.environment(language.code).get_template("recharge_status.txt")
    return template.render(**context).strip()
