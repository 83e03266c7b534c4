"""Blue/green rebuilds give the views the continuous runners gave, row by row; readers move
to the new version in one step and the old tables go.

This module also holds what the other audit tests (verify, runners, checkpoints and exports)
share: a history written through the applications and projected by the supervised runners
into a template database, cloned for each test (CREATE DATABASE ... TEMPLATE), so every test
can tamper with a ledger of its own in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from adapters.database import application_env, open_pool
from adapters.payments import SandboxPaymentGateway
from adapters.settings import Settings
from api.runtime.schema import apply_migrations
from ledger.cards.application import Cards
from ledger.cards.settlements import MerchantSettlements
from ledger.distribution.application import Distribution
from ledger.money import Money
from ledger.recharges.application import Recharges
from ledger.recharges.decisions import StepResult
from ledger.recharges.saga import Recharge
from ledger.settlement.application import Settlements
from ledger.settlement.steps import SettlementSteps
from projections.catalog import FEEDS, PROCESSES, VIEWS, view
from projections.positions import head, live_tracking_name, live_version, position
from projections.rebuild import rebuild
from projections.runner import LockSession, SupervisedRunner
from projections.views import Views
from tests.card_fakes import FakeMemberTokens, FakePayouts
from tests.settlement_fakes import (
    DAY,
    Clock,
    FakeLedgerSide,
    FakePayments,
    FakeStatements,
    at,
    line,
)
from tests.unit.test_merchant_settlement import FakeStatementLines

pytestmark = pytest.mark.integration

ADMIN_URL = os.environ.get("LEDGER_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CATCH_UP_SECONDS = 30.0


# ---------------------------------------------------------------------------------------------
# Databases


def url_of(name: str) -> str:
    return f"{ADMIN_URL.rpartition('/')[0]}/{name}"


DROPS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-database")
"""Clones are dropped in the background while the next test runs (a drop takes ~0.5 s)."""


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def scratch_database(
    prefix: str, template: str | None = None, drop_later: bool = False
) -> Iterator[str]:
    """A database of its own (a copy of `template` if given), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement)
    try:
        yield url_of(name)
    finally:
        if drop_later:
            DROPS.submit(drop_database, name)
        else:
            drop_database(name)


def app_env(url: str) -> dict[str, str]:
    return application_env(Settings(), url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="2")


# ---------------------------------------------------------------------------------------------
# A history in the domain's words


@dataclass
class History:
    """What was recorded, with moments between the chapters (for periods and as_of)."""

    platform: UUID
    product: UUID
    top: UUID
    subs: list[UUID]
    merchant: UUID
    owner: UUID
    card: UUID
    marks: list[datetime] = field(default_factory=list)


def mark(history: History) -> None:
    time.sleep(0.01)
    history.marks.append(datetime.now(UTC))
    time.sleep(0.01)


def write_history(url: str) -> History:
    """Three chapters touching every view: funds in two currencies, purchases down a channel
    tree, codes issued, voided, reserved (starting a recharge saga) and redeemed, member
    cards with a shared card, consumptions and a withdrawal still in flight (a hold)."""
    env = app_env(url)
    distribution = Distribution(env=env)
    cards = Cards(
        env=env,
        payments=SandboxPaymentGateway(),
        payouts=FakePayouts(),
        tokens=FakeMemberTokens(),
    )
    try:
        h = History(uuid4(), uuid4(), uuid4(), [uuid4(), uuid4()], uuid4(), uuid4(), uuid4())
        d = distribution
        d.register_platform(h.platform, "iQiyi", "http://127.0.0.1:9/gateway")
        d.register_product(h.product, h.platform, "VIP monthly", 30, Money(3000), Money(2000))
        d.register_channel(h.top, "East region")
        for n, sub in enumerate(h.subs):
            d.register_channel(sub, f"Reseller {n}", parent_id=h.top)
        d.deposit(uuid4(), h.top, Money(500_000))
        d.deposit(uuid4(), h.top, Money(900, "USD"))
        d.purchase_stock(uuid4(), h.top, h.product, 60)
        d.set_price(h.top, h.product, Money(2500))
        for sub in h.subs:
            d.deposit(uuid4(), sub, Money(50_000))
            d.purchase_stock(uuid4(), sub, h.product, 8)
        mark(h)

        _, clear = d.issue_codes(uuid4(), h.subs[0], h.product, 5)
        d.void_codes(h.subs[0], [clear[0]])
        reserved = d.find_code(clear[1]).id
        d.reserve_code(reserved, uuid4(), "13800000001", h.subs[0], datetime.now(UTC))
        redeemed, recharge = d.find_code(clear[2]).id, uuid4()
        d.reserve_code(redeemed, recharge, "13800000002", h.subs[0], datetime.now(UTC))
        d.redeem_code(redeemed, recharge)
        credit(env, h)
        friend, activity = uuid4(), uuid4()
        cards.register_merchant(h.merchant, "Tea house", "Asia/Shanghai")
        cards.register_member(h.owner, "Owner", "13800138000")
        cards.register_member(friend, "Friend", "13800138001")
        cards.publish_activity(activity, h.merchant, Money(100_000), Money(10_000), 8000)
        h.card = cards.open_card(h.card, h.owner, activity, "sandbox").id
        shared = cards.share_card(uuid4(), h.owner, h.card, 9000, 0, friend).id
        cards.consume(uuid4(), h.merchant, shared, Money(30_000))
        cards.consume(uuid4(), h.merchant, h.card, Money(10_000))
        paid = cards.request_withdrawal(uuid4(), h.owner, Money(1000))
        cards.request_withdrawal(uuid4(), h.owner, Money(500))  # still in flight: a hold
        cards.finish_withdrawal(paid.id, paid=True, detail="ref")
        settle_merchant(cards, h)
        settle_platform(env, distribution, h)
        mark(h)

        d.purchase_stock(uuid4(), h.subs[1], h.product, 3)
        d.deposit(uuid4(), h.subs[1], Money(7))
        d.purchase_stock(uuid4(), h.top, h.product, 5)
        return h
    finally:
        distribution.close()
        cards.close()


