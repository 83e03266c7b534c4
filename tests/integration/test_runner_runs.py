"""Runners that are behind apply runs of events per transaction: a view's rows and tracking,
the saga starter's sagas and tracking, the dispatcher's tracking; a run that fails is applied
again one event at a time, so only the failing event is dead-lettered (a view) or stops the
runner (a process), and what came before it is kept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder

from api.runtime.dispatcher import Dispatcher
from ledger.distribution.application import Distribution
from ledger.distribution.codes import Code
from ledger.distribution.movements import Deposit
from ledger.money import Money
from ledger.recharges.application import Recharges
from projections import runner as runner_module
from projections.balances import BalancesView
from projections.catalog import view
from projections.logs import decoded, read_events
from projections.positions import head
from projections.runner import LockSession, Shared, SupervisedRunner, process_run
from tests.integration.test_rebuild import (
    Golden,
    app_env,
    golden,
    ledger_url,
    stop_runners,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

__all__ = ["golden", "ledger_url"]

POISON = Money(666_017)


def balances_feed() -> Any:
    (feed,) = [f for f in view("balances").feeds() if f.application_class is Distribution]
    return feed


def posted(url: str, channel: UUID) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT posted FROM balances WHERE account = %s AND asset = 'CNY'",
            (f"channel:{channel}:funds",),
        ).fetchone()
    return int(row[0])


def catch_up_once(url: str, feed: Any) -> None:
    """A runner started behind the head, stopped once it has caught up."""
    session = LockSession(url)
    runner = SupervisedRunner(feed, url, app_env(url), session)
    try:
        runner.start()
        assert runner.active.wait(15)
        wait_caught_up(url, [feed], timeout=60)
    finally:
        stop_runners([runner])
        session.close()


def test_a_view_behind_applies_runs_and_a_failing_run_dead_letters_only_its_bad_event(
    ledger_url: str, golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[tuple[int, bool]] = []
    record, apply_all = BalancesView.record, BalancesView.apply_all

    def counted(self: Any, events: Any) -> None:
        try:
            record(self, events)
        except Exception:
            runs.append((len(events), False))
            raise
        runs.append((len(events), True))

    def poisoned(self: Any, curs: Any, events: Any) -> None:
        for event, _ in events:
            if isinstance(event, Deposit.Recorded) and event.amount == POISON:
                raise RuntimeError("poisoned deposit")
        apply_all(self, curs, events)

    monkeypatch.setattr(BalancesView, "record", counted)
    monkeypatch.setattr(BalancesView, "apply_all", poisoned)
    top, feed = golden.history.top, balances_feed()
    before = posted(ledger_url, top)
    distribution = Distribution(env=app_env(ledger_url))
    try:
        for n in range(30):
            distribution.deposit(uuid4(), top, Money(100 + n))
        catch_up_once(ledger_url, feed)
        batched = list(runs)
        after_first = posted(ledger_url, top)

        runs.clear()
        for _ in range(10):
            distribution.deposit(uuid4(), top, Money(1))
        distribution.deposit(uuid4(), top, POISON)
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            poison_at = head(conn, "distribution") - 1  # the Deposit, then the channel's
        for _ in range(10):
            distribution.deposit(uuid4(), top, Money(2))
        catch_up_once(ledger_url, feed)
        funds = distribution.channel(top).funds["CNY"]
    finally:
        distribution.close()
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        letters = conn.execute("SELECT notification_id, error FROM dead_letters").fetchall()

    # 30 deposits are 60 events: applied in a run or a few, not 60 transactions
    assert sum(n for n, ok in batched if ok) == 60
    assert len(batched) < 10 and max(n for n, _ in batched) > 1
    assert after_first == before + sum(100 + n for n in range(30))
    # the run holding the poison failed whole, then went one event at a time
    assert runs[0] == (42, False)
    assert [n for n, _ in runs[1:]] == [1] * 42
    assert letters == [(poison_at, "RuntimeError: poisoned deposit")]
    assert posted(ledger_url, top) == after_first + 10 * 1 + 10 * 2
    assert posted(ledger_url, top) == funds - POISON.amount


def reserve_new_codes(url: str, golden: Golden, count: int) -> list[UUID]:
    """Codes issued and reserved after the golden history: a Code.Reserved each."""
    distribution = Distribution(env=app_env(url))
    sub = golden.history.subs[1]
    try:
        _, clear = distribution.issue_codes(uuid4(), sub, golden.history.product, count)
        recharges = []
        for n, typed in enumerate(clear):
            recharge = uuid4()
            code = distribution.find_code(typed).id
            distribution.reserve_code(code, recharge, f"1390000000{n}", sub, datetime.now(UTC))
            recharges.append(recharge)
        return recharges
    finally:
        distribution.close()


def events_after(url: str, application: Any, position: int) -> list[tuple[Any, Tracking]]:
    with psycopg.connect(url) as conn:
        rows = read_events(conn, "distribution", position)
        return list(decoded(application.mapper, "distribution", rows))


def test_the_saga_starter_records_a_run_in_one_transaction_and_falls_back_to_find_the_bad_event(
    ledger_url: str, golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = reserve_new_codes(ledger_url, golden, 4)
    process = Recharges(env=app_env(ledger_url))
    distribution = Distribution(env=app_env(ledger_url))
    inserts: list[int] = []
    insert = process.recorder.insert_events

    def counted(events: Any, **kwargs: Any) -> Any:
        inserts.append(len(events))
        return insert(events, **kwargs)

    monkeypatch.setattr(process.recorder, "insert_events", counted)
    try:
        position = process.recorder.max_tracking_id("distribution") or 0
        run = events_after(ledger_url, distribution, position)
        reserved = [
            tracking.notification_id for event, tracking in run if isinstance(event, Code.Reserved)
        ]
        assert len(reserved) == 4 and len(run) > 4

        # the third reservation's policy fails: the run fails whole, then one by one
        original = Recharges.policy

        def failing(self: Any, event: Any, processing_event: Any) -> None:
            if isinstance(event, Code.Reserved) and event.recharge_id == started[2]:
                raise RuntimeError("the policy failed")
            original(self, event, processing_event)

        monkeypatch.setattr(Recharges, "policy", failing)
        with pytest.raises(RuntimeError, match="the policy failed"):
            process_run(process, run)
        assert process.recorder.max_tracking_id("distribution") == reserved[2] - 1
        assert [r in process.repository for r in started] == [True, True, False, False]
        # the failed run inserted nothing as a whole: only single events, one by one
        assert len(inserts) == reserved[2] - 1 - position and all(n <= 3 for n in inserts)

        monkeypatch.setattr(Recharges, "policy", original)
        inserts.clear()
        rest = [(e, t) for e, t in run if t.notification_id >= reserved[2]]
        process_run(process, rest)
        assert len(inserts) == 1  # two new sagas, one insert with the tracking of the last
        assert process.recorder.max_tracking_id("distribution") == run[-1][1].notification_id
        assert all(r in process.repository for r in started)
        assert all(process.recharge(r).status == "pending" for r in started)
    finally:
        process.close()
        distribution.close()


class Recorded(Dispatcher):
    """The dispatcher with its handling replaced: records what it handled, fails on one."""

    name = "dispatcher"
    handled: list[Any]
    fail_on: Any = None

    def handle(self, e: Any, followed: Any) -> None:
        if e is self.fail_on:
            raise RuntimeError("the broker refused")
        self.handled.append(e)


def test_the_dispatcher_tracks_a_run_once_and_what_it_handled_before_a_failure(
    ledger_url: str,
) -> None:
    shared = Shared(app_env(ledger_url), ledger_url)
    tracking = PostgresTrackingRecorder(
        datastore=shared.datastore(), tracking_table_name="dispatcher_tracking"
    )
    dispatcher = Recorded(tracking)
    dispatcher.handled = []
    recharges = Recharges(env=app_env(ledger_url))
    try:
        position = tracking.max_tracking_id("recharges") or 0
        with psycopg.connect(ledger_url) as conn:
            run = list(decoded(recharges.mapper, "recharges", read_events(conn, "recharges", 0)))
        run = [(e, t) for e, t in run if t.notification_id > position]
        if len(run) < 3:
            pytest.skip("the golden history has too few recharge events after the dispatcher")
        dispatcher.fail_on = run[2][0]
        with pytest.raises(RuntimeError, match="the broker refused"):
            dispatcher.process_run(run)
        assert dispatcher.handled == [run[0][0], run[1][0]]
        assert tracking.max_tracking_id("recharges") == run[1][1].notification_id

        dispatcher.fail_on = None
        dispatcher.process_run(run[2:])
        assert tracking.max_tracking_id("recharges") == run[-1][1].notification_id
    finally:
        recharges.close()
        shared.close()


def test_runs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream with many events read ahead hands them out RUN_LIMIT at a time."""

    class Stream(runner_module.EventStream):
        def __init__(self, count: int) -> None:
            self.left = count

        def __next__(self) -> tuple[Any, Tracking]:
            if not self.left:
                raise StopIteration
            self.left -= 1
            return object(), Tracking("app", 1000 - self.left)

        @property
        def subscription(self) -> Any:  # type: ignore[override]
            stream = self

            class ReadAhead:
                def has_read_ahead(self) -> bool:
                    return stream.left > 0

            return ReadAhead()

    stream = Stream(600)
    sizes = []
    while run := stream.next_run(256):
        sizes.append(len(run))
    assert sizes == [256, 256, 88]
