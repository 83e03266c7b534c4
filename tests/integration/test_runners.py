"""Projection runners: exactly once across a crash, one active per view with a standby that
takes over, dead letters in continuous runs, rebuilds that stop at the first error, and the
status an operator reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from ledger.distribution.application import Distribution
from ledger.distribution.movements import Deposit
from ledger.money import Money
from ledger.postings import Holds, Postings
from projections import runner as runner_module
from projections.balances import BalancesView
from projections.catalog import VIEWS, view
from projections.logs import decoded, read_events
from projections.positions import head, live_version
from projections.rebuild import RebuildFailed, lock_held, rebuild
from projections.runner import LockSession, SupervisedRunner, lock_key
from projections.status import standings
from tests.integration.test_rebuild import (
    ADMIN_URL,
    Golden,
    app_env,
    feed_position,
    golden,
    ledger_command,
    ledger_url,
    rows_of,
    run_ledger,
    stop_runners,
    table_exists,
    wait_caught_up,
    wait_for,
)

pytestmark = pytest.mark.integration

__all__ = ["golden", "ledger_url"]  # fixtures shared with test_rebuild

POISON = Money(666_013)


def balances_feed(application: type[Any] = Distribution) -> Any:
    (feed,) = [f for f in view("balances").feeds() if f.application_class is application]
    return feed


# ---------------------------------------------------------------------------------------------
# Exactly once across a SIGKILL


def expected_from_log(url: str) -> tuple[dict[tuple[str, str], tuple[int, int]], dict[int, int]]:
    """From the distribution log itself: per (account, asset) the sums of postings and holds,
    and per event that moves anything the number of its journal lines."""
    sums: Counter[tuple[str, str, str]] = Counter()
    lines: dict[int, int] = {}
    distribution = Distribution(env=app_env(url))
    try:
        with psycopg.connect(url) as conn:
            rows = read_events(conn, "distribution", 0)
            for event, tracking in decoded(distribution.mapper, "distribution", rows):
                postings = getattr(event, "postings", None)
                holds = getattr(event, "holds", None)
                legs = []
                if isinstance(postings, Postings):
                    legs += [("posted", leg) for leg in postings]
                if isinstance(holds, Holds):
                    legs += [("pending", leg) for leg in holds]
                for kind, leg in legs:
                    sums[(leg.account, leg.asset, kind)] += leg.amount
                if legs:
                    lines[tracking.notification_id] = len(legs)
    finally:
        distribution.close()
    balances = {
        (account, asset): (sums[(account, asset, "posted")], sums[(account, asset, "pending")])
        for account, asset, _ in sums
    }
    return balances, lines


class Purchases(threading.Thread):
    """A steady stream of stock purchases down a channel tree, with now and then a burst of
    deposits saved together (one save, hundreds of events: a batch for the runners)."""

    def __init__(self, url: str) -> None:
        super().__init__(name="purchases", daemon=True)
        self.app = Distribution(env=app_env(url))
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.top, self.sub, self.product, platform = uuid4(), uuid4(), uuid4(), uuid4()
        self.app.register_platform(platform, "iQiyi", "http://127.0.0.1:9/gateway")
        self.app.register_product(self.product, platform, "VIP", 30, Money(3000), Money(2000))
        self.app.register_channel(self.top, "Top")
        self.app.register_channel(self.sub, "Sub", parent_id=self.top)
        self.app.deposit(uuid4(), self.top, Money(10**10))
        self.app.deposit(uuid4(), self.sub, Money(10**10))
        self.app.purchase_stock(uuid4(), self.top, self.product, 100_000)
        self.app.set_price(self.top, self.product, Money(2500))

    def burst(self, channel_id: UUID, count: int) -> None:
        channel = self.app.channel(channel_id)
        deposits = [Deposit.record(uuid4(), channel_id, Money(100)) for _ in range(count)]
        for deposit in deposits:
            channel.deposit(deposit.id, deposit.amount)
        self.app.save(*deposits, channel)

    def run(self) -> None:
        try:
            n = 0
            while not self.stopping.is_set():
                self.app.purchase_stock(uuid4(), self.sub, self.product, 1)
                n += 1
                if n % 40 == 0:
                    self.burst(self.top, 100)
                time.sleep(0.01)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        assert self.error is None, f"the writer failed: {self.error!r}"


RUNNER_PROCESS = """
import signal, sys, threading
from adapters.database import application_env
from adapters.settings import Settings
from ledger.distribution.application import Distribution
from projections.catalog import view
from projections.runner import LockSession, SupervisedRunner

