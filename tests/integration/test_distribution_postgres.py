"""The distribution application on the real PostgreSQL: persistence, concurrency, once-only."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest

from adapters.database import event_store_env
from ledger import accounts
from ledger.distribution.application import Distribution
from ledger.distribution.channel import Channel
from ledger.errors import InsufficientFunds, InsufficientStock
from ledger.money import Money

pytestmark = pytest.mark.integration

WHOLESALE = 2000


@dataclass
class Setup:
    url: str
    platform: UUID
    product: UUID
    top: UUID
    subs: list[UUID]


@pytest.fixture
def apps(database_url: str) -> Iterator[Callable[[], Distribution]]:
    """Makes application instances on the test database; closes them all afterwards.

    Small pools: the PostgreSQL server is shared, and an instance's threads queue for a
    connection as they would in a busy process."""
    made: list[Distribution] = []

    def make() -> Distribution:
        env = event_store_env(database_url, POSTGRES_POOL_SIZE="2", POSTGRES_MAX_OVERFLOW="2")
        app = Distribution(env=env)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


@pytest.fixture
def setup(database_url: str, apps: Callable[[], Distribution]) -> Setup:
    app = apps()
    platform, product, top = uuid4(), uuid4(), uuid4()
    subs = [uuid4() for _ in range(3)]
    app.register_platform(platform, "Youku", "https://gw.youku.example")
    app.register_product(product, platform, "VIP yearly", 365, Money(3000), Money(WHOLESALE))
    app.register_channel(top, "North region")
    for n, sub in enumerate(subs):
        app.register_channel(sub, f"Reseller {n}", parent_id=top)
    return Setup(database_url, platform, product, top, subs)


def run_together(workers: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Start every worker at the same moment; collect what they return and raise."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(work: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcome = work()
        except BaseException as error:  # noqa: BLE001 - every outcome is collected
            with lock:
                errors.append(error)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    return results, errors


def all_events(app: Distribution) -> list[Any]:
    notifications = app.recorder.select_notifications(start=1, limit=100_000)
    return [app.mapper.to_domain_event(n) for n in notifications]


def ledger_of(app: Distribution) -> Counter[tuple[str, str]]:
    balances: Counter[tuple[str, str]] = Counter()
    for event in all_events(app):
        for leg in getattr(event, "postings", ()):
            balances[(leg.account, leg.asset)] += leg.amount
    return balances


# Persistence


def test_events_persist_and_reload_in_a_new_application_instance(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    first = apps()
    first.deposit(uuid4(), setup.top, Money(100_000))
    first.deposit(uuid4(), setup.top, Money(500, "USD"))
    movement = uuid4()
    first.purchase_stock(movement, setup.top, setup.product, 10)
    first.set_price(setup.top, setup.product, Money(2500))
    first.deposit(uuid4(), setup.subs[0], Money(10_000))
    first.purchase_stock(uuid4(), setup.subs[0], setup.product, 4)
    first.suspend(setup.subs[1])

    second = apps()
    top = second.channel(setup.top)
    assert top.funds == {"CNY": 100_000 - 10 * WHOLESALE + 4 * 2500, "USD": 500}
    assert top.stock_of(setup.product) == 6
    assert top.prices == {str(setup.product): Money(2500)}
    sub = second.channel(setup.subs[0])
    assert (sub.funds, sub.stock_of(setup.product)) == ({"CNY": 0}, 4)
    assert sub.ancestry == [setup.top]
    assert second.channel(setup.subs[1]).suspended is True
    purchase = second.stock_purchase(movement)
    assert (purchase.quantity, purchase.unit_price, purchase.buyer_id) == (
        10,
        Money(WHOLESALE),
        setup.top,
    )
    assert second.product(setup.product).wholesale_cost == Money(WHOLESALE)
    assert second.recorder.max_notification_id() == first.recorder.max_notification_id()

    balances = ledger_of(second)
    assert balances[(accounts.channel_funds(setup.top), "CNY")] == top.funds["CNY"]
    assert balances[(accounts.platform_payable(setup.platform), "CNY")] == 10 * WHOLESALE
    trial: Counter[str] = Counter()
    for (_, asset), amount in balances.items():
        trial[asset] += amount
    assert set(trial.values()) == {0}


def test_a_change_made_by_one_instance_is_seen_by_another_that_cached_the_channel(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    one, other = apps(), apps()
    one.deposit(uuid4(), setup.top, Money(10 * WHOLESALE))
    assert other.channel(setup.top).funds == {"CNY": 10 * WHOLESALE}  # now cached in `other`
    one.purchase_stock(uuid4(), setup.top, setup.product, 10)
    with pytest.raises(InsufficientFunds):
        other.purchase_stock(uuid4(), setup.top, setup.product, 1)
    assert other.channel(setup.top).funds == {"CNY": 0}


def test_a_refused_sub_channel_purchase_leaves_no_trace_in_the_cache(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    app = apps()
    app.deposit(uuid4(), setup.top, Money(100_000))
    app.purchase_stock(uuid4(), setup.top, setup.product, 2)
    app.set_price(setup.top, setup.product, Money(2500))
    app.deposit(uuid4(), setup.subs[0], Money(50_000))
    before = app.recorder.max_notification_id()
    # The buyer's side is decided before the parent runs out of stock.
    with pytest.raises(InsufficientStock):
        app.purchase_stock(uuid4(), setup.subs[0], setup.product, 3)
    assert app.recorder.max_notification_id() == before
    sub = app.channel(setup.subs[0])
    assert (sub.funds, sub.stock_of(setup.product)) == ({"CNY": 50_000}, 0)
    app.purchase_stock(uuid4(), setup.subs[0], setup.product, 2)
    assert app.channel(setup.subs[0]).funds == {"CNY": 45_000}


# Concurrency: funds and stock never go negative


@pytest.mark.parametrize(("instances", "threads_each"), [(1, 24), (4, 6)])
def test_concurrent_buyers_get_exactly_what_the_funds_pay_for(
    setup: Setup, apps: Callable[[], Distribution], instances: int, threads_each: int
) -> None:
    apps().deposit(uuid4(), setup.top, Money(10 * WHOLESALE))
    workers_apps = [apps() for _ in range(instances)]
    for app in workers_apps:
        app.channel(setup.top)  # warm each instance's cache, as a running process would

    def buyer(app: Distribution) -> Callable[[], Any]:
        return lambda: app.purchase_stock(uuid4(), setup.top, setup.product, 1)

    results, errors = run_together([buyer(a) for a in workers_apps for _ in range(threads_each)])

    assert len(results) == 10
    assert len(errors) == instances * threads_each - 10
    assert all(isinstance(e, InsufficientFunds) for e in errors), errors
    fresh = apps()
    top = fresh.channel(setup.top)
    assert top.funds == {"CNY": 0}
    assert top.stock_of(setup.product) == 10
    purchases = [e for e in all_events(fresh) if type(e).__qualname__ == "StockPurchase.Recorded"]
    assert len(purchases) == 10
    assert ledger_of(fresh)[(accounts.channel_funds(setup.top), "CNY")] == 0


def test_concurrent_sub_channels_never_take_more_stock_than_the_parent_holds(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    admin = apps()
    admin.deposit(uuid4(), setup.top, Money(10 * WHOLESALE))
    admin.purchase_stock(uuid4(), setup.top, setup.product, 10)
    admin.set_price(setup.top, setup.product, Money(2500))
    for sub in setup.subs:
        admin.deposit(uuid4(), sub, Money(100_000))
    instances = [apps() for _ in range(3)]

    def buyer(app: Distribution, sub: UUID) -> Callable[[], Any]:
        return lambda: app.purchase_stock(uuid4(), sub, setup.product, 1)

    workers = [buyer(app, sub) for app in instances for sub in setup.subs for _ in range(2)]
    results, errors = run_together(workers)

    assert len(results) == 10
    assert len(errors) == len(workers) - 10
    assert all(isinstance(e, InsufficientStock) for e in errors), errors
    fresh = apps()
    top = fresh.channel(setup.top)
    assert top.stock_of(setup.product) == 0
    assert top.funds == {"CNY": 10 * 2500}
    subs = [fresh.channel(s) for s in setup.subs]
    assert sum(s.stock_of(setup.product) for s in subs) == 10
    assert sum(s.funds["CNY"] for s in subs) == 3 * 100_000 - 10 * 2500


# A purchase that loses the race for a channel's next version


def stocked(setup: Setup, apps: Callable[[], Distribution]) -> None:
    admin = apps()
    admin.deposit(uuid4(), setup.top, Money(10 * WHOLESALE))
    admin.purchase_stock(uuid4(), setup.top, setup.product, 10)
    admin.set_price(setup.top, setup.product, Money(2500))
    for sub in setup.subs:
        admin.deposit(uuid4(), sub, Money(100_000))


def reads_and_meanwhile(
    app: Distribution, channel_id: UUID, meanwhile: Callable[[], Any]
) -> Counter[UUID]:
    """Count `app`'s channel reads; the first read of `channel_id` runs `meanwhile` (another
    instance's command) after it, so what was read is stale by the save."""
    reads: Counter[UUID] = Counter()
    read = app.channel

    def channel(wanted: UUID) -> Channel:
        found = read(wanted)
        reads[wanted] += 1
        if wanted == channel_id and reads[wanted] == 1:
            meanwhile()
        return found

    app.channel = channel  # type: ignore[method-assign]
    return reads


