#!/usr/bin/env python
"""Stock purchases per second through the Distribution application, beside pgbench's TPS.

    python benchmarks/stock_purchases.py [--clients 8] [--seconds 15] [--database-url URL]

One run on one PostgreSQL server:

1. pgbench: `pgbench -i -s <scale>` into a scratch database, then the built-in TPC-B-like script
   with `-c C -j C -T seconds`; its TPS (without initial connection time) is the yardstick.
2. The ledger: a second scratch database, migrated, set up through the application (one platform,
   one product, C top-level channels each with one sub-channel, and one more top-level channel
   with C sub-channels of its own), then C clients each buying 1 unit at a time with a fresh
   movement id for a fixed time, in these scenarios:

   own-threads       C threads sharing one Distribution (one API process); client i buys for
                     sub-channel i of parent i: no two clients touch the same aggregate.
   own-processes     the same with C processes, each with its own Distribution (no shared GIL).
   shared-threads    C threads; client i buys for sub-channel i of one shared parent, so every
                     purchase changes the parent: in-process the striped command lock serialises.
   shared-processes  the same with C processes: the parent's next version is raced for in the
                     event store; losers get IntegrityError and decide again on fresh state.
   top-processes     C processes, client i buys for top-level channel i from the platform:
                     2 events a purchase instead of 3.

Beside throughput and latency it samples pg_stat_activity and pg_locks every 0.1 s, to show
which limit binds: how often some session held the event table's EXCLUSIVE lock (eventsourcing's
PostgreSQL recorder takes it for every save) and how many waited for it, and how busy the
machine's CPUs were. Threads share the application's connection pool (POSTGRES_POOL_SIZE 4 +
POSTGRES_MAX_OVERFLOW 8 by default), so past 12 threaded clients some wait for a connection.

A purchase by a sub-channel appends 3 events in one transaction (the StockPurchase, the buyer's
StockBought, the parent's StockSold); by a top-level channel 2. Events/s counts what was stored.
Both scratch databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from scratch import create_database, drop_database, pgbench_args, server_facts

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCENARIOS = ("own-threads", "own-processes", "shared-threads", "shared-processes", "top-processes")
DEFAULT_SCENARIOS = SCENARIOS

WHOLESALE_COST = 1500  # fen a unit, paid by top-level channels to the platform
CHILD_PRICE = 1800  # fen a unit, paid by sub-channels to their parent
FUNDS = 10**12  # fen deposited into every channel: far more than any run spends
LOT = 100_000  # units a parent buys in one purchase (MAX_QUANTITY)


# ---------------------------------------------------------------------------------------------
# The application, counting what it stores and how often it loses a race


def counting_distribution(url: str) -> Any:
    """A Distribution on `url` whose save() counts stored events and version conflicts."""
    from eventsourcing.persistence import IntegrityError

    from adapters.database import event_store_env
    from ledger.distribution.application import Distribution

    class CountingDistribution(Distribution):
        name = "distribution"  # the same event table as the real application

        def __init__(self, env: Any = None) -> None:
            super().__init__(env)
            self.stats_lock = threading.Lock()
            self.events_stored = 0
            self.conflicts = 0

        def save(self, *objs: Any, **kwargs: Any) -> Any:
            try:
                recordings = super().save(*objs, **kwargs)
            except IntegrityError:
                with self.stats_lock:
                    self.conflicts += 1
                raise
            with self.stats_lock:
                self.events_stored += len(recordings)
            return recordings

    return CountingDistribution(env=event_store_env(url))


# ---------------------------------------------------------------------------------------------
# Set-up through the application


@dataclass
class Layout:
    platform_id: uuid.UUID
    product_id: uuid.UUID
    parents: list[uuid.UUID]  # C top-level channels
    children: list[uuid.UUID]  # child i below parents[i]
    shared_parent: uuid.UUID  # one more top-level channel ...
    shared_children: list[uuid.UUID]  # ... with C sub-channels
    shared_lots: int  # lots of LOT units the shared parent bought

    def buyers(self, scenario: str) -> list[uuid.UUID]:
        if scenario.startswith("own"):
            return self.children
        if scenario.startswith("shared"):
            return self.shared_children
        return self.parents


def set_up(app: Any, clients: int, shared_lots: int) -> Layout:
    from ledger.money import Money

    def new_id() -> uuid.UUID:
        return uuid.uuid4()

    platform_id, product_id = new_id(), new_id()
    app.register_platform(platform_id, "Bench Video", "http://127.0.0.1:9/gateway")
    app.register_product(
        product_id, platform_id, "VIP month", 30, Money(3000), Money(WHOLESALE_COST)
    )

    def top_level(name: str, lots: int) -> uuid.UUID:
        channel_id = new_id()
        app.register_channel(channel_id, name)
        app.deposit(new_id(), channel_id, Money(FUNDS))
        for _ in range(lots):
            app.purchase_stock(new_id(), channel_id, product_id, LOT)
        app.set_price(channel_id, product_id, Money(CHILD_PRICE))
        return channel_id

    def sub_channel(name: str, parent_id: uuid.UUID) -> uuid.UUID:
        channel_id = new_id()
        app.register_channel(channel_id, name, parent_id)
        app.deposit(new_id(), channel_id, Money(FUNDS))
        return channel_id

    parents = [top_level(f"Agent {i}", 1) for i in range(clients)]
    children = [sub_channel(f"Shop {i}", parent) for i, parent in enumerate(parents)]
    shared_parent = top_level("Agent shared", shared_lots)
    shared_children = [sub_channel(f"Shared shop {i}", shared_parent) for i in range(clients)]
    return Layout(
        platform_id, product_id, parents, children, shared_parent, shared_children, shared_lots
    )


# ---------------------------------------------------------------------------------------------
# Clients


@dataclass
class ClientResult:
    ok: int = 0
    warmup: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    cpu: float = 0.0  # CPU seconds of the client process in the window (processes only)
    statements: int = 0  # SQL statements the client's purchases sent (BEGIN/COMMIT included)
    error: str | None = None


_client = threading.local()


def count_statements() -> None:
    """Count every statement psycopg sends from a client thread while it buys (each execute,
    each parameter set of an executemany, each BEGIN/COMMIT a transaction block sends), as
    benchmarks/statement_counter does for whole processes; the watcher's samples not counted."""
    import psycopg

    if getattr(psycopg.Cursor.execute, "counted", False):
        return
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    command = psycopg.Connection._exec_command

    def add(n: int) -> None:
        if getattr(_client, "buying", False):
            _client.statements += n

    def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        add(1)
        return execute(self, *args, **kwargs)

    def counted_executemany(self: Any, query: Any, params_seq: Any, *a: Any, **k: Any) -> Any:
        params_seq = list(params_seq)
        add(len(params_seq))
        return executemany(self, query, params_seq, *a, **k)

    def counted_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        add(1)
        return command(self, *args, **kwargs)

    counted_execute.counted = True  # type: ignore[attr-defined]
    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign]
    psycopg.Connection._exec_command = counted_command  # type: ignore[method-assign]


