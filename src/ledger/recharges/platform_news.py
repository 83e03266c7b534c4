"""Order callbacks from a platform, for the recharges it was asked to credit: the use case
behind `POST /v1/platform-callbacks/{platform_id}` (the signature is checked before)."""

from __future__ import annotations

from uuid import UUID

from ledger.clock import Clock, utc_now
from ledger.distribution.application import Distribution
from ledger.errors import NotFound
from ledger.recharges.application import Recharges
from ledger.recharges.callbacks import Callback, CallbackDecision
from ledger.recharges.refunds import NewsDecision
from ledger.recharges.saga import Recharge


class PlatformNews:
    """A platform speaks only of its own orders: a callback naming an order number we never
    sent to that platform is refused as not found, and records nothing."""

    def __init__(
        self, recharges: Recharges, distribution: Distribution, clock: Clock = utc_now
    ) -> None:
        self.recharges = recharges
        self.distribution = distribution
        self.clock = clock

    def platform_known(self, platform_id: UUID) -> None:
        """NotFound unless the platform is registered."""
        self.distribution.platform(platform_id)

    def hear(
        self, platform_id: UUID, order_no: str, callback: Callback
    ) -> tuple[Recharge, CallbackDecision | NewsDecision]:
        self.platform_known(platform_id)
        unknown = NotFound(f"order {order_no} was never sent to platform {platform_id}")
        try:
            recharge_id = UUID(order_no)
        except ValueError:
            raise unknown from None
        if str(recharge_id) != order_no:  # we send the canonical form only
            raise unknown
        try:
            recharge = self.recharges.recharge(recharge_id)
        except NotFound:
            raise unknown from None
        if self.distribution.product(recharge.product_id).platform_id != platform_id:
            raise unknown
        return self.recharges.record_platform_news(recharge_id, callback, self.clock())
