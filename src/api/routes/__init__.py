"""HTTP routers: each translates requests into commands and queries, nothing more."""

from api.routes import cards, codes, distribution, ledger, operations, page, recharges

ROUTERS = [
    module.router for module in (distribution, codes, recharges, cards, ledger, operations, page)
]