url = sys.argv[1]
env = application_env(Settings(), url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="1")
feeds = [f for name in ("balances", "journal") for f in view(name).feeds()
         if f.application_class is Distribution]
session = LockSession(url)
runners = [SupervisedRunner(feed, url, env, session) for feed in feeds]
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
for runner in runners:
    runner.start()
stop.wait()
for runner in runners:
    runner.stop()
for runner in runners:
    runner.join(timeout=20)
session.close()
"""


def start_run(url: str, log: Path) -> subprocess.Popen[bytes]:
    """A runner process as `ledger projections run` starts it (supervised runners sharing one
    lock session), for the balances and journal feeds only: the full command holds ~38
    connections (every feed, the dispatcher, a worker), too many for a shared server."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER_PROCESS, url], stdout=out, stderr=subprocess.STDOUT
        )


def test_a_runner_killed_mid_batch_resumes_exactly_where_it_stopped(
    database_url: str, tmp_path: Path
) -> None:
    feeds = [
        f
        for f in (*view("balances").feeds(), *view("journal").feeds())
        if f.application_class is Distribution
    ]
    log = tmp_path / "runs.log"
    writer = Purchases(database_url)
    writer.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            processes.append(start_run(database_url, log))

            def busy_and_behind() -> bool:
                at, top = feed_position(conn, feeds[0])
                return at > 300 and top - at >= 100

            wait_for(busy_and_behind, 40, "the first runner process is mid-way")
            processes[0].send_signal(signal.SIGKILL)
            processes[0].wait(timeout=10)
            stopped_at = [feed_position(conn, feed) for feed in feeds]
            assert all(at < top for at, top in stopped_at), "killed with events still to apply"

            processes.append(start_run(database_url, log))
            wait_for(
                lambda: all(
                    feed_position(conn, feed)[0] > at
                    for feed, (at, _) in zip(feeds, stopped_at, strict=True)
                ),
                40,
                "the second runner process resumes",
            )
            time.sleep(1.0)  # the second one applies purchases as they come, too
            writer.stop()
            wait_caught_up(database_url, feeds, timeout=60)
            processes[1].send_signal(signal.SIGTERM)
            assert processes[1].wait(timeout=30) == 0, log.read_text()[-3000:]

            balances, lines = expected_from_log(database_url)
            stored = {
                (account, asset): (posted, pending)
                for account, asset, posted, pending in conn.execute(
                    "SELECT account, asset, posted, pending FROM balances"
                ).fetchall()
            }
            journal = conn.execute(
                "SELECT j.notification_id, count(l.line) FROM journal j LEFT JOIN journal_lines l "
                "USING (application, notification_id) WHERE j.application = 'distribution' "
                "GROUP BY j.notification_id"
            ).fetchall()
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    finally:
        writer.stopping.set()
        writer.join(timeout=30)
        writer.app.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    assert len(lines) > 250, "enough movements to make the point"
    assert stored == balances, "no event applied twice or skipped in the balances"
    assert dict(journal) == lines, "one journal entry per movement, every line, no gaps"
    assert dead == 0


# ---------------------------------------------------------------------------------------------
# One active runner per view