def buy_for(
    app: Any, channel_id: uuid.UUID, product_id: uuid.UUID, seconds: float, counter: Any
) -> ClientResult:
    """Buy 1 unit at a time for `channel_id` until `seconds` have passed."""
    from ledger.commands import ConflictPersisted
    from ledger.errors import DomainError

    count_statements()
    result = ClientResult()
    _client.buying, _client.statements = True, 0
    result.started = time.monotonic()
    deadline = result.started + seconds
    clock = time.perf_counter
    while time.monotonic() < deadline:
        began = clock()
        try:
            app.purchase_stock(uuid.uuid4(), channel_id, product_id, 1)
        except (DomainError, ConflictPersisted) as refusal:
            result.refused[refusal.code] += 1
        else:
            result.latencies.append(clock() - began)
            result.ok += 1
        with counter.get_lock():
            counter.value += 1
    result.ended = time.monotonic()
    _client.buying = False
    result.statements = _client.statements
    return result


def warm_up(app: Any, channel_id: uuid.UUID, product_id: uuid.UUID) -> int:
    """Fill the connection pool and the aggregate cache with two purchases outside the window."""
    for _ in range(2):
        app.purchase_stock(uuid.uuid4(), channel_id, product_id, 1)
    return 2


def process_client(
    url: str,
    channel_id: uuid.UUID,
    product_id: uuid.UUID,
    seconds: float,
    counter: Any,
    barrier: Any,
    results: Any,
    starting: Any,
) -> None:
    """One client process: its own Distribution, warm up, wait for the others, buy, report."""
    app = None
    try:
        import adapters.database  # noqa: F401  imports outside the start-up lock
        import ledger.distribution.application  # noqa: F401

        # One at a time: with CREATE_TABLE=y every new application runs CREATE TABLE/INDEX IF NOT
        # EXISTS, and several processes doing so at once can fail with "tuple concurrently
        # updated" (seen here with 2 processes).
        with starting:
            app = counting_distribution(url)
        warmed = warm_up(app, channel_id, product_id)
        barrier.wait(timeout=120)
        events, conflicts = app.events_stored, app.conflicts
        cpu = time.process_time()
        result = buy_for(app, channel_id, product_id, seconds, counter)
        result.cpu = time.process_time() - cpu
        result.warmup = warmed
        results.put((result, app.events_stored - events, app.conflicts - conflicts))
    except BaseException:  # report rather than leave the parent waiting
        with contextlib.suppress(Exception):
            barrier.abort()
        results.put((ClientResult(error=traceback.format_exc()), 0, 0))
    finally:
        if app is not None:
            app.close()


