"""The ledger's side of a settlement on the real PostgreSQL: the lines of a platform's day
come from the recharges log (credited orders, accepted refunds) at the wholesale cost of
the products in the distribution log, whichever log the view applies first; a rebuild and
`ledger verify` give the same rows; `caught_up` says when a day can be settled."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import Tracking

from adapters.database import open_pool
from ledger.distribution.application import Distribution
from ledger.money import Money
from ledger.recharges.application import Recharges
from ledger.recharges.decisions import StepResult
from ledger.recharges.saga import Recharge
from projections.catalog import view
from projections.logs import decoded, read_events
from projections.positions import head
from projections.rebuild import open_view, rebuild
from projections.settled_orders import COMMIT_GRACE, SettledOrders, SettledOrdersView
from projections.verify import verify
from tests.integration.test_rebuild import app_env

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 30)


def at(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=UTC)


class Clock:
    """The time eventsourcing stamps on new events (patched in for each chapter)."""

    def __init__(self) -> None:
        self.now = at(DAY, 0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("eventsourcing.domain.datetime_now_with_tzinfo", clock)
    return clock


@dataclass
class Ledger:
    url: str
    env: dict[str, str]
    distribution: Distribution
    recharges: Recharges
    clock: Clock
    platform: UUID
    other_platform: UUID
    gold: UUID  # the platform's, 15.00
    silver: UUID  # the platform's, 9.00
    bronze: UUID  # the other platform's, 7.00

    def credited(self, product: UUID, moment: datetime) -> Recharge:
        """A recharge requested a minute before `moment`, credited at `moment`."""
        self.clock.now = moment - timedelta(minutes=1)
        recharge = Recharge.request(
            uuid4(),
            uuid4(),
            uuid4(),
            product,
            "13800138000",
            None,
            self.clock.now,
            moment + timedelta(hours=1),
        )
        self.clock.now = moment
        assert recharge.step is not None
        recharge.record(
            recharge.step.id,
            StepResult("succeeded", None, "PO1", moment, moment + timedelta(days=30)),
            moment,
        )
        self.recharges.save(recharge)
        return recharge

    def failed(self, product: UUID, moment: datetime) -> Recharge:
        self.clock.now = moment
        recharge = Recharge.request(
            uuid4(), uuid4(), uuid4(), product, "13800138000", None, moment, moment
        )
        assert recharge.step is not None
        recharge.record(recharge.step.id, StepResult("failed", "account_not_eligible"), moment)
        self.recharges.save(recharge)
        return recharge


@pytest.fixture
def ledger(database_url: str, clock: Clock) -> Iterator[Ledger]:
    env = app_env(database_url)
    distribution, recharges = Distribution(env=env), Recharges(env=env)
    platform, other_platform = uuid4(), uuid4()
    gold, silver, bronze = uuid4(), uuid4(), uuid4()
    clock.now = at(DAY - timedelta(days=10), 9)
    distribution.register_platform(platform, "iQiyi", "http://127.0.0.1:1")
    distribution.register_platform(other_platform, "Youku", "http://127.0.0.1:1")
    for product, owner, cost in (
        (gold, platform, 1500),
        (silver, platform, 900),
        (bronze, other_platform, 700),
    ):
        distribution.register_product(
            product, owner, f"plan {cost}", 30, Money(cost * 2), Money(cost)
        )
    try:
        yield Ledger(
            database_url,
            env,
            distribution,
            recharges,
            clock,
            platform,
            other_platform,
            gold,
            silver,
            bronze,
        )
    finally:
        distribution.close()
        recharges.close()


@pytest.fixture
def settled(database_url: str) -> Iterator[SettledOrders]:
    pool = open_pool(database_url, 2, "settled-orders-test")
    pool.open()
    try:
        yield SettledOrders(pool)
    finally:
        pool.close()


class LiveView:
    """The live version of the view, fed one log at a time as its runners would."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.view = open_view(SettledOrdersView.at_version(1), ledger.env)

    def apply(self, application: Any) -> None:
        after = self.view.max_tracking_id(application.name) or 0
        with psycopg.connect(self.ledger.url, autocommit=True) as conn:
            stored = read_events(conn, application.name, after)
            events = list(decoded(application.mapper, application.name, stored))
        self.view.record(events)

    def close(self) -> None:
        self.view.datastore.close()


@pytest.fixture
def live(ledger: Ledger) -> Iterator[LiveView]:
    live = LiveView(ledger)
    try:
        yield live
    finally:
        live.close()


def keyed(lines: Any) -> list[tuple[str, str, int, str]]:
    return [(line.order_no, line.kind, line.amount.amount, line.at.isoformat()) for line in lines]


