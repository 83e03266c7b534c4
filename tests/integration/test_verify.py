"""`verify` catches each kind of tampering and names the first divergence: an altered,
deleted, inserted or reordered event, a forged chain link, a view row that differs or is gone;
a clean ledger verifies, and `ledger verify` exits accordingly."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from ledger.distribution.application import Distribution
from ledger.money import Money
from projections.catalog import APPLICATIONS, VIEWS, view
from projections.positions import head
from projections.runner import LockSession, SupervisedRunner
from projections.verify import Report, verify
from tests.integration.test_rebuild import (
    Golden,
    app_env,
    golden,
    heads_and_events,
    leave_gaps,
    ledger_url,
    run_ledger,
    stop_runners,
    table_exists,
    wait_for,
)

pytestmark = pytest.mark.integration

__all__ = ["golden", "ledger_url"]  # fixtures shared with test_rebuild


def tamper(url: str, statement: str, *params: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        assert cursor.rowcount == 1 or cursor.rowcount == 2, "the tampering changed a row or two"


def ids(url: str, application: str, topic_ends: str = "", limit: int = 2) -> list[int]:
    """The first positions of a log holding events of a topic."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT notification_id FROM {application}_events WHERE topic LIKE %s "
            "ORDER BY notification_id LIMIT %s",
            ("%" + topic_ends, limit),
        ).fetchall()
    assert rows, f"no {topic_ends} in the {application} log"
    return [row[0] for row in rows]


def verified(url: str) -> Report:
    return verify(url, app_env(url))


def assert_divergence(report: Report, where: str, *details: str) -> None:
    assert not report.ok, "the tampering went unnoticed"
    assert report.divergence is not None
    assert report.divergence.where == where, str(report.divergence)
    for detail in details:
        assert detail in report.divergence.detail, str(report.divergence)


# ---------------------------------------------------------------------------------------------
# Clean


def test_a_clean_ledger_verifies(ledger_url: str) -> None:
    seen: list[tuple[int, int]] = []
    report = verify(ledger_url, app_env(ledger_url), lambda done, total: seen.append((done, total)))

    assert report.ok, str(report.divergence)
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        heads = {a.name: head(conn, a.name) for a in APPLICATIONS}
        assert report.events == heads, "every event of every log was checked"
        assert all(heads.values()), "the history wrote to every log"
        tables = [base for spec in VIEWS for base in spec.view_class.tables]
        assert sorted(report.rows_compared) == sorted(tables)
        for base in tables:
            count = conn.execute(f"SELECT count(*) FROM {base}").fetchone()[0]
            assert report.rows_compared[base] == count > 0, base
        leftovers = [f"{base}_v0" for base in tables] + [f"verify_snapshot_{b}" for b in tables]
        assert not [name for name in leftovers if table_exists(conn, name)], "scratch tables left"
    assert seen[-1] == (sum(heads.values()), sum(heads.values()))


def test_verify_progress_counts_events_not_positions(ledger_url: str, golden: Golden) -> None:
    leave_gaps(ledger_url, golden.history.top)
    heads, events = heads_and_events(ledger_url, APPLICATIONS)
    assert heads > events, "the positions have gaps"
    seen: list[tuple[int, int]] = []

    report = verify(ledger_url, app_env(ledger_url), lambda *p: seen.append(p))

    assert report.ok, str(report.divergence)
    assert sum(report.events.values()) == events
    assert seen[-1] == (events, events), "progress ends at 100 %"
    assert all(done <= total == events for done, total in seen), seen

    command = run_ledger(ledger_url, "verify")
    assert command.returncode == 0, command.stderr
    assert f"{events}/{events}" in command.stderr
    assert f"/{heads}" not in command.stderr


def test_a_ledger_whose_views_lag_behind_still_verifies(ledger_url: str, golden: Golden) -> None:
    """New events no runner has applied yet: the views are compared as of their positions."""
    distribution = Distribution(env=app_env(ledger_url))
    try:
        distribution.deposit(uuid4(), golden.history.top, Money(42))
    finally:
        distribution.close()
    report = verified(ledger_url)
    assert report.ok, str(report.divergence)


# ---------------------------------------------------------------------------------------------
# Events


