"""Redemption codes in the domain's words, on the in-memory `Distribution()`.

A batch moves units from a channel's stock to `held`; each code then holds one unit until it
is redeemed (held → consumed), voided (held → stock), or expires (a sold code's unit becomes
breakage, an unsold one's goes back to stock). Every scenario ends with the ledger check:
each event's postings balance, and the balances they add up to agree with the aggregates.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from ledger import accounts
from ledger.distribution.application import Distribution
from ledger.distribution.code_format import keyed_hash, new_code, normalize
from ledger.distribution.codes import Code, CodeBatch, code_id
from ledger.errors import (
    CodeAlreadyRedeemed,
    CodeExpired,
    CodeInUse,
    CodeInvalid,
    CodeMalformed,
    InsufficientStock,
    InvalidAmount,
    StateConflict,
)
from ledger.money import Money
from ledger.postings import Posting, Postings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STOCK = 10


@dataclass
class World:
    """One product; a top-level channel `shop` holding STOCK units, and another channel."""

    app: Distribution
    product: UUID
    shop: UUID
    other: UUID

    @property
    def unit(self) -> str:
        return accounts.unit_asset(self.product)

    def recorded(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def events(self) -> list[Any]:
        notifications = self.app.recorder.select_notifications(start=1, limit=100_000)
        return [self.app.mapper.to_domain_event(n) for n in notifications]

    def on_hand(self, channel: UUID | None = None) -> int:
        return self.app.channel(channel or self.shop).stock_of(self.product)

    def issue(
        self,
        quantity: int,
        *,
        channel: UUID | None = None,
        expires_at: datetime | None = None,
        inactive: bool = False,
    ) -> tuple[CodeBatch, list[str]]:
        return self.app.issue_codes(
            uuid4(), channel or self.shop, self.product, quantity, expires_at, inactive
        )

    def code(self, typed: str) -> Code:
        return self.app.find_code(typed)

    def reserve(
        self,
        typed: str,
        *,
        channel: UUID | None = None,
        now: datetime = NOW,
        account: str = "13900000001",
    ) -> tuple[UUID, Code]:
        recharge = uuid4()
        found = self.app.reserve_code(
            self.code(typed).id, recharge, account, channel or self.shop, now, user="u-1"
        )
        return recharge, found

    def balances(self) -> dict[tuple[str, str], int]:
        """Every account's balance per asset, from the postings of every stored event."""
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for event in self.events():
            postings = getattr(event, "postings", None)
            if postings is None:
                continue
            for leg in postings:
                totals[(leg.account, leg.asset)] += leg.amount
        return dict(totals)

    def check_ledger(self) -> None:
        """Each event balances per asset; held/consumed/breakage agree with the codes' states."""
        for event in self.events():
            postings = getattr(event, "postings", None)
            if postings is None:
                continue
            assert isinstance(postings, Postings), type(postings)
            per_asset: Counter[str] = Counter()
            for leg in postings:
                per_asset[leg.asset] += leg.amount
            assert set(per_asset.values()) == {0}, (type(event).__name__, per_asset)
        balances = self.balances()
        per_asset_total: Counter[str] = Counter()
        for (_, asset), amount in balances.items():
            per_asset_total[asset] += amount
        assert set(per_asset_total.values()) <= {0}, per_asset_total

        codes = [e for e in self.events() if isinstance(e, Code.Issued)]
        statuses: dict[tuple[UUID, str], Counter[str]] = defaultdict(Counter)
        for issued in codes:
            found = self.app.code(issued.originator_id)
            key = (found.channel_id, found.status)
            statuses[key]["all"] += 1
            if found.status == "expired":
                statuses[key]["breakage" if found.active else "returned"] += 1
        for channel in (self.shop, self.other):

            def balance(account: str, channel: UUID = channel) -> int:
                return balances.get((account, self.unit), 0)

            def count(*states: str, channel: UUID = channel) -> int:
                return sum(statuses[(channel, s)]["all"] for s in states)

            assert balance(accounts.channel_stock(channel, self.product)) == self.on_hand(channel)
            assert balance(accounts.channel_held(channel, self.product)) == count(
                "issued", "reserved"
            )
            assert balance(accounts.channel_consumed(channel, self.product)) == count("redeemed")
            assert (
                balance(accounts.channel_breakage(channel, self.product))
                == (statuses[(channel, "expired")]["breakage"])
            )


