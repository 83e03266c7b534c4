#!/usr/bin/env python
"""A platform settlement of a day of 100,000 orders: lines reconciled per second beside
reading the same orders back from the log, with peak memory, and pgbench's TPS in the same run.

    python benchmarks/settlement.py [--orders 100000] [--clients 8] [--seconds 10]
                                    [--database-url URL] [--keep]

One run on one PostgreSQL server:

1. pgbench: `pgbench -i -s <clients>` into a scratch database, then the built-in TPC-B-like
   script with `-c C -j C -T seconds`; its TPS (without initial connection time) is the yardstick.
2. A second scratch database, migrated; one platform and one product registered through the
   `Distribution` application; N recharges of a closed UTC day written as real sagas through
   the `Recharges` application in saves of 1,000 (each Requested, StepScheduled,
   StepCompleted, Succeeded: 4 events), their times spread over the day.
3. The settled orders view (the ledger's side) rebuilt from the logs with `rebuild()`.
4. (a) Reading the same orders back from the log: every `Recharge.Succeeded` of the recharges
   log, fetched through a server-side cursor and decoded by the application's mapper.
5. (b) The settlement: `SettlementSteps` over the `Settlements` application, the settled
   orders view as the ledger's side, a statement of the same orders held in memory (with 5
   lines dropped, 5 amounts changed and 5 lines added: the dropped ones are carried to the
   next day as possible timing differences, the 10 others open cases) and a payments fake;
   opened, then advanced until it reconciles (collect, fetch, reconcile: lines stored in
   chunks, cases opened) and approved and paid. Lines reconciled per second = our lines +
   their lines ÷ the time from open to paid.
6. (c) The matching alone: `decisions.reconcile` over the same lines in memory.

(a), (b) and (c) each run in a child process of their own, so each one's peak resident memory
(`ru_maxrss`) is its own. Prints a table of the rates, their ratio to (a), and peak memory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import create_database, drop_database, pgbench_args, server_facts  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PERIOD = date(2026, 11, 30)
WHOLESALE, FACE = 2000, 3000
SAVE = 1000
DIFFERENCES = 5  # of each kind: dropped, amount changed, added
SUCCEEDED = "ledger.recharges.saga:Recharge.Succeeded"
console = Console(width=120)


def app_env(url: str) -> dict[str, str]:
    from adapters.database import application_env
    from adapters.settings import Settings

    return application_env(
        Settings(), url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="2", CREATE_TABLE="y"
    )


# ---------------------------------------------------------------------------------------------
# pgbench


def run_pgbench(pgbench: str, admin_url: str, dbname: str, clients: int, seconds: int) -> float:
    import re

    conn_args, env = pgbench_args(admin_url)
    init = [pgbench, "-i", "-q", "-s", str(clients), *conn_args, dbname]
    subprocess.run(init, env=env, capture_output=True, text=True, check=True)
    run = subprocess.run(
        [pgbench, "-c", str(clients), "-j", str(clients), "-T", str(seconds), *conn_args, dbname],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", run.stdout)
    if not found:
        raise RuntimeError(f"no TPS in pgbench's output:\n{run.stdout}")
    return float(found[1])


# ---------------------------------------------------------------------------------------------
# the day's orders


class DayClock:
    """Event times spread evenly over PERIOD: eventsourcing stamps every new event with it."""

    def __init__(self, events: int) -> None:
        self.start = datetime.combine(PERIOD, datetime.min.time(), UTC)
        self.step = timedelta(seconds=86_000 / max(events, 1))
        self.ticks = count()

    def __call__(self) -> datetime:
        return self.start + self.step * next(self.ticks)


def write_orders(url: str, orders: int) -> tuple[uuid.UUID, float]:
    """The platform's id, and the seconds it took to write `orders` credited recharges."""
    import eventsourcing.domain

    from ledger.distribution.application import Distribution
    from ledger.money import Money
    from ledger.recharges.application import Recharges
    from ledger.recharges.decisions import StepResult
    from ledger.recharges.saga import Recharge

    env = app_env(url)
    platform, product = uuid.uuid4(), uuid.uuid4()
    distribution, recharges = Distribution(env=env), Recharges(env=env)
    real_clock = eventsourcing.domain.datetime_now_with_tzinfo
    clock = DayClock(orders * 5)  # the time of each request, then its 4 events
    eventsourcing.domain.datetime_now_with_tzinfo = clock  # type: ignore[assignment]
    started = time.perf_counter()
    try:
        distribution.register_platform(platform, "Bench platform", "http://127.0.0.1:9")
        distribution.register_product(
            product, platform, "Bench plan", 30, Money(FACE), Money(WHOLESALE)
        )
        for first in range(0, orders, SAVE):
            batch = []
            for _ in range(first, min(first + SAVE, orders)):
                now = clock()
                recharge = Recharge.request(
                    uuid.uuid4(),
                    uuid.uuid4(),
                    uuid.uuid4(),
                    product,
                    "13800138000",
                    None,
                    now,
                    now + timedelta(hours=1),
                )
                assert recharge.step is not None
                result = StepResult("succeeded", None, "PO", now, now + timedelta(days=30))
                recharge.record(recharge.step.id, result, now)
                batch.append(recharge)
            recharges.save(*batch)
    finally:
        eventsourcing.domain.datetime_now_with_tzinfo = real_clock  # type: ignore[assignment]
        distribution.close()
        recharges.close()
    return platform, time.perf_counter() - started


