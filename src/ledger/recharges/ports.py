"""What the recharge saga's steps call out through: the platforms, the step queue, webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from ledger.recharges.decisions import StepResult


class PlatformGateway(Protocol):
    """A video platform's partner API. The order number is the platform's idempotency key."""

    def recharge(
        self, order_no: str, account: str, product_code: str, duration_days: int
    ) -> StepResult:
        """Credit `duration_days` of `product_code` to `account`, once per `order_no`."""
        ...

    def order_status(self, order_no: str) -> StepResult:
        """What the platform knows of `order_no` (`not_found` if it never saw it)."""
        ...


class PlatformGateways(Protocol):
    def gateway_for(self, base_url: str) -> PlatformGateway:
        """The gateway of the platform registered with `base_url`."""
        ...


class StepQueue(Protocol):
    def enqueue_step(self, recharge_id: UUID, step_id: str, due_at: datetime) -> None:
        """Have the step run (at least once) no earlier than `due_at`."""
        ...


class Notifications(Protocol):
    def notify(self, channel_id: UUID, url: str, event: dict[str, Any]) -> None:
        """Deliver `event` to the channel's webhook `url` (at least once)."""
        ...
