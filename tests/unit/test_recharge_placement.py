"""Placing a recharge as a use case, with in-memory fakes of its ports (rate counters,
verification codes) and the in-memory event store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from ledger.distribution.application import Distribution
from ledger.distribution.channel import Channel
from ledger.errors import (
    ChannelSuspended,
    CodeAlreadyRedeemed,
    CodeExpired,
    CodeInUse,
    CodeInvalid,
    CodeMalformed,
    RateLimited,
    VerificationFailed,
)
from ledger.money import Money
from ledger.recharges.placement import PlacementLimits, RechargePlacement, SendLimits, sender_of
from ledger.recharges.ports import Check, Limit

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
ADDRESS = "203.0.113.7"
WELL_FORMED_UNKNOWN = "0000-0000-0000-0000-0000"


class FakeCounters:
    """Counts hits per scope over one never-ending window."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()

    def hit(self, scope: str, limit: Limit) -> int | None:
        self.hits[scope] += 1
        return 42 if self.hits[scope] > limit.hits else None

    def count(self, scope: str, limit: Limit) -> tuple[float, int]:
        return float(self.hits[scope]), 42

    def check_all(self, checks: Sequence[Check]) -> tuple[int, int] | None:
        """In turn, as the PostgreSQL counters do: the first refused stops the rest."""
        for index, check in enumerate(checks):
            if check.hit:
                if self.hit(check.scope, check.limit) is not None:
                    return index, 42
            elif self.count(check.scope, check.limit)[0] >= check.limit.hits:
                return index, 42
        return None


class FakeVerification:
    """One valid code per (channel, account): "123456" once sent, until used."""

    def __init__(self) -> None:
        self.sent: list[tuple[UUID, str, str]] = []
        self.senders: list[str] = []
        self.live: set[tuple[UUID, str]] = set()
        self.checked = 0
        self.checked_by: list[str] = []
        self.used_by: list[tuple[str, str]] = []

    def send(self, channel_id: UUID, channel_name: str, account: str, sender: str) -> int:
        self.sent.append((channel_id, channel_name, account))
        self.senders.append(sender)
        self.live.add((channel_id, account))
        return 300

    def check(self, channel_id: UUID, account: str, code: str, sender: str) -> None:
        self.checked += 1
        self.checked_by.append(sender)
        if (channel_id, account) not in self.live or code != "123456":
            raise VerificationFailed("the verification code is wrong")

    def use(self, channel_id: UUID, account: str, sender: str) -> None:
        self.live.discard((channel_id, account))
        self.used_by.append((account, sender))

    def known(self, account: str, sender: str, within_seconds: int) -> bool:
        """Every sender that used a code is known (the window is the adapter's to keep)."""
        assert within_seconds == 86_400
        return (account, sender) in self.used_by


class Desk:
    """A shop with stock, a batch of codes, and the placement use case over fakes."""

    def __init__(self, limits: PlacementLimits | None = None) -> None:
        self.app = Distribution(env={"CODE_HASH_KEY": "unit-test-code-key"})
        platform, self.product, shop = uuid4(), uuid4(), uuid4()
        self.app.register_platform(platform, "iQiyi", "https://gateway.iqiyi.example")
        self.app.register_product(
            self.product, platform, "VIP monthly", 30, Money(3000), Money(2000)
        )
        self.app.register_channel(shop, "Pudong shop")
        self.app.deposit(uuid4(), shop, Money(100_000))
        self.app.purchase_stock(uuid4(), shop, self.product, 10)
        _, self.codes = self.app.issue_codes(uuid4(), shop, self.product, 5)
        self.shop_id = shop
        self.counters = FakeCounters()
        self.verification = FakeVerification()
        self.placement = RechargePlacement(
            self.app, self.counters, self.verification, limits, clock=lambda: NOW
        )

    @property
    def shop(self) -> Channel:
        return self.app.active_channel(self.shop_id)

    def place(self, code: str, account: str = "13800138000", verification: str = "123456") -> UUID:
        self.placement.send_verification_code(self.shop, account, ADDRESS)
        recharge_id = uuid4()
        self.placement.place(recharge_id, self.shop, account, code, verification, ADDRESS)
        return recharge_id


def test_a_recharge_reserves_its_code_for_the_recharge_and_uses_the_verification_code() -> None:
    desk = Desk()
    recharge_id = desk.place(desk.codes[0])

    code = desk.app.find_code(desk.codes[0])
    assert (code.status, code.recharge_id) == ("reserved", recharge_id)
    assert desk.verification.live == set()
    assert desk.verification.sent == [(desk.shop_id, "Pudong shop", "13800138000")]


