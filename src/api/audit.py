"""What the API writes to the audit log: every refused request, every use of an operator's or
finance's token. Lines hold the problem code, the caller, the channel, the masked account and
the end user's address, never a code, a verification code, a token or a secret."""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

from fastapi import Request
from starlette.background import BackgroundTask

from adapters.audit_log import AuditLine, AuditLog

log = logging.getLogger("api.audit")

KIND_BY_CODE = {
    "signature_invalid": "signature_invalid",
    "unauthorized": "unauthorized",
    "verification_failed": "verification_failed",
    "verification_locked": "lockout",
}
RECHARGE_PATHS = ("/v1/recharges", "/v1/verification-codes", "/r/")
CALLBACK_PATHS = ("/v1/platform-callbacks",)
SECRET_FIELDS = ("code", "verification_code", "key_secret", "token", "secret", "password")
"""Body fields whose values are redacted wherever a detail might repeat them."""
AUDITED_ROLES = ("operator", "finance")


def refusal_kind(request: Request, code: str) -> str:
    path = request.url.path
    if path.startswith(CALLBACK_PATHS):
        return "callback_refused"
    if code in KIND_BY_CODE:
        return KIND_BY_CODE[code]
    return "recharge_refused" if path.startswith(RECHARGE_PATHS) else "refusal"


def refusal_recorded(
    request: Request,
    request_id: str,
    code: str,
    detail: str,
    kind: str | None = None,
    **extra: Any,
) -> BackgroundTask | None:
    """The audit line of a refusal, written after the answer is sent (off the event loop)."""
    audit_log = audit_log_of(request)
    if audit_log is None:
        return None
    fields = [str(error.get("field", "")) for error in extra.get("errors", ())]
    if fields:
        detail = f"{detail}: {', '.join(fields)}"
    line = line_for(request, request_id, kind or refusal_kind(request, code), code, detail)
    return BackgroundTask(write_quietly, audit_log, line)


def record_use(request: Request, principal: Any, request_id: str) -> None:
    """Who used which token for what: written before the request runs, so an operator's
    action is never served unrecorded. Blocking: called on a worker thread, with the
    authentication that found the principal."""
    request.state.principal = principal
    audit_log = audit_log_of(request)
    if audit_log is None or principal.role not in AUDITED_ROLES:
        return
    audit_log.write(line_for(request, request_id, "token_use", None, "bearer token"))


def write_quietly(audit_log: AuditLog, line: AuditLine) -> None:
    """The refusal was answered already; a line that cannot be written is logged instead."""
    try:
        audit_log.write(line)
    except Exception:
        log.exception("audit line not written: %s %s", line.kind, line.code)


def audit_log_of(request: Request) -> AuditLog | None:
    services = getattr(request.app.state, "services", None)
    return getattr(services, "audit_log", None)


def line_for(
    request: Request, request_id: str, kind: str, code: str | None, detail: str
) -> AuditLine:
    body = json_body(request)
    principal = getattr(request.state, "principal", None)
    return AuditLine(
        kind=kind,
        code=code,
        principal=principal.scope if principal else claimed_key(request),
        channel_id=channel_of(request, principal, body),
        account=text(body.get("account")),
        address=address_of(request, principal, body),
        request_id=request_id,
        method=request.method,
        path=request.url.path,
        detail=redacted(detail, body),
    )


def json_body(request: Request) -> dict[str, Any]:
    """The JSON body the route read, if any: Starlette keeps it on the request object the
    exception handlers get. Never read here: a refusal before the body is read has none."""
    raw = getattr(request, "_body", None)
    if not isinstance(raw, bytes) or not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def claimed_key(request: Request) -> str | None:
    """A refused signed request: the key id it claimed (public, unlike its secret)."""
    key_id = request.headers.get("X-Key-Id")
    return f"key:{key_id[:64]}" if key_id else None


def channel_of(request: Request, principal: Any, body: dict[str, Any]) -> UUID | None:
    if principal is not None and principal.channel_id is not None:
        return UUID(str(principal.channel_id))
    for candidate in (request.path_params.get("channel_id"), body.get("channel_id")):
        try:
            return UUID(str(candidate))
        except ValueError:
            continue
    return None


def address_of(request: Request, principal: Any, body: dict[str, Any]) -> str | None:
    """The end user's address: the `user.ip` a channel's server passes, else the client's."""
    user = body.get("user")
    if isinstance(user, dict) and text(user.get("ip")):
        return text(user.get("ip"))
    if principal is not None and principal.role == "web":
        return str(principal.id)
    return request.client.host if request.client else None


def redacted(detail: str, body: dict[str, Any]) -> str:
    for field in SECRET_FIELDS:
        value = text(body.get(field))
        if value:
            detail = detail.replace(value, "***")
    return detail


def text(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) and value else None
