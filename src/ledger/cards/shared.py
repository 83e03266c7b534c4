"""Shared cards: the owner's discount passed to others, earning commission on what they pay."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.cards.histories import CopiesHistoriesShallowly
from ledger.errors import (
    AlreadyExists,
    CardExpired,
    CardNotPassable,
    LimitExceeded,
    NotCardHolder,
    NotFound,
    ShareDepthExceeded,
)
from ledger.money import Money

MAX_CLAIMS = 10_000
MAX_LISTINGS = 10_000
SHARING_PLATFORM_ID = uuid5(UUID("0d4f3e2a-5b1c-4e8f-9a6d-7c2b1e0f3a4d"), "sharing-platform")


class SharedCard(CopiesHistoriesShallowly, Aggregate):
    """A card derived from a main card, held by one member or published as a listing.

    `sharer_id` is the holder who passed the card on (None when the owner shared it): the one
    who earns commission on its consumption. `depth` counts passes after the owner's share.
    A listing (no holder) is not used itself: each member who claims it gets a card of their own.
    """

    histories = ("claimed_by", "consumption_ids")

    @event("Created")
    def __init__(
        self,
        id: UUID,
        main_card_id: UUID,
        merchant_id: UUID,
        owner_id: UUID,
        discount_bp: int,
        commission_bp: int,
        holder_id: UUID | None,
        sharer_id: UUID | None,
        depth: int,
        source_id: UUID | None,
        expires_at: datetime | None,
        cap: Money | None,
        max_uses: int | None,
    ) -> None:
        self.main_card_id = main_card_id
        self.merchant_id = merchant_id
        self.owner_id = owner_id
        self.discount_bp = discount_bp
        self.commission_bp = commission_bp
        self.holder_id = holder_id
        self.sharer_id = sharer_id
        self.depth = depth
        self.source_id = source_id
        self.expires_at = expires_at
        self.cap = cap
        self.max_uses = max_uses
        self.spent = 0
        self.uses = 0
        self.claimed_by: list[UUID] = []
        self.consumption_ids: list[UUID] = []

    @property
    def is_listing(self) -> bool:
        return self.holder_id is None

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def is_visible_to(self, member_id: UUID) -> bool:
        return member_id in (self.owner_id, self.holder_id, self.sharer_id)

    def check_holder(self, member_id: UUID) -> None:
        if self.holder_id != member_id:
            raise NotCardHolder("only the card's holder may do this")

    def check_usable(self, now: datetime) -> None:
        if self.is_listing:
            raise NotCardHolder("a published card is used by claiming it first")
        if self.is_expired(now):
            raise CardExpired(f"the card expired at {self.expires_at}")

    def check_passable(self, max_depth: int, now: datetime) -> None:
        if self.is_expired(now):
            raise CardExpired(f"the card expired at {self.expires_at}")
        if self.commission_bp == 0:
            raise CardNotPassable("a card without commission cannot be passed on")
        if self.depth >= max_depth:
            raise ShareDepthExceeded(f"a card may be passed on at most {max_depth} time(s)")

    def derive(
        self, card_id: UUID, holder_id: UUID | None, sharer_id: UUID | None, depth: int
    ) -> SharedCard:
        """A card on the same terms for another holder (a pass, or a claim of a listing)."""
        return SharedCard(
            id=card_id,
            main_card_id=self.main_card_id,
            merchant_id=self.merchant_id,
            owner_id=self.owner_id,
            discount_bp=self.discount_bp,
            commission_bp=self.commission_bp,
            holder_id=holder_id,
            sharer_id=sharer_id,
            depth=depth,
            source_id=self.id,
            expires_at=self.expires_at,
            cap=self.cap,
            max_uses=self.max_uses,
        )

    def use(self, consumption_id: UUID, paid: int) -> None:
        if self.cap is not None and self.spent + paid > self.cap.amount:
            left = max(0, self.cap.amount - self.spent)
            raise LimitExceeded(f"{paid} is over what is left under the card's cap ({left})")
        if self.max_uses is not None and self.uses >= self.max_uses:
            raise LimitExceeded(f"the card was used its {self.max_uses} time(s)")
        self._used(consumption_id, paid)

    @event("Used")
    def _used(self, consumption_id: UUID, paid: int) -> None:
        self.spent += paid
        self.uses += 1
        self.consumption_ids.append(consumption_id)

    @event("UseRefunded")
    def unuse(self, consumption_id: UUID, paid: int) -> None:
        self.spent -= paid
        self.uses -= 1

    def claim(self, member_id: UUID, now: datetime) -> None:
        if not self.is_listing:
            raise NotFound(f"no listing {self.id}")
        if self.is_expired(now):
            raise CardExpired(f"the listing expired at {self.expires_at}")
        if member_id in self.claimed_by:
            raise AlreadyExists("this member already claimed the listing")
        if len(self.claimed_by) >= MAX_CLAIMS:
            raise LimitExceeded(f"a listing is claimed at most {MAX_CLAIMS} times")
        self._claimed(member_id)

    @event("Claimed")
    def _claimed(self, member_id: UUID) -> None:
        self.claimed_by.append(member_id)


class SharingPlatform(Aggregate):
    """Where published shared cards are listed for members to find and claim."""

    @event("Opened")
    def __init__(self, id: UUID) -> None:
        self.listings: dict[UUID, datetime | None] = {}

    def publish(self, card: SharedCard, now: datetime) -> None:
        expired = [i for i, at in self.listings.items() if at is not None and now >= at]
        if expired:
            self._delisted(expired)
        if len(self.listings) >= MAX_LISTINGS:
            raise LimitExceeded(f"the sharing platform lists at most {MAX_LISTINGS} cards")
        self._listed(card.id, card.expires_at)

    @event("Listed")
    def _listed(self, card_id: UUID, expires_at: datetime | None) -> None:
        self.listings[card_id] = expires_at

    @event("Delisted")
    def _delisted(self, card_ids: list[UUID]) -> None:
        for card_id in card_ids:
            self.listings.pop(card_id, None)
