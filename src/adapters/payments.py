"""The sandbox's payments in (members paying for cards and shared consumption) and payouts
(withdrawals): the only implementations of the cards ports so far. They keep their state in
memory, per process, and can be told to decline.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from uuid import UUID

from ledger.cards.ports import PaymentReceipt, Payments, PayoutResult, Payouts
from ledger.errors import PaymentDeclined
from ledger.money import Money

MAX_REMEMBERED = 100_000


class Remembered(OrderedDict[UUID, object]):
    """Answers by id, the oldest forgotten past a limit."""

    def remember(self, key: UUID, answer: object) -> None:
        self[key] = answer
        while len(self) > MAX_REMEMBERED:
            self.popitem(last=False)


class SandboxPaymentGateway:
    """Accepts every charge unless `decline(amount)` says otherwise. A payment given back
    stays given back: charging its id again is declined, never taken a second time."""

    def __init__(self, decline: Callable[[Money], bool] = lambda _amount: False) -> None:
        self.decline = decline
        self.charges = Remembered()
        self.refunded: set[UUID] = set()
        self.lock = threading.Lock()

    def charge(self, payment_id: UUID, payer_id: UUID, amount: Money) -> PaymentReceipt:
        with self.lock:
            if payment_id in self.refunded:
                raise PaymentDeclined("this payment was given back; a new one needs a new id")
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


def gateways(sandbox: bool) -> tuple[Payments | None, Payouts | None]:
    """The gateways for this deployment: the sandbox ones, or none outside sandbox mode yet."""
    if sandbox:
        return SandboxPaymentGateway(), SandboxPayoutGateway()
    return None, None
