"""HTTP routers: each translates requests into commands and queries, nothing more."""

from api.routes import (
    audit,
    batches,
    cards,
    cases,
    codes,
    consumptions,
    distribution,
    intimate_cards,
    ledger,
    lists,
    members,
    merchant_settlements,
    merchants,
    operations,
    page,
    platform_callbacks,
    recharges,
    settlements,
    shared_cards,
    wallets,
)

ROUTERS = [
    module.router
    for module in (
        # a request is matched against the routes in this order, each match costing FastAPI's
        # route context: the two hot calls (a recharge, a consumption) come first
        recharges,
        consumptions,
        distribution,
        codes,
        batches,
        platform_callbacks,
        merchants,
        members,
        cards,
        shared_cards,
        intimate_cards,
        wallets,
        ledger,
        merchant_settlements,
        settlements,
        cases,
        lists,
        audit,
        operations,
        page,
    )
]