@pytest.fixture
def world() -> Iterator[World]:
    app = Distribution(env={"CODE_HASH_KEY": "unit-test-code-key"})
    platform, product, shop, other = uuid4(), uuid4(), uuid4(), uuid4()
    app.register_platform(platform, "iQiyi", "https://gateway.iqiyi.example")
    app.register_product(product, platform, "VIP monthly", 30, Money(3000), Money(2000))
    for channel in (shop, other):
        app.register_channel(channel, f"Shop {channel.hex[:6]}")
        app.deposit(uuid4(), channel, Money(100_000))
        app.purchase_stock(uuid4(), channel, product, STOCK)
    w = World(app, product, shop, other)
    yield w
    w.check_ledger()


# Batches


def test_a_batch_holds_one_unit_per_code_and_shows_the_codes_only_in_its_answer(
    world: World,
) -> None:
    batch, clear = world.issue(4)

    assert len(clear) == len(set(clear)) == 4
    assert world.on_hand() == STOCK - 4
    assert batch.postings == Postings.of(
        (
            accounts.channel_stock(world.shop, world.product),
            accounts.channel_held(world.shop, world.product),
            world.unit,
            4,
        )
    )
    for typed in clear:
        found = world.code(typed)
        assert found.id == code_id(keyed_hash(world.app.code_key, typed))
        assert (found.status, found.active, found.batch_id) == ("issued", True, batch.id)
    assert batch.code_ids == [world.code(c).id for c in clear]
    stored = repr([vars(e) for e in world.events()])
    for typed in clear:
        assert typed not in stored and normalize(typed) not in stored


def test_a_batch_larger_than_the_stock_on_hand_is_refused_and_records_nothing(
    world: World,
) -> None:
    before = world.recorded()
    with pytest.raises(InsufficientStock):
        world.issue(STOCK + 1)
    with pytest.raises(InvalidAmount):
        world.issue(0)
    assert world.recorded() == before
    assert world.on_hand() == STOCK


def test_a_batch_id_is_issued_once(world: World) -> None:
    batch_id = uuid4()
    world.app.issue_codes(batch_id, world.shop, world.product, 2)
    with pytest.raises(StateConflict, match=str(batch_id)):
        world.app.issue_codes(batch_id, world.shop, world.product, 2)
    assert world.on_hand() == STOCK - 2


# Reservation


def test_a_reservation_takes_the_code_for_one_recharge_and_carries_what_the_saga_needs(
    world: World,
) -> None:
    _, (typed,) = world.issue(1)
    recharge, found = world.reserve(typed, account="13900000042")

    assert (found.status, found.recharge_id) == ("reserved", recharge)
    reserved = [e for e in world.events() if isinstance(e, Code.Reserved)]
    assert len(reserved) == 1
    e = reserved[0]
    assert (e.recharge_id, e.account, e.channel_id, e.product_id, e.user) == (
        recharge, "13900000042", world.shop, world.product, "u-1",
    )  # fmt: skip
    # a reservation moves no units: the unit stays held until the platform answers
    assert not hasattr(e, "postings")
    # the same recharge reserving again is a no-op, not a conflict
    before = world.recorded()
    again = world.app.reserve_code(found.id, recharge, "13900000042", world.shop, NOW)
    assert again.recharge_id == recharge and world.recorded() == before


def test_two_reservations_of_one_code_the_second_is_code_in_use(world: World) -> None:
    _, (typed,) = world.issue(1)
    first, _ = world.reserve(typed)
    before = world.recorded()

    with pytest.raises(CodeInUse):
        world.reserve(typed, account="13900000002")

    assert world.code(typed).recharge_id == first
    assert world.recorded() == before