def settle_merchant(cards: Cards, h: History) -> None:
    """The tea house settled for today as if it had ended: its consumptions so far
    collected (read from the log as the merchant statements view reads it) and paid."""
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    lines = FakeStatementLines(cards)
    settled = MerchantSettlements(cards, lines).open(h.merchant, today, close_now=True)
    assert settled.status == "paid" and len(settled.lines) == 2, settled.lines


def settle_platform(env: dict[str, str], distribution: Distribution, h: History) -> None:
    """The platform's settlement of a past day: one order matched, one differing in amount
    (its case resolved, paying the platform's figure) and one on their side only (its case
    left open), so the settlement waits for an operator and both view tables have rows."""
    settlements = Settlements(env=env)
    try:
        ours, statements = FakeLedgerSide(), FakeStatements()
        ours.add(DAY, line("O1", 2000), line("O2", 2000))
        statements.publish(DAY, line("O1", 2000), line("O2", 2100), line("X9", 2000))
        steps = SettlementSteps(
            settlements, distribution, ours, statements, FakePayments(), Clock(at(DAY, 86400 * 3))
        )
        settlement = steps.advance(steps.open(h.platform, DAY).id)
        assert settlement.status == "awaiting_approval", settlement.status
        differs = uuid.uuid5(settlement.id, "case:O2:charge:0")  # cases.case_id's rule
        assert settlements.case(differs).kind == "amount_differs"
        settlements.resolve_case(differs, "accept_theirs", "checked", "op", at(DAY, 86400 * 3))
    finally:
        settlements.close()


def credit(env: dict[str, str], h: History) -> None:
    """A recharge the platform credited (the settled orders' line), saved as its saga."""
    recharges, now = Recharges(env=env), datetime.now(UTC)
    try:
        deadline = now + timedelta(hours=1)
        credited = Recharge.request(
            uuid4(), uuid4(), h.subs[0], h.product, "13800000003", None, now, deadline
        )
        assert credited.step is not None
        result = StepResult("succeeded", None, "PO1", now, now + timedelta(days=30))
        credited.record(credited.step.id, result, now)
        recharges.save(credited)
    finally:
        recharges.close()


# ---------------------------------------------------------------------------------------------
# Runners


def feed_position(conn: Any, feed: Any) -> tuple[int, int]:
    """(position, head) of a feed at its view's live version (or a process's)."""
    tracking = (
        live_tracking_name(conn, feed.view_name) if hasattr(feed, "at") else feed.tracking_name
    )
    application = feed.application_class.name
    return position(conn, tracking, application), head(conn, application)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        time.sleep(interval)


def wait_caught_up(url: str, feeds: list[Any], timeout: float = CATCH_UP_SECONDS) -> None:
    with psycopg.connect(url, autocommit=True) as conn:

        def done() -> bool:
            return all(at >= top for at, top in (feed_position(conn, f) for f in feeds))

        wait_for(done, timeout, f"{[f.name for f in feeds]} caught up")


