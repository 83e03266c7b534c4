"""Finance's reads of the ledger: account balances and the trial balance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request

from api.auth import Principal, authenticate, require

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])

AccountName = Path(min_length=3, max_length=300, pattern=r"^[a-z]+(:[A-Za-z0-9_.\-]+)+$")


@router.get("/accounts/{account}/balance")
def account_balance(
    request: Request, account: str = AccountName, principal: Principal = Depends(authenticate)
) -> Any:
    require(principal, "finance")
    request.app.state.views.catch_up()
    balances = request.app.state.views.balances.of_account(account)
    return {
        "account": account,
        "balances": [
            {"asset": asset, "posted": posted, "pending": pending, "available": posted - pending}
            for asset, (posted, pending) in sorted(balances.items())
        ],
    }


@router.get("/trial-balance")
def trial_balance(request: Request, principal: Principal = Depends(authenticate)) -> Any:
    require(principal, "finance")
    request.app.state.views.catch_up()
    totals = request.app.state.views.balances.trial_balance()
    return {
        "items": [{"asset": asset, "total": total} for asset, total in totals.items()],
        "balanced": all(total == 0 for total in totals.values()),
    }