# ---------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Outcome:
    scenario: str
    clients: int
    ok: int
    window: float
    events: int
    conflicts: int
    refused: Counter[str]
    latencies: list[float]
    warmup: int
    client_cpu: float = 0.0  # CPU seconds the clients (Python) spent in the window
    statements: int = 0  # statements the clients sent in the window
    observed: Observed | None = None

    @property
    def ops(self) -> float:
        return self.ok / self.window

    @property
    def events_per_second(self) -> float:
        return self.events / self.window

    def percentile_ms(self, p: int) -> float:
        if len(self.latencies) < 2:
            return math.nan
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


def combine(
    scenario: str, parts: list[tuple[ClientResult, int, int]], events: int, conflicts: int
) -> Outcome:
    errors = [r.error for r, _, _ in parts if r.error]
    if errors:
        raise RuntimeError(f"{scenario}: a client failed:\n{errors[0]}")
    results = [r for r, _, _ in parts]
    refused: Counter[str] = Counter()
    for r in results:
        refused.update(r.refused)
    return Outcome(
        scenario=scenario,
        clients=len(results),
        ok=sum(r.ok for r in results),
        window=max(r.ended for r in results) - min(r.started for r in results),
        events=events,
        conflicts=conflicts,
        refused=refused,
        latencies=[x for r in results for x in r.latencies],
        warmup=sum(r.warmup for r in results),
        client_cpu=sum(r.cpu for r in results),
        statements=sum(r.statements for r in results),
    )


def machine_cpu() -> tuple[float, float] | None:
    """Busy and total jiffies of all CPUs (Linux), to tell CPU-bound from waiting."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return float(sum(fields) - idle), float(sum(fields))


@dataclass
class Observed:
    """What the server's sessions of the ledger database were doing, sampled every 0.1 s."""

    samples: int = 0
    lock_waiting: float = 0.0  # mean sessions waiting for a relation lock (the table lock)
    active: float = 0.0  # mean sessions running a statement (incl. waiting)
    lock_held: float = 0.0  # share of samples in which a session held the EXCLUSIVE table lock
    cpu_busy: float = math.nan  # share of all the machine's CPUs busy in the window

    def add(self, waiting: int, active: int, held: int) -> None:
        self.samples += 1
        self.lock_waiting += (waiting - self.lock_waiting) / self.samples
        self.active += (active - self.active) / self.samples
        self.lock_held += (min(held, 1) - self.lock_held) / self.samples


SESSIONS = """
    SELECT (SELECT count(*) FROM pg_stat_activity
            WHERE datname = %(db)s AND wait_event_type = 'Lock' AND wait_event = 'relation'),
           (SELECT count(*) FROM pg_stat_activity
            WHERE datname = %(db)s AND state = 'active'),
           (SELECT count(*) FROM pg_locks
            WHERE locktype = 'relation' AND mode = 'ExclusiveLock' AND granted
              AND database = (SELECT oid FROM pg_database WHERE datname = %(db)s))
"""