@pytest.mark.parametrize(
    ("application", "topic"),
    [
        ("distribution", "Deposit.Recorded"),
        ("cards", "Consumption.Recorded"),
        ("recharges", "Recharge.Requested"),
    ],
)
def test_an_altered_event_is_named(ledger_url: str, application: str, topic: str) -> None:
    """The event backdated by an hour: it still decodes, only the chain tells."""
    first = ids(ledger_url, application, topic)[0]
    tamper(
        ledger_url,
        f"UPDATE {application}_events SET state = convert_to(replace("
        "convert_from(state, 'UTF8'), '+00:00', '+01:00'), 'UTF8') "
        "WHERE notification_id = %s AND position('+00:00' IN convert_from(state, 'UTF8')) > 0",
        first,
    )
    assert_divergence(
        verified(ledger_url), f"{application} event {first}", "does not match its link"
    )


def test_an_altered_amount_is_named_though_it_still_decodes(ledger_url: str) -> None:
    first = ids(ledger_url, "distribution", "Deposit.Recorded")[0]
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        state = bytes(
            conn.execute(
                "SELECT state FROM distribution_events WHERE notification_id = %s", (first,)
            ).fetchone()[0]
        )
    assert b"500000" in state
    tamper(
        ledger_url,
        "UPDATE distribution_events SET state = %s WHERE notification_id = %s",
        state.replace(b"500000", b"900000"),
        first,
    )
    assert_divergence(verified(ledger_url), f"distribution event {first}", "does not match")


def test_a_deleted_event_is_named(ledger_url: str) -> None:
    gone = ids(ledger_url, "distribution", "StockPurchase.Recorded")[1]
    tamper(ledger_url, "DELETE FROM distribution_events WHERE notification_id = %s", gone)
    assert_divergence(verified(ledger_url), f"distribution event {gone}", "was deleted")


def test_an_inserted_event_is_named(ledger_url: str) -> None:
    """A copy of a deposit, as the next event of the log (its own notification id)."""
    copied = ids(ledger_url, "distribution", "Deposit.Recorded")[0]
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        inserted = conn.execute(
            "INSERT INTO distribution_events (originator_id, originator_version, topic, state) "
            "SELECT gen_random_uuid(), originator_version, topic, state "
            "FROM distribution_events WHERE notification_id = %s RETURNING notification_id",
            (copied,),
        ).fetchone()[0]
        assert inserted > copied
    assert_divergence(verified(ledger_url), f"distribution event {inserted}", "inserted afterwards")


def test_an_event_deleted_with_its_link_breaks_the_chain_at_the_next_one(ledger_url: str) -> None:
    gone = ids(ledger_url, "distribution", "StockPurchase.Recorded")[1]
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute("DELETE FROM distribution_events WHERE notification_id = %s", (gone,))
        conn.execute("DELETE FROM distribution_events_chain WHERE notification_id = %s", (gone,))
        after = conn.execute(
            "SELECT min(notification_id) FROM distribution_events WHERE notification_id > %s",
            (gone,),
        ).fetchone()[0]
    assert_divergence(verified(ledger_url), f"distribution event {after}", "does not match")


def test_reordered_events_are_named_at_the_first_of_them(ledger_url: str) -> None:
    first, second = ids(ledger_url, "distribution", "Deposit.Recorded")
    tamper(
        ledger_url,
        "UPDATE distribution_events e SET state = o.state FROM distribution_events o "
        "WHERE (e.notification_id, o.notification_id) IN ((%s, %s), (%s, %s))",
        first,
        second,
        second,
        first,
    )
    assert_divergence(
        verified(ledger_url), f"distribution event {first}", "altered, or events reordered"
    )


def test_an_altered_chain_link_is_named(ledger_url: str) -> None:
    link = ids(ledger_url, "cards", "", limit=4)[3]
    tamper(
        ledger_url,
        "UPDATE cards_events_chain SET hash = sha256(hash) WHERE notification_id = %s",
        link,
    )
    assert_divergence(verified(ledger_url), f"cards event {link}", "does not match its link")


def test_the_first_divergence_is_named(ledger_url: str) -> None:
    early, late = ids(ledger_url, "distribution", "StockPurchase.Recorded")
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute("UPDATE balances_v1 SET posted = posted + 1 WHERE asset = 'USD'")
        conn.execute("DELETE FROM distribution_events WHERE notification_id = %s", (late,))
        conn.execute(
            "UPDATE distribution_events SET state = state || ' '::bytea WHERE notification_id = %s",
            (early,),
        )
    assert_divergence(verified(ledger_url), f"distribution event {early}", "does not match")


# ---------------------------------------------------------------------------------------------
# Views