def test_a_second_runner_stands_by_and_takes_over_when_the_first_stops_or_dies(
    ledger_url: str, golden: Golden
) -> None:
    """Two 'processes' (a lock session each) run the same feed: one applies, one waits. Killing
    the active one's connection (a crash) or stopping it hands the feed to the other."""
    feed, env = balances_feed(), app_env(ledger_url)
    first = SupervisedRunner(feed, ledger_url, env, LockSession(ledger_url))
    second = SupervisedRunner(feed, ledger_url, env, LockSession(ledger_url))
    distribution = Distribution(env=env)
    top = golden.history.top

    def deposit_lands(amount: int) -> None:
        distribution.deposit(uuid4(), top, Money(amount))
        wait_caught_up(ledger_url, [feed], timeout=20)
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            posted = conn.execute(
                "SELECT posted FROM balances WHERE account = %s AND asset = 'CNY'",
                (f"channel:{top}:funds",),
            ).fetchone()[0]
        assert posted == distribution.channel(top).funds["CNY"]

    try:
        first.start()
        assert first.active.wait(15)
        second.start()
        assert not second.active.wait(1.5), "a second runner for the same view ran"
        deposit_lands(101)

        with psycopg.connect(ledger_url, autocommit=True) as conn:
            pid = first.session.run(lambda c: c.info.backend_pid)[0]
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: second.active.is_set(), 15, "the standby takes over from the dead one")
        wait_for(lambda: not first.active.is_set(), 15, "the first one stops applying")
        deposit_lands(202)
        assert not first.active.is_set(), "the first one is the standby now"

        second.stop()
        second.join(timeout=20)
        second.session.close()
        assert first.active.wait(15), "the first one takes over when the second stops"
        deposit_lands(303)
    finally:
        stop_runners([first, second])
        first.session.close()
        second.session.close()
        distribution.close()


def test_the_watchdog_restarts_a_runner_that_stalls_behind_the_head(
    ledger_url: str, golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's write waits on a row someone holds: its position stops short of the head,
    the watchdog restarts it, and once the row is free every event lands exactly once."""
    monkeypatch.setattr(runner_module, "STALL_SECONDS", 1.0)
    feed, env = balances_feed(), app_env(ledger_url)
    runner = SupervisedRunner(feed, ledger_url, env)
    distribution = Distribution(env=env)
    top = golden.history.top
    try:
        runner.start()
        assert runner.active.wait(15)
        with psycopg.connect(ledger_url) as holder:
            holder.execute(
                "SELECT * FROM balances_v1 WHERE account = %s FOR UPDATE",
                (f"channel:{top}:funds",),
            )
            distribution.deposit(uuid4(), top, Money(77))
            wait_for(lambda: runner.restarts >= 1, 15, "the watchdog restarts the runner")
        distribution.deposit(uuid4(), top, Money(1))
        wait_caught_up(ledger_url, [feed], timeout=30)
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            posted = conn.execute(
                "SELECT posted FROM balances WHERE account = %s AND asset = 'CNY'",
                (f"channel:{top}:funds",),
            ).fetchone()[0]
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        assert posted == distribution.channel(top).funds["CNY"]
        assert dead == 0
    finally:
        stop_runners([runner])
        runner.session.close()
        distribution.close()


# ---------------------------------------------------------------------------------------------
# Failing events


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The balances view fails on deposits of exactly POISON (in a run of events, too)."""
    original = BalancesView.apply_all

    def apply_all(self: Any, curs: Any, events: Any) -> None:
        for event, _ in events:
            if isinstance(event, Deposit.Recorded) and event.amount == POISON:
                raise RuntimeError("poisoned deposit")
        original(self, curs, events)

    monkeypatch.setattr(BalancesView, "apply_all", apply_all)


def table_rows(output: str) -> list[list[str]]:
    """The cells of a rich table's header and rows, one list a line."""
    lines = [line.strip().replace("┃", "│") for line in output.splitlines()]
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in lines
        if line.count("│") >= 8 and line.strip("│ ")
    ]


