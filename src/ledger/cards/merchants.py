"""Merchants and the recharge activities they publish."""

from __future__ import annotations

from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import Aggregate, event

from ledger.cards.splits import apply_bp, check_discount, check_shared_cap
from ledger.errors import CurrencyMismatch, InvalidAmount, InvalidTimezone
from ledger.money import Money

MAX_ACTIVITIES = 1000


def check_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTimezone(f"{timezone!r} is not an IANA time zone") from None
    return timezone


class Merchant(Aggregate):
    """A business that sells stored-value cards; its calendar months are in its own time zone."""

    @event("Registered")
    def __init__(self, id: UUID, name: str, timezone: str, key_id: str) -> None:
        self.name = name
        self.timezone = timezone
        self.key_id = key_id
        self.activity_ids: list[UUID] = []

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def add_activity(self, activity_id: UUID) -> None:
        if len(self.activity_ids) >= MAX_ACTIVITIES:
            raise InvalidAmount(f"a merchant publishes at most {MAX_ACTIVITIES} activities")
        self._activity_published(activity_id)

    @event("ActivityPublished")
    def _activity_published(self, activity_id: UUID) -> None:
        self.activity_ids.append(activity_id)


class Activity(Aggregate):
    """A recharge activity: pay `pay`, get a main card holding pay + bonus at the main discount.

    `shared_cap_bp` caps the prices consumed with a main card's shared cards at that share of
    `pay` (30000 = three times what the owner paid), when the merchant sets it.
    """

    @event("Published")
    def __init__(
        self,
        id: UUID,
        merchant_id: UUID,
        pay: Money,
        bonus: Money,
        discount_bp: int,
        shared_cap_bp: int | None,
    ) -> None:
        self.merchant_id = merchant_id
        self.pay = pay
        self.bonus = bonus
        self.discount_bp = discount_bp
        self.shared_cap_bp = shared_cap_bp

    @staticmethod
    def check_terms(pay: Money, bonus: Money, discount_bp: int, shared_cap_bp: int | None) -> None:
        pay.require_positive()
        if bonus.currency != pay.currency:
            raise CurrencyMismatch("pay and bonus must share a currency")
        if bonus.amount < 0:
            raise InvalidAmount("a bonus cannot be negative")
        check_discount(discount_bp)
        check_shared_cap(shared_cap_bp)

    @property
    def currency(self) -> str:
        return self.pay.currency

    @property
    def shared_cap(self) -> int | None:
        if self.shared_cap_bp is None:
            return None
        return apply_bp(self.pay.amount, self.shared_cap_bp)