def test_a_days_lines_are_its_credited_orders_at_the_products_wholesale_cost(
    ledger: Ledger, settled: SettledOrders
) -> None:
    morning = ledger.credited(ledger.gold, at(DAY, 10))
    last_second = ledger.credited(ledger.silver, at(DAY, 23, 59, 59))
    next_day = ledger.credited(ledger.gold, at(DAY + timedelta(days=1), 0, 0, 1))
    elsewhere = ledger.credited(ledger.bronze, at(DAY, 12))
    ledger.failed(ledger.gold, at(DAY, 13))

    rebuild(view("settled_orders"), ledger.url, ledger.env)

    expected = sorted(
        [
            (str(morning.id), "charge", 1500, at(DAY, 10).isoformat()),
            (str(last_second.id), "charge", 900, at(DAY, 23, 59, 59).isoformat()),
        ]
    )
    assert keyed(settled.lines(ledger.platform, DAY)) == expected
    assert keyed(settled.lines(ledger.platform, DAY + timedelta(days=1))) == [
        (str(next_day.id), "charge", 1500, at(DAY + timedelta(days=1), 0, 0, 1).isoformat())
    ]
    assert keyed(settled.lines(ledger.other_platform, DAY)) == [
        (str(elsewhere.id), "charge", 700, at(DAY, 12).isoformat())
    ]
    assert list(settled.lines(ledger.platform, DAY - timedelta(days=1))) == []
    [line] = settled.lines(ledger.other_platform, DAY)
    assert line.amount == Money(700, "CNY") and line.signed == 700
    assert settled.caught_up(ledger.platform, DAY)
    report = verify(ledger.url, ledger.env)
    assert report.ok, report.divergence
    assert report.rows_compared["settled_orders"] == 4


class RefundAccepted:
    """Stands for `Recharge.RefundAccepted` (matched by its topic) in this view's test."""

    def __init__(self, recharge_id: UUID, timestamp: datetime) -> None:
        self.originator_id = recharge_id
        self.timestamp = timestamp


RefundAccepted.__module__ = "ledger.recharges.saga"
RefundAccepted.__qualname__ = "Recharge.RefundAccepted"


def test_an_accepted_refund_is_a_refund_line_on_the_day_it_was_accepted(
    ledger: Ledger, live: LiveView, settled: SettledOrders
) -> None:
    refunded = ledger.credited(ledger.gold, at(DAY, 10))
    live.apply(ledger.distribution)
    live.apply(ledger.recharges)
    with psycopg.connect(ledger.url, autocommit=True) as conn:
        position = head(conn, "recharges") + 1
    accepted_at = at(DAY + timedelta(days=1), 8)
    live.view.record([(RefundAccepted(refunded.id, accepted_at), Tracking("recharges", position))])

    [charge] = settled.lines(ledger.platform, DAY)
    [refund] = settled.lines(ledger.platform, DAY + timedelta(days=1))
    assert (charge.key, charge.signed) == ((str(refunded.id), "charge"), 1500)
    assert (refund.key, refund.signed) == ((str(refunded.id), "refund"), -1500)
    assert refund.at == accepted_at


def test_lines_whose_product_is_not_applied_yet_keep_the_day_from_being_caught_up(
    ledger: Ledger, live: LiveView, settled: SettledOrders
) -> None:
    credited = ledger.credited(ledger.gold, at(DAY, 10))
    live.apply(ledger.recharges)  # the recharges runner ran ahead of the distribution one

    assert list(settled.lines(ledger.platform, DAY)) == []
    assert not settled.caught_up(ledger.platform, DAY)

    live.apply(ledger.distribution)

    assert [line.order_no for line in settled.lines(ledger.platform, DAY)] == [str(credited.id)]
    assert settled.caught_up(ledger.platform, DAY)


def test_a_day_is_caught_up_at_the_logs_head_or_once_applied_past_its_end_and_grace(
    ledger: Ledger, live: LiveView, settled: SettledOrders
) -> None:
    ledger.credited(ledger.gold, at(DAY, 10))
    live.apply(ledger.distribution)
    live.apply(ledger.recharges)
    assert settled.caught_up(ledger.platform, DAY)  # at the head (a day settled early)

    ledger.credited(ledger.gold, at(DAY, 23, 59))  # recorded, not applied yet
    assert not settled.caught_up(ledger.platform, DAY)

    live.apply(ledger.recharges)
    just_after = at(DAY + timedelta(days=1), 0) + COMMIT_GRACE - timedelta(seconds=1)
    ledger.credited(ledger.silver, just_after)
    live.apply(ledger.recharges)
    ledger.credited(ledger.silver, just_after + timedelta(minutes=1))  # not applied
    assert not settled.caught_up(ledger.platform, DAY)  # within the grace: not yet sure

    ledger.credited(ledger.silver, just_after + timedelta(seconds=2))
    live.apply(ledger.recharges)
    ledger.credited(ledger.silver, just_after + timedelta(minutes=2))  # not applied
    assert settled.caught_up(ledger.platform, DAY)  # applied past the end and the grace
    assert len(list(settled.lines(ledger.platform, DAY))) == 2


def test_lines_stream_through_a_server_side_cursor_in_order_number_order(
    ledger: Ledger, live: LiveView, settled: SettledOrders
) -> None:
    credited = [ledger.credited(ledger.gold, at(DAY, 9) + timedelta(seconds=i)) for i in range(12)]
    live.apply(ledger.distribution)
    live.apply(ledger.recharges)

    stream = settled.lines(ledger.platform, DAY)
    first_three = list(itertools.islice(stream, 3))
    stream.close()  # gives the connection back mid-stream

    ordered = sorted(str(r.id) for r in credited)
    assert [line.order_no for line in first_three] == ordered[:3]
    assert [line.order_no for line in settled.lines(ledger.platform, DAY)] == ordered
