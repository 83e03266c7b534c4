"""Payments in (members paying for cards and shared consumption) and payouts (withdrawals).

Both are keyed by our own id (the card, consumption or withdrawal id), so asking twice never
charges or pays twice. The sandbox implementations are the only ones so far; they keep their
state in memory, per process, and can be told to decline.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from ledger.errors import PaymentDeclined
from ledger.money import Money

MAX_REMEMBERED = 100_000


@dataclass(frozen=True)
class PaymentReceipt:
    reference: str
    amount: Money


@dataclass(frozen=True)
class PayoutResult:
    paid: bool
    reference: str = ""
    reason: str = ""


class PaymentGateway(Protocol):
    def charge(self, payment_id: UUID, payer_id: UUID, amount: Money) -> PaymentReceipt:
        """Take `amount` from the payer, once per payment id; PaymentDeclined if refused."""

    def refund(self, payment_id: UUID) -> None:
        """Give a charge back, once; a payment never charged is ignored."""


class PayoutGateway(Protocol):
    def pay_out(self, payout_id: UUID, payee_id: UUID, amount: Money) -> PayoutResult:
        """Pay `amount` to the payee, once per payout id; the same answer when asked again."""


class Remembered(OrderedDict[UUID, object]):
    """Answers by id, the oldest forgotten past a limit."""

    def remember(self, key: UUID, answer: object) -> None:
        self[key] = answer
        while len(self) > MAX_REMEMBERED:
            self.popitem(last=False)


class SandboxPaymentGateway:
    """Accepts every charge unless `decline(amount)` says otherwise."""

    def __init__(self, decline: Callable[[Money], bool] = lambda _amount: False) -> None:
        self.decline = decline
        self.charges = Remembered()
        self.refunded: set[UUID] = set()
        self.lock = threading.Lock()

    def charge(self, payment_id: UUID, payer_id: UUID, amount: Money) -> PaymentReceipt:
        with self.lock:
            known = self.charges.get(payment_id)
            if isinstance(known, PaymentReceipt):
                return known
            if self.decline(amount):
                raise PaymentDeclined("the sandbox declined the payment")
            receipt = PaymentReceipt(f"sandbox-pay-{payment_id.hex}", amount)
            self.charges.remember(payment_id, receipt)
            return receipt

    def refund(self, payment_id: UUID) -> None:
        with self.lock:
            if payment_id in self.charges:
                self.refunded.add(payment_id)


class SandboxPayoutGateway:
    """Pays every payout unless `fail(amount)` says otherwise."""

    def __init__(self, fail: Callable[[Money], bool] = lambda _amount: False) -> None:
        self.fail = fail
        self.payouts = Remembered()
        self.lock = threading.Lock()

    def pay_out(self, payout_id: UUID, payee_id: UUID, amount: Money) -> PayoutResult:
        with self.lock:
            known = self.payouts.get(payout_id)
            if isinstance(known, PayoutResult):
                return known
            if self.fail(amount):
                result = PayoutResult(paid=False, reason="the sandbox refused the payout")
            else:
                result = PayoutResult(paid=True, reference=f"sandbox-payout-{payout_id.hex}")
            self.payouts.remember(payout_id, result)
            return result


def gateways(sandbox: bool) -> tuple[PaymentGateway | None, PayoutGateway | None]:
    """The gateways for this deployment: the sandbox ones, or none outside sandbox mode yet."""
    if sandbox:
        return SandboxPaymentGateway(), SandboxPayoutGateway()
    return None, None
