"""The distribution application: each method gets, decides and saves in one atomic step."""

from __future__ import annotations

import random
import time
from copy import deepcopy
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger import accounts
from ledger.applications import LedgerApplication, read_first
from ledger.distribution.catalogue import Platform, Product, check_name
from ledger.distribution.channel import Channel
from ledger.distribution.code_format import MalformedCode, keyed_hash, new_code
from ledger.distribution.codes import MAX_BATCH, Code, CodeBatch, code_id
from ledger.distribution.movements import Deposit, StockPurchase
from ledger.distribution.ports import IssuedCodes
from ledger.errors import (
    AlreadyExists,
    CodeInvalid,
    CodeMalformed,
    DomainError,
    InvalidAmount,
    NotFound,
    StateConflict,
)
from ledger.money import Money, require_quantity
from ledger.postings import Postings

MAX_TREE_DEPTH = 64
MAX_PARENT_RACES = 16
"""Saves a sub-channel's purchase may lose to its siblings' before the command runner's
back-off takes over."""
FIRST_RACE_PAUSE = 0.0005
MAX_RACE_PAUSE = 0.01
"""A lost race waits a random pause up to FIRST_RACE_PAUSE, doubling with each race lost, at
most MAX_RACE_PAUSE, before reading the parent again: the losers spread out instead of all
racing again at once (8 processes on one parent: 154 -> 228 purchases/s, medians of 4)."""
MAX_KNOWN_PRODUCTS = 10_000
"""Products a Distribution keeps as registered, for purchases to price without a read."""


class ChannelTreeTooDeep(InvalidAmount):
    code = "channel_tree_too_deep"


class CodeKeyMissing(RuntimeError):
    """The application was built without the key codes are hashed under: a deployment error."""


class BatchCodesUnavailable(StateConflict):
    """A batch was saved but its codes can no longer be shown: void it by its id."""