def stop_runners(runners: list[SupervisedRunner]) -> None:
    for runner in runners:
        runner.stop()
    for runner in runners:
        runner.join(timeout=20)
    assert not any(r.is_alive() for r in runners), "a runner did not stop"


def project(url: str, at_once: int = 3) -> None:
    """Run every feed as `ledger serve` would (the saga starter first, then the views) until
    it has caught up, a few at a time to keep to a dozen connections or so."""
    env = app_env(url)
    views = [f for f in FEEDS if f not in PROCESSES]
    groups = [PROCESSES, *[views[i : i + at_once] for i in range(0, len(views), at_once)]]
    session = LockSession(url)
    try:
        for group in groups:
            runners = [SupervisedRunner(feed, url, env, session) for feed in group]
            try:
                for runner in runners:
                    runner.start()
                for runner in runners:
                    assert runner.active.wait(15), f"{runner.name} never became active"
                wait_caught_up(url, list(group))
            finally:
                stop_runners(runners)
    finally:
        session.close()


# ---------------------------------------------------------------------------------------------
# The template and its clones


@dataclass(frozen=True)
class Golden:
    name: str
    history: History


GOLDEN: list[Golden] = []


@pytest.fixture(scope="session")
def golden() -> Iterator[Golden]:
    """A migrated database holding the history, every view caught up by the runners; built
    once for all the modules that import this fixture."""
    if GOLDEN:
        yield GOLDEN[0]
        return
    with scratch_database("ledger_golden") as url:
        apply_migrations(url)
        history = write_history(url)
        project(url)
        GOLDEN.append(Golden(url.rpartition("/")[2], history))
        try:
            yield GOLDEN[0]
        finally:
            GOLDEN.clear()
            DROPS.shutdown(wait=True)


@pytest.fixture
def ledger_url(golden: Golden) -> Iterator[str]:
    """A copy of the golden ledger for one test to change as it likes."""
    with scratch_database("ledger_clone", template=golden.name, drop_later=True) as url:
        yield url


# ---------------------------------------------------------------------------------------------
# Reading views


