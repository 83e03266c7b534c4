"""The operator's lists (and a channel's own): channels, platforms, products, code batches,
withdrawals and dead letters, every one cursor-paged as `{items, next_cursor}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from api.auth import authenticate, require
from api.container import Services, get_services
from api.presenters import batch_row, page_of, row_out
from api.principals import Principal
from api.problems import Problem
from api.query_filters import declared_filters_only
from api.routes.distribution import parse_cursor, parse_id, visible_channel

router = APIRouter(prefix="/v1", tags=["lists"], dependencies=[Depends(declared_filters_only)])

LIMIT = Query(50, ge=1, le=100)
AFTER = Query(None, max_length=64)


def directory_caught_up(services: Services) -> None:
    """Read-your-writes, bounded: the list includes what was recorded before it was asked."""
    services.views.catch_up("directory")


@router.get("/channels")
def list_channels(
    parent_id: str | None = Query(None, max_length=64),
    limit: int = LIMIT,
    after: str | None = AFTER,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """The operator sees every channel; a channel its own subtree (itself included)."""
    require(principal, "operator", "channel")
    cursor = parse_cursor(after)
    parent = visible_channel(services.distribution, principal, parent_id).id if parent_id else None
    within = principal.channel_id if principal.role == "channel" else None
    directory_caught_up(services)
    rows = services.views.directory.channels(within, parent, cursor, limit + 1)
    return page_of([row_out(row) for row in rows], limit)


@router.get("/platforms")
def list_platforms(
    limit: int = LIMIT,
    after: str | None = AFTER,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "operator")
    cursor = parse_cursor(after)
    directory_caught_up(services)
    rows = services.views.directory.platforms(cursor, limit + 1)
    return page_of([row_out(row) for row in rows], limit)


@router.get("/products")
def list_products(
    platform_id: str | None = Query(None, max_length=64),
    limit: int = LIMIT,
    after: str | None = AFTER,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "operator")
    cursor = parse_cursor(after)
    platform = (
        services.distribution.platform(parse_id(platform_id, "platform")).id
        if platform_id
        else None
    )
    directory_caught_up(services)
    rows = services.views.directory.products(platform, cursor, limit + 1)
    return page_of([row_out(row) for row in rows], limit)


@router.get("/code-batches")
def list_code_batches(
    channel_id: str | None = Query(None, max_length=64),
    limit: int = LIMIT,
    after: str | None = AFTER,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """A channel lists its own batches, the operator every channel's (or one's); each with
    how many of its codes are issued, reserved, redeemed, voided and expired."""
    require(principal, "operator", "channel")
    cursor = parse_cursor(after)
    if principal.role == "channel":
        owner = principal.channel_id
        if channel_id and channel_id != str(owner):
            raise Problem("forbidden", "a channel lists its own code batches only")
    else:
        owner = (
            visible_channel(services.distribution, principal, channel_id).id if channel_id else None
        )
    directory_caught_up(services)
    services.views.catch_up("codes")
    rows = services.views.directory.batches(owner, cursor, limit + 1)
    return page_of([batch_row(row) for row in rows], limit)


@router.get("/withdrawals")
def list_withdrawals(
    status: str | None = Query(None, pattern="^(pending|paid|failed)$"),
    limit: int = LIMIT,
    after: str | None = AFTER,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "operator")
    cursor = parse_cursor(after)
    directory_caught_up(services)
    rows = services.views.directory.withdrawals(status, cursor, limit + 1)
    return page_of([row_out(row) for row in rows], limit)


@router.get("/dead-letters")
def list_dead_letters(
    limit: int = LIMIT,
    after: int | None = Query(None, ge=0, le=2**62),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Events a view could not apply, oldest first; the cursor is the last one's id."""
    require(principal, "operator")
    rows = services.views.directory.dead_letters(after, limit + 1)
    return page_of([row_out(row) for row in rows], limit)