def test_a_view_row_that_differs_is_named(ledger_url: str, golden: Golden) -> None:
    account = f"channel:{golden.history.top}:funds"
    tamper(
        ledger_url,
        "UPDATE balances_v1 SET posted = posted + 1 WHERE account = %s AND asset = 'CNY'",
        account,
    )
    assert_divergence(
        verified(ledger_url),
        "view balances",
        f"row (account={account}, asset=CNY) differs from what the events give",
    )


def test_a_deleted_view_row_is_named(ledger_url: str) -> None:
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        gone = conn.execute(
            "DELETE FROM journal_lines_v1 WHERE (application, notification_id, line) = "
            "(SELECT application, notification_id, line FROM journal_lines_v1 "
            "ORDER BY 1, 2 DESC, 3 LIMIT 1) RETURNING application, notification_id, line"
        ).fetchone()
    application, notification_id, line = gone
    assert_divergence(
        verified(ledger_url),
        "view journal_lines",
        f"row (application={application}, notification_id={notification_id}, line={line}) "
        "is missing",
    )


def test_a_view_row_that_no_event_gives_is_named(ledger_url: str) -> None:
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        code = conn.execute(
            "INSERT INTO codes_v1 SELECT gen_random_uuid(), batch_id, channel_id, product_id, "
            "status, active, expires_at, issued_at, updated_at FROM codes_v1 LIMIT 1 "
            "RETURNING code_id"
        ).fetchone()[0]
    assert_divergence(verified(ledger_url), "view codes", f"row (code_id={code}) differs")


def test_an_altered_recharge_row_is_named(ledger_url: str) -> None:
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        altered = conn.execute(
            "UPDATE recharges_v1 SET status = 'succeeded' WHERE id = "
            "(SELECT id FROM recharges_v1 WHERE status <> 'succeeded' ORDER BY id LIMIT 1) "
            "RETURNING id"
        ).fetchone()[0]
    assert_divergence(verified(ledger_url), "view recharges", f"row (id={altered}) differs")


# ---------------------------------------------------------------------------------------------
# The command


def test_ledger_verify_exits_0_when_clean_and_1_naming_the_divergence(ledger_url: str) -> None:
    clean = run_ledger(ledger_url, "verify")
    assert clean.returncode == 0, clean.stderr
    assert "OK:" in clean.stderr and "hash chains intact" in clean.stderr

    altered = ids(ledger_url, "distribution", "StockPurchase.Recorded")[0]
    tamper(
        ledger_url,
        "UPDATE distribution_events SET state = state || ' '::bytea WHERE notification_id = %s",
        altered,
    )
    tampered = run_ledger(ledger_url, "verify")
    assert tampered.returncode == 1, tampered.stderr
    message = " ".join(tampered.stderr.split())
    assert f"DIVERGENCE: distribution event {altered}: does not match its link" in message


# ---------------------------------------------------------------------------------------------
# Verifying a ledger in use


def test_a_ledger_in_use_verifies(ledger_url: str, golden: Golden) -> None:
    """Runners apply a stream of deposits while verify runs: the views are compared as of one
    snapshot of them and their positions, so the moving ledger verifies."""
    env = app_env(ledger_url)
    feeds = [*view("balances").feeds(), *view("journal").feeds()]
    session = LockSession(ledger_url)
    runners = [SupervisedRunner(feed, ledger_url, env, session) for feed in feeds]
    distribution = Distribution(env=env)
    stop = threading.Event()

    def deposits() -> None:
        while not stop.is_set():
            distribution.deposit(uuid4(), golden.history.top, Money(3))

    writer = threading.Thread(target=deposits, daemon=True)
    try:
        for runner in runners:
            runner.start()
        writer.start()
        wait_for(lambda: all(r.active.is_set() for r in runners), 15, "the runners run")
        time.sleep(0.5)
        report = verified(ledger_url)
        assert report.ok, str(report.divergence)
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            assert report.events["distribution"] < head(conn, "distribution"), "it kept moving"
    finally:
        stop.set()
        writer.join(timeout=10)
        stop_runners(runners)
        session.close()
        distribution.close()


def test_two_verifications_at_once_both_verify(ledger_url: str) -> None:
    env = app_env(ledger_url)
    second: list[Report] = []

    def progress(done: int, total: int) -> None:
        if not second:  # an operator starts another verify while the first one runs
            second.append(verify(ledger_url, env))

    first = verify(ledger_url, env, progress)
    assert second[0].ok, str(second[0].divergence)
    assert first.ok, str(first.divergence)