def test_two_racing_copies_of_one_code_cannot_both_append_a_reservation(world: World) -> None:
    """What keeps two API processes apart: both decided on version N, one append wins."""
    _, (typed,) = world.issue(1)
    code = world.code(typed).id
    mine, theirs = world.app.repository.get(code), world.app.repository.get(code)
    mine.reserve(uuid4(), "13900000001", world.shop, NOW, None)
    theirs.reserve(uuid4(), "13900000002", world.shop, NOW, None)

    world.app.save(mine)
    with pytest.raises(IntegrityError):
        world.app.save(theirs)

    assert world.app.code(code).recharge_id == mine.recharge_id
    assert len([e for e in world.events() if isinstance(e, Code.Reserved)]) == 1


def test_another_channels_code_is_code_invalid_the_same_answer_as_an_unknown_one(
    world: World,
) -> None:
    _, (theirs,) = world.issue(1, channel=world.other)
    with pytest.raises(CodeInvalid) as foreign:
        world.reserve(theirs, channel=world.shop)
    with pytest.raises(CodeInvalid) as unknown:
        world.code(new_code())
    assert str(foreign.value) == str(unknown.value)
    assert world.code(theirs).status == "issued"


def test_a_mistyped_code_is_code_malformed_not_code_invalid(world: World) -> None:
    _, (typed,) = world.issue(1)
    first = typed[0]
    typo = ("7" if first != "7" else "8") + typed[1:]
    with pytest.raises(CodeMalformed):
        world.code(typo)
    # typing is forgiving: case, spaces and look-alikes find the same code
    sloppy = typed.lower().replace("-", " ").replace("1", "l").replace("0", "o")
    assert world.code(sloppy).id == world.code(typed).id


# Redemption and release


def test_redeeming_consumes_the_held_unit_once(world: World) -> None:
    _, (typed,) = world.issue(1)
    recharge, found = world.reserve(typed)

    redeemed = world.app.redeem_code(found.id, recharge)

    assert redeemed.status == "redeemed"
    assert redeemed.postings == Postings.of(
        (
            accounts.channel_held(world.shop, world.product),
            accounts.channel_consumed(world.shop, world.product),
            world.unit,
            1,
        )
    )
    before = world.recorded()
    world.app.redeem_code(found.id, recharge)  # the dispatcher may settle twice
    assert world.recorded() == before
    with pytest.raises(StateConflict):
        world.app.redeem_code(found.id, uuid4())
    with pytest.raises(CodeAlreadyRedeemed):
        world.reserve(typed)
    assert world.on_hand() == STOCK - 1
    assert world.balances()[(accounts.channel_consumed(world.shop, world.product), world.unit)] == 1


def test_a_code_must_be_reserved_before_it_is_redeemed(world: World) -> None:
    _, (typed,) = world.issue(1)
    with pytest.raises(StateConflict):
        world.app.redeem_code(world.code(typed).id, uuid4())


def test_a_released_code_is_redeemable_again_and_a_stale_release_does_nothing(
    world: World,
) -> None:
    _, (typed,) = world.issue(1)
    first, found = world.reserve(typed)

    before = world.recorded()
    world.app.release_code(found.id, uuid4(), "not mine")
    assert world.recorded() == before and world.code(typed).status == "reserved"

    released = world.app.release_code(found.id, first, "account_not_eligible")
    assert (released.status, released.recharge_id) == ("issued", None)
    assert not hasattr(world.events()[-1], "postings")  # the unit stays held for the code

    second, _ = world.reserve(typed, account="13900000002")
    world.app.redeem_code(found.id, second)
    assert world.code(typed).status == "redeemed"


# Voids


def test_voiding_codes_returns_their_units_to_stock(world: World) -> None:
    _, clear = world.issue(3)
    assert world.on_hand() == STOCK - 3

    voided = world.app.void_codes(world.shop, clear[:2])

    assert [c.status for c in voided] == ["voided", "voided"]
    assert world.on_hand() == STOCK - 1
    assert voided[0].postings == Postings.of(
        (
            accounts.channel_held(world.shop, world.product),
            accounts.channel_stock(world.shop, world.product),
            world.unit,
            1,
        )
    )
    # voiding them again changes nothing; a voided code is code_invalid to a redeemer
    before = world.recorded()
    assert world.app.void_codes(world.shop, clear[:2]) == []
    assert world.recorded() == before
    with pytest.raises(CodeInvalid):
        world.reserve(clear[0])


