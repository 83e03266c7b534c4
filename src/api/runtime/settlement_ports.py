"""What a platform settlement calls out through, built once per process: the ledger's side
(the settled orders view), the platforms' statements and the settlement payments (their
partner APIs, at each platform's registered address, signed with the partner secret)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from adapters.settings import Settings
from adapters.settlement_statements import (
    HttpPlatformStatements,
    HttpSettlementPayments,
    PartnerClient,
    PlatformTerms,
)
from ledger.distribution.application import Distribution
from projections.settled_orders import SettledOrders


@dataclass
class SettlementPorts:
    """The three ports of `ledger.settlement.ports`, and the client to close."""

    ledger_side: SettledOrders
    statements: HttpPlatformStatements
    payments: HttpSettlementPayments
    client: PartnerClient

    def close(self) -> None:
        self.client.close()


def settlement_ports(settings: Settings, pool: Any, distribution: Distribution) -> SettlementPorts:
    """In sandbox mode the statement requests say `close_now`: a sandbox settlement of the
    current day (POST /v1/settlements with close_now) gets the day's statement at once."""
    ledger_side = SettledOrders(pool)
    client = PartnerClient.from_settings(settings)

    def gateway_url(platform_id: UUID) -> str:
        return distribution.platform(platform_id).gateway_url

    def terms(platform_id: UUID) -> PlatformTerms:
        return PlatformTerms(gateway_url(platform_id), ledger_side.prices(platform_id))

    return SettlementPorts(
        ledger_side,
        HttpPlatformStatements(client, terms, close_now=settings.sandbox),
        HttpSettlementPayments(client, gateway_url),
        client,
    )
