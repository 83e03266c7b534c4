"""The money rules of member cards, as pure functions over integer fen and basis points.

Rounding is half-up to the fen. A shared consumption is split so that the parts always sum
to what the consumer pays: the sharing user's commission is rounded down and the card owner
takes the remainder, so no fen is created or lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import DiscountBelowMain, InvalidAmount, InvalidRatio, LimitExceeded
from ledger.money import MAX_AMOUNT

BASIS_POINTS = 10_000
MAX_SHARED_CAP_BP = 1_000_000
"""A merchant may let shared consumption of a main card reach at most 100 times what was paid."""


def apply_bp(amount: int, bp: int) -> int:
    """amount x bp / 10000, rounded half-up to the fen."""
    assert amount >= 0 and bp >= 0, (amount, bp)
    return (amount * bp + BASIS_POINTS // 2) // BASIS_POINTS


def check_discount(discount_bp: int) -> int:
    """A discount is what share of the price is paid: 1 to 10000 bp (10000 = full price)."""
    if type(discount_bp) is not int or not 1 <= discount_bp <= BASIS_POINTS:
        raise InvalidRatio(f"a discount is 1 to {BASIS_POINTS} basis points")
    return discount_bp


def check_shared_discount(shared_bp: int, main_bp: int) -> int:
    check_discount(shared_bp)
    if shared_bp < main_bp:
        raise DiscountBelowMain(
            f"a shared discount ({shared_bp} bp) may be no better than the main one ({main_bp} bp)"
        )
    return shared_bp


def check_commission(commission_bp: int) -> int:
    if type(commission_bp) is not int or not 0 <= commission_bp < BASIS_POINTS:
        raise InvalidRatio(f"a commission ratio is 0 to {BASIS_POINTS - 1} basis points")
    return commission_bp


def check_shared_cap(shared_cap_bp: int | None) -> int | None:
    if shared_cap_bp is not None and (
        type(shared_cap_bp) is not int or not 1 <= shared_cap_bp <= MAX_SHARED_CAP_BP
    ):
        raise InvalidRatio(f"a shared cap is 1 to {MAX_SHARED_CAP_BP} basis points")
    return shared_cap_bp


def check_price(price: int) -> int:
    if type(price) is not int or not 0 < price <= MAX_AMOUNT:
        raise InvalidAmount(f"a price is 1 to {MAX_AMOUNT} fen")
    return price


def main_card_draw(price: int, main_bp: int) -> int:
    """What a consumption with the main card (or an intimate card) draws: round(P x d_m)."""
    drawn = apply_bp(check_price(price), check_discount(main_bp))
    if drawn == 0:
        raise InvalidAmount(f"a price of {price} rounds to nothing at {main_bp} bp")
    return drawn


@dataclass(frozen=True, slots=True)
class SharedSplit:
    """Who gets what the consumer of a shared card pays."""

    consumer_pays: int
    merchant: int
    sharer: int
    owner: int

    @property
    def margin(self) -> int:
        return self.consumer_pays - self.merchant


def split_shared(
    price: int, main_bp: int, shared_bp: int, commission_bp: int, has_sharer: bool
) -> SharedSplit:
    """C = round(P x d_s), M = round(P x d_m), G = C - M; sharer floor(G x r), owner the rest."""
    check_price(price)
    check_shared_discount(shared_bp, check_discount(main_bp))
    check_commission(commission_bp)
    consumer_pays = apply_bp(price, shared_bp)
    if consumer_pays == 0:
        raise InvalidAmount(f"a price of {price} rounds to nothing at {shared_bp} bp")
    merchant = apply_bp(price, main_bp)
    margin = consumer_pays - merchant
    sharer = margin * commission_bp // BASIS_POINTS if has_sharer else 0
    return SharedSplit(consumer_pays, merchant, sharer, margin - sharer)


@dataclass(frozen=True, slots=True)
class DrawLimits:
    """What an intimate card may draw from its main card: per month, per use and in total."""

    monthly: int
    per_use: int | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        for limit in (self.monthly, self.per_use, self.total):
            if limit is not None and (type(limit) is not int or not 0 < limit <= MAX_AMOUNT):
                raise InvalidAmount(f"a limit is 1 to {MAX_AMOUNT} fen")

    def check(self, draw: int, drawn_this_month: int, drawn_in_total: int) -> None:
        if self.per_use is not None and draw > self.per_use:
            raise LimitExceeded(f"{draw} is over the limit of {self.per_use} per consumption")
        if drawn_this_month + draw > self.monthly:
            left = max(0, self.monthly - drawn_this_month)
            raise LimitExceeded(f"{draw} is over what is left this month ({left})")
        if self.total is not None and drawn_in_total + draw > self.total:
            left = max(0, self.total - drawn_in_total)
            raise LimitExceeded(f"{draw} is over what is left in total ({left})")
