"""The distribution application: each method gets, decides and saves in one atomic step."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Transcoder

from ledger.commands import CommandRunner
from ledger.distribution.catalogue import Platform, Product, check_name
from ledger.distribution.channel import Channel
from ledger.distribution.movements import Deposit, StockPurchase
from ledger.errors import InvalidAmount, NotFound
from ledger.money import Money, require_quantity
from ledger.transcodings import register_ledger_transcodings

MAX_TREE_DEPTH = 64


class ChannelTreeTooDeep(InvalidAmount):
    code = "channel_tree_too_deep"


class Distribution(Application[UUID]):
    """Platforms, products, the channel tree, funds, prices and stock purchases."""

    name = "distribution"

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.commands = CommandRunner()

    def register_transcodings(self, transcoder: Transcoder) -> None:
        super().register_transcodings(transcoder)
        register_ledger_transcodings(transcoder)

    # registration

    def register_platform(self, platform_id: UUID, name: str, gateway_url: str) -> Platform:
        platform = Platform(id=platform_id, name=check_name(name), gateway_url=gateway_url)
        return self._create(platform, Platform)

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
        return self._create(product, Product)

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
        return self._create(channel, Channel)

    # funds and stock

    def deposit(self, movement_id: UUID, channel_id: UUID, amount: Money) -> Channel:
        amount.require_positive()

        def decide() -> Channel:
            channel = self.channel(channel_id)
            deposit = Deposit.record(movement_id, channel_id, amount)
            channel.deposit(movement_id, amount)
            self.save(deposit, channel)
            return channel

        return self._once(movement_id, decide, channel_id, lambda: self.channel(channel_id))

    def purchase_stock(
        self, movement_id: UUID, channel_id: UUID, product_id: UUID, quantity: int
    ) -> tuple[StockPurchase, Channel]:
        require_quantity(quantity)
        product = self.product(product_id)
        buyer = self.channel(channel_id)

        def decide() -> tuple[StockPurchase, Channel]:
            buyer = self.channel(channel_id)
            self.check_line_active(buyer)
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
            else:
                parent = self.channel(buyer.parent_id)
                purchase = StockPurchase.from_parent(
                    movement_id,
                    buyer.id,
                    parent.id,
                    product.id,
                    quantity,
                    parent.price_for_children(product.id),
                )
                buyer.buy(movement_id, product.id, quantity, purchase.total)
                parent.sell(movement_id, product.id, quantity, purchase.total)
                self.save(purchase, buyer, parent)
            return purchase, buyer

        def replay() -> tuple[StockPurchase, Channel]:
            return self._get(movement_id, StockPurchase, "stock purchase"), self.channel(channel_id)

        return self._once(movement_id, decide, channel_id, replay, buyer.parent_id)

    def set_price(self, channel_id: UUID, product_id: UUID, price: Money) -> Channel:
        product = self.product(product_id)

        def decide() -> Channel:
            channel = self.channel(channel_id)
            channel.set_price(product.id, price, product.currency)
            self.save(channel)
            return channel

        return self.commands.run(decide, channel_id)

    def suspend(self, channel_id: UUID) -> Channel:
        return self._toggle(channel_id, suspend=True)

    def resume(self, channel_id: UUID) -> Channel:
        return self._toggle(channel_id, suspend=False)

    def set_webhook(self, channel_id: UUID, url: str) -> Channel:
        def decide() -> Channel:
            channel = self.channel(channel_id)
            channel.set_webhook(url)
            self.save(channel)
            return channel

        return self.commands.run(decide, channel_id)

    def check_line_active(self, channel: Channel) -> None:
        """A suspension applies to the whole subtree below the suspended channel."""
        channel.check_active()
        for ancestor_id in reversed(channel.ancestry):
            self.channel(ancestor_id).check_active()

    # queries

    def platform(self, platform_id: UUID) -> Platform:
        return self._get(platform_id, Platform, "platform")

    def product(self, product_id: UUID) -> Product:
        return self._get(product_id, Product, "product")

    def channel(self, channel_id: UUID) -> Channel:
        return self._get(channel_id, Channel, "channel")

    def stock_purchase(self, movement_id: UUID) -> StockPurchase:
        return self._get(movement_id, StockPurchase, "stock purchase")

    # plumbing

    def _get(self, aggregate_id: UUID, kind: type[Any], what: str) -> Any:
        try:
            aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate

    def _create(self, aggregate: Aggregate, kind: type[Any]) -> Any:
        """Save a new aggregate; if its id was already taken by the same command, return it."""
        try:
            self.save(aggregate)
        except IntegrityError:
            return self._get(aggregate.id, kind, kind.__name__.lower())
        return aggregate

    def _once(
        self, movement_id: UUID, decide: Any, channel_id: UUID, replay: Any, *more_ids: UUID | None
    ) -> Any:
        """Run a movement once: a repeated movement id returns what the first run recorded."""

        def decide_unless_recorded() -> Any:
            if movement_id in self.repository:
                return replay()
            return decide()

        ids = [i for i in (channel_id, *more_ids) if i is not None]
        return self.commands.run(decide_unless_recorded, *ids)

    def _toggle(self, channel_id: UUID, *, suspend: bool) -> Channel:
        def decide() -> Channel:
            channel = self.channel(channel_id)
            if channel.suspended != suspend:
                channel.suspend() if suspend else channel.resume()
                self.save(channel)
            return channel

        return self.commands.run(decide, channel_id)
