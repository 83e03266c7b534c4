"""Postings: the legs of one balanced movement of money or stock."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.money import MAX_AMOUNT


class UnbalancedPostings(AssertionError):
    """A movement whose legs do not sum to zero per asset: a bug, never a user error."""


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg: `amount` (signed, minor units or stock units) of `asset` into `account`."""

    account: str
    asset: str
    amount: int

    def __post_init__(self) -> None:
        if type(self.amount) is not int or self.amount == 0 or abs(self.amount) > MAX_AMOUNT:
            raise UnbalancedPostings(f"bad posting amount {self.amount!r} on {self.account}")


@dataclass(frozen=True, slots=True)
class Postings:
    """The legs of one movement; refuses to exist unless every asset sums to zero."""

    legs: tuple[Posting, ...]

    def __post_init__(self) -> None:
        if not self.legs:
            raise UnbalancedPostings("a movement needs at least two legs")
        totals: dict[str, int] = defaultdict(int)
        for leg in self.legs:
            totals[leg.asset] += leg.amount
        unbalanced = {asset: total for asset, total in totals.items() if total}
        if unbalanced:
            raise UnbalancedPostings(f"legs do not balance: {unbalanced}")

    @classmethod
    def of(cls, *transfers: tuple[str, str, str, int]) -> Postings:
        """Build from (source, destination, asset, amount) transfers of positive amounts."""
        legs: list[Posting] = []
        for source, destination, asset, amount in transfers:
            if amount <= 0:
                raise UnbalancedPostings(f"transfer amount must be positive, got {amount}")
            legs += [Posting(source, asset, -amount), Posting(destination, asset, amount)]
        return cls(tuple(legs))

    def __iter__(self) -> Iterator[Posting]:
        return iter(self.legs)

    def to_rows(self) -> list[list[object]]:
        return [[leg.account, leg.asset, leg.amount] for leg in self.legs]

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> Postings:
        return cls(tuple(Posting(str(a), str(k), int(n)) for a, k, n in rows))


@dataclass(frozen=True, slots=True)
class Holds:
    """Changes to what is held (pending) on accounts: positive places a hold, negative releases.

    Holds are not movements: nothing changes hands until postings say so. They make
    `available = posted - pending` fall while, say, a withdrawal is in flight.
    """

    legs: tuple[Posting, ...]

    def __iter__(self) -> Iterator[Posting]:
        return iter(self.legs)

    @classmethod
    def place(cls, account: str, asset: str, amount: int) -> Holds:
        return cls((Posting(account, asset, amount),))

    @classmethod
    def release(cls, account: str, asset: str, amount: int) -> Holds:
        return cls((Posting(account, asset, -amount),))

    def to_rows(self) -> list[list[object]]:
        return [[leg.account, leg.asset, leg.amount] for leg in self.legs]

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> Holds:
        return cls(tuple(Posting(str(a), str(k), int(n)) for a, k, n in rows))
