"""What the cards application calls out through: payments in, payouts, and members' tokens.

Payments and payouts are keyed by our own id (the card, consumption or withdrawal id), so
asking twice never charges or pays twice; the application relies on that to retry safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from ledger.money import Money


@dataclass(frozen=True)
class PaymentReceipt:
    reference: str
    amount: Money


@dataclass(frozen=True)
class PayoutResult:
    paid: bool
    reference: str = ""
    reason: str = ""


class Payments(Protocol):
    def charge(self, payment_id: UUID, payer_id: UUID, amount: Money) -> PaymentReceipt:
        """Take `amount` from the payer, once per payment id; PaymentDeclined if refused."""
        ...

    def refund(self, payment_id: UUID) -> None:
        """Give a charge back, once; a payment never charged is ignored."""
        ...


class Payouts(Protocol):
    def pay_out(self, payout_id: UUID, payee_id: UUID, amount: Money) -> PayoutResult:
        """Pay `amount` to the payee, once per payout id; the same answer when asked again."""
        ...


class MemberTokens(Protocol):
    def issue(self, member_id: UUID) -> str:
        """A new bearer token for the member, replacing any earlier one; only its hash is
        kept, so the token returned here is the one time it is seen."""
        ...