def test_a_failing_event_goes_to_the_dead_letters_while_the_view_moves_on(
    ledger_url: str, golden: Golden, poisoned: None
) -> None:
    feed, env = balances_feed(), app_env(ledger_url)
    runner = SupervisedRunner(feed, ledger_url, env)
    distribution = Distribution(env=env)
    sub = golden.history.subs[1]
    try:
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            before = conn.execute(
                "SELECT posted FROM balances WHERE account = %s", (f"channel:{sub}:funds",)
            ).fetchone()[0]
            runner.start()
            assert runner.active.wait(15)
            movement = uuid4()
            distribution.deposit(movement, sub, POISON)
            poison_at = head(conn, "distribution") - 1  # the Deposit, then the channel's event
            distribution.deposit(uuid4(), sub, Money(5))
            wait_caught_up(ledger_url, [feed], timeout=20)

            letters = conn.execute(
                "SELECT view, version, application, notification_id, topic, originator_id, error "
                "FROM dead_letters"
            ).fetchall()
            after = conn.execute(
                "SELECT posted FROM balances WHERE account = %s", (f"channel:{sub}:funds",)
            ).fetchone()[0]
            rows = [r for r in standings(conn) if r.name == "balances"]
            status = run_ledger(ledger_url, "projections", "status")
    finally:
        stop_runners([runner])
        runner.session.close()
        distribution.close()

    assert len(letters) == 1, letters
    name, version, application, notification_id, topic, originator_id, error = letters[0]
    assert (name, version, application, notification_id) == (
        "balances",
        1,
        "distribution",
        poison_at,
    )
    assert topic == "Deposit.Recorded"
    assert "RuntimeError: poisoned deposit" in error
    assert originator_id == str(movement)
    assert after == before + 5, "the view moved past the failing event"

    assert {(r.application, r.dead_letters, r.lag) for r in rows} == {
        ("distribution", 1, 0),
        ("cards", 1, 0),
        ("settlements", 1, 0),
    }
    assert status.returncode == 0, status.stderr
    header, *lines = table_rows(status.stdout)
    assert header == ["view", "application", "version", "position", "head", "lag", "state", "dead"]
    printed = {(cells[0], cells[1]): cells for cells in lines}
    for row in rows:
        cells = printed[(row.name, row.application)]
        assert cells[2:6] + cells[7:] == [
            str(row.version),
            str(row.position),
            str(row.head),
            str(row.lag),
            "1",
        ]
    assert printed[("balances", "distribution")][6] == "running"
    names = {(r.name, r.application) for r in standings_of(ledger_url)}
    assert set(printed) == names, "one line per view and application, and per process"


def standings_of(url: str) -> list[Any]:
    from api.runtime.dispatcher import DISPATCHER_FEED

    with psycopg.connect(url, autocommit=True) as conn:
        return standings(conn, [DISPATCHER_FEED])


def test_a_rebuild_stops_at_the_first_error_and_leaves_the_live_version_untouched(
    ledger_url: str, golden: Golden, poisoned: None
) -> None:
    env = app_env(ledger_url)
    distribution = Distribution(env=env)
    try:
        distribution.deposit(uuid4(), golden.history.top, POISON)
    finally:
        distribution.close()
    spec = view("balances")
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        poison_at = head(conn, "distribution") - 1
        # the live version's rows, without the poisoned deposit (no runner has run since)
        before = rows_of(conn, spec)
        with pytest.raises(RebuildFailed) as failed:
            rebuild(spec, ledger_url, env)
        assert f"distribution event {poison_at} (Deposit.Recorded) failed" in str(failed.value)
        assert "poisoned deposit" in str(failed.value)
        assert live_version(conn, "balances") == 1
        assert rows_of(conn, spec) == before
        assert not table_exists(conn, "balances_v2")
        assert not table_exists(conn, "balances_v2_tracking")