def table_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def rows_of(conn: Any, spec: Any, version: int | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a view (through its reader-facing SQL view, or of one
    version's tables), ordered by key."""
    found = {}
    for base in spec.view_class.tables:
        name = base if version is None else f"{base}_v{version}"
        keys = sql.SQL(spec.view_class.keys[base])
        query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(name), keys)
        found[base] = [tuple(row) for row in conn.execute(query).fetchall()]
    return found


def ledger_command() -> str:
    beside_python = Path(sys.executable).parent / "ledger"
    found = str(beside_python) if beside_python.exists() else shutil.which("ledger")
    assert found, "the `ledger` console script is not installed"
    return found


def run_ledger(
    url: str, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "LEDGER_SANDBOX": "false",
        "COLUMNS": "200",
        **env,
    }
    return subprocess.run(
        [ledger_command(), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def leave_gaps(url: str, channel: UUID, gaps: int = 25) -> None:
    """Positions used by transactions that rolled back (the sequence moves on regardless),
    then one more event."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('distribution_events', 'notification_id'), "
            "(SELECT max(notification_id) FROM distribution_events) + %s)",
            (gaps,),
        )
    distribution = Distribution(env=app_env(url))
    try:
        distribution.deposit(uuid4(), channel, Money(77))
    finally:
        distribution.close()


def heads_and_events(url: str, applications: Any) -> tuple[int, int]:
    """The heads of these logs summed, and their events counted."""
    with psycopg.connect(url, autocommit=True) as conn:
        heads = sum(head(conn, a.name) for a in applications)
        events = sum(
            conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{a.name}_events"))
            ).fetchone()[0]
            for a in applications
        )
    return heads, events


# ---------------------------------------------------------------------------------------------
# The tests


def test_a_rebuild_gives_identical_views_row_by_row(ledger_url: str) -> None:
    env = app_env(ledger_url)
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        for spec in VIEWS:
            old = live_version(conn, spec.name)
            before = rows_of(conn, spec)
            assert all(before.values()), f"the history left a table of {spec.name} empty"
            heads = sum(head(conn, a.name) for a in spec.applications)
            seen: list[tuple[int, int]] = []

            result = rebuild(
                spec, ledger_url, env, lambda done, total, seen=seen: seen.append((done, total))
            )

            assert (result.name, result.old_version, result.new_version) == (
                spec.name,
                old,
                old + 1,
            )
            assert result.events == heads, "every event of the logs it follows, once"
            assert seen and seen[-1] == (heads, heads), "progress ends at every event"
            assert live_version(conn, spec.name) == old + 1
            after = rows_of(conn, spec)
            for base in spec.view_class.tables:
                assert after[base] == before[base], f"{base} differs after the rebuild"
            assert rows_of(conn, spec, old + 1) == before, "readers see the new version's tables"
            for base in spec.view_class.tables:
                assert not table_exists(conn, f"{base}_v{old}"), f"{base}_v{old} was not dropped"
            assert not table_exists(conn, f"{spec.name}_v{old}_tracking")
            assert table_exists(conn, f"{spec.name}_v{old + 1}_tracking")


def test_runners_follow_the_rebuilt_version_and_keep_it_current(
    ledger_url: str, golden: Golden
) -> None:
    """Runners of the old version move on to the new one: events after the switch land there,
    and the old version is dropped only once its runners have let go of it."""
    env = app_env(ledger_url)
    spec = view("balances")
    session = LockSession(ledger_url)
    runners = [SupervisedRunner(feed, ledger_url, env, session) for feed in spec.feeds()]
    distribution = Distribution(env=env)
    try:
        for runner in runners:
            runner.start()
        for runner in runners:
            assert runner.active.wait(15), f"{runner.name} never became active"
        result = rebuild(spec, ledger_url, env)
        assert result.new_version == 2
        top = golden.history.top
        distribution.deposit(uuid4(), top, Money(1234))
        wait_caught_up(ledger_url, spec.feeds())
        pool = open_pool(ledger_url, size=1, name="rebuild-test")
        try:
            funds = Views(pool).balances.of_account(f"channel:{top}:funds")["CNY"][0]
        finally:
            pool.close()
        assert funds == distribution.channel(top).funds["CNY"]
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            assert not table_exists(conn, "balances_v1")
            assert position(conn, "balances_v2", "distribution") == head(conn, "distribution")
    finally:
        stop_runners(runners)
        session.close()
        distribution.close()


def test_rebuild_progress_counts_events_not_positions(ledger_url: str, golden: Golden) -> None:
    """A log's positions have gaps; progress counts the events and ends at all of them."""
    leave_gaps(ledger_url, golden.history.top)
    spec = view("balances")
    heads, events = heads_and_events(ledger_url, spec.applications)
    assert heads > events, "the positions have gaps"
    seen: list[tuple[int, int]] = []

    result = rebuild(spec, ledger_url, app_env(ledger_url), lambda *p: seen.append(p))

    assert result.events == events
    assert seen[-1] == (events, events), "progress ends at 100 %"
    assert all(done <= total == events for done, total in seen), seen
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_ledger_projections_rebuild_balances_shows_progress_and_exits_0(
    ledger_url: str, golden: Golden
) -> None:
    leave_gaps(ledger_url, golden.history.top)
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        # Version 1 first moves to 2 in this process: the command's own retire() of version 1
        # would wait up to 15 s for runners of *other* databases (the lock_held bug).
        rebuild(view("balances"), ledger_url, app_env(ledger_url))
        before = rows_of(conn, view("balances"))
    heads, events = heads_and_events(ledger_url, view("balances").applications)

    done = run_ledger(ledger_url, "projections", "rebuild", "balances")

    assert done.returncode == 0, done.stderr
    assert "rebuilding balances" in done.stderr
    assert f"{events}/{events}" in done.stderr, "events done out of the events, to the end"
    assert f"/{heads}" not in done.stderr, "not out of the head's position"
    assert "ev/s" in done.stderr
    assert "balances: version 3 is live (was 2)" in done.stderr
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        assert live_version(conn, "balances") == 3
        assert rows_of(conn, view("balances")) == before
        assert not table_exists(conn, "balances_v2")


def test_a_second_rebuild_of_the_same_view_meanwhile_leaves_one_version(ledger_url: str) -> None:
    spec, env = view("balances"), app_env(ledger_url)
    second: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not second:  # another operator starts the same rebuild
            try:
                second.append(rebuild(spec, ledger_url, env))
            except Exception as refused:  # noqa: BLE001 - refusing it is a fine answer
                second.append(refused)

    first = rebuild(spec, ledger_url, env, progress, batch=10)
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        live = live_version(conn, "balances")
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename ~ '^balances_v[0-9]+(_tracking)?$' "
            "ORDER BY 1"
        ).fetchall()
    assert [t for (t,) in tables] == [f"balances_v{live}", f"balances_v{live}_tracking"]
    assert live >= max([first.new_version] + [getattr(s, "new_version", 0) for s in second])
