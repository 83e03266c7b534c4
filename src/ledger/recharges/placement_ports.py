"""What placing a recharge calls out through: rate-limit counters, verification codes, SMS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True)
class Limit:
    """At most `hits` in any `window_seconds`."""

    hits: int
    window_seconds: int


class RateCounters(Protocol):
    """Sliding-window counters shared by every process."""

    def hit(self, scope: str, limit: Limit) -> int | None:
        """Count one hit; the seconds to wait if that passes the limit, else None."""

    def count(self, scope: str, limit: Limit) -> tuple[float, int]:
        """(hits over the last window, seconds until under the limit), without a hit."""


class SmsSender(Protocol):
    def send(self, account: str, message: str, code: str) -> None:
        """Send `message` (which carries `code`) to the account's phone."""


class VerificationCodes(Protocol):
    """One-time codes sent to a recharge account (SPEC 3.3: 6 digits, 5 minutes, 5 tries)."""

    def send(self, channel_id: UUID, channel_name: str, account: str) -> None:
        """Send a new code; RateLimited past the sends an account may get."""

    def check(self, channel_id: UUID, account: str, code: str) -> None:
        """VerificationFailed or VerificationLocked unless `code` is the account's live code."""

    def use(self, channel_id: UUID, account: str) -> None:
        """The code did its work: it is not accepted again."""
