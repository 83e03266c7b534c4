"""The balances view: fed by supervised runners, one active per view, exactly once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from adapters.database import event_store_env, open_pool
from ledger import accounts
from ledger.distribution.application import Distribution
from ledger.errors import DomainError
from ledger.money import Money
from projections.catalog import FEEDS
from projections.runner import LockSession, Shared, SupervisedRunner
from projections.views import Views

pytestmark = pytest.mark.integration

WHOLESALE = 2000
CATCH_UP_SECONDS = 15.0


@pytest.fixture
def pool(database_url: str) -> Iterator[Any]:
    pool = open_pool(database_url, size=2, name="balances-test")
    yield pool
    pool.close()


@pytest.fixture
def app(database_url: str) -> Iterator[Distribution]:
    env = event_store_env(database_url, POSTGRES_POOL_SIZE="2", POSTGRES_MAX_OVERFLOW="2")
    app = Distribution(env=env)
    yield app
    app.close()


@pytest.fixture
def runners(database_url: str) -> Iterator[Callable[[], list[SupervisedRunner]]]:
    """Starts a runner for every feed, as a process does (one lock session and one set of
    shared applications and connections per batch, as `ledger serve` has); stops every one."""
    started: list[SupervisedRunner] = []
    owned: list[tuple[LockSession, Shared]] = []

    def start() -> list[SupervisedRunner]:
        env = event_store_env(database_url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="1")
        session, shared = LockSession(database_url), Shared(env, database_url)
        owned.append((session, shared))
        batch = [SupervisedRunner(feed, database_url, env, session, shared) for feed in FEEDS]
        for runner in batch:
            runner.start()
        started.extend(batch)
        return batch

    yield start
    stop(started)
    for session, shared in owned:
        shared.close()
        session.close()


def stop(batch: list[SupervisedRunner]) -> None:
    for runner in batch:
        runner.stop()
    for runner in batch:
        runner.join(timeout=20)
    assert not any(r.is_alive() for r in batch), "a runner did not stop"


def wait_active(batch: list[SupervisedRunner], timeout: float = 15.0) -> None:
    for runner in batch:
        assert runner.active.wait(timeout), f"{runner.name} never became active"


def caught_up(pool: Any, timeout: float = CATCH_UP_SECONDS) -> bool:
    """The API's read-your-writes wait: every logged event is in the balances."""
    return bool(Views(pool).catch_up(timeout=timeout))


def expected_balances(app: Distribution) -> dict[tuple[str, str], int]:
    """The sum of every recorded event's postings, per account and asset."""
    totals: Counter[tuple[str, str]] = Counter()
    for notification in app.recorder.select_notifications(start=1, limit=100_000):
        event = app.mapper.to_domain_event(notification)
        for leg in getattr(event, "postings", ()):
            totals[(leg.account, leg.asset)] += leg.amount
    return {key: amount for key, amount in totals.items() if amount}


def view_balances(pool: Any) -> dict[tuple[str, str], int]:
    rows = Views(pool).balances.of_accounts_under("")
    return {key: posted for key, (posted, _pending) in rows.items() if posted}


def assert_view_is_exact(pool: Any, app: Distribution) -> None:
    assert caught_up(pool), "the balances view did not catch up"
    expected = expected_balances(app)
    assert expected, "the story recorded no movements"
    assert view_balances(pool) == expected
    trial = Views(pool).balances.trial_balance()
    assert trial and set(trial.values()) == {0}, trial


