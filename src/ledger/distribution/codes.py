"""Redemption codes: each issued code holds one unit of its channel's stock until it is
redeemed (the unit is consumed), voided (the unit returns to stock) or expires (a sold code's
unit becomes breakage, and its wholesale cost the operator's breakage income; an unsold one's
unit returns to stock). A redeemed code whose recharge the platform refunded returns its
consumed unit to stock on hand and stays spent.

A code's aggregate id is derived from its keyed hash, so looking a code up needs no index,
and two concurrent reservations of one code cannot both append.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import accounts
from ledger.errors import (
    CodeAlreadyRedeemed,
    CodeExpired,
    CodeInUse,
    CodeInvalid,
    StateConflict,
)
from ledger.money import Money
from ledger.postings import Postings

CODE_NAMESPACE = uuid.UUID("a1f0c2d4-3b5e-4f60-8a7b-9c0d1e2f3a4b")
MAX_BATCH = 1000


def code_id(keyed_hash: str) -> UUID:
    return uuid.uuid5(CODE_NAMESPACE, keyed_hash)


def one_unit(source: str, destination: str, product_id: UUID) -> Postings:
    return Postings.of((source, destination, accounts.unit_asset(product_id), 1))


class CodeBatch(Aggregate):
    """N codes issued at once by one channel; its event moves N units from stock to held."""

    @event("Issued")
    def __init__(
        self,
        id: UUID,
        channel_id: UUID,
        product_id: UUID,
        code_ids: list[UUID],
        expires_at: datetime | None,
        inactive: bool,
        postings: Postings,
    ) -> None:
        self.channel_id = channel_id
        self.product_id = product_id
        self.code_ids = list(code_ids)
        self.expires_at = expires_at
        self.inactive = inactive
        self.postings = postings


class Code(Aggregate):
    """status: issued → reserved → redeemed; reserved → issued (released);
    issued → voided | expired."""

    @event("Issued")
    def __init__(
        self,
        id: UUID,
        batch_id: UUID,
        channel_id: UUID,
        product_id: UUID,
        expires_at: datetime | None,
        active: bool,
    ) -> None:
        self.batch_id = batch_id
        self.channel_id = channel_id
        self.product_id = product_id
        self.expires_at = expires_at
        self.active = active
        self.status = "issued"
        self.recharge_id: UUID | None = None
        self.released_from: list[UUID] = []
        self.unit_returned = False

    def placed_by(self, recharge_id: UUID) -> bool:
        """Whether this recharge already took the code (and may since have redeemed it, or
        released it after a definite failure): a retry of its placement, not a new one."""
        return self.recharge_id == recharge_id or recharge_id in self.released_from

    def is_past_expiry(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def check_redeemable(self, channel_id: UUID, now: datetime) -> None:
        """The checks of SPEC 3.3 on the code itself, in the order the user can act on."""
        if self.channel_id != channel_id or self.status == "voided" or not self.active:
            raise CodeInvalid("this code is not valid here")
        if self.status == "redeemed":
            raise CodeAlreadyRedeemed("this code was already redeemed")
        if self.status == "reserved":
            raise CodeInUse("this code is being redeemed right now")
        if self.status == "expired" or self.is_past_expiry(now):
            raise CodeExpired("this code has expired")

    def reserve(
        self, recharge_id: UUID, account: str, channel_id: UUID, now: datetime, user: str | None
    ) -> None:
        self.check_redeemable(channel_id, now)
        self._reserved(recharge_id, account, self.channel_id, self.product_id, user)

    @event("Reserved")
    def _reserved(
        self,
        recharge_id: UUID,
        account: str,
        channel_id: UUID,
        product_id: UUID,
        user: str | None,
    ) -> None:
        """Carries everything the recharge saga that this event starts needs to know."""
        self.status = "reserved"
        self.recharge_id = recharge_id

    def release(self, recharge_id: UUID, reason: str) -> bool:
        """After a definite failure the code can be redeemed again; False if already done."""
        if self.status != "reserved" or self.recharge_id != recharge_id:
            return False
        self._released(recharge_id, reason)
        return True

    @event("Released")
    def _released(self, recharge_id: UUID, reason: str) -> None:
        self.status = "issued"
        self.recharge_id = None
        self.released_from.append(recharge_id)

    def redeem(self, recharge_id: UUID) -> bool:
        """The platform credited the membership: the held unit is consumed. Idempotent."""
        if self.status == "redeemed" and self.recharge_id == recharge_id:
            return False
        if self.status != "reserved" or self.recharge_id != recharge_id:
            raise StateConflict(f"code is {self.status}, not reserved by recharge {recharge_id}")
        self._redeemed(
            recharge_id,
            one_unit(
                accounts.channel_held(self.channel_id, self.product_id),
                accounts.channel_consumed(self.channel_id, self.product_id),
                self.product_id,
            ),
        )
        return True

    @event("Redeemed")
    def _redeemed(self, recharge_id: UUID, postings: Postings) -> None:
        self.status = "redeemed"
        self.postings = postings

    def return_unit(self, recharge_id: UUID, refund_no: str) -> bool:
        """The platform accepted a refund of the recharge that redeemed this code: the
        consumed unit is on hand again; the code stays spent. False if already done."""
        if self.unit_returned:
            return False
        if self.status != "redeemed" or self.recharge_id != recharge_id:
            raise StateConflict(f"code is {self.status}, not redeemed by recharge {recharge_id}")
        self._unit_returned(
            recharge_id,
            refund_no,
            one_unit(
                accounts.channel_consumed(self.channel_id, self.product_id),
                accounts.channel_stock(self.channel_id, self.product_id),
                self.product_id,
            ),
        )
        return True

    @event("UnitReturned")
    def _unit_returned(self, recharge_id: UUID, refund_no: str, postings: Postings) -> None:
        self.unit_returned = True
        self.postings = postings

    def activate(self) -> bool:
        if self.active:
            return False
        self._activated()
        return True

    @event("Activated")
    def _activated(self) -> None:
        self.active = True

    def void(self) -> None:
        if self.status == "redeemed":
            raise CodeAlreadyRedeemed("a redeemed code cannot be voided")
        if self.status == "reserved":
            raise CodeInUse("a code being redeemed cannot be voided")
        if self.status != "issued":
            raise CodeInvalid(f"this code is already {self.status}")
        self._voided(self._unit_back_to_stock())

    @event("Voided")
    def _voided(self, postings: Postings) -> None:
        self.status = "voided"
        self.postings = postings

    def expire(self, now: datetime, platform_id: UUID, wholesale_cost: Money) -> bool:
        """Past its expiry an unredeemed code lets go of its unit; False if not due. A sold
        code's unit becomes breakage, and the platform, which never bills it, is owed its
        wholesale cost no more: that is the operator's breakage income."""
        if self.status != "issued" or not self.is_past_expiry(now):
            return False
        if self.active:
            postings = Postings.of(
                (
                    accounts.channel_held(self.channel_id, self.product_id),
                    accounts.channel_breakage(self.channel_id, self.product_id),
                    accounts.unit_asset(self.product_id),
                    1,
                ),
                (
                    accounts.platform_payable(platform_id),
                    accounts.operator_breakage(wholesale_cost.currency),
                    wholesale_cost.currency,
                    wholesale_cost.amount,
                ),
            )
        else:
            postings = self._unit_back_to_stock()
        self._expired(postings, self.active)
        return True

    @event("Expired")
    def _expired(self, postings: Postings, breakage: bool) -> None:
        self.status = "expired"
        self.postings = postings

    @property
    def returns_unit_on_expiry(self) -> bool:
        return not self.active

    def _unit_back_to_stock(self) -> Postings:
        return one_unit(
            accounts.channel_held(self.channel_id, self.product_id),
            accounts.channel_stock(self.channel_id, self.product_id),
            self.product_id,
        )
