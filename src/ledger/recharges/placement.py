"""Placing a recharge (SPEC 3.3): the checks in their order, then the code reserved atomically.

The reservation is the Code aggregate's; the recharge saga starts from its event. What is not
event-sourced (rate counters, the lock-out, verification codes) is reached through ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from ledger.clock import Clock, utc_now
from ledger.distribution.application import Distribution
from ledger.distribution.channel import Channel
from ledger.errors import CodeInvalid, CodeMalformed, LockedOut, RateLimited
from ledger.recharges.ports import Limit, RateCounters, VerificationCodes

WRONG_CODES = (CodeMalformed, CodeInvalid)
"""The answers that reveal a guess, and so count towards the lock-out. A code already redeemed
(a double tap after the first one went through) or expired was a real code: no guess."""
LOCKOUT_WINDOW_SECONDS = 900


@dataclass(frozen=True)
class PlacementLimits:
    """Recharges a minute per account, per address and per channel; wrong codes from one
    address in 15 minutes before it is locked out."""

    account_per_minute: int = 10
    address_per_minute: int = 30
    channel_per_minute: int = 1200
    wrong_codes: int = 10

    @property
    def lockout(self) -> Limit:
        return Limit(self.wrong_codes, LOCKOUT_WINDOW_SECONDS)

    def per_minute(self, kind: str) -> Limit:
        hits = {
            "account": self.account_per_minute,
            "address": self.address_per_minute,
            "channel": self.channel_per_minute,
        }[kind]
        return Limit(hits, 60)


class RechargePlacement:
    """The two steps an end user takes: ask for a verification code, then place the recharge.

    `address` is the end user's address: the page's client, or the `user.ip` a channel's server
    passes. None when a channel's server gave none: the per-address limits and the lock-out are
    then skipped (they never apply to the channel server's own address); the per-account and
    per-channel limits still do."""

    def __init__(
        self,
        distribution: Distribution,
        counters: RateCounters,
        verification: VerificationCodes,
        limits: PlacementLimits | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.distribution = distribution
        self.counters = counters
        self.verification = verification
        self.limits = limits or PlacementLimits()
        self.clock = clock

    def send_verification_code(self, channel: Channel, account: str, address: str | None) -> None:
        if address is not None:
            self._check_limit(f"sms-address:{address}", "address")
        self.verification.send(channel.id, channel.name, account)

    def place(
        self,
        recharge_id: UUID,
        channel: Channel,
        account: str,
        typed_code: str,
        verification_code: str,
        address: str | None,
        user: str | None = None,
    ) -> None:
        """Every check, then the code is reserved for this recharge: its saga starts from the
        reservation. A guessed code (malformed or invalid) counts towards the address's
        lock-out."""
        if address is not None:
            self._check_locked_out(address)
        self._check_limit(f"recharge-account:{account}", "account")
        if address is not None:
            self._check_limit(f"recharge-address:{address}", "address")
        self._check_limit(f"recharge-channel:{channel.id}", "channel")
        self.verification.check(channel.id, account, verification_code)
        try:
            code = self.distribution.find_code(typed_code)
            self.distribution.reserve_code(
                code.id, recharge_id, account, channel.id, self.clock(), user
            )
        except WRONG_CODES:
            if address is not None:
                self.counters.hit(f"wrong-codes:{address}", self.limits.lockout)
            raise
        self.verification.use(channel.id, account)

    def _check_limit(self, scope: str, kind: str) -> None:
        wait = self.counters.hit(scope, self.limits.per_minute(kind))
        if wait is not None:
            raise RateLimited(f"too many requests for this {kind}; try again in {wait} s", wait)

    def _check_locked_out(self, address: str) -> None:
        lockout = self.limits.lockout
        hits, wait = self.counters.count(f"wrong-codes:{address}", lockout)
        if hits >= lockout.hits:
            raise LockedOut(
                f"too many wrong codes from this address; try again in {wait} s", wait
            )