def rebuild_ledger_side(url: str) -> tuple[int, float]:
    from projections.catalog import view
    from projections.rebuild import rebuild

    started = time.perf_counter()
    done = rebuild(view("settled_orders"), url, app_env(url))
    return done.events, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# the measured phases, each in a child process


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(target: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(target, args)


def read_orders_back(url: str) -> dict[str, Any]:
    """(a) Every credited order from the log, decoded."""
    import psycopg

    from ledger.recharges.application import Recharges
    from projections.logs import decoded

    recharges = Recharges(env=app_env(url))
    try:
        started = time.perf_counter()
        orders = 0
        with psycopg.connect(url) as conn, conn.cursor(name="orders") as cursor:
            cursor.itersize = 5000
            cursor.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM recharges_events WHERE topic = %s ORDER BY notification_id",
                (SUCCEEDED,),
            )
            from eventsourcing.persistence import StoredEvent

            rows = (
                (n, StoredEvent(oid, version, topic, bytes(state)))
                for n, oid, version, topic, state in cursor
            )
            for event, _ in decoded(recharges.mapper, recharges.name, rows):
                orders += event.originator_id is not None
        seconds = time.perf_counter() - started
    finally:
        recharges.close()
    return {"lines": orders, "seconds": seconds, "peak_mb": peak_rss_mb()}


class HeldStatement:
    """The platform's statement, prepared before the clock starts."""

    def __init__(self, statement: Any) -> None:
        self._statement = statement

    def statement(self, platform_id: uuid.UUID, period: date) -> Any:
        return self._statement


class RecordedPayments:
    def __init__(self) -> None:
        self.paid: dict[uuid.UUID, Any] = {}

    def pay(self, payment_id: uuid.UUID, platform_id: uuid.UUID, amount: Any) -> Any:
        from ledger.settlement.ports import SettlementPaymentReceipt

        receipt = self.paid.setdefault(
            payment_id, SettlementPaymentReceipt(f"bench-{len(self.paid) + 1}", amount)
        )
        return receipt


def theirs_of(ours: list[Any]) -> list[Any]:
    """The platform's side: ours with DIFFERENCES lines dropped, amounts changed, added."""
    from dataclasses import replace

    from ledger.money import Money
    from ledger.settlement.ports import Line

    n = DIFFERENCES
    changed = [replace(line, amount=Money(line.amount.amount + 100)) for line in ours[n : 2 * n]]
    noon = datetime.combine(PERIOD, datetime.min.time(), UTC) + timedelta(hours=12)
    extra = [Line(f"never-sent-{i}", "charge", Money(WHOLESALE), noon) for i in range(n)]
    return changed + ours[2 * n :] + extra


def settle(url: str, platform_id: str) -> dict[str, Any]:
    """(b) Open, advance until reconciled, approve, pay."""
    from adapters.database import open_pool
    from ledger.distribution.application import Distribution
    from ledger.money import Money
    from ledger.settlement.application import Settlements
    from ledger.settlement.ports import Statement
    from ledger.settlement.steps import SettlementSteps
    from projections.settled_orders import SettledOrders

    env = app_env(url)
    pool = open_pool(url, 2, "bench-settlement")
    pool.open()
    settlements, distribution = Settlements(env=env), Distribution(env=env)
    platform = uuid.UUID(platform_id)
    try:
        ledger_side = SettledOrders(pool)
        ours = list(ledger_side.lines(platform, PERIOD))
        theirs = theirs_of(ours)
        total = Money(sum(line.signed for line in theirs))
        statement = HeldStatement(Statement(platform, PERIOD, tuple(theirs), total))
        payments = RecordedPayments()
        steps = SettlementSteps(settlements, distribution, ledger_side, statement, payments)
        del ours
        started = time.perf_counter()
        settlement = steps.open(platform, PERIOD)
        for _ in range(20):
            settlement = steps.advance(settlement.id)
            if settlement.status == "awaiting_approval":
                settlements.approve(settlement.id, "bench")
            if settlement.status == "paid":
                break
        seconds = time.perf_counter() - started
        return {
            "lines": settlement.ours_count + settlement.theirs_count,
            "ours": settlement.ours_count,
            "theirs": settlement.theirs_count,
            "status": settlement.status,
            "cases": settlement.cases,
            "carried": settlement.carried_out_count,
            "counts": dict(settlement.counts),
            "paid": settlement.paid,
            "payments": len(payments.paid),
            "seconds": seconds,
            "peak_mb": peak_rss_mb(),
        }
    finally:
        settlements.close()
        distribution.close()
        pool.close()