def watch(
    progress: Any, task: Any, counter: Any, seconds: float, alive: Any, admin_url: str, db: str
) -> Observed:
    """Move the progress bar, sample the server's sessions and the machine's CPUs."""
    import psycopg

    observed = Observed()
    cpu_before = machine_cpu()
    begun = time.monotonic()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while alive():
            waiting, active, held = conn.execute(SESSIONS, {"db": db}).fetchone() or (0, 0, 0)
            observed.add(waiting, active, held)
            elapsed = time.monotonic() - begun
            progress.update(
                task,
                completed=min(elapsed, seconds),
                ops=f"{counter.value} purchases, {waiting} waiting for the table lock",
            )
            time.sleep(0.1)
    cpu_after = machine_cpu()
    if cpu_before and cpu_after:
        busy = cpu_after[0] - cpu_before[0]
        observed.cpu_busy = busy / max(cpu_after[1] - cpu_before[1], 1.0)
    progress.update(task, completed=seconds, ops=f"{counter.value} purchases")
    return observed


def run_threads(
    scenario: str, url: str, layout: Layout, seconds: float, progress: Any, task: Any, admin: str
) -> Outcome:
    buyers = layout.buyers(scenario)
    db = urlsplit(url).path.lstrip("/")
    app = counting_distribution(url)
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", 0)
    try:
        warmed = sum(warm_up(app, b, layout.product_id) for b in buyers)
        barrier = threading.Barrier(len(buyers) + 1)
        parts: list[ClientResult | None] = [None] * len(buyers)

        def client(i: int) -> None:
            try:
                barrier.wait(timeout=60)
                parts[i] = buy_for(app, buyers[i], layout.product_id, seconds, counter)
            except BaseException:
                parts[i] = ClientResult(error=traceback.format_exc())

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(buyers))]
        for t in threads:
            t.start()
        events, conflicts = app.events_stored, app.conflicts
        barrier.wait(timeout=60)
        cpu = time.process_time()
        observed = watch(
            progress, task, counter, seconds, lambda: any(t.is_alive() for t in threads), admin, db
        )
        for t in threads:
            t.join()
        cpu = time.process_time() - cpu
        outcome = combine(
            scenario,
            [(p or ClientResult(error="no result"), 0, 0) for p in parts],
            app.events_stored - events,
            app.conflicts - conflicts,
        )
        outcome.warmup, outcome.client_cpu, outcome.observed = warmed, cpu, observed
        outcome.statements = sum(p.statements for p in parts if p is not None)
        return outcome
    finally:
        app.close()


def run_processes(
    scenario: str, url: str, layout: Layout, seconds: float, progress: Any, task: Any, admin: str
) -> Outcome:
    buyers = layout.buyers(scenario)
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", 0)
    barrier = ctx.Barrier(len(buyers) + 1)
    results = ctx.Queue()
    starting = ctx.Lock()
    procs = [
        ctx.Process(
            target=process_client,
            args=(url, b, layout.product_id, seconds, counter, barrier, results, starting),
            daemon=True,
        )
        for b in buyers
    ]
    for p in procs:
        p.start()
    progress.update(task, ops="starting processes")
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=120)  # if a client failed, its report says why
    parts: list[tuple[ClientResult, int, int]] = []
    done = threading.Event()
    observed: list[Observed] = []
    db = urlsplit(url).path.lstrip("/")
    watcher = threading.Thread(
        target=lambda: observed.append(
            watch(progress, task, counter, seconds, lambda: not done.is_set(), admin, db)
        )
    )
    watcher.start()
    try:
        for _ in procs:
            parts.append(results.get(timeout=seconds + 120))
    finally:
        done.set()
        watcher.join()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    outcome = combine(
        scenario, parts, sum(events for _, events, _ in parts), sum(c for _, _, c in parts)
    )
    outcome.observed = observed[0] if observed else None
    return outcome


# ---------------------------------------------------------------------------------------------
# pgbench and scratch databases


TPS_LINE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
PROGRESS_LINE = re.compile(r"^progress: ([0-9.]+) s, ([0-9.]+) tps")