def test_a_wrong_verification_code_reserves_nothing() -> None:
    desk = Desk()
    with pytest.raises(VerificationFailed):
        desk.place(desk.codes[0], verification="000000")

    assert desk.app.find_code(desk.codes[0]).status == "issued"
    assert desk.counters.hits[f"wrong-codes:{ADDRESS}"] == 0


def test_a_wrong_or_mistyped_code_counts_towards_the_address_lock_out() -> None:
    desk = Desk()
    mistyped = desk.codes[0][:-1] + ("0" if desk.codes[0][-1] != "0" else "1")
    with pytest.raises(CodeMalformed):
        desk.place(mistyped)
    with pytest.raises(CodeInvalid):
        desk.place("0000-0000-0000-0000-000" + "0")

    assert desk.counters.hits[f"wrong-codes:{ADDRESS}"] == 2


def test_an_address_past_the_wrong_code_limit_is_locked_out_before_anything_is_checked() -> None:
    desk = Desk(PlacementLimits(wrong_codes=2))
    desk.counters.hits[f"wrong-codes:{ADDRESS}"] = 2
    checked = desk.verification.checked

    with pytest.raises(RateLimited) as refused:
        desk.place(desk.codes[0])

    assert refused.value.wait_seconds == 42
    assert desk.verification.checked == checked
    assert desk.app.find_code(desk.codes[0]).status == "issued"


def test_an_account_past_its_rate_limit_is_refused_with_the_wait() -> None:
    desk = Desk(PlacementLimits(account_per_minute=1))
    desk.place(desk.codes[0])

    with pytest.raises(RateLimited) as refused:
        desk.place(desk.codes[1])

    assert "account" in refused.value.detail and refused.value.wait_seconds == 42
    assert desk.app.find_code(desk.codes[1]).status == "issued"


def test_a_code_taken_by_another_recharge_is_in_use_and_not_counted_as_a_guess() -> None:
    desk = Desk()
    desk.place(desk.codes[0], account="13800138000")

    with pytest.raises(CodeInUse):
        desk.place(desk.codes[0], account="13900139000")

    assert desk.counters.hits[f"wrong-codes:{ADDRESS}"] == 0


def test_a_redeemed_code_is_refused_and_not_counted_as_a_guess() -> None:
    """A double tap after the first one went through reveals no guess."""
    desk = Desk()
    recharge_id = desk.place(desk.codes[0])
    desk.app.redeem_code(desk.app.find_code(desk.codes[0]).id, recharge_id)

    with pytest.raises(CodeAlreadyRedeemed):
        desk.place(desk.codes[0], account="13900139000")

    assert desk.counters.hits[f"wrong-codes:{ADDRESS}"] == 0


def test_an_expired_code_is_refused_and_not_counted_as_a_guess() -> None:
    desk = Desk()
    _, (expiring,) = desk.app.issue_codes(
        uuid4(), desk.shop_id, desk.product, 1, expires_at=NOW - timedelta(seconds=1)
    )

    with pytest.raises(CodeExpired):
        desk.place(expiring)

    assert desk.counters.hits[f"wrong-codes:{ADDRESS}"] == 0


def test_without_the_end_users_address_no_per_address_limit_or_lock_out_applies() -> None:
    """A channel's server that passes no `user.ip`: its own address is never limited, and
    wrong codes lock nobody out; the per-account and per-channel limits still hold."""
    desk = Desk(PlacementLimits(address_per_minute=1, wrong_codes=1, channel_per_minute=4))
    for n in range(3):
        account = f"1380013800{n}"
        desk.placement.send_verification_code(desk.shop, account, None)
        with pytest.raises(CodeInvalid):
            desk.placement.place(uuid4(), desk.shop, account, WELL_FORMED_UNKNOWN, "123456", None)

    assert not any(scope.startswith(("wrong-codes:", "recharge-address:", "sms-address:"))
                   for scope in desk.counters.hits)  # fmt: skip
    desk.placement.send_verification_code(desk.shop, "13800138009", None)
    recharge_id = uuid4()
    desk.placement.place(recharge_id, desk.shop, "13800138009", desk.codes[0], "123456", None)
    assert desk.app.find_code(desk.codes[0]).recharge_id == recharge_id

    with pytest.raises(RateLimited) as refused:  # the fifth on the channel this minute
        desk.placement.place(uuid4(), desk.shop, "13800138009", desk.codes[1], "123456", None)
    assert "channel" in refused.value.detail


