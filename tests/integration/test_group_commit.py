"""Group commit on the real PostgreSQL: concurrent commands of one process saved in one insert,
with every invariant of saving alone kept.

Each test holds the first save of the application (a gate in front of the recorder's insert)
until the other commands have decided and queued behind it, so what forms one batch is
certain rather than a matter of timing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from adapters.database import event_store_env
from ledger import accounts
from ledger.commands import CommandRunner
from ledger.distribution.application import Distribution
from ledger.errors import InsufficientFunds
from ledger.group_commit import GroupCommitter
from ledger.money import Money

pytestmark = pytest.mark.integration

WHOLESALE = 2000
BUYERS = 8


class Gate:
    """Stands in front of the recorder's insert: holds the first call until released, and
    records how many events each insert carried and whether it was stored.

    The application's commands get a million stripes: with 512, two of a test's random ids
    share one about one run in five, and a command waiting on a stripe held by a gated one
    never queues (what production does, and not what these tests look at)."""

    def __init__(self, app: Distribution) -> None:
        self.insert = app.recorder.insert_events
        self.calls: list[tuple[int, bool]] = []
        self.open = threading.Event()
        self.committer = GroupCommitter(self)
        app.committer = self.committer
        app.commands = CommandRunner(stripes=1 << 20)

    def __call__(self, events: Sequence[StoredEvent]) -> Sequence[int] | None:
        self.calls.append((len(events), False))
        if len(self.calls) == 1:
            assert self.open.wait(30), "the gate was never opened"
        ids = self.insert(events)
        self.calls[-1] = (len(events), True)
        return ids

    def wait_for_leader(self) -> None:
        deadline = time.monotonic() + 30
        while not self.calls:
            assert time.monotonic() < deadline, "no save reached the gate"
            time.sleep(0.01)

    def wait_for_queue(self, commands: int) -> None:
        deadline = time.monotonic() + 30
        while self.committer.waiting < commands:
            assert time.monotonic() < deadline, f"only {self.committer.waiting} queued"
            time.sleep(0.01)


@pytest.fixture
def apps(database_url: str) -> Iterator[Callable[..., Distribution]]:
    made: list[Distribution] = []

    def make(**env: str) -> Distribution:
        app = Distribution(env=event_store_env(database_url, POSTGRES_MAX_OVERFLOW="4", **env))
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


@pytest.fixture
def catalogue(apps: Callable[..., Distribution]) -> tuple[UUID, list[UUID]]:
    """A product, and BUYERS top-level channels with funds for 10 units each."""
    app = apps()
    platform, product = uuid4(), uuid4()
    app.register_platform(platform, "Youku", "https://gw.youku.example")
    app.register_product(product, platform, "VIP yearly", 365, Money(3000), Money(WHOLESALE))
    channels = []
    for n in range(BUYERS):
        channel = uuid4()
        app.register_channel(channel, f"Shop {n}")
        app.deposit(uuid4(), channel, Money(10 * WHOLESALE))
        channels.append(channel)
    return product, channels


def in_threads(work: list[Callable[[], Any]]) -> tuple[list[threading.Thread], list[Any]]:
    """Start each piece of work in a thread of its own, in order, one after the other has
    started; outcomes land in the list at the work's index (a result or the exception)."""
    outcomes: list[Any] = [None] * len(work)

    def run(index: int) -> None:
        try:
            outcomes[index] = work[index]()
        except BaseException as error:  # noqa: BLE001 - every outcome is collected
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    return threads, outcomes