def run_pgbench(
    pgbench: str,
    admin_url: str,
    dbname: str,
    scale: int,
    clients: int,
    seconds: int,
    progress: Any,
    init_task: Any,
    run_task: Any,
) -> tuple[float, float]:
    """Initialise at `scale`, run the built-in tpcb-like script; return TPS and CPU busy."""
    conn_args, env = pgbench_args(admin_url)
    progress.start_task(init_task)
    init = subprocess.run(
        [pgbench, "-i", "-q", "-s", str(scale), *conn_args, dbname],
        env=env,
        capture_output=True,
        text=True,
    )
    if init.returncode:
        raise RuntimeError(f"pgbench -i failed:\n{init.stderr}")
    progress.update(init_task, completed=1)
    progress.start_task(run_task)
    cpu_before = machine_cpu()
    cmd = [pgbench, "-c", str(clients), "-j", str(clients), "-T", str(seconds), "-P", "1"]
    run = subprocess.Popen(
        [*cmd, *conn_args, dbname],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None and run.stdout is not None
    stderr_lines = []
    for line in run.stderr:  # pgbench -P writes progress to stderr once a second
        stderr_lines.append(line)
        if m := PROGRESS_LINE.match(line):
            progress.update(run_task, completed=float(m[1]), ops=f"{float(m[2]):.0f} tps")
    out = run.stdout.read()
    if run.wait():
        raise RuntimeError(f"pgbench failed:\n{''.join(stderr_lines)}\n{out}")
    cpu_after = machine_cpu()
    cpu_busy = math.nan
    if cpu_before and cpu_after:
        cpu_busy = (cpu_after[0] - cpu_before[0]) / max(cpu_after[1] - cpu_before[1], 1.0)
    progress.update(run_task, completed=seconds)
    m = TPS_LINE.search(out)
    if not m:
        raise RuntimeError(f"no TPS in pgbench's output:\n{out}")
    return float(m[1]), cpu_busy


# ---------------------------------------------------------------------------------------------
# Consistency: units are conserved and every counted purchase is in the ledger


def check_ledger(url: str, layout: Layout, outcomes: list[Outcome]) -> str:
    app = counting_distribution(url)
    try:
        bought: Counter[str] = Counter()
        for o in outcomes:
            bought[o.scenario.split("-")[0]] += o.ok + o.warmup

        def units(channel_ids: list[uuid.UUID]) -> int:
            return sum(app.channel(c).stock_of(layout.product_id) for c in channel_ids)

        problems = []
        own_parents, own_children = units(layout.parents), units(layout.children)
        if own_children != bought["own"]:
            problems.append(f"own: counted {bought['own']}, sub-channels hold {own_children}")
        if own_parents + own_children != len(layout.parents) * LOT + bought["top"]:
            problems.append("own: units not conserved between parents and sub-channels")
        shared_parent = units([layout.shared_parent])
        shared_children = units(layout.shared_children)
        if shared_children != bought["shared"]:
            problems.append(f"shared: counted {bought['shared']}, ledger has {shared_children}")
        if shared_parent + shared_children != layout.shared_lots * LOT:
            problems.append("shared: units not conserved between the parent and sub-channels")
        if problems:
            return "ledger check FAILED: " + "; ".join(problems)
        return (
            f"ledger check: OK (every counted purchase, {sum(bought.values())} with warm-ups, "
            "is in the ledger; units conserved)"
        )
    finally:
        app.close()


# ---------------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="clients (threads, processes)")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each measurement")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin URL")
    parser.add_argument(
        "--scale", type=int, default=None, help="pgbench scale (default: the client count)"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--pgbench", default=shutil.which("pgbench") or "/usr/bin/pgbench")
    args = parser.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or args.clients < 1 or args.seconds < 1:
        parser.error(f"unknown scenarios {unknown}" if unknown else "clients, seconds must be >= 1")
    scale = args.scale or args.clients

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from api.runtime.schema import apply_migrations

    console = Console()
    if not console.is_terminal:
        console.width = 180  # piped into a file: keep the table's columns whole
    admin = args.database_url
    suffix = uuid.uuid4().hex[:8]
    ledger_db, pgbench_db = f"bench_ledger_{suffix}", f"bench_pgbench_{suffix}"
    created: list[str] = []
    outcomes: list[Outcome] = []
    console.print(
        f"[bold]Stock purchases vs pgbench[/]: {args.clients} clients, {args.seconds} s each, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"{server_facts(admin)}"
    )
    # Enough stock for the shared parent to sell at 4,000 purchases/s.
    shared_lots = max(1, math.ceil(4000 * args.seconds * 2 / LOT))
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.completed:>5.1f}/{task.total:.0f}"),
        TextColumn("{task.fields[ops]}"),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress:
            setup = progress.add_task("set-up (application)", total=1, ops="")
            pg_init = progress.add_task(f"pgbench -i -s {scale}", total=1, ops="", start=False)
            pg_run = progress.add_task(
                f"pgbench -c {args.clients} -j {args.clients}",
                total=args.seconds,
                ops="",
                start=False,
            )
            tasks = {
                s: progress.add_task(s, total=args.seconds, ops="waiting", start=False)
                for s in scenarios
            }

            url = create_database(admin, ledger_db)
            created.append(ledger_db)
            apply_migrations(url)
            app = counting_distribution(url)
            try:
                layout = set_up(app, args.clients, shared_lots)
            finally:
                app.close()
            progress.update(setup, completed=1, ops=f"{app.events_stored} events")

            create_database(admin, pgbench_db)
            created.append(pgbench_db)
            tps, pgbench_cpu = run_pgbench(
                args.pgbench,
                admin,
                pgbench_db,
                scale,
                args.clients,
                args.seconds,
                progress,
                pg_init,
                pg_run,
            )

            for scenario in scenarios:
                progress.start_task(tasks[scenario])
                runner = run_threads if scenario.endswith("threads") else run_processes
                outcomes.append(
                    runner(scenario, url, layout, args.seconds, progress, tasks[scenario], admin)
                )
            check = check_ledger(url, layout, outcomes)
    finally:
        for name in created:
            drop_database(admin, name)

    table = Table(
        title=f"Stock purchases (1 unit each) through Distribution vs pgbench tpcb-like, "
        f"{args.clients} clients, {args.seconds} s",
    )
    columns = ["scenario", "clients", "ops/s", "events/s", "p50 ms", "p99 ms", "conflicts"]
    columns += [
        "refused",
        "lock held",
        "lock ms/op",
        "lock waiters",
        "CPU busy",
        "client CPU ms/op",
        "statements/op",
        "pgbench TPS",
        "ratio",
    ]
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for o in outcomes:
        refused = ", ".join(f"{n} {code}" for code, n in sorted(o.refused.items())) or "0"
        seen = o.observed or Observed()
        table.add_row(
            o.scenario,
            str(o.clients),
            f"{o.ops:,.0f}",
            f"{o.events_per_second:,.0f}",
            f"{o.percentile_ms(50):.1f}",
            f"{o.percentile_ms(99):.1f}",
            str(o.conflicts),
            refused,
            f"{seen.lock_held:.0%}",
            f"{seen.lock_held * o.window / max(o.ok, 1) * 1000:.1f}",
            f"{seen.lock_waiting:.1f}",
            f"{seen.cpu_busy:.0%}",
            f"{o.client_cpu / max(o.ok, 1) * 1000:.1f}",
            f"{o.statements / max(o.ok, 1):.2f}",
            f"{tps:,.0f}",
            f"{o.ops / tps:.3f}",
        )
    console.print(table)
    console.print(
        "ops/s: purchases that succeeded ÷ the measured window; events/s: events stored in the "
        "window; conflicts: saves that lost the race for an aggregate's next version and were "
        "decided again (not failures); refused: purchases that failed; lock held: share of samples "
        "(every 0.1 s) in which a session held the event table's EXCLUSIVE lock; lock ms/op: "
        "lock held × window ÷ purchases; lock waiters: mean sessions waiting for it; CPU busy: "
        "all of the machine's CPUs, clients and server together; client CPU ms/op: Python's CPU "
        "time per purchase; statements/op: SQL statements the clients sent in the window "
        "(reads, saves, retries and refusals included) ÷ purchases; ratio: ops/s ÷ pgbench TPS "
        f"(tpcb-like, scale {scale}, same server, same run; machine CPU busy {pgbench_cpu:.0%})."
    )
    console.print(check)
    return 0 if check.startswith("ledger check: OK") else 1


if __name__ == "__main__":
    sys.exit(main())
