"""What recharges call out through: placing one (rate counters, verification codes, SMS),
and the saga's steps (the platforms, the step queue, webhooks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from ledger.recharges.decisions import StepResult
from ledger.recharges.refunds import RefundAnswer


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

    def refund(self, order_no: str, refund_no: str, amount: int | None = None) -> RefundAnswer:
        """Ask for a refund of the credited order `order_no`, once per `refund_no` (the
        platform's idempotency key: a repeat answers the refund's status); `amount` in minor
        units, the whole order when None. `pending` while the platform reviews it."""
        ...

    def refund_status(self, refund_no: str) -> RefundAnswer:
        """The review's state of refund `refund_no` (`not_found` if it never got it)."""
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


@dataclass(frozen=True)
class Limit:
    """At most `hits` in any `window_seconds`."""

    hits: int
    window_seconds: int


@dataclass(frozen=True)
class Check:
    """One limit a request is checked against: a hit counted in `scope`, refused past the
    limit; or, with `hit` False, a count only, refused once it reaches the limit (a lock-out)."""

    scope: str
    limit: Limit
    hit: bool = True


class RateCounters(Protocol):
    """Sliding-window counters shared by every process."""

    def check_all(self, checks: Sequence[Check]) -> tuple[int, int] | None:
        """Make the checks in turn, stopping at the first refused (the checks after it count
        nothing): (its index, the seconds to wait), or None when every one passed."""

    def hit(self, scope: str, limit: Limit) -> int | None:
        """Count one hit; the seconds to wait if that passes the limit, else None."""

    def count(self, scope: str, limit: Limit) -> tuple[float, int]:
        """(hits over the last window, seconds until under the limit), without a hit."""


class SmsSender(Protocol):
    def send(self, account: str, message: str, code: str) -> None:
        """Send `message` (which carries `code`) to the account's phone."""


class VerificationCodes(Protocol):
    """One-time codes sent to a recharge account (SPEC 3.3: 6 digits, 5 minutes, tries
    bounded). `sender` is who asks or types: the end user's address (an IPv6 one by its /64),
    or the channel's server when it passes none. No sender can make another's code invalid:
    a send never replaces a live code, and a sender's wrong tries lock that code for it only;
    a code's wrong tries from all senders together stay bounded (against brute force)."""

    def send(self, channel_id: UUID, channel_name: str, account: str, sender: str) -> int:
        """Send the account's live code again, or a new one (the older stays valid); the
        seconds the sent code stays valid."""

    def check(self, channel_id: UUID, account: str, code: str, sender: str) -> None:
        """VerificationFailed or VerificationLocked unless `code` is one of the account's live
        codes that `sender` may still try."""

    def use(self, channel_id: UUID, account: str, sender: str) -> None:
        """The code did its work: it is not accepted again; `sender`, who used it, becomes
        known to the account (recorded with the use, whether or not it found a code unused)."""

    def known(self, account: str, sender: str, within_seconds: int) -> bool:
        """Whether `sender` used a code of the account, through any channel, in the last
        `within_seconds`."""