def joined(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a command hung"


def purchases_of(app: Distribution) -> list[Any]:
    notifications = app.recorder.select_notifications(start=1, limit=100_000)
    events = [app.mapper.to_domain_event(n) for n in notifications]
    return [e for e in events if type(e).__qualname__ == "StockPurchase.Recorded"]


def funds_postings(app: Distribution, channel: UUID) -> int:
    total: Counter[str] = Counter()
    for notification in app.recorder.select_notifications(start=1, limit=100_000):
        event = app.mapper.to_domain_event(notification)
        for leg in getattr(event, "postings", ()):
            if leg.account == accounts.channel_funds(channel):
                total[leg.asset] += leg.amount
    return total["CNY"]


def test_commands_arriving_while_a_save_runs_are_saved_together_in_one_insert(
    apps: Callable[..., Distribution], catalogue: tuple[UUID, list[UUID]]
) -> None:
    product, channels = catalogue
    app = apps()
    gate = Gate(app)
    first, first_outcome = in_threads(
        [lambda: app.purchase_stock(uuid4(), channels[0], product, 1)]
    )
    gate.wait_for_leader()
    rest, outcomes = in_threads(
        [lambda c=c: app.purchase_stock(uuid4(), c, product, 1) for c in channels[1:]]
    )
    gate.wait_for_queue(BUYERS - 1)
    gate.open.set()
    joined(first + rest)

    assert not any(isinstance(o, BaseException) for o in first_outcome + outcomes)
    # a top-level purchase is 2 events: the leader saved alone, the 7 others in one insert
    assert gate.calls == [(2, True), (2 * (BUYERS - 1), True)]
    assert (gate.committer.stats.batches, gate.committer.stats.largest) == (2, BUYERS - 1)
    fresh = apps()
    assert len(purchases_of(fresh)) == BUYERS
    for channel in channels:
        assert fresh.channel(channel).stock_of(product) == 1
        assert fresh.channel(channel).funds == {"CNY": 9 * WHOLESALE}
        assert funds_postings(fresh, channel) == 9 * WHOLESALE


def test_a_refused_command_never_enters_the_batch_nor_waits_for_it(
    apps: Callable[..., Distribution], catalogue: tuple[UUID, list[UUID]]
) -> None:
    product, channels = catalogue
    app = apps()
    gate = Gate(app)
    leader, _ = in_threads([lambda: app.purchase_stock(uuid4(), channels[0], product, 1)])
    gate.wait_for_leader()
    # channel 1 cannot pay for 11 units: refused while the leader's save is still held
    refused, refused_outcome = in_threads(
        [lambda: app.purchase_stock(uuid4(), channels[1], product, 11)]
    )
    joined(refused)
    assert isinstance(refused_outcome[0], InsufficientFunds)
    others, outcomes = in_threads(
        [lambda c=c: app.purchase_stock(uuid4(), c, product, 1) for c in channels[2:]]
    )
    gate.wait_for_queue(BUYERS - 2)
    gate.open.set()
    joined(leader + others)

    assert not any(isinstance(o, BaseException) for o in outcomes)
    assert gate.calls == [(2, True), (2 * (BUYERS - 2), True)]
    fresh = apps()
    assert len(purchases_of(fresh)) == BUYERS - 1
    assert fresh.channel(channels[1]).funds == {"CNY": 10 * WHOLESALE}


def test_a_conflict_with_another_process_decides_again_only_the_command_it_touched(
    apps: Callable[..., Distribution], catalogue: tuple[UUID, list[UUID]]
) -> None:
    product, channels = catalogue
    app, other_process = apps(), apps()
    gate = Gate(app)
    leader, _ = in_threads([lambda: app.purchase_stock(uuid4(), channels[0], product, 1)])
    gate.wait_for_leader()
    rest, outcomes = in_threads(
        [lambda c=c: app.purchase_stock(uuid4(), c, product, 1) for c in channels[1:]]
    )
    gate.wait_for_queue(BUYERS - 1)
    # every queued purchase decided on channel 3 as it was; another process changes it now
    other_process.deposit(uuid4(), channels[3], Money(WHOLESALE))
    gate.open.set()
    joined(leader + rest)

    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    # the batch failed on channel 3's version; the 6 others were saved together at once,
    # and channel 3's purchase, decided again on fresh state, was saved after
    assert gate.calls == [
        (2, True),
        (2 * (BUYERS - 1), False),
        (2 * (BUYERS - 2), True),
        (2, True),
    ]
    assert (gate.committer.stats.conflicts, gate.committer.stats.saved_alone) == (1, 0)
    fresh = apps()
    assert len(purchases_of(fresh)) == BUYERS
    assert fresh.channel(channels[3]).funds == {"CNY": 10 * WHOLESALE}
    assert funds_postings(fresh, channels[3]) == 10 * WHOLESALE
    for channel in channels[:3] + channels[4:]:
        assert fresh.channel(channel).funds == {"CNY": 9 * WHOLESALE}


def test_two_commands_of_one_batch_changing_one_aggregate_save_the_first_only(
    apps: Callable[..., Distribution], catalogue: tuple[UUID, list[UUID]]
) -> None:
    """Commands whose stripes do not cover an aggregate they change (a raw save here) meet in
    one batch at the same version: the database names the key, the first is saved with the
    rest, the second fails as it would have alone."""
    product, channels = catalogue
    app = apps()
    gate = Gate(app)
    leader, _ = in_threads([lambda: app.purchase_stock(uuid4(), channels[0], product, 1)])
    gate.wait_for_leader()
    target = channels[5]

    def set_price(price: int) -> Callable[[], Any]:
        def change() -> Any:
            channel = app.channel(target)
            channel.set_price(product, Money(price), "CNY")
            return app.save(channel)

        return change

    first, first_outcome = in_threads([set_price(2100)])
    gate.wait_for_queue(1)
    second, second_outcome = in_threads([set_price(2200)])
    gate.wait_for_queue(2)
    buyer, buyer_outcome = in_threads(
        [lambda: app.purchase_stock(uuid4(), channels[6], product, 1)]
    )
    gate.wait_for_queue(3)
    gate.open.set()
    joined(leader + first + second + buyer)

    assert not isinstance(first_outcome[0], BaseException)
    assert isinstance(second_outcome[0], IntegrityError)
    assert not isinstance(buyer_outcome[0], BaseException)
    assert gate.calls == [(2, True), (4, False), (3, True)]
    fresh = apps()
    assert fresh.channel(target).prices == {str(product): Money(2100)}
    assert fresh.channel(channels[6]).stock_of(product) == 1


def test_a_repeated_command_id_answers_the_first_result_under_group_commit(
    apps: Callable[..., Distribution], catalogue: tuple[UUID, list[UUID]]
) -> None:
    product, channels = catalogue
    app = apps()
    gate = Gate(app)
    movements = [uuid4() for _ in range(4)]
    leader, _ = in_threads([lambda: app.purchase_stock(uuid4(), channels[7], product, 1)])
    gate.wait_for_leader()
    # each movement twice: the second waits on the first's stripe, then replays it
    threads, outcomes = in_threads(
        [
            lambda m=m, c=c: app.purchase_stock(m, c, product, 2)
            for m, c in zip(movements * 2, channels[:4] * 2, strict=True)
        ]
    )
    gate.wait_for_queue(4)
    gate.open.set()
    joined(leader + threads)

    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    for n in range(4):
        assert outcomes[n][0].id == outcomes[n + 4][0].id == movements[n]
    fresh = apps()
    assert len(purchases_of(fresh)) == 5
    for channel in channels[:4]:
        assert fresh.channel(channel).stock_of(product) == 2


def test_ledger_group_commit_off_saves_each_command_alone(
    apps: Callable[..., Distribution], catalogue: tuple[UUID, list[UUID]]
) -> None:
    product, channels = catalogue
    app = apps(LEDGER_GROUP_COMMIT="off")
    assert app.committer is None
    app.purchase_stock(uuid4(), channels[0], product, 1)
    assert apps().channel(channels[0]).stock_of(product) == 1
