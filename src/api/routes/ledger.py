"""Finance's reads of the ledger: account balances and the trial balance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query

from api.auth import authenticate, require
from api.container import Services, get_services
from api.input_rules import AwareInstant
from api.presenters import journal_page
from api.principals import Principal
from api.query_filters import declared_filters_only

router = APIRouter(
    prefix="/v1/ledger", tags=["ledger"], dependencies=[Depends(declared_filters_only)]
)

AccountName = Path(min_length=3, max_length=300, pattern=r"^[a-z]+(:[A-Za-z0-9_.\-]+)+$")


@router.get("/accounts/{account}/balance")
def account_balance(
    account: str = AccountName,
    as_of: AwareInstant | None = Query(None, description="Balance by event time (UTC)."),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Posted, pending and available per asset; with `as_of`, as they stood then."""
    require(principal, "finance")
    views = services.views
    if as_of is None:
        views.catch_up()
        balances = views.balances.of_account(account)
    else:
        views.catch_up("journal")
        balances = views.journal.balance_as_of(account, as_of)
    return {
        "account": account,
        "as_of": as_of.isoformat() if as_of else None,
        "balances": [
            {"asset": asset, "posted": posted, "pending": pending, "available": posted - pending}
            for asset, (posted, pending) in sorted(balances.items())
        ],
    }


@router.get("/trial-balance")
def trial_balance(
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "finance")
    services.views.catch_up()
    totals = services.views.balances.trial_balance()
    return {
        "items": [{"asset": asset, "total": total} for asset, total in totals.items()],
        "balanced": all(total == 0 for total in totals.values()),
    }


@router.get("/journal")
def journal(
    application: str | None = Query(None, pattern="^(distribution|cards)$"),
    limit: int = Query(50, ge=1, le=100),
    after: str | None = Query(None, pattern=r"^[a-z]+:[0-9]+$", description="a next_cursor"),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Every movement in log order (by application, then position), with its postings,
    its event id and its link in the hash chain."""
    require(principal, "finance")
    views = services.views
    views.catch_up("journal")
    cursor = None
    if after:
        name, number = after.split(":")
        cursor = (name, int(number))
    return journal_page(views.journal.entries(application, cursor, limit + 1), limit)