def match_only(url: str, platform_id: str) -> dict[str, Any]:
    """(c) `decisions.reconcile` over the same lines, in memory."""
    from adapters.database import open_pool
    from ledger.settlement.decisions import reconcile
    from projections.settled_orders import SettledOrders

    pool = open_pool(url, 1, "bench-match")
    pool.open()
    try:
        ours = list(SettledOrders(pool).lines(uuid.UUID(platform_id), PERIOD))
    finally:
        pool.close()
    theirs = theirs_of(ours)
    started = time.perf_counter()
    outcome = reconcile(ours, theirs, may_carry=False)
    seconds = time.perf_counter() - started
    return {
        "lines": len(ours) + len(theirs),
        "cases": outcome.cases,
        "seconds": seconds,
        "peak_mb": peak_rss_mb(),
    }


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8, help="pgbench -c")
    parser.add_argument("--seconds", type=int, default=10, help="pgbench's duration")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--pgbench", default=shutil.which("pgbench") or "/usr/bin/pgbench")
    parser.add_argument("--keep", action="store_true", help="keep the ledger's scratch database")
    args = parser.parse_args()
    admin = args.database_url
    suffix = uuid.uuid4().hex[:8]
    ledger_db, pgbench_db = f"bench_settlement_{suffix}", f"bench_pgbench_{suffix}"
    console.print(f"[bold]Settlement of {args.orders:,} orders[/]: {server_facts(admin)}")
    created: list[str] = []
    try:
        create_database(admin, pgbench_db)
        created.append(pgbench_db)
        tps = run_pgbench(args.pgbench, admin, pgbench_db, args.clients, args.seconds)
        console.print(f"pgbench: {tps:,.0f} TPS ({args.clients} clients, {args.seconds} s)")
        drop_database(admin, pgbench_db)
        created.remove(pgbench_db)

        from api.runtime.schema import apply_migrations

        url = create_database(admin, ledger_db)
        created.append(ledger_db)
        apply_migrations(url)
        platform, written = write_orders(url, args.orders)
        console.print(f"wrote {args.orders:,} credited recharges in {written:.1f} s")
        events, rebuilt = rebuild_ledger_side(url)
        console.print(f"rebuilt settled_orders from {events:,} events in {rebuilt:.1f} s")

        read = in_child(read_orders_back, url)
        settled = in_child(settle, url, str(platform))
        matched = in_child(match_only, url, str(platform))
        report(args.orders, tps, read, settled, matched, (events, rebuilt))
        if args.keep:
            created.remove(ledger_db)
            console.print(f"kept {url}")
    finally:
        for name in created:
            drop_database(admin, name)


def report(
    orders: int,
    tps: float,
    read: dict[str, Any],
    settled: dict[str, Any],
    matched: dict[str, Any],
    rebuilt: tuple[int, float],
) -> None:
    def rate(phase: dict[str, Any]) -> float:
        return phase["lines"] / phase["seconds"]

    base = rate(read)
    table = Table(title=f"A day of {orders:,} orders, settled")
    for column in ("phase", "lines", "seconds", "lines/s", "ratio to (a)", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    rows = [
        ("(a) read the orders back from the log", read),
        ("(b) settle: collect, fetch, reconcile, pay", settled),
        ("(c) matching alone, in memory", matched),
    ]
    for name, phase in rows:
        table.add_row(
            name,
            f"{phase['lines']:,}",
            f"{phase['seconds']:.2f}",
            f"{rate(phase):,.0f}",
            f"{rate(phase) / base:.3f}",
            f"{phase['peak_mb']:.0f}",
        )
    console.print(table)
    events, seconds = rebuilt
    console.print(
        f"ledger side rebuilt: {events:,} events in {seconds:.1f} s ({events / seconds:,.0f}/s); "
        f"pgbench {tps:,.0f} TPS; settlement {settled['status']}, {settled['cases']} cases, "
        f"{settled['carried']} lines carried {settled['counts']}, paid {settled['paid']:,} in "
        f"{settled['payments']} payment(s)"
    )
    expected = (2 * DIFFERENCES, DIFFERENCES, 1, "paid")
    found = (settled["cases"], settled["carried"], settled["payments"], settled["status"])
    if found != expected:
        console.print(f"[red]expected (cases, carried, payments, status) {expected}; {found}[/red]")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