def test_voiding_a_batch_voids_what_is_only_issued_and_leaves_the_rest(world: World) -> None:
    batch, clear = world.issue(4)
    reserved_recharge, reserved = world.reserve(clear[0])
    redeemed_recharge, redeemed = world.reserve(clear[1])
    world.app.redeem_code(redeemed.id, redeemed_recharge)

    voided = world.app.void_batch(world.shop, batch.id)

    assert {c.id for c in voided} == {world.code(c).id for c in clear[2:]}
    assert world.code(clear[0]).status == "reserved"
    assert world.code(clear[1]).status == "redeemed"
    assert world.on_hand() == STOCK - 2
    assert reserved_recharge


@pytest.mark.parametrize("state", ["reserved", "redeemed"])
def test_voiding_a_reserved_or_redeemed_code_is_refused_all_or_none(
    world: World, state: str
) -> None:
    _, clear = world.issue(2)
    recharge, found = world.reserve(clear[0])
    if state == "redeemed":
        world.app.redeem_code(found.id, recharge)
    before = world.recorded()

    expected = CodeInUse if state == "reserved" else CodeAlreadyRedeemed
    with pytest.raises(expected):
        world.app.void_codes(world.shop, clear)

    assert world.recorded() == before
    assert world.code(clear[1]).status == "issued"  # the other code was not voided either
    assert world.on_hand() == STOCK - 2


def test_a_channel_cannot_void_another_channels_codes(world: World) -> None:
    batch, clear = world.issue(1, channel=world.other)
    with pytest.raises(CodeInvalid):
        world.app.void_codes(world.shop, clear)
    with pytest.raises(Exception) as refused:
        world.app.void_batch(world.shop, batch.id)
    assert getattr(refused.value, "code", None) == "not_found"
    assert world.code(clear[0]).status == "issued"


# Inactive batches


def test_inactive_codes_are_code_invalid_until_activated(world: World) -> None:
    _, clear = world.issue(2, inactive=True)
    assert world.on_hand() == STOCK - 2  # an inactive code holds its unit all the same
    with pytest.raises(CodeInvalid):
        world.reserve(clear[0])

    activated = world.app.activate_codes(world.shop, [clear[0]])

    assert [c.active for c in activated] == [True]
    recharge, found = world.reserve(clear[0])
    assert found.recharge_id == recharge
    with pytest.raises(CodeInvalid):
        world.reserve(clear[1])  # the unsold code of the same batch stays worthless
    before = world.recorded()
    world.app.activate_codes(world.shop, [clear[0]])  # activating again records nothing
    assert world.recorded() == before


def test_another_channel_cannot_activate_a_channels_codes(world: World) -> None:
    _, clear = world.issue(1, inactive=True)
    with pytest.raises(CodeInvalid):
        world.app.activate_codes(world.other, clear)
    assert world.code(clear[0]).active is False


def test_a_voided_code_cannot_be_activated(world: World) -> None:
    _, clear = world.issue(2, inactive=True)
    world.app.void_codes(world.shop, [clear[0]])
    before = world.recorded()
    with pytest.raises(CodeInvalid):
        world.app.activate_codes(world.shop, clear)
    assert world.recorded() == before
    assert world.code(clear[1]).active is False


# Expiry