def test_ledger_projections_rebuild_exits_1_naming_the_failing_event(ledger_url: str) -> None:
    """A failure the rebuild subprocess meets for real: the next version's table refuses the
    rows of one account (a constraint the new tables copy from the live ones)."""
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        account = conn.execute(
            "SELECT account FROM balances WHERE account LIKE 'channel:%%:funds' LIMIT 1"
        ).fetchone()[0]
        conn.execute(
            sql.SQL(
                "ALTER TABLE balances_v1 ADD CONSTRAINT refused CHECK (account <> {}) NOT VALID"
            ).format(sql.Literal(account))
        )
        before = rows_of(conn, view("balances"))
        first = conn.execute(
            "SELECT min(notification_id) FROM journal_lines WHERE account = %s", (account,)
        ).fetchone()[0]

    done = run_ledger(ledger_url, "projections", "rebuild", "balances")

    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert "rebuild stopped, the live version is untouched" in message
    assert f"distribution event {first} (" in message
    assert 'violates check constraint "refused"' in message
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        assert live_version(conn, "balances") == 1
        assert rows_of(conn, view("balances")) == before
        assert not table_exists(conn, "balances_v2")


def test_a_connection_lost_while_applying_an_event_does_not_dead_letter_it(
    ledger_url: str, golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view's connection is killed once, in the middle of applying a deposit."""
    blip, killed = Money(424_242), []
    original = BalancesView.apply_all

    def apply_all(self: Any, curs: Any, events: Any) -> None:
        for event, tracking in events:
            if isinstance(event, Deposit.Recorded) and event.amount == blip and not killed:
                killed.append(tracking.notification_id)
                with psycopg.connect(ledger_url, autocommit=True) as other:
                    pid = curs.connection.info.backend_pid
                    other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        original(self, curs, events)

    monkeypatch.setattr(BalancesView, "apply_all", apply_all)
    feed, env = balances_feed(), app_env(ledger_url)
    runner = SupervisedRunner(feed, ledger_url, env)
    distribution = Distribution(env=env)
    top = golden.history.top
    try:
        runner.start()
        assert runner.active.wait(15)
        distribution.deposit(uuid4(), top, blip)
        distribution.deposit(uuid4(), top, Money(1))
        wait_caught_up(ledger_url, [feed], timeout=30)
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            letters = conn.execute("SELECT notification_id, error FROM dead_letters").fetchall()
            posted = conn.execute(
                "SELECT posted FROM balances WHERE account = %s AND asset = 'CNY'",
                (f"channel:{top}:funds",),
            ).fetchone()[0]
        funds = distribution.channel(top).funds["CNY"]
    finally:
        stop_runners([runner])
        runner.session.close()
        distribution.close()
    assert killed, "the connection was killed mid-event"
    assert letters == [], "a good event was dead-lettered"
    assert posted == funds


# ---------------------------------------------------------------------------------------------
# Status


def test_ledger_projections_status_names_prints_one_view_name_a_line() -> None:
    done = subprocess.run(
        [ledger_command(), "projections", "status", "--names"],
        env={**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(f"{spec.name}\n" for spec in VIEWS)
    assert done.stdout.splitlines() == [
        "balances", "journal", "recharges", "codes", "directory", "merchant_statements",
        "settlements", "settled_orders",
    ]


def test_only_this_databases_runners_count_as_running(database_url: str) -> None:
    key = lock_key(balances_feed().at(1))
    with psycopg.connect(ADMIN_URL, autocommit=True) as elsewhere:
        elsewhere.execute("SELECT pg_advisory_lock(%s)", (key,))  # a runner in another database
        with psycopg.connect(database_url, autocommit=True) as conn:
            held = lock_held(conn, key)
            states = {(s.name, s.application): s.status for s in standings(conn)}
    assert states[("balances", "distribution")] == "stopped"
    assert not held
