"""What a platform settlement calls out through, built once per process: the ledger's side
(the settled orders view), the platforms' statements and the settlement payments (their
partner APIs, at each platform's registered address, signed with the partner secret)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
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
from ledger.money import Money
from ledger.settlement.ports import (
    LedgerSide,
    Line,
    PlatformStatements,
    SettlementPaymentReceipt,
    SettlementPayments,
    Statement,
)
from projections.settled_orders import SettledOrders


@dataclass
class SettlementPorts:
    """The three ports of `ledger.settlement.ports` (the ledger side a `SettledOrders`, or
    the crash tests' wrapper of it), and the client to close."""

    ledger_side: LedgerSide
    statements: PlatformStatements
    payments: SettlementPayments
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

    ports = SettlementPorts(
        ledger_side,
        HttpPlatformStatements(client, terms, close_now=settings.sandbox),
        HttpSettlementPayments(client, gateway_url),
        client,
    )
    step = settings.ledger_sandbox_settlement_exit
    if settings.sandbox and step:
        ports.ledger_side = CrashingLedgerSide(ledger_side, step)
        ports.statements = CrashingStatements(ports.statements, step)
        ports.payments = CrashingPayments(ports.payments, step)
    return ports


def crash() -> None:
    """Crash tests: the process dies here, as a power cut would (nothing cleans up)."""
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingLedgerSide:
    """Sandbox crash tests (LEDGER_SANDBOX_SETTLEMENT_EXIT): the process dies once our side is
    read, in the step named. A collect asks whether the view is caught up and then reads the
    day; a reconciliation reads the next day's keys without asking."""

    def __init__(self, inner: SettledOrders, step: str) -> None:
        self.inner = inner
        self.step = step
        self._collecting = False

    def caught_up(self, platform_id: UUID, period: date) -> bool:
        self._collecting = self.inner.caught_up(platform_id, period)
        return self._collecting

    def lines(self, platform_id: UUID, period: date) -> Iterator[Line]:
        step = "collect" if self._collecting else "reconcile"
        self._collecting = False
        yield from self.inner.lines(platform_id, period)
        if step == self.step:
            crash()

    def prices(self, platform_id: UUID) -> dict[str, Money]:
        return self.inner.prices(platform_id)


class CrashingStatements:
    def __init__(self, inner: PlatformStatements, step: str) -> None:
        self.inner = inner
        self.step = step

    def statement(self, platform_id: UUID, period: date) -> Statement:
        statement = self.inner.statement(platform_id, period)
        if self.step == "statement":
            crash()
        return statement


class CrashingPayments:
    def __init__(self, inner: SettlementPayments, step: str) -> None:
        self.inner = inner
        self.step = step

    def pay(self, payment_id: UUID, platform_id: UUID, amount: Money) -> SettlementPaymentReceipt:
        receipt = self.inner.pay(payment_id, platform_id, amount)
        if self.step == "pay":
            crash()
        return receipt
