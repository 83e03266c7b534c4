"""Wallets of commission and the withdrawals paid out of them."""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger import accounts
from ledger.errors import InsufficientBalance, StateConflict
from ledger.money import Money
from ledger.postings import Holds, Postings

WALLETS = UUID("3b0e6f4c-2d8a-4f61-8c5e-9a1d7b3e2f60")


def wallet_id(member_id: UUID) -> UUID:
    return uuid5(WALLETS, str(member_id))


class Wallet(Aggregate):
    """A member's commission per currency. A refund of commission already withdrawn leaves it
    negative, and later commission pays that back first. `held` is what withdrawals in flight
    have set aside; only `available` (posted minus held) can be withdrawn."""

    @event("Opened")
    def __init__(self, id: UUID, member_id: UUID) -> None:
        self.member_id = member_id
        self.posted: dict[str, int] = {}
        self.held: dict[str, int] = {}

    def available(self, currency: str) -> int:
        return self.posted.get(currency, 0) - self.held.get(currency, 0)

    @event("Credited")
    def credit(self, movement_id: UUID, amount: Money) -> None:
        self.posted[amount.currency] = self.posted.get(amount.currency, 0) + amount.amount

    @event("Debited")
    def debit(self, movement_id: UUID, amount: Money) -> None:
        self.posted[amount.currency] = self.posted.get(amount.currency, 0) - amount.amount

    def hold(self, withdrawal_id: UUID, amount: Money) -> None:
        if amount.amount > self.available(amount.currency):
            raise InsufficientBalance(
                f"{amount.amount} asked, {max(0, self.available(amount.currency))} available"
            )
        self._held(withdrawal_id, amount)

    @event("Held")
    def _held(self, withdrawal_id: UUID, amount: Money) -> None:
        self.held[amount.currency] = self.held.get(amount.currency, 0) + amount.amount

    @event("PaidOut")
    def pay_out(self, withdrawal_id: UUID, amount: Money) -> None:
        self.posted[amount.currency] -= amount.amount
        self.held[amount.currency] -= amount.amount

    @event("Released")
    def release(self, withdrawal_id: UUID, amount: Money) -> None:
        self.held[amount.currency] -= amount.amount


class Withdrawal(Aggregate):
    """Commission paid out through the payout adapter: held while in flight, then posted to
    the outside world when paid, or released when the payout failed."""

    @event("Requested")
    def __init__(self, id: UUID, member_id: UUID, amount: Money, holds: Holds) -> None:
        self.member_id = member_id
        self.amount = amount
        self.status = "pending"
        self.reference = ""
        self.failure = ""

    @classmethod
    def request(cls, withdrawal_id: UUID, member_id: UUID, amount: Money) -> Withdrawal:
        wallet = accounts.user_wallet(member_id)
        holds = Holds.place(wallet, amount.currency, amount.amount)
        return cls(id=withdrawal_id, member_id=member_id, amount=amount, holds=holds)

    @property
    def wallet_account(self) -> str:
        return accounts.user_wallet(self.member_id)

    def pay(self, reference: str) -> None:
        self._check_pending()
        postings = Postings.of(
            (
                self.wallet_account,
                accounts.external_payouts(self.amount.currency),
                self.amount.currency,
                self.amount.amount,
            )
        )
        release = Holds.release(self.wallet_account, self.amount.currency, self.amount.amount)
        self._paid(reference, postings, release)

    @event("Paid")
    def _paid(self, reference: str, postings: Postings, holds: Holds) -> None:
        self.status = "paid"
        self.reference = reference

    def fail(self, reason: str) -> None:
        self._check_pending()
        release = Holds.release(self.wallet_account, self.amount.currency, self.amount.amount)
        self._failed(reason, release)

    @event("Failed")
    def _failed(self, reason: str, holds: Holds) -> None:
        self.status = "failed"
        self.failure = reason

    def _check_pending(self) -> None:
        if self.status != "pending":
            raise StateConflict(f"withdrawal {self.id} is already {self.status}")
