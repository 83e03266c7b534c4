"""The collaborators of the HTTP API, built once at start-up and handed to routes typed.

Routes ask for `Services` through the `services` dependency instead of reaching into
`request.app.state`, so each route says what it uses and mypy checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request

if TYPE_CHECKING:
    from adapters.audit_log import AuditLog
    from adapters.sealed_codes import SealedBatchCodes
    from adapters.settings import Settings
    from adapters.sms import SandboxSms
    from api.principals import Authenticator
    from ledger.cards.application import Cards
    from ledger.cards.settlements import MerchantSettlements
    from ledger.distribution.application import Distribution
    from ledger.recharges.application import Recharges
    from ledger.recharges.placement import RechargePlacement
    from ledger.recharges.platform_news import PlatformNews
    from ledger.settlement.application import Settlements
    from ledger.settlement.steps import SettlementSteps
    from projections.merchant_statements import MerchantStatementsReader
    from projections.views import Views


@dataclass
class Services:
    settings: Settings
    pool: Any
    distribution: Distribution
    recharges: Recharges
    cards: Cards
    views: Views
    authenticator: Authenticator
    placement: RechargePlacement
    sandbox_sms: SandboxSms | None
    audit_log: AuditLog
    sealed_codes: SealedBatchCodes
    platform_news: PlatformNews
    merchant_settlements: MerchantSettlements
    merchant_statements: MerchantStatementsReader
    settlements: Settlements
    settlement_steps: SettlementSteps

    def close(self) -> None:
        self.cards.close()
        self.pool.close()


def services_of(request: Request) -> Services:
    """The container the lifespan built."""
    built: Services = request.app.state.services
    return built


async def get_services(request: Request) -> Services:
    """FastAPI dependency for routes (async: FastAPI would otherwise run it in the thread
    pool, one more trip through the event loop for every request)."""
    return services_of(request)