def test_the_lock_out_is_the_end_users_address_not_anothers() -> None:
    desk = Desk(PlacementLimits(wrong_codes=2))
    guesser, other = "198.51.100.1", "198.51.100.2"
    for account in ("13800138001", "13800138002"):
        desk.placement.send_verification_code(desk.shop, account, guesser)
        with pytest.raises(CodeInvalid):
            desk.placement.place(
                uuid4(), desk.shop, account, WELL_FORMED_UNKNOWN, "123456", guesser
            )

    desk.placement.send_verification_code(desk.shop, "13800138003", other)
    with pytest.raises(RateLimited):
        desk.placement.place(uuid4(), desk.shop, "13800138003", desk.codes[0], "123456", guesser)
    desk.placement.place(uuid4(), desk.shop, "13800138003", desk.codes[0], "123456", other)
    assert desk.app.find_code(desk.codes[0]).status == "reserved"


def test_a_suspended_channel_has_no_active_channel_to_place_through() -> None:
    desk = Desk()
    desk.app.suspend(desk.shop_id)

    with pytest.raises(ChannelSuspended):
        desk.app.active_channel(desk.shop_id)


# issue 10, item 1: nobody can use the verification flow against another person's account

USER, ATTACKER = "203.0.113.7", "198.51.100.66"


def test_sends_from_another_address_or_channel_do_not_use_up_the_users_own_quota() -> None:
    """Before: three sends for the account from anywhere, through any channel, and the user's
    own send was refused (429) on every channel."""
    desk = Desk()
    account = "13800138000"
    other_shop = uuid4()
    desk.app.register_channel(other_shop, "Another shop")
    for _ in range(3):
        desk.placement.send_verification_code(desk.shop, account, ATTACKER)
    with pytest.raises(RateLimited) as refused:  # the attacker's own quota is spent
        desk.placement.send_verification_code(desk.shop, account, ATTACKER)
    assert "from here" in refused.value.detail

    assert desk.placement.send_verification_code(desk.shop, account, USER) == 300
    other = desk.app.active_channel(other_shop)
    assert desk.placement.send_verification_code(other, account, USER) == 300
    assert desk.placement.send_verification_code(other, account, ATTACKER) == 300
    assert desk.verification.senders[-3:] == [USER, USER, ATTACKER]


def test_one_address_cannot_reach_the_accounts_ceiling_through_many_channels() -> None:
    desk = Desk(PlacementLimits(sends=SendLimits(Limit(3, 600), Limit(6, 3600), Limit(20, 3600))))
    account = "13800138000"
    shops = [desk.shop_id] + [uuid4() for _ in range(3)]
    for shop in shops[1:]:
        desk.app.register_channel(shop, f"Shop {shop.hex[:4]}")
    sent = refused = 0
    for shop in shops:
        for _ in range(3):
            try:
                desk.placement.send_verification_code(
                    desk.app.active_channel(shop), account, ATTACKER
                )
                sent += 1
            except RateLimited:
                refused += 1
    assert (sent, refused) == (6, 6)
    # the refused sends never reached the account's ceiling: only the six let through count
    assert desk.counters.hits[f"sms-account:{account}"] == 6
    desk.placement.send_verification_code(desk.shop, account, USER)


def test_the_accounts_ceiling_takes_many_addresses_and_counts_only_sends_let_through() -> None:
    limits = PlacementLimits(sends=SendLimits(Limit(3, 600), Limit(6, 3600), Limit(20, 3600)))
    desk = Desk(limits)
    account = "13800138000"
    attackers = [f"198.51.100.{n}" for n in range(1, 8)]
    let_through = 0
    for address in attackers:
        for _ in range(5):
            try:
                desk.placement.send_verification_code(desk.shop, account, address)
                let_through += 1
            except RateLimited:
                pass
    # 3 from each of the first six addresses and 2 from the seventh: the ceiling of 20
    assert let_through == 20
    with pytest.raises(RateLimited) as refused:
        desk.placement.send_verification_code(desk.shop, account, USER)
    assert "from everywhere" in refused.value.detail


def test_an_accounts_recharge_limit_is_per_sender_below_a_ceiling_five_times_higher() -> None:
    """Before: ten tries a minute for the account from anywhere and the user got 429."""
    desk = Desk(PlacementLimits(account_per_minute=2))
    account = "13800138000"
    desk.verification.send(desk.shop_id, "Pudong shop", account, USER)
    for _ in range(2):
        with pytest.raises(VerificationFailed):
            desk.placement.place(uuid4(), desk.shop, account, desk.codes[0], "000000", ATTACKER)
    with pytest.raises(RateLimited):
        desk.placement.place(uuid4(), desk.shop, account, desk.codes[0], "000000", ATTACKER)

    desk.placement.place(uuid4(), desk.shop, account, desk.codes[0], "123456", USER)
    assert desk.app.find_code(desk.codes[0]).status == "reserved"
    assert desk.verification.checked_by == [ATTACKER, ATTACKER, USER]


