"""A member's wallet of commission, and withdrawals from it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from api.auth import authenticate
from api.card_presenters import withdrawal_view
from api.card_schemas import WithdrawalIn, WithdrawalOut
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.keyed_route import KeyedRoute
from api.principals import Principal
from api.routes.acting import acting
from api.routes.distribution import parse_id
from api.schemas import Balance, Currency, MoneyOut
from ledger import accounts

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["member cards"])


@router.get("/wallet", response_model=Balance)
def wallet(
    currency: Currency = Query("CNY"),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Commission: posted, pending (held by withdrawals in flight) and available."""
    me = acting(principal, "member")
    services.views.catch_up()
    balances = services.views.balances.of_account(accounts.user_wallet(me))
    posted, pending = balances.get(currency, (0, 0))
    return Balance(
        posted=MoneyOut(amount=posted, currency=currency),
        pending=MoneyOut(amount=pending, currency=currency),
        available=MoneyOut(amount=posted - pending, currency=currency),
    )


@router.post("/withdrawals", status_code=201, response_model=WithdrawalOut)
def withdraw(
    body: WithdrawalIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    """Hold the amount, pay it out through the payout gateway, then post it or release it."""
    me = acting(call.principal, "member")
    amount = body.amount.to_money()

    def command(withdrawal_id: UUID) -> tuple[int, dict[str, Any]]:
        return 201, withdrawal_view(services.cards.withdraw(withdrawal_id, me, amount))

    return call.run(command)


@router.get("/withdrawals/{withdrawal_id}", response_model=WithdrawalOut)
def get_withdrawal(
    withdrawal_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    me = acting(principal, "member")
    target = parse_id(withdrawal_id, "withdrawal")
    return withdrawal_view(services.cards.withdrawal_of(me, target))
