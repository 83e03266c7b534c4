"""Input rules applied in one place: what text, times, ids and bodies the API accepts.

- Text: no control characters (Unicode Cc, tab and newline included), no bidirectional
  overrides or isolates (they make a name read differently from what it is) and no unpaired
  surrogates, in any string field of any request body (`refuse_control_characters`, which
  `api.schemas.Body` runs on every field, and the `PlainText` type), nor in any query
  parameter (`PlainQueries`, an ASGI middleware: a NUL in `?account=` was a 500).
- Times: `Expiry` is aware, in the future and before 2100 in UTC; `Instant` (a filter) is any
  time from 1970 to before 3000 (a time without an offset is UTC, as everywhere in the API),
  so no offset can push it past what Python and PostgreSQL hold (year 9999).
- Ids: one canonical UUID form, lowercase and hyphenated, 36 characters (`canonical_uuid`);
  `urn:uuid:`, braces, capitals and bare hex are not ids.
- Bodies: JSON in UTF-8 only, every object's keys distinct (`StrictJsonBodies`, an ASGI
  middleware in front of FastAPI's own parsing): a declared charset other than UTF-8, or a
  media type other than JSON, is 415 `unsupported_media_type`; a body in UTF-16 or with a BOM,
  a duplicate key, `NaN`/`Infinity` or an unpaired surrogate is 422 `validation_failed`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Cf characters that reorder text: marks, embeddings, overrides and isolates."""

CALENDAR_START = datetime(1970, 1, 1, tzinfo=UTC)
CALENDAR_END = datetime(3000, 1, 1, tzinfo=UTC)
"""Times the API accepts lie in [1970, 3000) UTC."""

EXPIRY_END = datetime(2100, 1, 1, tzinfo=UTC)
"""An expiry lies after now and before 2100 UTC."""

CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# text


def unwanted_character(text: str) -> tuple[int, str] | None:
    """The first control, bidi or surrogate character of `text` and its index, if any."""
    for index, character in enumerate(text):
        category = unicodedata.category(character)
        if category in ("Cc", "Cs") or character in BIDI_CONTROLS:
            return index, character
    return None


def refuse_control_characters(text: str) -> str:
    found = unwanted_character(text)
    if found is not None:
        index, character = found
        raise ValueError(
            f"must not contain control characters (U+{ord(character):04X} at {index})"
        )
    return text


def refuse_control_characters_within(value: Any) -> Any:
    """The same over a field's value: a string, or strings inside lists and dicts."""
    if isinstance(value, str):
        return refuse_control_characters(value)
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            refuse_control_characters_within(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_control_characters_within(key)
            refuse_control_characters_within(item)
    return value


PlainText = Annotated[str, AfterValidator(refuse_control_characters)]
"""A string with no control characters: every free-text field is at least this."""


# times


def in_calendar(moment: datetime, end: datetime = CALENDAR_END) -> datetime:
    """The moment in UTC, if it lies in [1970, end)."""
    refusal = f"must be a time from 1970 to before {end.year} (UTC)"
    try:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        raise ValueError(refusal) from None
    if not CALENDAR_START <= utc < end:
        raise ValueError(refusal)
    return utc


def in_the_future(moment: datetime) -> datetime:
    utc = in_calendar(moment, EXPIRY_END)
    if utc <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return utc


Expiry = Annotated[AwareDatetime, AfterValidator(in_the_future)]
"""An expiry: with an offset, after now and before 2100 (UTC), given back in UTC."""

Instant = Annotated[datetime, AfterValidator(in_calendar)]
"""A time in a filter: from 1970 to before 3000, in UTC (no offset: UTC)."""

AwareInstant = Annotated[AwareDatetime, AfterValidator(in_calendar)]
"""The same, where the offset must be given."""


# ids


def canonical_uuid(text: str) -> UUID | None:
    """The UUID `text` spells in the canonical form (lowercase, hyphenated), else None."""
    if CANONICAL_UUID.fullmatch(text) is None:
        return None
    return UUID(text)


# bodies


class RefusedBody(ValueError):
    pass


def _distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise RefusedBody(f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise RefusedBody(f"{name} is not JSON")


def _no_surrogates(value: Any) -> None:
    if isinstance(value, str):
        if any("\ud800" <= c <= "\udfff" for c in value):
            raise RefusedBody("the body holds an unpaired surrogate (\\ud800-\\udfff)")
    elif isinstance(value, list):
        for item in value:
            _no_surrogates(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_surrogates(key)
            _no_surrogates(item)


def media_type_refusal(content_type: str | None) -> str | None:
    """Why a body of this Content-Type is refused, or None for JSON in UTF-8 (or no type)."""
    if content_type is None:
        return None
    media, *parameters = content_type.split(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        return f"bodies are application/json, not {media or 'an empty type'}"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return "bodies are JSON in UTF-8, and no other charset"
    return None


def body_refusal(body: bytes) -> str | None:
    """Why these bytes are not a body we take, or None. Parsed here as FastAPI would not: as
    UTF-8 text only (json.loads of bytes also takes UTF-16 and UTF-32), keys distinct."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    if text.startswith("\ufeff"):
        return "the body starts with a byte order mark"
    try:
        parsed = json.loads(text, object_pairs_hook=_distinct_keys, parse_constant=_no_constant)
    except RefusedBody as refused:
        return str(refused)
    except json.JSONDecodeError as error:
        return f"the body is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
    except (ValueError, RecursionError):
        return "the body is not JSON"
    try:
        _no_surrogates(parsed)
    except RefusedBody as refused:
        return str(refused)
    return None


class StrictJsonBodies:
    """Reads a request's whole body (BodyLimit, outside, bounds it) and refuses it before
    anything parses it when it is not JSON in UTF-8 with distinct keys; passes the same
    bytes on otherwise, so signatures and idempotency hashes see what was sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            content_type = dict(scope.get("headers", [])).get(b"content-type")
            declared = content_type.decode("latin-1") if content_type is not None else None
            refusal = media_type_refusal(declared)
            if refusal is not None:
                await self._refuse(scope, body, "unsupported_media_type", refusal, send)
                return
            refusal = body_refusal(body)
            if refusal is not None:
                await self._refuse(scope, body, "validation_failed", refusal, send)
                return
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)

    async def _refuse(self, scope: Scope, body: bytes, code: str, detail: str, send: Send) -> None:
        receive = _replay([{"type": "http.request", "body": body}])
        request = Request(scope, receive)
        if code == "validation_failed":
            errors = [{"field": "", "message": detail}]
            response = problem_response(request, code, detail, errors=errors)
        else:
            response = problem_response(request, code, detail)
        await response(scope, receive, send)


class PlainQueries:
    """Refuses a query string whose names or values, percent-decoded, hold a character the
    text rule refuses, before any route reads them (422 `validation_failed`, the parameter
    named)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if query:
            text = query.decode("latin-1")
            for name, value in parse_qsl(text, keep_blank_values=True):
                found = unwanted_character(name) or unwanted_character(value)
                if found is not None:
                    detail = f"must not contain control characters (U+{ord(found[1]):04X})"
                    field = "query." + "".join(c for c in name if c.isprintable())[:64]
                    request = Request(scope, receive)
                    response = problem_response(
                        request,
                        "validation_failed",
                        "the request has invalid fields",
                        errors=[{"field": field, "message": detail}],
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A receive that gives `messages` first, then waits on `then` (a disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