class Story:
    """Movements in the domain's words: a platform, a product, a top channel and two below."""

    def __init__(self, app: Distribution) -> None:
        self.app = app
        self.platform, self.product, self.top = uuid4(), uuid4(), uuid4()
        self.subs = [uuid4(), uuid4()]
        app.register_platform(self.platform, "iQiyi", "https://gw.iqiyi.example")
        app.register_product(
            self.product, self.platform, "VIP monthly", 30, Money(3000), Money(WHOLESALE)
        )
        app.register_channel(self.top, "East region")
        for n, sub in enumerate(self.subs):
            app.register_channel(sub, f"Reseller {n}", parent_id=self.top)

    def chapter_one(self) -> None:
        self.app.deposit(uuid4(), self.top, Money(100_000))
        self.app.deposit(uuid4(), self.top, Money(900, "USD"))
        self.app.purchase_stock(uuid4(), self.top, self.product, 20)
        self.app.set_price(self.top, self.product, Money(2500))
        self.app.deposit(uuid4(), self.subs[0], Money(30_000))
        self.app.purchase_stock(uuid4(), self.subs[0], self.product, 5)

    def chapter_two(self) -> None:
        self.app.deposit(uuid4(), self.subs[1], Money(12_500))
        self.app.purchase_stock(uuid4(), self.subs[1], self.product, 5)
        with pytest.raises(DomainError):  # refused: nothing to project
            self.app.purchase_stock(uuid4(), self.subs[1], self.product, 1)
        self.app.suspend(self.subs[0])
        self.app.purchase_stock(uuid4(), self.top, self.product, 3)

    def chapter_three(self) -> None:
        self.app.resume(self.subs[0])
        self.app.purchase_stock(uuid4(), self.subs[0], self.product, 2)
        self.app.deposit(uuid4(), self.top, Money(7))

    def funds_of(self, channel: UUID) -> int:
        return self.app.channel(channel).funds.get("CNY", 0)


def test_balances_equal_the_sum_of_postings_and_the_trial_balance_is_zero(
    app: Distribution, pool: Any, runners: Callable[[], list[SupervisedRunner]]
) -> None:
    story = Story(app)
    runners()
    story.chapter_one()
    assert_view_is_exact(pool, app)

    story.chapter_two()
    assert_view_is_exact(pool, app)

    reader = Views(pool).balances
    assert reader.of_account(accounts.channel_funds(story.top)) == {
        "CNY": (story.funds_of(story.top), 0),
        "USD": (900, 0),
    }
    assert reader.of_account(accounts.platform_payable(story.platform)) == {
        "CNY": (23 * WHOLESALE, 0)
    }
    unit = accounts.unit_asset(story.product)
    assert reader.of_account(accounts.channel_stock(story.subs[1], story.product)) == {unit: (5, 0)}
    under_top = reader.of_accounts_under(f"channel:{story.top}:")
    assert set(under_top) == {
        (accounts.channel_funds(story.top), "CNY"),
        (accounts.channel_funds(story.top), "USD"),
        (accounts.channel_stock(story.top, story.product), unit),
    }


def test_the_view_catches_up_on_movements_recorded_before_the_runner_started(
    app: Distribution, pool: Any, runners: Callable[[], list[SupervisedRunner]]
) -> None:
    story = Story(app)
    story.chapter_one()
    story.chapter_two()
    runners()
    assert_view_is_exact(pool, app)


def test_a_second_runner_stays_standby_while_the_first_holds_the_lock(
    app: Distribution, pool: Any, runners: Callable[[], list[SupervisedRunner]]
) -> None:
    story = Story(app)
    first = runners()
    wait_active(first)
    second = runners()
    story.chapter_one()
    assert_view_is_exact(pool, app)

    time.sleep(2.5)  # the standby polls for the lock every second
    assert not any(r.active.is_set() for r in second), "two runners are active for one view"
    assert all(r.is_alive() for r in second)

    stop(first)
    wait_active(second)
    story.chapter_two()
    assert_view_is_exact(pool, app)


def test_a_new_runner_resumes_where_the_stopped_one_left_off(
    app: Distribution, pool: Any, runners: Callable[[], list[SupervisedRunner]]
) -> None:
    story = Story(app)
    first = runners()
    story.chapter_one()
    assert_view_is_exact(pool, app)
    stop(first)

    story.chapter_two()  # recorded while no runner runs: the view stays behind
    assert not caught_up(pool, timeout=0.5)

    runners()
    assert_view_is_exact(pool, app)

    story.chapter_three()
    assert_view_is_exact(pool, app)
