"""Placing a recharge (SPEC 3.3): the checks in their order, then the code reserved atomically.

The reservation is the Code aggregate's; the recharge saga starts from its event. What is not
event-sourced (rate counters, the lock-out, verification codes) is reached through ports.

Nobody can use the verification flow to stop another person's account from recharging (SPEC
3.3, issue 10 item 1). Every quota on an account is kept per *sender* (the end user's address,
an IPv6 one by its /64; or the channel's server when it passes no `user.ip`): a sender that is
not the user uses up its own quota, not the user's. Above those, one ceiling per account,
counted only for requests their sender's own quota let through, bounds what many senders
together can do (SMS to one phone, guesses at its codes); it is set far above what one person
needs, so reaching it takes many addresses, and even then the code the user holds stays valid
and a sender that recharged the account before (KNOWN_FOR_SECONDS) still gets codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from uuid import UUID

from ledger.clock import Clock, utc_now
from ledger.distribution.application import Distribution
from ledger.distribution.channel import Channel
from ledger.distribution.codes import Code
from ledger.errors import CodeInvalid, CodeMalformed, LockedOut, RateLimited
from ledger.recharges.ports import Check, Limit, RateCounters, VerificationCodes

WRONG_CODES = (CodeMalformed, CodeInvalid)
"""The answers that reveal a guess, and so count towards the lock-out. A code already redeemed
(a double tap after the first one went through) or expired was a real code: no guess."""
LOCKOUT_WINDOW_SECONDS = 900
ACCOUNT_CEILING_FACTOR = 5
"""An account's recharges a minute from all senders together: this many times one sender's."""


@dataclass(frozen=True)
class SendLimits:
    """Verification codes sent to one account: per sender through one channel (the user's own
    quota), per sender through every channel (so that one address cannot use many channels'
    pages to reach the ceiling alone), and the account's ceiling (SMS to one phone)."""

    per_sender: Limit = Limit(3, 600)
    per_sender_all_channels: Limit = Limit(6, 3600)
    per_account: Limit = Limit(20, 3600)


KNOWN_FOR_SECONDS = 86_400
"""A sender whose verification code placed a recharge for an account is known to it for a day
(through any channel): its sends pass the account's ceiling, its own quotas still apply. Only
someone who read the code on the account's phone becomes known, so the ceiling many addresses
can reach never stops a returning user. The verification codes record it as they are used."""


def sender_of(channel: Channel, address: str | None) -> str:
    """Whom an account's quotas and wrong tries are counted for: the end user's address (an
    IPv6 address by its /64, what one subscriber is given), else the channel's server."""
    if address is None:
        return f"channel:{channel.id}"
    try:
        ip = ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class PlacementLimits:
    """Recharges a minute per account (from one sender; from all, ACCOUNT_CEILING_FACTOR
    times that), per address and per channel; wrong codes from one address in 15 minutes
    before it is locked out; verification codes sent."""

    account_per_minute: int = 10
    address_per_minute: int = 30
    channel_per_minute: int = 1200
    wrong_codes: int = 10
    sends: SendLimits = SendLimits()

    @property
    def lockout(self) -> Limit:
        return Limit(self.wrong_codes, LOCKOUT_WINDOW_SECONDS)

    def per_minute(self, kind: str) -> Limit:
        hits = {
            "account": self.account_per_minute,
            "account from everywhere": self.account_per_minute * ACCOUNT_CEILING_FACTOR,
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

    def send_verification_code(self, channel: Channel, account: str, address: str | None) -> int:
        """Send the account's live code again, or a new one; the seconds it stays valid. The
        narrowest quota is counted first: a send its sender's own quota refuses never counts
        towards the account's ceiling."""
        if address is not None:
            self._check_limit(f"sms-address:{address}", "address")
        sender = sender_of(channel, address)
        sends = self.limits.sends
        self._check_sends(
            f"sms:{account}:{channel.id}:{sender}", sends.per_sender, "from here through this page"
        )
        self._check_sends(f"sms-sender:{account}:{sender}", sends.per_sender_all_channels,
                          "from here")  # fmt: skip
        if not self.verification.known(account, sender, KNOWN_FOR_SECONDS):
            self._check_sends(f"sms-account:{account}", sends.per_account, "from everywhere")
        return self.verification.send(channel.id, channel.name, account, sender)

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
        sender = sender_of(channel, address)
        code, wrong = self._find(typed_code)
        if code is not None and code.placed_by(recharge_id):
            # the same principal and Idempotency-Key after an answer was lost (the process died
            # after the reservation): the checks passed then, and the verification code may
            # already be used; finish what the first try may not have
            self.verification.use(channel.id, account, sender)
            return
        self._check_limits(channel, account, sender, address)
        self.verification.check(channel.id, account, verification_code, sender)
        try:
            if code is None:
                raise wrong or CodeInvalid("this code is not valid here")
            self.distribution.reserve_code(
                code.id, recharge_id, account, channel.id, self.clock(), user, found=code
            )
        except WRONG_CODES:
            if address is not None:
                self.counters.hit(f"wrong-codes:{address}", self.limits.lockout)
            raise
        self.verification.use(channel.id, account, sender)

    def _find(self, typed_code: str) -> tuple[Code | None, CodeMalformed | CodeInvalid | None]:
        """The code typed, read once; a wrong one is refused later, in the order of the checks."""
        try:
            return self.distribution.find_code(typed_code), None
        except WRONG_CODES as wrong:
            return None, wrong

    def _check_limits(
        self, channel: Channel, account: str, sender: str, address: str | None
    ) -> None:
        """The lock-out, then the limits from the narrowest, in one call: a request a narrower
        limit refuses counts towards none after it (the account's ceiling above all)."""
        checks: list[tuple[Check, str]] = []
        if address is not None:
            checks.append((Check(f"wrong-codes:{address}", self.limits.lockout, hit=False), ""))
        kinds = [(f"recharge-account:{account}:{sender}", "account")]
        if address is not None:
            kinds.append((f"recharge-address:{address}", "address"))
        kinds += [
            (f"recharge-channel:{channel.id}", "channel"),
            (f"recharge-account:{account}", "account from everywhere"),
        ]
        checks += [(Check(scope, self.limits.per_minute(kind)), kind) for scope, kind in kinds]
        refused = self.counters.check_all([check for check, _ in checks])
        if refused is None:
            return
        index, wait = refused
        check, kind = checks[index]
        if not check.hit:
            raise LockedOut(f"too many wrong codes from this address; try again in {wait} s", wait)
        raise RateLimited(f"too many requests for this {kind}; try again in {wait} s", wait)

    def _check_limit(self, scope: str, kind: str) -> None:
        wait = self.counters.hit(scope, self.limits.per_minute(kind))
        if wait is not None:
            raise RateLimited(f"too many requests for this {kind}; try again in {wait} s", wait)

    def _check_sends(self, scope: str, limit: Limit, whence: str) -> None:
        wait = self.counters.hit(scope, limit)
        if wait is not None:
            raise RateLimited(
                f"at most {limit.hits} verification codes are sent to an account {whence} in "
                f"{limit.window_seconds // 60} minutes; try again in {wait} s",
                wait,
            )