class Distribution(LedgerApplication):
    """Platforms, products, the channel tree, funds, prices and stock purchases.

    `issued_codes` keeps a batch's clear codes sealed from before its save until its answer is
    stored; without it a batch whose answer was lost can only be voided."""

    name = "distribution"

    def __init__(self, env: Any = None, issued_codes: IssuedCodes | None = None) -> None:
        super().__init__(env)
        self.issued_codes = issued_codes
        self._products: dict[UUID, Product] = {}

    @property
    def code_key(self) -> bytes:
        """The key of the HMAC codes are stored under (CODE_HASH_KEY): no default here."""
        key = self.env.get("CODE_HASH_KEY")
        if not key:
            raise CodeKeyMissing("CODE_HASH_KEY is not configured: codes cannot be issued or found")
        return key.encode()

    # registration

    def register_platform(self, platform_id: UUID, name: str, gateway_url: str) -> Platform:
        platform = Platform(id=platform_id, name=check_name(name), gateway_url=gateway_url)
        return self._create(platform)

    def point_platform_gateway(self, platform_id: UUID, gateway_url: str) -> Platform:
        """Point a platform's partner API at another address (recorded only if it differs)."""
        return self._change(
            platform_id, self.platform, lambda platform: platform.point_gateway_at(gateway_url)
        )

    def register_product(
        self,
        product_id: UUID,
        platform_id: UUID,
        name: str,
        duration_days: int,
        face_value: Money,
        wholesale_cost: Money,
    ) -> Product:
        self.platform(platform_id)
        Product.check_terms(duration_days, face_value, wholesale_cost)
        product = Product(
            id=product_id,
            platform_id=platform_id,
            name=check_name(name),
            duration_days=duration_days,
            face_value=face_value,
            wholesale_cost=wholesale_cost,
        )
        return self._create(product)

    def register_channel(
        self, channel_id: UUID, name: str, parent_id: UUID | None = None
    ) -> Channel:
        ancestry: list[UUID] = []
        if parent_id is not None:
            parent = self.channel(parent_id)
            self.check_line_active(parent)
            ancestry = [*parent.ancestry, parent.id]
            if len(ancestry) > MAX_TREE_DEPTH:
                raise ChannelTreeTooDeep(f"channel trees are at most {MAX_TREE_DEPTH} deep")
        channel = Channel(
            id=channel_id,
            name=check_name(name),
            parent_id=parent_id,
            ancestry=ancestry,
            key_id=f"ck_{channel_id.hex}",
        )
        return self._create(channel)

    # funds and stock

    def deposit(self, movement_id: UUID, channel_id: UUID, amount: Money) -> Channel:
        amount.require_positive()

        def decide() -> Channel:
            channel = self.channel(channel_id)
            deposit = Deposit.record(movement_id, channel_id, amount)
            channel.deposit(movement_id, amount)
            self.save(deposit, channel)
            return channel

        def replay() -> Channel:
            self._movement(movement_id, Deposit, channel_id)
            return self.channel(channel_id)

        return self._record_once(movement_id, decide, replay, channel_id)

    def purchase_stock(
        self, movement_id: UUID, channel_id: UUID, product_id: UUID, quantity: int
    ) -> tuple[StockPurchase, Channel]:
        """Buy units for `channel_id`: from the platform at wholesale for a top-level channel,
        from its parent at the parent's price otherwise. Each channel is read once an attempt,
        the parent last, just before the save that checks the version of every one saved."""
        require_quantity(quantity)
        product = self._registered_product(product_id)
        read = self.channel(channel_id)
        get = read_first(read, self.channel)  # the buyer as just read decides the first attempt

        def decide() -> tuple[StockPurchase, Channel]:
            buyer = get(channel_id)
            buyer.check_active()
            if buyer.parent_id is None:
                purchase = StockPurchase.from_platform(
                    movement_id,
                    buyer.id,
                    product.platform_id,
                    product.id,
                    quantity,
                    product.wholesale_cost,
                )
                buyer.buy(movement_id, product.id, quantity, purchase.total)
                self.save(purchase, buyer)
                return purchase, buyer
            return self._buy_from_parent(movement_id, buyer, product, quantity)

        def replay() -> tuple[StockPurchase, Channel]:
            return self._get(movement_id, StockPurchase, "stock purchase"), self.channel(channel_id)

        return self._record_once(movement_id, decide, replay, channel_id, read.parent_id)

    def _buy_from_parent(
        self, movement_id: UUID, buyer: Channel, product: Product, quantity: int
    ) -> tuple[StockPurchase, Channel]:
        """Sub-channels of one parent race for its next version: a save that lost the race
        is decided again, after a short random pause (its stripes held: the process's other
        purchases from this parent would race for the same version), on the parent read afresh
        and the buyer as it was read. When the parent had not moved, the conflict was the
        buyer's or the movement id's: it goes back to the command runner, which decides again
        on everything read afresh."""
        assert buyer.parent_id is not None
        above_parent = [self.channel(i) for i in buyer.ancestry[:-1]]
        lost: IntegrityError | None = None
        raced_for: int | None = None
        for race in range(MAX_PARENT_RACES):
            buying = deepcopy(buyer)
            parent = self.channel(buyer.parent_id)
            if lost is not None and parent.version == raced_for:
                raise lost
            raced_for = parent.version
            for seller_line in (parent, *reversed(above_parent)):
                seller_line.check_active()
            purchase = StockPurchase.from_parent(
                movement_id,
                buying.id,
                parent.id,
                product.id,
                quantity,
                parent.price_for_children(product.id),
            )
            buying.buy(movement_id, product.id, quantity, purchase.total)
            parent.sell(movement_id, product.id, quantity, purchase.total)
            try:
                self.save(purchase, buying, parent)
            except IntegrityError as conflict:
                lost = conflict
                time.sleep(random.uniform(0, min(MAX_RACE_PAUSE, FIRST_RACE_PAUSE * 2**race)))
            else:
                return purchase, buying
        assert lost is not None
        raise lost

    def set_price(self, channel_id: UUID, product_id: UUID, price: Money) -> Channel:
        product = self.product(product_id)

        return self._change(
            channel_id,
            self.channel,
            lambda channel: channel.set_price(product.id, price, product.currency),
        )

    def suspend(self, channel_id: UUID) -> Channel:
        return self._toggle(channel_id, suspend=True)

    def resume(self, channel_id: UUID) -> Channel:
        return self._toggle(channel_id, suspend=False)

    def set_webhook(self, channel_id: UUID, url: str) -> Channel:
        return self._change(channel_id, self.channel, lambda channel: channel.set_webhook(url))

    def active_channel(self, channel_id: UUID) -> Channel:
        """A channel that may sell: neither it nor any channel above it is suspended."""
        channel = self.channel(channel_id)
        self.check_line_active(channel)
        return channel

    def check_line_active(self, channel: Channel) -> None:
        """A suspension applies to the whole subtree below the suspended channel."""
        channel.check_active()
        for ancestor_id in reversed(channel.ancestry):
            self.channel(ancestor_id).check_active()

    # codes

    def issue_codes(
        self,
        batch_id: UUID,
        channel_id: UUID,
        product_id: UUID,
        quantity: int,
        expires_at: datetime | None = None,
        inactive: bool = False,
    ) -> tuple[CodeBatch, list[str]]:
        """Issue a batch; the codes in clear are returned here, and kept sealed (when the
        application has `issued_codes`) until `codes_shown`: the same batch id again, after a
        crash lost the first answer, returns the codes that were saved."""
        if type(quantity) is not int or not 1 <= quantity <= MAX_BATCH:
            raise InvalidAmount(f"a batch has 1 to {MAX_BATCH} codes")
        product = self.product(product_id)
        clear = [new_code() for _ in range(quantity)]
        ids = [code_id(keyed_hash(self.code_key, c)) for c in clear]
        if self.issued_codes is not None:
            self.issued_codes.keep(batch_id, channel_id, clear)

        def decide() -> tuple[CodeBatch, list[str]]:
            if batch_id in self.repository:
                return self._issued_again(batch_id, channel_id)
            channel = self.channel(channel_id)
            self.check_line_active(channel)
            channel.hold_for_codes(batch_id, product.id, quantity)
            postings = Postings.of(
                (
                    accounts.channel_stock(channel.id, product.id),
                    accounts.channel_held(channel.id, product.id),
                    accounts.unit_asset(product.id),
                    quantity,
                )
            )
            batch = CodeBatch(
                id=batch_id,
                channel_id=channel.id,
                product_id=product.id,
                code_ids=ids,
                expires_at=expires_at,
                inactive=inactive,
                postings=postings,
            )
            codes = [
                Code(
                    id=i,
                    batch_id=batch_id,
                    channel_id=channel.id,
                    product_id=product.id,
                    expires_at=expires_at,
                    active=not inactive,
                )
                for i in ids
            ]
            self.save(batch, channel, *codes)
            return batch, clear

        try:
            return self.commands.run(decide, channel_id)
        except DomainError:
            if self.issued_codes is not None and batch_id not in self.repository:
                self.issued_codes.forget(batch_id)
            raise

    def codes_shown(self, batch_id: UUID) -> None:
        """The batch's answer is stored (sealed) where its retries find it: drop the vault's."""
        if self.issued_codes is not None:
            self.issued_codes.forget(batch_id)

    def _issued_again(self, batch_id: UUID, channel_id: UUID) -> tuple[CodeBatch, list[str]]:
        """The codes a batch was saved with, from the vault; refused, naming the batch so that
        it can be voided, when they are not there (never kept, or already forgotten)."""
        batch = self._get(batch_id, CodeBatch, "code batch")
        if batch.channel_id != channel_id:
            raise AlreadyExists(f"the command id {batch_id} was used for another batch")
        kept = self.issued_codes.recall(batch_id, channel_id) if self.issued_codes else []
        for codes in kept:
            if [code_id(keyed_hash(self.code_key, c)) for c in codes] == batch.code_ids:
                return batch, codes
        raise BatchCodesUnavailable(
            f"code batch {batch_id} was issued but its codes can no longer be shown; "
            f'void it with POST /v1/code-voids {{"batch_id": "{batch_id}"}}'
        )

    def find_code(self, typed: str) -> Code:
        """The code a person typed: `code_malformed` for typos, `code_invalid` if unknown."""
        try:
            hashed = keyed_hash(self.code_key, typed)
        except MalformedCode as error:
            raise CodeMalformed(str(error)) from None
        try:
            return self._get(code_id(hashed), Code, "code")
        except NotFound:
            raise CodeInvalid("this code is not valid here") from None

    def reserve_code(
        self,
        code: UUID,
        recharge_id: UUID,
        account: str,
        channel_id: UUID,
        now: datetime,
        user: str | None = None,
        found: Code | None = None,
    ) -> Code:
        """Atomically take a code for one recharge; a second taker gets `code_in_use`.
        `found`, the code as the caller just read it, is decided on first (each aggregate read
        once per command); a conflict decides again on the code read afresh."""
        get = read_first(found, self.code)

        def decide() -> Code:
            found = get(code)
            if found.status == "reserved" and found.recharge_id == recharge_id:
                return found
            found.reserve(recharge_id, account, channel_id, now, user)
            self.save(found)
            return found

        return self.commands.run(decide, code)

    def redeem_code(self, code: UUID, recharge_id: UUID) -> Code:
        return self._change(code, self.code, lambda found: found.redeem(recharge_id))

    def release_code(self, code: UUID, recharge_id: UUID, reason: str) -> Code:
        return self._change(code, self.code, lambda found: found.release(recharge_id, reason))

    def activate_codes(self, channel_id: UUID, typed: list[str]) -> list[Code]:
        """Record the sale of inactive codes, all or none."""
        ids = self._own_codes(channel_id, typed)

        def decide() -> list[Code]:
            codes = [self._get(i, Code, "code") for i in ids]
            changed = [c for c in codes if c.status == "issued" and c.activate()]
            if any(c.status not in ("issued", "reserved", "redeemed") for c in codes):
                raise CodeInvalid("a voided or expired code cannot be activated")
            self.save(*changed)
            return codes

        return self.commands.run(decide, channel_id, *ids)

    def void_codes(self, channel_id: UUID, typed: list[str]) -> list[Code]:
        """Void unredeemed codes, all or none; their units return to stock."""
        return self._void(channel_id, self._own_codes(channel_id, typed), strict=True)

    def void_batch(self, channel_id: UUID, batch_id: UUID) -> list[Code]:
        """Void every code of a batch that is still only issued; the rest stay as they are."""
        batch = self._get(batch_id, CodeBatch, "code batch")
        if batch.channel_id != channel_id:
            raise NotFound(f"code batch {batch_id} not found")
        return self._void(channel_id, batch.code_ids, strict=False)

    def expire_code(self, code: UUID, now: datetime) -> Code:
        def decide() -> Code:
            found = self._get(code, Code, "code")
            if found.status == "issued" and found.is_past_expiry(now):
                returns_unit = found.returns_unit_on_expiry
                product = self.product(found.product_id)
                found.expire(now, product.platform_id, product.wholesale_cost)
                if returns_unit:
                    channel = self.channel(found.channel_id)
                    channel.return_units([found.id], found.product_id, 1)
                    self.save(found, channel)
                else:
                    self.save(found)
            return found

        return self.commands.run(decide, code)

    def return_refunded_unit(self, code: UUID, recharge_id: UUID, refund_no: str) -> Code:
        """The platform accepted a refund of the recharge that redeemed `code`: its consumed
        unit returns to the issuing channel's stock on hand, once (the code stays spent)."""

        def decide() -> Code:
            found = self._get(code, Code, "code")
            if found.return_unit(recharge_id, refund_no):
                channel = self.channel(found.channel_id)
                channel.return_units([found.id], found.product_id, 1)
                self.save(found, channel)
            return found

        channel_id = self._get(code, Code, "code").channel_id
        return self.commands.run(decide, code, channel_id)

    def code(self, code: UUID) -> Code:
        return self._get(code, Code, "code")

    def code_batch(self, batch_id: UUID) -> CodeBatch:
        return self._get(batch_id, CodeBatch, "code batch")

    def _own_codes(self, channel_id: UUID, typed: list[str]) -> list[UUID]:
        if not 1 <= len(typed) <= MAX_BATCH:
            raise InvalidAmount(f"give 1 to {MAX_BATCH} codes")
        ids = []
        for text in typed:
            found = self.find_code(text)
            if found.channel_id != channel_id:
                raise CodeInvalid("this code is not valid here")
            ids.append(found.id)
        return list(dict.fromkeys(ids))

    def _void(self, channel_id: UUID, ids: list[UUID], *, strict: bool) -> list[Code]:
        def decide() -> list[Code]:
            codes = [self._get(i, Code, "code") for i in ids]
            voided = []
            for found in codes:
                if found.status == "voided" and strict:
                    continue
                if strict or found.status == "issued":
                    found.void()
                    voided.append(found)
            if voided:
                channel = self.channel(channel_id)
                by_product: dict[UUID, list[UUID]] = {}
                for found in voided:
                    by_product.setdefault(found.product_id, []).append(found.id)
                for product_id, code_ids in by_product.items():
                    channel.return_units(code_ids, product_id, len(code_ids))
                self.save(channel, *voided)
            return voided

        return self.commands.run(decide, channel_id, *ids)

    # queries

    def platform(self, platform_id: UUID) -> Platform:
        return self._get(platform_id, Platform, "platform")

    def product(self, product_id: UUID) -> Product:
        return self._get(product_id, Product, "product")

    def _registered_product(self, product_id: UUID) -> Product:
        """A product as it was registered: no command changes a product, so one read serves
        every later purchase of it in this process (a statement each purchase saves)."""
        product = self._products.get(product_id)
        if product is None:
            product = self.product(product_id)
            if len(self._products) < MAX_KNOWN_PRODUCTS:
                self._products[product_id] = product
        return product

    def channel(self, channel_id: UUID) -> Channel:
        return self._get(channel_id, Channel, "channel")

    def stock_purchase(self, movement_id: UUID) -> StockPurchase:
        return self._get(movement_id, StockPurchase, "stock purchase")

    # plumbing

    def _movement(self, movement_id: UUID, kind: type[Any], channel_id: UUID) -> Any:
        """The movement a repeated command id recorded; refused if that id recorded
        something else (another kind of movement, or another channel's)."""
        found: Any = self.repository.get(movement_id)
        owner = getattr(found, "channel_id", getattr(found, "buyer_id", None))
        if not isinstance(found, kind) or owner != channel_id:
            raise AlreadyExists(f"the command id {movement_id} was used for another movement")
        return found

    def _toggle(self, channel_id: UUID, *, suspend: bool) -> Channel:
        def toggle(channel: Channel) -> None:
            if channel.suspended != suspend:
                channel.suspend() if suspend else channel.resume()

        return self._change(channel_id, self.channel, toggle)
