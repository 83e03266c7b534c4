"""The audit log, for operators: refusals and decisions, filtered and paged, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from adapters.audit_log import KINDS, AuditFilter
from api.auth import authenticate, require
from api.container import Services, get_services
from api.input_rules import Instant, canonical_uuid
from api.principals import Principal
from api.problems import Problem
from api.query_filters import declared_filters_only

router = APIRouter(
    prefix="/v1", tags=["operations"], dependencies=[Depends(declared_filters_only)]
)


@router.get("/audit-log")
def audit_log(
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
    kind: str | None = None,
    channel_id: str | None = None,
    code: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,64}$")] = None,
    since: Annotated[Instant | None, Query(alias="from")] = None,
    until: Annotated[Instant | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    after: str | None = None,
) -> Any:
    """`from` inclusive, `to` exclusive; `next_cursor` is null on the last page."""
    require(principal, "operator")
    where = AuditFilter(
        kind=parse_kind(kind),
        channel_id=parse_channel(channel_id),
        code=code,
        since=as_utc(since),
        until=as_utc(until),
    )
    if where.since and where.until and where.since >= where.until:
        raise Problem("validation_failed", "from must be before to", status=422)
    entries, cursor = services.audit_log.page(where, limit, parse_cursor(after))
    return {
        "items": [entry.as_dict() for entry in entries],
        "next_cursor": str(cursor) if cursor is not None else None,
    }


def parse_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise Problem("validation_failed", f"kind is one of {', '.join(KINDS)}", status=422)
    return kind


def parse_channel(channel_id: str | None) -> UUID | None:
    if channel_id is None:
        return None
    found = canonical_uuid(channel_id)
    if found is None:
        raise Problem("validation_failed", "channel_id is not a channel id", status=422)
    return found


def parse_cursor(after: str | None) -> int | None:
    if after is None:
        return None
    if not after.isdigit() or len(after) > 18:
        raise Problem("validation_failed", "after is not a cursor of this list", status=422)
    return int(after)


def as_utc(moment: datetime | None) -> datetime | None:
    """A time without an offset is taken as UTC, as every time in the API is."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
