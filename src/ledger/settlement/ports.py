"""What a platform settlement calls out through: the ledger's own side of a period, the
platform's statement of it, and the payment of what was agreed.

Both sides speak in `Line`s keyed by (order number, kind): a credited order is billed once
(`charge`, its product's wholesale cost) and an accepted refund reverses it once (`refund`,
the same cost, subtracted), each on the statement of the UTC day it happened on at the
platform. Our recharge id is the platform's order number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Protocol
from uuid import UUID

from ledger.money import Money

LineKind = Literal["charge", "refund"]


@dataclass(frozen=True, slots=True)
class Line:
    """One order's charge or refund on one side. `amount` is positive; a refund subtracts."""

    order_no: str
    kind: LineKind
    amount: Money
    at: datetime

    @property
    def key(self) -> tuple[str, LineKind]:
        return (self.order_no, self.kind)

    @property
    def signed(self) -> int:
        return self.amount.amount if self.kind == "charge" else -self.amount.amount


@dataclass(frozen=True)
class Statement:
    """The platform's bill for one UTC day: its lines and the total it asks for."""

    platform_id: UUID
    period: date
    lines: tuple[Line, ...]
    total: Money


class StatementNotReady(Exception):
    """The platform has not published the period's statement yet: ask again later."""

    def __init__(self, retry_after_seconds: int = 60) -> None:
        super().__init__(f"statement not ready; retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class LedgerSide(Protocol):
    def lines(self, platform_id: UUID, period: date) -> Iterable[Line]:
        """Our credited orders (charges) and accepted refunds of the platform's products
        whose time falls in the UTC day `period`, at the product's wholesale cost."""
        ...

    def caught_up(self, platform_id: UUID, period: date) -> bool:
        """Whether everything recorded up to the end of `period` is in `lines` (the read
        model has processed the log past the period's end)."""
        ...


class PlatformStatements(Protocol):
    def statement(self, platform_id: UUID, period: date) -> Statement:
        """The platform's statement of `period`; StatementNotReady before it is published,
        `ledger.errors.Unavailable` when the platform cannot be reached."""
        ...


@dataclass(frozen=True)
class SettlementPaymentReceipt:
    reference: str
    amount: Money


class SettlementPayments(Protocol):
    def pay(self, payment_id: UUID, platform_id: UUID, amount: Money) -> SettlementPaymentReceipt:
        """Pay the platform `amount`, once per `payment_id` (the settlement's id): asked
        again, the same receipt and no second payment; `Unavailable` when it cannot tell."""
        ...
