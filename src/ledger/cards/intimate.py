"""Intimate cards: family members spend from the main card, within the owner's limits."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.cards.histories import CopiesHistoriesShallowly
from ledger.cards.splits import DrawLimits
from ledger.errors import CardExpired, CardFrozen, CardNotAccepted, CardRevoked, NotCardHolder
from ledger.money import Money

ACCEPT_WITHIN = timedelta(hours=24)


class IntimateCard(CopiesHistoriesShallowly, Aggregate):
    """Draws on its main card's balance; the holder pays nothing.

    The holder accepts within 24 hours of the offer or it lapses. Limits are on what is drawn:
    per consumption, per calendar month in the merchant's time zone (`month` is "YYYY-MM"
    there), and in total. `show_details` says whether the owner sees each consumption or only
    the totals.
    """

    histories = ("consumption_ids",)

    @event("Offered")
    def __init__(
        self,
        id: UUID,
        main_card_id: UUID,
        merchant_id: UUID,
        owner_id: UUID,
        holder_id: UUID,
        monthly_limit: Money,
        per_use_limit: Money | None,
        total_limit: Money | None,
        show_details: bool,
        offered_at: datetime,
    ) -> None:
        self.main_card_id = main_card_id
        self.merchant_id = merchant_id
        self.owner_id = owner_id
        self.holder_id = holder_id
        self.monthly_limit = monthly_limit
        self.per_use_limit = per_use_limit
        self.total_limit = total_limit
        self.show_details = show_details
        self.offered_at = offered_at
        self.accepted = False
        self.frozen = False
        self.revoked = False
        self.drawn_total = 0
        self.drawn_by_month: dict[str, int] = {}
        self.consumption_ids: list[UUID] = []

    @property
    def limits(self) -> DrawLimits:
        return limits_of(self.monthly_limit, self.per_use_limit, self.total_limit)

    def is_visible_to(self, member_id: UUID) -> bool:
        return member_id in (self.owner_id, self.holder_id)

    def has_lapsed(self, now: datetime) -> bool:
        return not self.accepted and now > self.offered_at + ACCEPT_WITHIN

    def status(self, now: datetime) -> str:
        if self.revoked:
            return "revoked"
        if self.has_lapsed(now):
            return "lapsed"
        if not self.accepted:
            return "offered"
        return "frozen" if self.frozen else "active"

    def accept(self, member_id: UUID, now: datetime) -> None:
        if member_id != self.holder_id:
            raise NotCardHolder("only the member the card was offered to accepts it")
        self._check_not_revoked()
        if self.accepted:
            return
        if self.has_lapsed(now):
            raise CardExpired("an intimate card is accepted within 24 hours of the offer")
        self._accepted()

    @event("Accepted")
    def _accepted(self) -> None:
        self.accepted = True

    def freeze(self) -> None:
        self._check_not_revoked()
        if not self.frozen:
            self._frozen()

    @event("Frozen")
    def _frozen(self) -> None:
        self.frozen = True

    def unfreeze(self) -> None:
        self._check_not_revoked()
        if self.frozen:
            self._unfrozen()

    @event("Unfrozen")
    def _unfrozen(self) -> None:
        self.frozen = False

    def revoke(self) -> None:
        if not self.revoked:
            self._revoked()

    @event("Revoked")
    def _revoked(self) -> None:
        self.revoked = True

    def draw(self, consumption_id: UUID, amount: int, month: str, now: datetime) -> None:
        self._check_not_revoked()
        if self.frozen:
            raise CardFrozen("the owner froze this card")
        if not self.accepted:
            if self.has_lapsed(now):
                raise CardExpired("the card was not accepted within 24 hours")
            raise CardNotAccepted("the holder has not accepted the card yet")
        self.limits.check(amount, self.drawn_by_month.get(month, 0), self.drawn_total)
        self._drew(consumption_id, amount, month)

    @event("Drew")
    def _drew(self, consumption_id: UUID, amount: int, month: str) -> None:
        self.drawn_total += amount
        self.drawn_by_month[month] = self.drawn_by_month.get(month, 0) + amount
        self.consumption_ids.append(consumption_id)

    @event("DrawRefunded")
    def restore(self, consumption_id: UUID, amount: int, month: str) -> None:
        self.drawn_total -= amount
        self.drawn_by_month[month] = self.drawn_by_month.get(month, 0) - amount

    def _check_not_revoked(self) -> None:
        if self.revoked:
            raise CardRevoked("the owner revoked this card")


def limits_of(monthly: Money, per_use: Money | None, total: Money | None) -> DrawLimits:
    return DrawLimits(
        monthly=monthly.amount,
        per_use=per_use.amount if per_use else None,
        total=total.amount if total else None,
    )
