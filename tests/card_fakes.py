"""In-memory fakes of the cards application's ports: payments, payouts and member tokens.

Like the real gateways they answer by id, so asking twice never moves money twice; unlike
them they can be told to decline, to refuse, or to lose an answer, and they remember who
asked what.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from uuid import UUID

from ledger.cards.ports import PaymentReceipt, PayoutResult
from ledger.errors import PaymentDeclined
from ledger.money import Money


class FakePayments:
    def __init__(self) -> None:
        self.declining = False
        self.while_charging: Callable[[], None] = lambda: None
        self.asked: list[UUID] = []
        self.charged: dict[UUID, Money] = {}
        self.refunded: list[UUID] = []

    def charge(self, payment_id: UUID, payer_id: UUID, amount: Money) -> PaymentReceipt:
        self.asked.append(payment_id)
        if self.declining or payment_id in self.refunded:
            raise PaymentDeclined("the fake declined the payment")
        self.charged.setdefault(payment_id, amount)
        self.while_charging()
        return PaymentReceipt(f"fake-pay-{payment_id.hex}", self.charged[payment_id])

    def refund(self, payment_id: UUID) -> None:
        if payment_id in self.charged and payment_id not in self.refunded:
            self.refunded.append(payment_id)

    @property
    def kept(self) -> int:
        """What was charged and not given back."""
        return sum(m.amount for i, m in self.charged.items() if i not in self.refunded)


class FakePayouts:
    def __init__(self) -> None:
        self.refusing = False
        self.answers_to_lose = 0
        self.asked: list[UUID] = []
        self.answers: dict[UUID, tuple[PayoutResult, Money]] = {}

    def pay_out(self, payout_id: UUID, payee_id: UUID, amount: Money) -> PayoutResult:
        self.asked.append(payout_id)
        if payout_id not in self.answers:
            result = (
                PayoutResult(paid=False, reason="the bank said no")
                if self.refusing
                else PayoutResult(paid=True, reference=f"fake-payout-{payout_id.hex}")
            )
            self.answers[payout_id] = (result, amount)
        if self.answers_to_lose:
            self.answers_to_lose -= 1
            raise ConnectionError("the payout's answer was lost on the way back")
        return self.answers[payout_id][0]

    @property
    def paid_out(self) -> int:
        return sum(amount.amount for result, amount in self.answers.values() if result.paid)


class FakeMemberTokens:
    """Keeps the SHA-256 hash of each member's latest token, never the token."""

    def __init__(self) -> None:
        self.hashes: dict[UUID, bytes] = {}

    def issue(self, member_id: UUID) -> str:
        token = "lt_" + secrets.token_urlsafe(16)
        self.hashes[member_id] = hashlib.sha256(token.encode()).digest()
        return token