def test_the_accounts_recharge_ceiling_counts_only_tries_let_through() -> None:
    desk = Desk(PlacementLimits(account_per_minute=2))
    account = "13800138000"
    for n in range(5):
        address = f"198.51.100.{n}"
        for _ in range(3):  # the third from each address is its own 429, not the account's
            with pytest.raises((VerificationFailed, RateLimited)):
                desk.placement.place(uuid4(), desk.shop, account, desk.codes[0], "1", address)
    assert desk.counters.hits[f"recharge-account:{account}"] == 10  # the ceiling, 5 x 2
    with pytest.raises(RateLimited) as refused:
        desk.placement.place(uuid4(), desk.shop, account, desk.codes[0], "123456", USER)
    assert "everywhere" in refused.value.detail


def test_the_sender_is_the_users_address_an_ipv6_one_by_its_64_or_the_channels_server() -> None:
    desk = Desk()
    assert sender_of(desk.shop, "203.0.113.7") == "203.0.113.7"
    assert sender_of(desk.shop, "2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert sender_of(desk.shop, "2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert sender_of(desk.shop, "::ffff:203.0.113.7") == "203.0.113.7"
    assert sender_of(desk.shop, None) == f"channel:{desk.shop_id}"


def test_a_sender_that_recharged_the_account_before_is_not_held_back_by_its_ceiling() -> None:
    desk = Desk(PlacementLimits(sends=SendLimits(Limit(3, 600), Limit(6, 3600), Limit(4, 3600))))
    account = "13800138000"
    desk.place(desk.codes[0], account=account)  # from USER, with the code read on the phone
    for attacker in ("198.51.100.1", "198.51.100.1", "198.51.100.2"):  # with the user's: 4
        desk.placement.send_verification_code(desk.shop, account, attacker)
    with pytest.raises(RateLimited) as refused:  # a new address: the ceiling holds
        desk.placement.send_verification_code(desk.shop, account, "198.51.100.3")
    assert "from everywhere" in refused.value.detail

    assert desk.placement.send_verification_code(desk.shop, account, USER) == 300
    assert desk.verification.used_by == [(account, USER)]
    with pytest.raises(RateLimited) as own:  # its own quota still applies
        for _ in range(3):
            desk.placement.send_verification_code(desk.shop, account, USER)
    assert "through this page" in own.value.detail


@pytest.mark.parametrize("then", ["reserved", "redeemed", "released"])
def test_a_retry_of_a_placement_whose_answer_was_lost_is_the_same_placement(then: str) -> None:
    """The process died after the reservation and the verification code's use, before the
    answer was stored: the retry (same principal and Idempotency-Key, so the same recharge id)
    neither fails on the used verification code nor takes the code a second time, whatever the
    saga did with the code meanwhile."""
    desk = Desk()
    recharge_id = desk.place(desk.codes[0])
    code = desk.app.find_code(desk.codes[0])
    if then == "redeemed":
        desk.app.redeem_code(code.id, recharge_id)
    if then == "released":
        desk.app.release_code(code.id, recharge_id, "platform_refused")
    checked = desk.verification.checked

    desk.placement.place(recharge_id, desk.shop, "13800138000", desk.codes[0], "123456", ADDRESS)

    after = desk.app.find_code(desk.codes[0])
    expected = {"reserved": recharge_id, "redeemed": recharge_id, "released": None}[then]
    assert (after.status, after.recharge_id) == (
        {"reserved": "reserved", "redeemed": "redeemed", "released": "issued"}[then],
        expected,
    )
    assert desk.verification.checked == checked  # the checks passed the first time
    with pytest.raises(VerificationFailed):  # another recharge with that used code is refused
        desk.placement.place(uuid4(), desk.shop, "13800138000", desk.codes[1], "123456", ADDRESS)


def test_only_a_placement_that_used_the_verification_code_makes_its_sender_known() -> None:
    desk = Desk()
    account = "13800138000"
    desk.placement.send_verification_code(desk.shop, account, ADDRESS)
    with pytest.raises(VerificationFailed):
        desk.placement.place(uuid4(), desk.shop, account, desk.codes[0], "654321", ADDRESS)
    with pytest.raises(CodeInvalid):
        desk.placement.place(uuid4(), desk.shop, account, WELL_FORMED_UNKNOWN, "123456", ADDRESS)
    assert desk.verification.used_by == []

    desk.placement.place(uuid4(), desk.shop, account, desk.codes[0], "123456", ADDRESS)

    assert desk.verification.used_by == [(account, ADDRESS)]
