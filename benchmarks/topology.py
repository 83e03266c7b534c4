#!/usr/bin/env python
"""Recharges on the production topology, stage by stage, beside pgbench's TPS on the same server.

    python benchmarks/topology.py [--recharges 5000] [--clients 16] [--api-processes 2]
                                  [--source DIR] [--statements N] [--readme benchmarks/README.md]

Everything runs on a private PostgreSQL cluster of the run's own (initdb and pg_ctl on a free
port; fsync and synchronous_commit on, autovacuum off, 128 MB shared buffers, as the shared
server), stopped and deleted at the end, and a RabbitMQ vhost of the run's own, deleted too.

1. pgbench's built-in TPC-B-like script (`-i -s C`, then `-c C -j C -T seconds`): the yardstick.
2. The production topology from the checkout's deploy/Procfile and HAProxy template, parsed and
   rendered by its scripts/cluster: N `ledger serve` (LEDGER_RUN_PROJECTIONS=false) behind
   HAProxy, and every other kind of the Procfile once (today `ledger projections run`: views,
   saga starter, outbox dispatcher, sweeper; `ledger worker` on RabbitMQ), and `ledger
   sandbox-platform` in its own process. Each kind connects as a database role named after it.
   Set-up over HTTP through the balancer (benchmarks/recharges.py's).
3. Recharge stages, C client threads each on an HTTP connection of its own, signed
   POST /v1/recharges (one code, one account each):
   - alone: every process but the API's, the balancer and the platform stopped (SIGSTOP): the
     acceptance by itself;
   - peak: everything running, back to back: accepted/s, and completed/s (every recharge of the
     stage Succeeded, from its first 202); "peak, end to end" is the same work watched until the
     last one succeeded and its code was redeemed (each stage waits for that before the next);
   - half of peak: open loop at half of the peak's accepted/s (a request is due every 1/rate s;
     its latency counts from when it was due, so a server falling behind shows);
   For the peak stage, where a recharge's time goes: from each of its events to the next
   (code reserved, saga started, step scheduled, platform answered, succeeded, code redeemed;
   the events' timestamps), p50/p99 and the mean over the stage's first and last tenth.
   For each: p50/p99 of the 202s; saves into each event table (the transactions that inserted
   its rows: distinct xmin); its EXCLUSIVE lock sampled in pg_locks every 20 ms (lock ms per
   save = share of samples held x time watched / saves); CPU ms per recharge of every process
   (psutil; PostgreSQL: every backend, exited ones included).
   - counted: log_statement=all (every statement, simple or extended protocol, prepared or
     not, with its role) for a few idle seconds, then for recharges until every one succeeded
     and its code was redeemed: statements per acceptance (api) and per recharge (all roles).
     pg_stat_statements cannot do this: it misses utility statements (LOCK TABLE, SET LOCAL)
     once psycopg prepares them.
4. Shared-card consumptions through the balancer (benchmarks/cards.py's phases).
5. Stock purchases through the Distribution application in processes of their own, with no
   topology running (benchmarks/stock_purchases.py's own-processes and shared-processes).
6. The books: every accepted recharge Succeeded exactly once and credited exactly once at the
   sandbox platform, every code reserved and redeemed once, every counted purchase in the ledger
   with units conserved, the trial balance zero once every view caught up.

`--source DIR` runs every process (and the in-process stock purchases) from DIR/src with this
virtualenv: measure another checkout (`git worktree add /tmp/before <commit>`) the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from recharges import (
    Acceptance,
    Channel,
    Client,
    Prepared,
    Process,
    free_port,
    in_parallel,
    ledger_command,
    operator_token,
    run_pgbench,
    sandbox_env,
    start,
    wait_until,
)
from recharges import set_up as set_up_recharges
from scratch import create_database, server_facts

ROOT = Path(__file__).resolve().parent.parent
KNOWN = {  # what the Procfile's kinds of process do, and when each is ready
    "api": ("ledger serve: the acceptance", None),
    "projections": ("the views; with no sagas kind, the sagas too", "runners"),
    "sagas": ("saga starter, dispatcher, sweepers", "runners"),
    "worker": ("ledger worker: the partner calls", "worker on"),
}
OBSERVER = "observer"  # the benchmark's own queries, kept out of the counts
SAMPLE_SECONDS = 0.02
IDLE_SECONDS = 3.0
SETTLE_SECONDS = 3.0
LOCKED_TABLES = ("distribution_events", "recharges_events")


# ---------------------------------------------------------------------------------------------
# a PostgreSQL cluster of the run's own


def postgres_bin() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        folder = Path(found.stdout.strip())
        if (folder / "initdb").exists():
            return folder
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise RuntimeError("no initdb/pg_ctl on this machine")
    return candidates[-1].parent


@dataclass
class Server:
    """initdb + pg_ctl on a free port in a temporary folder (as user postgres when root)."""

    folder: Path
    port: int
    bin: Path

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def run(self, *command: str, check: bool = True) -> None:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if check and done.returncode:
            raise RuntimeError(f"{command[0]} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--no-sync")  # fmt: skip
        # the shared server's settings (fsync, synchronous_commit on, autovacuum off, 128 MB)
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c fsync=on -c synchronous_commit=on -c autovacuum=off -c shared_buffers=128MB "
            "-c max_connections=400"
        )
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"),
                 "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {OBSERVER} LOGIN SUPERUSER")

    def add_role(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{name}" LOGIN SUPERUSER')

    @property
    def log(self) -> Path:
        return self.folder / "log"

    def log_statements(self, on: bool) -> None:
        """Every statement executed (simple or extended protocol, prepared or not) logged with
        its role, or none; every session takes the change before its next statement."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            if on:
                conn.execute("ALTER SYSTEM SET log_line_prefix = '%m|%u|%d| '")
                conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            else:
                conn.execute("ALTER SYSTEM RESET log_statement")
                conn.execute("ALTER SYSTEM RESET log_line_prefix")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)

    def stop(self) -> None:
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop",
                 check=False)  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)

    def lsn(self) -> str:
        with psycopg.connect(self.url(user=OBSERVER), autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        return str(row[0]) if row else "0/0"

    def commits(self, start: str, end: str) -> int | None:
        """Commit records written to the WAL between two positions: the transactions that
        wrote something and waited for their flush (read-only ones write none)."""
        done = subprocess.run(
            [str(self.bin / "pg_waldump"), "-p", str(self.data / "pg_wal"), "-s", start, "-e", end,
             "--stats=record"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        found = re.search(r"^Transaction/COMMIT\s+(\d+)", done.stdout, re.M)
        if found:
            return int(found[1])
        return 0 if done.returncode == 0 else None

    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])


def private_server() -> Server:
    folder = Path(tempfile.mkdtemp(prefix="bench-topology-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = Server(folder, free_port(), postgres_bin())
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------------------------------------
# a RabbitMQ vhost of the run's own


def rabbitmq_vhost(name: str) -> str:
    for command in (
        ["add_vhost", name],
        ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", *command], check=True, capture_output=True, timeout=60)
    return f"amqp://guest:guest@127.0.0.1:5672/{name}"


def drop_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# the topology, from the checkout's Procfile (scripts/cluster's own parsing and rendering)


def load_cluster_script(source: Path) -> ModuleType:
    path = source / "scripts" / "cluster"
    loader = importlib.machinery.SourceFileLoader("ledger_cluster_script", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # its dataclasses look themselves up there
    loader.exec_module(module)
    return module


@dataclass
class Topology:
    """The processes by name (api-1 … api-N, projections, worker, balancer, platform)."""

    processes: dict[str, Process] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    roles: list[str] = field(default_factory=list)  # the Procfile's kinds that use the database
    background: list[str] = field(default_factory=list)  # every process but the API's
    run_dir: Path | None = None  # haproxy.cfg

    def pids(self) -> dict[str, int]:
        return {name: p.popen.pid for name, p in self.processes.items()}

    def pause(self, *names: str) -> None:
        for name in names:
            self.processes[name].popen.send_signal(signal.SIGSTOP)
            self.paused.add(name)

    def resume(self) -> None:
        for name in sorted(self.paused):
            self.processes[name].popen.send_signal(signal.SIGCONT)
        self.paused.clear()

    def alive(self) -> None:
        for name, process in self.processes.items():
            if process.popen.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{process.output()}")

    def stop(self) -> None:
        self.resume()
        for process in reversed(list(self.processes.values())):
            process.stop()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def topology_env(
    db_url: str, broker: str, platform_port: int, worker_threads: int, deadline_seconds: int
) -> dict[str, str]:
    """Every process's environment: the sandbox platform of its own process, no limit that a
    benchmark's clients would meet (one channel, many accounts, as fast as they go)."""
    return sandbox_env(db_url, platform_port, deadline_seconds, broker=broker,
                       worker_threads=worker_threads)  # fmt: skip


def start_argv(name: str, argv: list[str], env: dict[str, str]) -> Process:
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Process(name, popen, log)


def start_topology(
    source: Path, server: Server, db: str, env: dict[str, str], api_processes: int, port: int
) -> Topology:
    import httpx

    cluster = load_cluster_script(source)
    lines = cluster.procfile(source / "deploy" / "Procfile")
    topology = Topology(roles=["api"])
    server.add_role("api")
    run_dir = topology.run_dir = Path(tempfile.mkdtemp(prefix="bench-topology-run-"))
    platform_port = int(env["LEDGER_SANDBOX_PLATFORM_PORT"])
    platform = start("platform", ["sandbox-platform", "--port", str(platform_port)], env)
    topology.processes["platform"] = platform
    wait_until(
        platform,
        lambda: httpx.get(f"http://127.0.0.1:{platform_port}/sandbox/faults").is_success,
    )

    def launch(name: str, line: str, role: str | None, values: dict[str, str]) -> Process:
        argv, assigned = cluster.command_of(line, values)
        own = env | assigned
        if role:
            own["DATABASE_URL"] = server.url(db, role)
        process = start_argv(name, argv, own)
        topology.processes[name] = process
        return process

    api_ports = [free_port() for _ in range(api_processes)]
    for i, api_port in enumerate(api_ports, start=1):
        api = launch(f"api-{i}", lines["api"], "api", {"PORT": str(api_port)})
        wait_until(
            api, lambda p=api_port: httpx.get(f"http://127.0.0.1:{p}/health/ready").is_success
        )
    # every other kind of the Procfile (projections, worker, any added later) once, each
    # connecting as a role named after it
    for kind, line in lines.items():
        if kind in ("api", "balancer"):
            continue
        server.add_role(kind)
        topology.roles.append(kind)
        topology.background.append(kind)
        process = launch(kind, line, kind, {})
        marker = KNOWN.get(kind, (kind, None))[1]
        begun = time.monotonic()
        wait_until(
            process,
            lambda p=process, m=marker, t=begun: (
                (m in p.output()) if m else time.monotonic() > t + 3
            ),
        )
    config = run_dir / "haproxy.cfg"
    config.write_text(cluster.render_haproxy(port, api_ports, 1000))
    balancer = launch("balancer", lines["balancer"], None, {"HAPROXY_CFG": str(config)})
    wait_until(
        balancer, lambda: httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200
    )
    return topology


# ---------------------------------------------------------------------------------------------
# what the server and the processes did: statements, the table locks, CPU


LOGGED = re.compile(r"^[^|]*\|(\w*)\|(\w*)\| LOG:  (?:statement|execute [^:]*): (.*)$")


@dataclass
class Statements:
    """Statements executed in the ledger database while log_statement=all, by role and text."""

    calls: dict[tuple[str, str], int] = field(default_factory=dict)  # (role, text) -> calls
    seconds: float = 0.0

    @staticmethod
    def read(log: Path, offset: int, db: str, seconds: float) -> Statements:
        found = Statements(seconds=seconds)
        with log.open(errors="replace") as lines:
            lines.seek(offset)
            for line in lines:
                if (m := LOGGED.match(line)) and m[2] == db and m[1] != OBSERVER:
                    text = " ".join(m[3].split())[:140] or "(a statement begun on a new line)"
                    key = (m[1], text)
                    found.calls[key] = found.calls.get(key, 0) + 1
        return found

    def of(self, role: str) -> int:
        return sum(n for (r, _), n in self.calls.items() if r == role)

    def top(self, role: str, n: int) -> list[tuple[int, str]]:
        mine = [(calls, q) for (r, q), calls in self.calls.items() if r == role]
        return sorted(mine, key=lambda c: (-c[0], c[1]))[:n]


@dataclass
class LockSamples:
    """How often a session held (and waited for) each event table's EXCLUSIVE lock."""

    samples: int = 0
    held: dict[str, int] = field(default_factory=dict)
    held_by: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, role)
    waiting: dict[str, int] = field(default_factory=dict)

    def share(self, table: str) -> float:
        return self.held.get(table, 0) / self.samples if self.samples else math.nan

    def holders(self, table: str) -> str:
        """Who held it, as shares of all samples: which process kind's saves take the time."""
        shares = sorted(
            ((n / self.samples, role) for (t, role), n in self.held_by.items() if t == table),
            reverse=True,
        )
        return " ".join(f"{role} {share:.0%}" for share, role in shares if share >= 0.005)

    def waiters(self, table: str) -> float:
        return self.waiting.get(table, 0) / self.samples if self.samples else math.nan


class LockSampler:
    """Samples pg_locks every SAMPLE_SECONDS in a thread, between start() and stop()."""

    def __init__(self, observer_url: str, db_url_as_observer: str) -> None:
        self.url = observer_url
        with psycopg.connect(db_url_as_observer, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT c.oid, c.relname FROM pg_class c WHERE c.relname = ANY(%s)",
                (list(LOCKED_TABLES),),
            ).fetchall()
            row = conn.execute(
                "SELECT oid FROM pg_database WHERE datname = current_database()"
            ).fetchone()
        self.tables = {int(oid): name for oid, name in rows}
        self.database = int(row[0]) if row else 0
        self.result = LockSamples()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.result, self.stopping = LockSamples(), threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def stop(self) -> LockSamples:
        self.stopping.set()
        if self.thread:
            self.thread.join()
        return self.result

    def loop(self) -> None:
        query = (
            "SELECT l.relation::bigint, l.granted, coalesce(a.usename, '?'), count(*) "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'relation' AND l.mode = 'ExclusiveLock' AND l.database = %s "
            "AND l.relation = ANY(%s) GROUP BY 1, 2, 3"
        )
        result = self.result
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopping.wait(SAMPLE_SECONDS):
                rows = conn.execute(query, (self.database, list(self.tables))).fetchall()
                result.samples += 1
                for oid, granted, role, n in rows:
                    name = self.tables[int(oid)]
                    if granted:  # one holder at a time: the lock is EXCLUSIVE
                        result.held[name] = result.held.get(name, 0) + 1
                        result.held_by[name, role] = result.held_by.get((name, role), 0) + 1
                    else:
                        result.waiting[name] = result.waiting.get(name, 0) + int(n)


def postgres_cpu(postmaster: int) -> tuple[float, dict[int, float]]:
    """The postmaster's own and reaped children's CPU seconds, and each live backend's."""
    import psutil

    main = psutil.Process(postmaster)
    times = main.cpu_times()
    own = times.user + times.system + times.children_user + times.children_system
    backends = {}
    for child in main.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            t = child.cpu_times()
            backends[child.pid] = t.user + t.system
    return own, backends


@dataclass
class CpuSnapshot:
    processes: dict[str, float]
    postgres_own: float
    backends: dict[int, float]

    @staticmethod
    def take(pids: dict[str, int], postmaster: int) -> CpuSnapshot:
        import psutil

        seconds = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = psutil.Process(pid).cpu_times()
                seconds[name] = t.user + t.system
        t = psutil.Process().cpu_times()
        seconds["benchmark (clients)"] = t.user + t.system
        own, backends = postgres_cpu(postmaster)
        return CpuSnapshot(seconds, own, backends)

    def since(self, before: CpuSnapshot) -> dict[str, float]:
        spent = {n: s - before.processes.get(n, 0.0) for n, s in self.processes.items()}
        # a backend that exited is in the postmaster's children times, whole: take off what it
        # had spent before the window; a new one counts whole
        gone = sum(s for pid, s in before.backends.items() if pid not in self.backends)
        live = sum(s - before.backends.get(pid, 0.0) for pid, s in self.backends.items())
        spent["postgres (all backends)"] = self.postgres_own - before.postgres_own - gone + live
        return spent


# ---------------------------------------------------------------------------------------------
# the stages


@dataclass
class Stage:
    name: str
    acceptance: Acceptance
    locks: LockSamples | None = None
    saves: dict[str, int] = field(default_factory=dict)  # per event table: its transactions
    cpu: dict[str, float] = field(default_factory=dict)
    wall: float = math.nan  # seconds watched (locks sampled, CPU counted)
    commits: int | None = None  # WAL commit records: transactions that wrote and flushed
    completed: int = 0
    completed_seconds: float = math.nan
    rate: float | None = None  # open loop: the requests' rate

    @property
    def accepted(self) -> int:
        return len(self.acceptance.accepted)

    @property
    def completed_per_second(self) -> float:
        return self.completed / self.completed_seconds if self.completed_seconds > 0 else math.nan


def accept(
    base_url: str, channel: Channel, work: list[tuple[str, str, str]], clients: int,
    rate: float | None = None,
) -> Acceptance:  # fmt: skip
    """C clients send the work; back to back, or (rate) each request when it is due."""
    result = Acceptance()
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    cursor = [0]
    begun = [0.0]

    def client(_: int) -> None:
        http = Client(base_url, channel=channel)
        try:
            http.request("GET", "/health")  # open the connection outside the window
            if barrier.wait(timeout=60) == 0:
                begun[0] = time.monotonic()
            barrier.wait(timeout=60)
            while True:
                with lock:
                    i = cursor[0]
                    cursor[0] += 1
                if i >= len(work):
                    return
                due = begun[0] + i / rate if rate else None
                if due is not None and due > time.monotonic():
                    time.sleep(due - time.monotonic())
                code, account, verification = work[i]
                sent = time.monotonic()
                reply = http.request(
                    "POST",
                    "/v1/recharges",
                    {"code": code, "account": account, "verification_code": verification},
                )
                done = time.monotonic()
                with lock:
                    result.first_sent = min(result.first_sent, due or sent)
                    if reply.status_code == 202:
                        result.accepted.append((reply.json()["id"], account, done))
                        result.latencies.append(done - (due or sent))
                        result.sent.append(due or sent)
                        result.first_accepted = min(result.first_accepted, done)
                        result.last_accepted = max(result.last_accepted, done)
                    else:
                        refused = reply.json().get("code", str(reply.status_code))
                        result.refused[refused] = result.refused.get(refused, 0) + 1
        finally:
            http.close()
            with lock:
                result.resent += http.resent

    in_parallel(client, list(range(clients)))
    return result


def slowest_moments(acceptance: Acceptance, log: Path, log_from: int) -> str:
    """When the slowest 1 % of a stage's acceptances were sent (seconds into the stage), and
    the checkpoints the server logged meanwhile: whether the p99 is a few stalls or spread."""
    if len(acceptance.latencies) < 100:
        return ""
    start = min(acceptance.sent)
    ranked = sorted(zip(acceptance.latencies, acceptance.sent, strict=True), reverse=True)
    slow = sorted(ranked[: max(1, len(ranked) // 100)], key=lambda pair: pair[1])
    moments = ", ".join(f"+{at - start:.1f} s ({took * 1000:.0f} ms)" for took, at in slow)
    with log.open("rb") as file:
        file.seek(log_from)
        lines = file.read().decode(errors="replace").splitlines()
    checkpoints = [line for line in lines if "checkpoint" in line]
    return (
        f"half of peak, the slowest 1 % sent at: {moments}; checkpoints logged meanwhile: "
        + (str(len(checkpoints)) if checkpoints else "none")
    )


def count_topic(conn: psycopg.Connection[Any], table: str, topic: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table} WHERE topic LIKE %s", (f"%{topic}",))
    found = row.fetchone()
    return int(found[0]) if found else 0


def wait_succeeded(db_url: str, expected: int, timeout: float, topology: Topology) -> float:
    """When `expected` recharges had Succeeded in all (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            now = time.monotonic()
            if count_topic(conn, "recharges_events", "Recharge.Succeeded") >= expected:
                return now
            if now > deadline:
                raise RuntimeError(f"not every recharge succeeded within {timeout} s")
            topology.alive()
            time.sleep(0.02)


def heads(conn: psycopg.Connection[Any]) -> dict[str, int]:
    found = {}
    for table in LOCKED_TABLES:
        row = conn.execute(f"SELECT coalesce(max(notification_id), 0) FROM {table}").fetchone()
        found[table] = int(row[0]) if row else 0
    return found


def saves_between(conn: psycopg.Connection[Any], before: dict[str, int]) -> dict[str, int]:
    """Saves into each event table since `before`: the transactions that inserted its rows
    (distinct xmin), whatever the recorder's statements."""
    found = {}
    for table in LOCKED_TABLES:
        row = conn.execute(
            f"SELECT count(DISTINCT xmin::text) FROM {table} WHERE notification_id > %s",
            (before[table],),
        ).fetchone()
        found[table] = int(row[0]) if row else 0
    return found


HOPS = (
    ("distribution_events", "Code.Reserved", "accepted (code reserved)"),
    ("recharges_events", "Recharge.Requested", "saga started"),
    ("recharges_events", "Recharge.StepScheduled", "step scheduled"),
    ("recharges_events", "Recharge.StepCompleted", "platform answered (worker)"),
    ("recharges_events", "Recharge.Succeeded", "succeeded"),
    ("distribution_events", "Code.Redeemed", "code redeemed"),
)
"""A recharge's events in the order they happen; each hop is the time from one to the next."""


def event_moment(state: bytes) -> tuple[str | None, datetime]:
    """(the recharge id a code's event names, its timestamp) from an event's stored state."""
    decoded = json.loads(state)

    def plain(value: Any) -> Any:
        return value.get("_data_") if isinstance(value, dict) else value

    recharge = plain(decoded.get("recharge_id"))
    moment = datetime.fromisoformat(plain(decoded["timestamp"]))
    return (str(uuid.UUID(recharge)) if recharge else None), moment


@dataclass
class Hops:
    """How long a stage's recharges took between their events (the events' own timestamps:
    when each process decided), and how that grew from the stage's first tenth to its last."""

    names: list[str]
    gaps: list[list[float]]  # per hop, seconds, in the order the recharges were accepted
    recharges: int

    @classmethod
    def read(cls, db_url: str, before: dict[str, int]) -> Hops:
        moments: dict[str, dict[str, datetime]] = {}
        with psycopg.connect(db_url, autocommit=True) as conn:
            for table, topic, _ in HOPS:
                rows = conn.execute(
                    f"SELECT originator_id, state FROM {table} "
                    "WHERE notification_id > %s AND topic LIKE %s ORDER BY notification_id",
                    (before[table], f"%{topic}"),
                ).fetchall()
                for originator_id, state in rows:
                    named, moment = event_moment(bytes(state))
                    recharge = named if table == "distribution_events" else str(originator_id)
                    moments.setdefault(recharge or "", {}).setdefault(topic, moment)
        complete = [m for m in moments.values() if len(m) == len(HOPS)]
        complete.sort(key=lambda m: m[HOPS[0][1]])
        gaps = [
            [(m[b[1]] - m[a[1]]).total_seconds() for m in complete]
            for a, b in zip(HOPS, HOPS[1:], strict=False)
        ]
        names = [f"{a[2]} → {b[2]}" for a, b in zip(HOPS, HOPS[1:], strict=False)]
        return cls(names, gaps, len(complete))


def hops_table(title: str, hops: Hops) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("hop", "p50 ms", "p99 ms", "mean ms, first tenth", "mean ms, last tenth"):
        table.add_column(column, justify="left" if column == "hop" else "right")
    tenth = max(1, hops.recharges // 10)
    for name, gaps in zip(hops.names, hops.gaps, strict=True):
        ordered = sorted(gaps)
        table.add_row(
            name,
            f"{1000 * ordered[len(ordered) // 2]:,.1f}",
            f"{1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]:,.1f}",
            f"{1000 * sum(gaps[:tenth]) / tenth:,.1f}",
            f"{1000 * sum(gaps[-tenth:]) / tenth:,.1f}",
        )
    return table


def wait_redeemed(db_url: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while count_topic(conn, "distribution_events", "Code.Redeemed") < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every code redeemed within {timeout} s")
            time.sleep(0.05)


class Watch:
    """The table locks, the saves and CPU over one window."""

    def __init__(self, server: Server, db: str, pids: dict[str, int]):
        self.server, self.db, self.pids = server, db, pids
        self.url = server.url(db, OBSERVER)
        self.sampler = LockSampler(server.url(user=OBSERVER), self.url)

    def __enter__(self) -> Watch:
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.heads = heads(conn)
        self.cpu = CpuSnapshot.take(self.pids, self.server.postmaster())
        self.lsn = self.server.lsn()
        self.began = time.monotonic()
        self.sampler.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.locks = self.sampler.stop()
        self.wall = time.monotonic() - self.began
        self.cpu_spent = CpuSnapshot.take(self.pids, self.server.postmaster()).since(self.cpu)
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.saves = saves_between(conn, self.heads)
        self.commits = self.server.commits(self.lsn, self.server.lsn())

    def into(self, stage: Stage) -> Stage:
        stage.locks, stage.saves, stage.cpu, stage.wall, stage.commits = (
            self.locks, self.saves, self.cpu_spent, self.wall, self.commits,
        )  # fmt: skip
        return stage


# ---------------------------------------------------------------------------------------------
# shared cards and stock purchases, by the other benchmarks' own code


def shared_card_consumptions(api_url: str, env: dict[str, str], clients: int, n: int) -> Any:
    import cards

    parties = cards.set_up(api_url, operator_token(env), clients)
    bought = cards.Phase("cards bought")
    cards.run_phase(api_url, bought, parties, cards.buy_cards(1))
    if bought.refused:
        raise RuntimeError(f"cards refused: {bought.refused}")
    cards.share_cards(api_url, parties)
    phase = cards.Phase("shared-card consumptions (holder charged)")
    cards.run_phase(api_url, phase, parties, cards.consume(n, True))
    return phase


def stock_scenarios(admin_url: str, observer_admin: str, clients: int, seconds: int) -> Any:
    import stock_purchases
    from rich.progress import Progress, TextColumn

    from api.runtime.schema import apply_migrations

    db = f"bench_stock_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, db)
    apply_migrations(url)
    shared_lots = max(1, math.ceil(4000 * seconds * 2 / stock_purchases.LOT))
    app = stock_purchases.counting_distribution(url)
    try:
        layout = stock_purchases.set_up(app, clients, shared_lots)
    finally:
        app.close()
    outcomes = []
    progress = Progress(TextColumn("{task.description}"), TextColumn("{task.fields[ops]}"),
                        transient=True)  # fmt: skip
    with progress:
        for scenario in ("own-processes", "shared-processes"):
            task = progress.add_task(f"stock purchases, {scenario}", total=seconds, ops="")
            outcomes.append(
                stock_purchases.run_processes(
                    scenario, url, layout, seconds, progress, task, observer_admin
                )
            )
    check = stock_purchases.check_ledger(url, layout, outcomes)
    return outcomes, check


# ---------------------------------------------------------------------------------------------
# the books


def check_books(
    db_url: str, api_url: str, platform_url: str, tokens: dict[str, str], stages: list[Stage]
) -> list[str]:
    import httpx

    problems = []
    ids = {rid for s in stages for rid, _, _ in s.acceptance.accepted}
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT originator_id::text, count(*) FROM recharges_events "
            "WHERE topic LIKE %s GROUP BY 1",
            ("%Recharge.Succeeded",),
        ).fetchall()
        succeeded = {rid: int(n) for rid, n in rows}
        redeemed = count_topic(conn, "distribution_events", "Code.Redeemed")
        reserved = count_topic(conn, "distribution_events", "Code.Reserved")
    if set(succeeded) != ids or any(n != 1 for n in succeeded.values()):
        problems.append(
            f"Succeeded: {len(succeeded)} recharges for {len(ids)} accepted, "
            f"{sum(1 for n in succeeded.values() if n != 1)} more than once"
        )
    credits = httpx.get(f"{platform_url}/sandbox/credits", timeout=30).json()["credits"]
    per_order: dict[str, int] = {}
    for credit in credits:
        per_order[credit["order_no"]] = per_order.get(credit["order_no"], 0) + 1
    if set(per_order) != ids or any(n != 1 for n in per_order.values()):
        problems.append(f"platform: {len(per_order)} orders credited for {len(ids)} accepted")
    if redeemed != len(ids) or reserved != len(ids):
        problems.append(f"{reserved} codes reserved, {redeemed} redeemed for {len(ids)}")
    operator = Client(api_url, token=tokens["operator"])
    finance = Client(api_url, token=tokens["finance"])
    try:
        caught_up = time.monotonic() + 120
        while True:
            views = operator.ok("GET", "/v1/projections?limit=100", status=200)["items"]
            if all(v["lag"] == 0 for v in views):
                break
            if time.monotonic() > caught_up:
                problems.append("the views did not catch up within 120 s")
                break
            time.sleep(0.3)
        trial = finance.ok("GET", "/v1/ledger/trial-balance", status=200)
        if not trial["balanced"] or any(item["total"] != 0 for item in trial["items"]):
            problems.append("the trial balance is not zero")
    finally:
        operator.close()
        finance.close()
    return problems


# ---------------------------------------------------------------------------------------------
# the tables


def ms(value: float) -> str:
    return "" if math.isnan(value) else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def rates_table(title: str, tps: float, clients: int, seconds: int, rows: list[tuple]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("measure", "count", "seconds", "per second", "p50 ms", "p99 ms", "÷ pgbench"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row(f"pgbench TPS (tpcb-like, -c {clients} -j {clients})", "", str(seconds),
                  f"{tps:,.0f}", "", "", "1")  # fmt: skip
    for name, count, window, rate, p50, p99 in rows:
        table.add_row(
            name, f"{count:,}", f"{window:.1f}", f"{rate:,.1f}", ms(p50), ms(p99),
            f"{rate / tps:.4f}",
        )  # fmt: skip
    return table


def per(value: float, by: int) -> str:
    return f"{value / by:.1f}" if by else ""


def lock_ms(stage: Stage, table: str, per_recharge: bool = False) -> str:
    """The lock's held share x the time watched, over the saves into that table (or over the
    stage's recharges: with group commit a save carries several)."""
    by = (stage.accepted or stage.completed) if per_recharge else stage.saves.get(table, 0)
    if stage.locks is None or not by:
        return ""
    return f"{stage.locks.share(table) * stage.wall * 1000 / by:.2f}"


def stages_table(title: str, stages: list[Stage]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("stage", "recharges", "accepted/s", "completed/s", "p50 ms", "p99 ms",
                   "WAL commits per recharge", "CPU busy (all processes)"):  # fmt: skip
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in stages:
        a = stage.acceptance
        table.add_row(
            stage.name,
            f"{stage.accepted or stage.completed:,}",
            f"{a.per_second:,.1f}" if stage.accepted else "",
            f"{stage.completed_per_second:,.1f}" if stage.completed else "",
            ms(a.percentile_ms(50)) if stage.accepted else "",
            ms(a.percentile_ms(99)) if stage.accepted else "",
            "" if stage.commits is None else per(stage.commits, stage.accepted or stage.completed),
            f"{sum(stage.cpu.values()) / stage.wall:.0%}" if stage.cpu else "",
        )
    return table


def locks_table(title: str, stages: list[Stage]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("stage", "event table", "saves", "recharges per save", "lock held",
                   "held by (role: share of samples)", "lock ms per save",
                   "lock ms per recharge", "sessions waiting"):  # fmt: skip
        table.add_column(
            column, justify="left" if column.startswith(("stage", "event", "held")) else "right"
        )
    for stage in stages:
        n, locks = stage.accepted or stage.completed, stage.locks
        for name in LOCKED_TABLES:
            saves = stage.saves.get(name, 0)
            table.add_row(
                stage.name if name == LOCKED_TABLES[0] else "",
                name,
                f"{saves:,}",
                f"{n / saves:.2f}" if saves else "",
                f"{locks.share(name):.0%}" if locks else "",
                locks.holders(name) if locks else "",
                lock_ms(stage, name),
                lock_ms(stage, name, per_recharge=True),
                f"{locks.waiters(name):.1f}" if locks else "",
            )
    return table


def statements_table(
    title: str, roles: list[str], counted: Statements, idle: Statements, n: int
) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("role (processes)", "statements", "per recharge", "idle per second",
                   "per recharge, idle rate subtracted", "COMMITs per recharge"):  # fmt: skip
        table.add_column(column, justify="left" if column.startswith("role") else "right")
    total = 0.0
    for role in roles:
        made, rate = counted.of(role), idle.of(role) / idle.seconds
        net = made - rate * counted.seconds
        total += net
        commits = sum(c for (r, q), c in counted.calls.items() if r == role and q == "COMMIT")
        name = f"{role} ({KNOWN.get(role, (role, None))[0]})"
        table.add_row(name, f"{made:,}", f"{made / n:.1f}", f"{rate:.1f}", f"{net / n:.1f}",
                      f"{commits / n:.1f}")  # fmt: skip
    made = sum(counted.calls.values())
    table.add_row("all, end to end", f"{made:,}", f"{made / n:.1f}", "", f"{total / n:.1f}", "")
    return table


def cpu_table(title: str, stages: list[Stage]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("process", justify="left")
    for stage in stages:
        table.add_column(f"{stage.name} ms/rch", justify="right")
        table.add_column("busy", justify="right")
    names = list(dict.fromkeys(n for s in stages for n in s.cpu))
    for name in [*names, "total"]:
        cells = []
        for stage in stages:
            n = stage.accepted or stage.completed
            spent = sum(stage.cpu.values()) if name == "total" else stage.cpu.get(name, math.nan)
            cells += [f"{spent * 1000 / n:.1f}" if n else "", f"{spent / stage.wall:.0%}"]
        table.add_row(name, *cells)
    return table


# ---------------------------------------------------------------------------------------------
# main


def split(work: list[Any], shares: tuple[float, ...]) -> list[list[Any]]:
    parts, at = [], 0
    for share in shares[:-1]:
        size = int(len(work) * share)
        parts.append(work[at : at + size])
        at += size
    parts.append(work[at:])
    return parts


def checkout(source: Path) -> str:
    found = subprocess.run(["git", "-C", str(source), "describe", "--always", "--dirty"],
                           capture_output=True, text=True)  # fmt: skip
    return found.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recharges", type=int, default=5000, help="recharges (and codes)")
    parser.add_argument("--clients", type=int, default=16, help="HTTP connections, pgbench -c")
    parser.add_argument("--api-processes", type=int, default=2, help="ledger serve processes")
    parser.add_argument("--seconds", type=int, default=10, help="pgbench's duration")
    parser.add_argument("--worker-threads", type=int, default=8)
    parser.add_argument("--stock-clients", type=int, default=8, help="stock purchase processes")
    parser.add_argument("--stock-seconds", type=int, default=8, help="each stock scenario")
    parser.add_argument("--cards-clients", type=int, default=8)
    parser.add_argument("--cards-per-client", type=int, default=30, help="consumptions each")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to run")
    parser.add_argument("--pgbench", default=shutil.which("pgbench") or "/usr/bin/pgbench")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for sagas")
    parser.add_argument("--statements", type=int, default=0, help="print the top N statements")
    parser.add_argument("--skip", default="", help="comma-separated: stock, cards")
    parser.add_argument("--readme", default=None, help="append the tables to this file")
    parser.add_argument("--label", default="", help="a word for this run's tree (e.g. before)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="more environment for every process of the topology (e.g. LEDGER_GROUP_COMMIT=off)",
    )
    args = parser.parse_args(argv)
    if args.recharges < 40 or args.clients < 1 or args.api_processes < 1:
        parser.error("recharges >= 40, clients and api-processes >= 1")
    if any("=" not in setting for setting in args.env):
        parser.error("--env takes NAME=VALUE")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    source = args.source.resolve()
    sys.path.insert(0, str(source / "src"))  # the in-process stock purchases and signing
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(source / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )

    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = 200
    started_at = datetime.now(UTC)
    suffix = uuid.uuid4().hex[:8]
    vhost = f"bench-topology-{suffix}"
    db = "bench_topology"
    server: Server | None = None
    topology = Topology()
    stages: list[Stage] = []
    try:
        with console.status("a PostgreSQL cluster of the run's own, a RabbitMQ vhost"):
            server = private_server()
            broker = rabbitmq_vhost(vhost)
        admin = server.url()
        context = (
            f"{args.recharges} recharges, {args.clients} clients, {args.api_processes} API "
            f"processes, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
            f"private {server_facts(admin)}; RabbitMQ; source {checkout(source)}"
            + (f" ({args.label})" if args.label else "")
            + "".join(f"; {setting}" for setting in args.env)
        )
        console.print(f"[bold]Recharges on the production topology[/]: {context}")

        # 1. pgbench
        create_database(admin, "bench_pgbench")
        with console.status(f"pgbench -c {args.clients} -j {args.clients} -T {args.seconds}"):
            tps = run_pgbench(args.pgbench, admin, "bench_pgbench", args.clients, args.seconds)
        console.print(f"pgbench: {tps:,.0f} TPS")

        # 2. the topology
        db_url = create_database(admin, db)
        platform_port, balancer_port = free_port(), free_port()
        env = topology_env(
            db_url, broker, platform_port, args.worker_threads, int(args.timeout) * 4
        )
        env |= dict(setting.split("=", 1) for setting in args.env)
        migrated = subprocess.run([*ledger_command(), "migrate"], env=env, capture_output=True,
                                  text=True, timeout=300)  # fmt: skip
        if migrated.returncode:
            raise RuntimeError(f"ledger migrate failed:\n{migrated.stderr}")
        with console.status("starting the topology"):
            topology = start_topology(source, server, db, env, args.api_processes, balancer_port)
        api_url = f"http://127.0.0.1:{balancer_port}"
        platform_url = f"http://127.0.0.1:{platform_port}"
        with console.status(f"set-up through the balancer: {args.recharges} codes and accounts"):
            tokens = {"operator": operator_token(env)}
            prepared: Prepared = set_up_recharges(
                api_url, tokens["operator"], platform_url, db_url, args.recharges, args.clients
            )
            made = subprocess.run([*ledger_command(), "tokens", "create", "--role", "finance"],
                                  env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
            tokens["finance"] = made.stdout.strip().splitlines()[-1]
        pids = topology.pids()
        observed_url = server.url(db, OBSERVER)  # the benchmark's polling, not counted
        alone_work, peak_work, half_work, counted_work = split(
            prepared.work, (0.2, 0.45, 0.2, 0.15)
        )
        succeeded_before = 0

        # 3a. acceptance alone
        with console.status("acceptance alone (projections and worker stopped)"):
            topology.pause(*topology.background)
            with Watch(server, db, pids) as watch:
                acceptance = accept(api_url, prepared.channel, alone_work, args.clients)
            topology.resume()
            stages.append(watch.into(Stage("alone", acceptance)))
            succeeded_before += stages[-1].accepted
            wait_succeeded(observed_url, succeeded_before, args.timeout, topology)
            wait_redeemed(observed_url, succeeded_before, args.timeout)  # the codes too

        # 3b. peak: everything running, until every recharge of the stage succeeded
        with console.status("peak: every client back to back, then until all succeeded"):
            with Watch(server, db, pids) as whole:
                with Watch(server, db, pids) as watch:
                    acceptance = accept(api_url, prepared.channel, peak_work, args.clients)
                peak = watch.into(Stage("peak", acceptance))
                succeeded_before += peak.accepted
                done = wait_succeeded(observed_url, succeeded_before, args.timeout, topology)
                # the codes redeemed too, so the next stage does not meet this one's tail
                wait_redeemed(observed_url, succeeded_before, args.timeout)
            hops = Hops.read(observed_url, whole.heads)
            peak.completed = peak.accepted
            peak.completed_seconds = done - acceptance.first_accepted
            end_to_end = whole.into(
                Stage(
                    "peak, end to end",
                    Acceptance(),
                    completed=peak.accepted,
                    completed_seconds=done - acceptance.first_sent,
                )  # fmt: skip
            )
            stages.append(peak)

        # 3c. half of peak, open loop
        rate = peak.acceptance.per_second / 2
        with console.status(f"half of peak: {rate:.1f} recharges/s, open loop"):
            log_from = server.log.stat().st_size
            with Watch(server, db, pids) as watch:
                acceptance = accept(api_url, prepared.channel, half_work, args.clients, rate)
            stages.append(watch.into(Stage("half of peak", acceptance, rate=rate)))
            slowest = slowest_moments(acceptance, server.log, log_from)
            succeeded_before += stages[-1].accepted
            wait_succeeded(observed_url, succeeded_before, args.timeout, topology)
            wait_redeemed(observed_url, succeeded_before, args.timeout)  # the codes too

        # 3d. every statement counted: logged with its role, a few seconds idle first
        with console.status("statements: idle, then recharges with log_statement=all"):
            wait_redeemed(observed_url, succeeded_before, args.timeout)
            time.sleep(SETTLE_SECONDS)  # the views' last events of the stages before
            server.log_statements(True)
            try:
                offset = server.log.stat().st_size
                time.sleep(IDLE_SECONDS)
                idle = Statements.read(server.log, offset, db, IDLE_SECONDS)
                offset = server.log.stat().st_size
                began = time.monotonic()
                acceptance = accept(api_url, prepared.channel, counted_work, args.clients)
                counted = Stage("counted", acceptance)
                succeeded_before += counted.accepted
                wait_succeeded(observed_url, succeeded_before, args.timeout, topology)
                wait_redeemed(observed_url, succeeded_before, args.timeout)
                time.sleep(1)  # the views' last events
                statements = Statements.read(server.log, offset, db, time.monotonic() - began)
            finally:
                server.log_statements(False)

        # 4. shared-card consumptions through the balancer
        consumptions = None
        if "cards" not in skip:
            with console.status("shared-card consumptions"):
                consumptions = shared_card_consumptions(
                    api_url, env, args.cards_clients, args.cards_per_client
                )
        with console.status("the books"):
            problems = check_books(observed_url, api_url, platform_url, tokens, [*stages, counted])
        topology.stop()

        # 5. stock purchases, nothing else running
        stock: list[Any] = []
        stock_check = ""
        if "stock" not in skip:
            stock, stock_check = stock_scenarios(
                admin, server.url(user=OBSERVER), args.stock_clients, args.stock_seconds
            )
            if not stock_check.startswith("ledger check: OK"):
                problems.append(stock_check)
    finally:
        topology.stop()
        if server is not None:
            server.stop()
        drop_vhost(vhost)

    rows = []
    for stage in stages:
        a = stage.acceptance
        label = {
            "alone": "HTTP recharges accepted, views and sagas stopped",
            "peak": "HTTP recharges accepted, views and sagas running (peak)",
            "half of peak": f"HTTP recharges accepted at half of peak ({stage.rate or 0:.1f}/s)",
        }[stage.name]
        rows.append((label, stage.accepted, a.window, a.per_second, a.percentile_ms(50),
                     a.percentile_ms(99)))  # fmt: skip
    rows.append(("recharges completed (Succeeded), peak stage", peak.completed,
                 peak.completed_seconds, peak.completed_per_second, math.nan,
                 math.nan))  # fmt: skip
    for outcome in stock:
        rows.append((f"stock purchases, {outcome.scenario} ({outcome.clients})", outcome.ok,
                     outcome.window, outcome.ops, outcome.percentile_ms(50),
                     outcome.percentile_ms(99)))  # fmt: skip
    if consumptions is not None:
        rows.append((f"shared-card consumptions over HTTP ({args.cards_clients} clients)",
                     consumptions.created, consumptions.window, consumptions.per_second,
                     consumptions.percentile_ms(50), consumptions.percentile_ms(99)))  # fmt: skip
    day = f"{started_at:%Y-%m-%d}"
    tables = [
        rates_table(
            f"The production topology vs pgbench, {day}", tps, args.clients, args.seconds, rows
        ),  # fmt: skip
        stages_table(
            f"Recharge stages, {args.api_processes} API processes behind HAProxy",
            [*stages, end_to_end],
        ),
        locks_table(
            "The event tables' EXCLUSIVE locks (pg_locks every 20 ms; saves: distinct xmin)",
            [*stages, end_to_end],
        ),
        cpu_table("CPU ms per recharge, by process", [*stages, end_to_end]),
        hops_table(
            f"Where a recharge's time goes, peak stage ({hops.recharges:,} recharges, in the "
            "order accepted; each hop from one event's timestamp to the next's)",
            hops,
        ),
        statements_table(
            f"Statements per recharge (log_statement=all, {counted.accepted} recharges, "
            f"{args.clients} clients, {statements.seconds:.1f} s until every one succeeded and "
            "its code was redeemed)",
            topology.roles,
            statements,
            idle,
            counted.accepted,
        ),
    ]
    for table in tables:
        console.print(table)
    refused = {s.name: s.acceptance.refused for s in [*stages, counted] if s.acceptance.refused}
    if consumptions is not None and consumptions.refused:
        refused["shared-card consumptions"] = consumptions.refused
    if refused:
        problems.append(f"refused: {refused}")
    console.print(slowest)
    resent = {s.name: s.acceptance.resent for s in [*stages, counted] if s.acceptance.resent}
    if resent:
        console.print(f"sent again on a new connection (same Idempotency-Key): {resent}")
    books = (
        "books check: FAILED: " + "; ".join(problems) if problems else
        f"books check: OK ({sum(s.accepted for s in [*stages, counted])} recharges each "
        "Succeeded once and credited once at the platform, every code redeemed; "
        + (f"{stock_check.removeprefix('ledger check: OK ')}; " if stock_check else "")
        + "trial balance zero)"
    )  # fmt: skip
    console.print(books)
    for role in topology.roles if args.statements else ():
        console.print(f"[bold]{role}[/]: statements per recharge, the {args.statements} most")
        for calls, query in statements.top(role, args.statements):
            console.print(f"  {calls / max(counted.accepted, 1):6.2f}  {query}", soft_wrap=True)
    if args.readme:
        record = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        for table in tables:
            record.print(table)
        with open(args.readme, "a") as readme:
            readme.write(
                f"\n{started_at:%Y-%m-%d %H:%M} UTC — {context}:\n\n```\n"
                + "\n".join(line.rstrip() for line in record.export_text().splitlines())
                + f"\n{books}\n```\n"
            )
        console.print(f"appended to {args.readme}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