def test_a_purchase_beaten_to_the_parent_by_a_sibling_is_decided_again_on_the_parent_alone(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    stocked(setup, apps)
    one, other = apps(), apps()

    def sibling_buys() -> None:
        other.purchase_stock(uuid4(), setup.subs[1], setup.product, 1)

    reads = reads_and_meanwhile(one, setup.top, sibling_buys)

    purchase, buyer = one.purchase_stock(uuid4(), setup.subs[0], setup.product, 2)

    assert reads == {setup.subs[0]: 1, setup.top: 2}
    assert (buyer.funds, buyer.stock_of(setup.product)) == ({"CNY": 100_000 - 2 * 2500}, 2)
    fresh = apps()
    top = fresh.channel(setup.top)
    assert (top.stock_of(setup.product), top.funds) == (7, {"CNY": 3 * 2500})
    assert fresh.channel(setup.subs[1]).stock_of(setup.product) == 1
    assert fresh.stock_purchase(purchase.id).quantity == 2


def test_a_purchase_whose_buyer_moved_meanwhile_is_decided_again_on_all_of_it(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    stocked(setup, apps)
    one, other = apps(), apps()

    def buyer_is_paid_in() -> None:
        other.deposit(uuid4(), setup.subs[0], Money(1))

    reads = reads_and_meanwhile(one, setup.subs[0], buyer_is_paid_in)

    _, buyer = one.purchase_stock(uuid4(), setup.subs[0], setup.product, 2)

    assert reads == {setup.subs[0]: 2, setup.top: 3}
    assert (buyer.funds, buyer.stock_of(setup.product)) == ({"CNY": 100_001 - 2 * 2500}, 2)
    top = apps().channel(setup.top)
    assert (top.stock_of(setup.product), top.funds) == (8, {"CNY": 2 * 2500})


# Once-only across instances


def test_a_repeated_command_id_across_two_instances_records_once(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    one, other = apps(), apps()
    one.deposit(uuid4(), setup.top, Money(100_000))
    movement = uuid4()
    first, _ = one.purchase_stock(movement, setup.top, setup.product, 3)
    head = one.recorder.max_notification_id()

    again, buyer = other.purchase_stock(movement, setup.top, setup.product, 3)

    assert other.recorder.max_notification_id() == head
    assert again.id == first.id and again.quantity == 3
    assert buyer.funds == {"CNY": 100_000 - 3 * WHOLESALE}


def test_a_command_sent_at_once_to_several_instances_records_once(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    apps().deposit(uuid4(), setup.top, Money(100_000))
    instances = [apps() for _ in range(4)]
    movement = uuid4()

    def send(app: Distribution) -> Callable[[], Any]:
        return lambda: app.purchase_stock(movement, setup.top, setup.product, 3)

    results, errors = run_together([send(app) for app in instances for _ in range(2)])

    assert not errors, errors
    assert {purchase.id for purchase, _ in results} == {movement}
    fresh = apps()
    assert fresh.channel(setup.top).funds == {"CNY": 100_000 - 3 * WHOLESALE}
    assert fresh.channel(setup.top).stock_of(setup.product) == 3
    recorded = [e for e in all_events(fresh) if getattr(e, "originator_id", None) == movement]
    assert len(recorded) == 1


def test_a_deposit_sent_at_once_to_several_instances_records_once(
    setup: Setup, apps: Callable[[], Distribution]
) -> None:
    instances = [apps() for _ in range(4)]
    movement = uuid4()

    def send(app: Distribution) -> Callable[[], Any]:
        return lambda: app.deposit(movement, setup.subs[2], Money(777))

    results, errors = run_together([send(app) for app in instances for _ in range(2)])

    assert not errors, errors
    assert apps().channel(setup.subs[2]).funds == {"CNY": 777}