def test_an_active_code_past_its_date_expires_into_breakage(world: World) -> None:
    expires = NOW + timedelta(days=30)
    _, (typed,) = world.issue(1, expires_at=expires)
    found = world.code(typed)

    before = world.recorded()
    world.app.expire_code(found.id, expires - timedelta(seconds=1))  # not due yet
    assert world.recorded() == before

    expired = world.app.expire_code(found.id, expires)

    assert expired.status == "expired"
    product = world.app.product(world.product)
    assert expired.postings == Postings.of(
        (
            accounts.channel_held(world.shop, world.product),
            accounts.channel_breakage(world.shop, world.product),
            world.unit,
            1,
        ),
        # the platform never bills it: its wholesale cost is the operator's breakage income
        (
            accounts.platform_payable(product.platform_id),
            accounts.operator_breakage("CNY"),
            "CNY",
            product.wholesale_cost.amount,
        ),
    )
    event = world.events()[-1]
    assert isinstance(event, Code.Expired) and event.breakage is True
    assert world.on_hand() == STOCK - 1  # a sold code's unit is not back on the shelf
    with pytest.raises(CodeExpired):
        world.reserve(typed, now=expires)


def test_an_inactive_code_past_its_date_returns_its_unit_to_stock(world: World) -> None:
    expires = NOW + timedelta(days=30)
    _, (typed,) = world.issue(1, expires_at=expires, inactive=True)
    assert world.on_hand() == STOCK - 1

    expired = world.app.expire_code(world.code(typed).id, expires + timedelta(hours=1))

    assert expired.status == "expired"
    assert set(expired.postings.legs) == {
        Posting(accounts.channel_held(world.shop, world.product), world.unit, -1),
        Posting(accounts.channel_stock(world.shop, world.product), world.unit, 1),
    }
    expired_event = [e for e in world.events() if isinstance(e, Code.Expired)][-1]
    assert expired_event.breakage is False
    assert world.on_hand() == STOCK
    assert (accounts.channel_breakage(world.shop, world.product), world.unit) not in (
        world.balances()
    )


def test_a_code_past_its_date_is_code_expired_before_the_sweeper_gets_to_it(
    world: World,
) -> None:
    expires = NOW + timedelta(days=1)
    _, (typed,) = world.issue(1, expires_at=expires)
    with pytest.raises(CodeExpired):
        world.reserve(typed, now=expires + timedelta(seconds=1))
    recharge, _ = world.reserve(typed, now=expires - timedelta(seconds=1))
    assert world.code(typed).recharge_id == recharge


def test_a_reserved_or_redeemed_code_does_not_expire(world: World) -> None:
    expires = NOW + timedelta(days=1)
    _, clear = world.issue(2, expires_at=expires)
    _, reserved = world.reserve(clear[0])
    recharge, redeemed = world.reserve(clear[1])
    world.app.redeem_code(redeemed.id, recharge)
    before = world.recorded()

    for code in (reserved, redeemed):
        world.app.expire_code(code.id, expires + timedelta(days=1))

    assert world.recorded() == before
    assert [world.code(c).status for c in clear] == ["reserved", "redeemed"]


# The whole life of a batch, checked against the ledger


def test_every_event_balances_and_the_units_add_up_across_a_batchs_life(world: World) -> None:
    expires = NOW + timedelta(days=10)
    _, sold = world.issue(5, expires_at=expires)
    _, unsold = world.issue(2, expires_at=expires, inactive=True)
    r1, c1 = world.reserve(sold[0])
    world.app.redeem_code(c1.id, r1)
    r2, c2 = world.reserve(sold[1])
    world.app.release_code(c2.id, r2, "failed")
    world.app.void_codes(world.shop, [sold[2]])
    world.app.activate_codes(world.shop, [unsold[0]])
    for typed in [*sold, *unsold]:
        world.app.expire_code(world.code(typed).id, expires)

    statuses = Counter(world.code(c).status for c in [*sold, *unsold])
    assert statuses == {"redeemed": 1, "voided": 1, "expired": 5}
    # 7 held; 1 consumed, 1 voided back, 4 sold codes into breakage, 1 unsold back to stock
    assert world.on_hand() == STOCK - 7 + 1 + 1
    balances = world.balances()
    held = accounts.channel_held(world.shop, world.product)
    breakage = accounts.channel_breakage(world.shop, world.product)
    assert balances[(held, world.unit)] == 0
    assert balances[(breakage, world.unit)] == 4
    world.check_ledger()
