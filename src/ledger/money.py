"""Integer money and stock quantities; no float ever comes near them."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import CurrencyMismatch, InvalidAmount

MAX_AMOUNT = 10**13
"""The largest amount in minor units a single command may move (100 billion yuan)."""

MAX_QUANTITY = 100_000
"""The largest number of stock units a single command may move."""

CURRENCIES = frozenset({"CNY", "USD", "EUR", "HKD"})


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units (fen) of a currency."""

    amount: int
    currency: str = "CNY"

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise InvalidAmount(f"amount must be an integer, got {self.amount!r}")
        if self.currency not in CURRENCIES:
            raise InvalidAmount(f"unknown currency {self.currency!r}")
        if abs(self.amount) > MAX_AMOUNT:
            raise InvalidAmount(f"amount {self.amount} is past the limit of {MAX_AMOUNT}")

    def __add__(self, other: Money) -> Money:
        self._check_same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check_same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, quantity: int) -> Money:
        return Money(self.amount * quantity, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def _check_same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} and {other.currency} do not mix")

    def require_positive(self) -> Money:
        if self.amount <= 0:
            raise InvalidAmount(f"amount must be positive, got {self.amount}")
        return self

    def as_dict(self) -> dict[str, object]:
        return {"amount": self.amount, "currency": self.currency}


def require_quantity(quantity: int) -> int:
    """A stock quantity is a whole number of units between 1 and MAX_QUANTITY."""
    if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
        raise InvalidAmount(f"quantity must be a whole number from 1 to {MAX_QUANTITY}")
    return quantity
