#!/usr/bin/env python
"""Recharges accepted and completed per second, beside pgbench's TPS on the same server.

    python benchmarks/recharges.py [--recharges 1600] [--clients 16] [--broker none|amqp://…|redis://…]
                                   [--database-url URL] [--readme benchmarks/README.md]

One run on one PostgreSQL server:

1. pgbench: `pgbench -i -s <clients>` into a scratch database, then the built-in TPC-B-like
   script with `-c C -j C -T seconds`; its TPS (without initial connection time) is the yardstick.
2. The ledger: a second scratch database, migrated; `ledger sandbox-platform` on a free port;
   `ledger serve` in sandbox mode with the rate limits raised out of the way (and, with a broker
   URL, a `ledger worker` process; without one, `ledger serve`'s in-process worker); set-up over
   HTTP: an operator token (`ledger tokens create`), a platform whose gateway is the sandbox,
   a product, a channel with funds, stock and N codes; one verification code sent to each of N
   accounts (POST /v1/verification-codes) and read back from the sandbox SMS outbox.
3. Accepted: C client threads, each with one HTTP connection of its own, send
   POST /v1/recharges (one code and one account per recharge, signed by the channel) back to
   back. Accepted/s = 202s ÷ (last 202 − first request sent).
4. Completed: from the first 202 until every accepted recharge's saga recorded `Succeeded`
   (counted in the recharges event store every 20 ms): reservation → saga starter →
   dispatcher → worker → sandbox platform → result. Completed/s = N ÷ that time. The platform's
   own record is then checked: every account credited exactly once, every code redeemed.

Prints a rich table of both rates beside pgbench's TPS with their ratios, and appends it, with
the date, to the README given by --readme. Both scratch databases are dropped at the end and
every process started is stopped. With RabbitMQ as the broker the actor queues (`recharges`,
`webhooks`) of the URL's vhost are purged before and after: do not run it beside tests that use
the same vhost.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scratch import create_database, drop_database, pgbench_args, server_facts

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
COUNTER_FOLDER = Path(__file__).resolve().with_name("statement_counter")
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
PLATFORM_SECRET = "bench-platform-secret"
PARTNER_ID = "bench-partner"
UNLIMITED = str(10**9)


def sandbox_env(
    db_url: str,
    platform_port: int,
    deadline_seconds: int,
    *,
    broker: str | None = None,
    worker_threads: int | None = None,
    platform_start: bool = False,
) -> dict[str, str]:
    """A benchmark process's environment: the sandbox platform at `platform_port` (started by
    the benchmark itself unless `platform_start`), no limit the benchmark's clients would meet
    (one channel, many accounts, as fast as they go), the broker given or none."""
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "LEDGER_SANDBOX": "true",
        "LEDGER_SANDBOX_PLATFORM_PORT": str(platform_port),
        "LEDGER_SANDBOX_PLATFORM_START": "true" if platform_start else "false",
        "LEDGER_PLATFORM_SECRET": PLATFORM_SECRET,
        "LEDGER_PLATFORM_PARTNER_ID": PARTNER_ID,
        "LEDGER_RATE_ACCOUNT_PER_MINUTE": UNLIMITED,
        "LEDGER_RATE_ADDRESS_PER_MINUTE": UNLIMITED,
        "LEDGER_RATE_CHANNEL_PER_MINUTE": UNLIMITED,
        "LEDGER_LOCKOUT_WRONG_CODES": UNLIMITED,
        "LEDGER_RECHARGE_DEADLINE_SECONDS": str(deadline_seconds),
    }
    env.pop("BROKER_URL", None)
    if broker:
        env["BROKER_URL"] = broker
    if worker_threads is not None:
        env["LEDGER_WORKER_THREADS"] = str(worker_threads)
    return env


WHOLESALE, FACE = 2000, 3000
BATCH = 1000  # codes per batch (the API's limit)


# ---------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ledger_command() -> list[str]:
    script = Path(sys.executable).with_name("ledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.log.unlink(missing_ok=True)


def start(name: str, args: list[str], env: dict[str, str]) -> Process:
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [*ledger_command(), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Process(name, popen, log)


def wait_until(process: Process, ready: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.output()}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} not ready in {seconds} s:\n{process.output()}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# databases and pgbench


TPS_LINE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)


def run_pgbench(pgbench: str, admin_url: str, dbname: str, clients: int, seconds: int) -> float:
    conn_args, env = pgbench_args(admin_url)
    init = subprocess.run(
        [pgbench, "-i", "-q", "-s", str(clients), *conn_args, dbname],
        env=env,
        capture_output=True,
        text=True,
    )
    if init.returncode:
        raise RuntimeError(f"pgbench -i failed:\n{init.stderr}")
    run = subprocess.run(
        [pgbench, "-c", str(clients), "-j", str(clients), "-T", str(seconds), *conn_args, dbname],
        env=env,
        capture_output=True,
        text=True,
    )
    if run.returncode:
        raise RuntimeError(f"pgbench failed:\n{run.stderr}\n{run.stdout}")
    found = TPS_LINE.search(run.stdout)
    if not found:
        raise RuntimeError(f"no TPS in pgbench's output:\n{run.stdout}")
    return float(found[1])


# ---------------------------------------------------------------------------------------------
# brokers


def purge_rabbitmq(url: str) -> None:
    import pika
    import pika.exceptions

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for base in ("recharges", "webhooks"):
            for name in (base, f"{base}.DQ", f"{base}.XQ"):
                channel = connection.channel()
                try:
                    channel.queue_declare(name, passive=True)
                    channel.queue_purge(name)
                except pika.exceptions.ChannelClosedByBroker:
                    continue
                channel.close()
    finally:
        connection.close()


def clean_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter("dramatiq:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def clean_broker(url: str | None) -> None:
    if url and url.startswith("amqp"):
        purge_rabbitmq(url)
    elif url and url.startswith("redis"):
        clean_redis(url)


# ---------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Channel:
    id: str
    key_id: str
    key_secret: str


@dataclass
class Reply:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """One HTTP/1.1 keep-alive connection, signing as a channel or carrying a token. The
    standard library's http.client: the load generator shares the machine with what it
    measures, so it is kept lean (httpx's clients took 3.6 ms of CPU per recharge in
    benchmarks/topology.py)."""

    def __init__(self, base_url: str, token: str | None = None, channel: Channel | None = None):
        import http.client
        from urllib.parse import urlsplit

        address = urlsplit(base_url)
        self.connect = lambda: http.client.HTTPConnection(
            address.hostname or "127.0.0.1", address.port or 80, timeout=60
        )
        self.http = self.connect()
        self.token = token
        self.channel = channel
        self.resent = 0
        """Requests sent again on a new connection after the old one was closed under them."""

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        """Send one request. A connection the other end closed (a keep-alive connection the
        balancer or the server let go) is opened again and the request sent once more, as a
        client of the API does: a POST with the same Idempotency-Key and a fresh signature
        (a new nonce), so the server answers the first request's result if it had one."""
        content = json.dumps(body).encode() if body is not None else b""
        key = uuid.uuid4().hex if method == "POST" else ""
        try:
            return self._send(method, path, content, self._headers(method, path, key, content))
        except (ConnectionError, OSError):
            self.http.close()
            self.http = self.connect()
            self.resent += 1
        for _ in range(100):  # the first may still be running: 409 request_in_flight meanwhile
            reply = self._send(method, path, content, self._headers(method, path, key, content))
            if reply.status_code != 409 or b"request_in_flight" not in reply.content:
                return reply
            time.sleep(0.05)
        return reply

    def _headers(self, method: str, path: str, key: str, content: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.channel:
            from adapters.signing import new_nonce, sign_request

            stamp, nonce = str(int(time.time())), new_nonce()
            headers |= {
                "X-Key-Id": self.channel.key_id,
                "X-Timestamp": stamp,
                "X-Nonce": nonce,
                "X-Signature": sign_request(
                    self.channel.key_secret, method, path, stamp, nonce, key, content
                ),
            }
        return headers

    def _send(self, method: str, path: str, content: bytes, headers: dict[str, str]) -> Reply:
        self.http.request(method, path, body=content if method != "GET" else None, headers=headers)
        response = self.http.getresponse()
        return Reply(response.status, response.read())

    def ok(self, method: str, path: str, body: Any = None, status: int = 201) -> Any:
        reply = self.request(method, path, body)
        if reply.status_code != status:
            raise RuntimeError(f"{method} {path}: {reply.status_code} {reply.text}")
        return reply.json()


def operator_token(env: dict[str, str]) -> str:
    made = subprocess.run(
        [*ledger_command(), "tokens", "create", "--role", "operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if made.returncode:
        raise RuntimeError(f"ledger tokens create failed:\n{made.stderr}")
    return made.stdout.strip().splitlines()[-1]


@dataclass
class Prepared:
    channel: Channel
    work: list[tuple[str, str, str]]  # (code, account, verification code)


def set_up(
    base_url: str, token: str, platform_url: str, db_url: str, n: int, clients: int
) -> Prepared:
    """Catalogue, a channel with N codes, N accounts each with a verification code sent."""
    import psycopg

    operator = Client(base_url, token=token)
    try:
        platform = operator.ok(
            "POST", "/v1/platforms", {"name": "Bench", "gateway_url": platform_url}
        )
        product = operator.ok(
            "POST",
            "/v1/products",
            {
                "platform_id": platform["id"],
                "name": "VIP month",
                "duration_days": 30,
                "face_value": {"amount": FACE, "currency": "CNY"},
                "wholesale_cost": {"amount": WHOLESALE, "currency": "CNY"},
            },
        )["id"]
        created = operator.ok("POST", "/v1/channels", {"name": "Bench shop"})
        channel = Channel(created["id"], created["key_id"], created["key_secret"])
        operator.ok(
            "POST",
            f"/v1/channels/{channel.id}/deposits",
            {"amount": {"amount": n * WHOLESALE, "currency": "CNY"}},
        )
    finally:
        operator.close()
    shop = Client(base_url, channel=channel)
    codes: list[str] = []
    try:
        shop.ok("POST", "/v1/stock-purchases", {"product_id": product, "quantity": n})
        while len(codes) < n:
            quantity = min(BATCH, n - len(codes))
            batch = shop.ok(
                "POST", "/v1/code-batches", {"product_id": product, "quantity": quantity}
            )
            codes += batch["codes"]
    finally:
        shop.close()

    accounts = [f"137{i:08d}" for i in range(n)]

    def send(share: list[str]) -> None:
        client = Client(base_url, channel=channel)
        try:
            for account in share:
                client.ok("POST", "/v1/verification-codes", {"account": account}, status=202)
        finally:
            client.close()

    in_parallel(send, [accounts[i::clients] for i in range(clients)])
    with psycopg.connect(db_url, autocommit=True) as conn:  # the sandbox SMS outbox
        rows = conn.execute(
            "SELECT DISTINCT ON (account) account, code FROM sandbox_sms_outbox "
            "ORDER BY account, id DESC"
        ).fetchall()
    sent = dict(rows)
    missing = [a for a in accounts if a not in sent]
    if missing:
        raise RuntimeError(f"no verification code in the outbox for {len(missing)} accounts")
    return Prepared(channel, [(c, a, sent[a]) for c, a in zip(codes, accounts, strict=True)])


def in_parallel(target: Any, shares: list[Any]) -> None:
    errors: list[BaseException] = []

    def run(share: Any) -> None:
        try:
            target(share)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------------------------
# the measurements


@dataclass
class Acceptance:
    accepted: list[tuple[str, str, float]] = field(default_factory=list)  # (id, account, at)
    refused: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    """When each of `latencies` was sent (or due, open loop), in the same order."""
    first_sent: float = math.inf
    last_accepted: float = 0.0
    first_accepted: float = math.inf
    resent: int = 0
    """Requests sent again after their connection was closed under them (same key)."""

    @property
    def window(self) -> float:
        return self.last_accepted - self.first_sent

    @property
    def per_second(self) -> float:
        return len(self.accepted) / self.window if self.window > 0 else math.nan

    def percentile_ms(self, p: int) -> float:
        if len(self.latencies) < 2:
            return math.nan
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


def accept_all(base_url: str, prepared: Prepared, clients: int) -> Acceptance:
    result = Acceptance()
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    shares = [prepared.work[i::clients] for i in range(clients)]

    def client(share: list[tuple[str, str, str]]) -> None:
        http = Client(base_url, channel=prepared.channel)
        try:
            http.request("GET", "/health")  # open the connection outside the window
            barrier.wait(timeout=60)
            for code, account, verification in share:
                sent = time.monotonic()
                reply = http.request(
                    "POST",
                    "/v1/recharges",
                    {"code": code, "account": account, "verification_code": verification},
                )
                done = time.monotonic()
                with lock:
                    result.first_sent = min(result.first_sent, sent)
                    if reply.status_code == 202:
                        result.accepted.append((reply.json()["id"], account, done))
                        result.latencies.append(done - sent)
                        result.first_accepted = min(result.first_accepted, done)
                        result.last_accepted = max(result.last_accepted, done)
                    else:
                        code_ = reply.json().get("code", str(reply.status_code))
                        result.refused[code_] = result.refused.get(code_, 0) + 1
        finally:
            http.close()

    in_parallel(client, shares)
    return result


@dataclass
class Completion:
    succeeded: int
    other: int
    finished_at: float
    timed_out: bool


SUCCEEDED = "SELECT count(*) FROM recharges_events WHERE topic LIKE %s"


def wait_for_completion(db_url: str, expected: int, timeout: float) -> Completion:
    """Poll the recharges event store until `expected` sagas recorded Succeeded."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            row = conn.execute(SUCCEEDED, ("%Recharge.Succeeded",)).fetchone()
            succeeded = int(row[0]) if row else 0
            now = time.monotonic()
            if succeeded >= expected or now > deadline:
                other = conn.execute(
                    "SELECT count(*) FROM recharges_events WHERE topic LIKE %s OR topic LIKE %s",
                    ("%Recharge.Failed", "%Recharge.SentToReview"),
                ).fetchone()
                return Completion(succeeded, int(other[0]) if other else 0, now, now > deadline)
            time.sleep(0.02)


def check_books(db_url: str, platform_url: str, acceptance: Acceptance) -> str:
    """Every accepted recharge credited exactly once at the platform and its code redeemed."""
    import httpx
    import psycopg

    credits = httpx.get(f"{platform_url}/sandbox/credits", timeout=30).json()["credits"]
    per_order: dict[str, int] = {}
    for credit in credits:
        per_order[credit["order_no"]] = per_order.get(credit["order_no"], 0) + 1
    ids = {rid for rid, _, _ in acceptance.accepted}
    problems = []
    if set(per_order) != ids:
        problems.append(f"{len(ids ^ set(per_order))} orders credited or missing unexpectedly")
    if any(n != 1 for n in per_order.values()):
        problems.append("an order was credited more than once")
    deadline = time.monotonic() + 60
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM distribution_events WHERE topic LIKE %s", ("%Code.Redeemed",)
            ).fetchone()
            redeemed = int(row[0]) if row else 0
            if redeemed >= len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if redeemed != len(ids):
        problems.append(f"{redeemed} codes redeemed for {len(ids)} recharges")
    if problems:
        return "books check FAILED: " + "; ".join(problems)
    return (
        f"books check: OK ({len(ids)} recharges, each credited exactly once at the platform, "
        f"{redeemed} codes redeemed)"
    )


# ---------------------------------------------------------------------------------------------
# statements and transactions (issue 11): counted in `ledger serve` and `ledger worker` by
# statement_counter/sitecustomize.py, which each writes to <folder>/<pid>.json


def counted_env(env: dict[str, str], folder: str) -> dict[str, str]:
    """`env` for a process whose statements are counted."""
    path = os.pathsep.join(p for p in (str(COUNTER_FOLDER), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "LEDGER_BENCH_STATEMENT_COUNTS": folder}


def statement_counts(folder: str) -> dict[str, Any]:
    """Every counted process's counts added up: per side (request threads, background),
    statements, transactions and the commonest statements."""
    total: dict[str, Any] = {
        side: {"statements": 0, "transactions": 0, "top": {}} for side in ("request", "background")
    }
    for path in Path(folder).glob("*.json"):
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for side, mine in counts.items():
            total[side]["statements"] += mine.get("statements", 0)
            total[side]["transactions"] += mine.get("transactions", 0)
            for text, n in mine["top"]:
                total[side]["top"][text] = total[side]["top"].get(text, 0) + n
    return total


def quiet_counts(folder: str, bound: float = 60) -> dict[str, Any]:
    """The counts once the processes have (nearly) stopped sending statements: fewer than 5 in
    a second (the sweeper's polls), or after `bound` seconds."""
    deadline = time.monotonic() + bound
    before = statement_counts(folder)
    while True:
        time.sleep(1)
        now = statement_counts(folder)
        sent = sum(now[s]["statements"] - before[s]["statements"] for s in now)
        if sent < 5 or time.monotonic() > deadline:
            return now
        before = now


@dataclass
class Statements:
    """Per acceptance: what the POST /v1/recharges requests sent; end to end: what every
    counted process sent from the first acceptance until the last recharge's effects settled
    (saga, dispatcher, worker, code redeemed, views), divided by the recharges accepted."""

    per_acceptance: float
    transactions_per_acceptance: float
    end_to_end: float
    transactions_end_to_end: float
    top_requests: list[tuple[str, float]]
    top_background: list[tuple[str, float]]


def statements_between(start: dict[str, Any], end: dict[str, Any], accepted: int) -> Statements:
    def per(side: str, what: str) -> float:
        return (end[side][what] - start[side][what]) / max(accepted, 1)

    def top(side: str) -> list[tuple[str, float]]:
        grown = {
            text: (n - start[side]["top"].get(text, 0)) / max(accepted, 1)
            for text, n in end[side]["top"].items()
        }
        return sorted(((t, n) for t, n in grown.items() if n >= 0.05), key=lambda x: -x[1])

    return Statements(
        per("request", "statements"),
        per("request", "transactions"),
        per("request", "statements") + per("background", "statements"),
        per("request", "transactions") + per("background", "transactions"),
        top("request"),
        top("background"),
    )


# ---------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recharges", type=int, default=1600, help="recharges (and codes)")
    parser.add_argument("--clients", type=int, default=16, help="HTTP connections, pgbench -c")
    parser.add_argument("--seconds", type=int, default=15, help="pgbench's duration")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="amqp://…, redis://… or none")
    parser.add_argument("--worker-threads", type=int, default=8)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin URL")
    parser.add_argument("--pgbench", default=shutil.which("pgbench") or "/usr/bin/pgbench")
    parser.add_argument("--readme", default=None, help="append the table to this file")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for sagas")
    parser.add_argument(
        "--statements", action=argparse.BooleanOptionalAction, default=True,
        help="count SQL statements and transactions per acceptance and end to end",
    )  # fmt: skip
    args = parser.parse_args(argv)
    broker = None if args.broker in ("", "none") else args.broker
    if args.recharges < 1 or args.clients < 1:
        parser.error("recharges and clients must be >= 1")

    from rich.console import Console
    from rich.table import Table

    from api.runtime.schema import apply_migrations

    console = Console()
    if not console.is_terminal:
        console.width = 160
    admin = args.database_url
    suffix = uuid.uuid4().hex[:8]
    ledger_db, pgbench_db = f"bench_recharges_{suffix}", f"bench_pgbench_{suffix}"
    created: list[str] = []
    processes: list[Process] = []
    counter_folder = tempfile.mkdtemp(prefix="bench-statements-")
    statements: Statements | None = None
    started_at = datetime.now(UTC)
    where = "in-process worker (no broker)" if broker is None else broker.split("@")[-1]
    context = (
        f"{args.recharges} recharges, {args.clients} client connections, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"{server_facts(admin)}; broker: {where}, {args.worker_threads} worker threads"
    )
    console.print(f"[bold]Recharges vs pgbench[/]: {context}")
    try:
        # 1. pgbench, alone on the server
        create_database(admin, pgbench_db)
        created.append(pgbench_db)
        with console.status(f"pgbench -c {args.clients} -j {args.clients} -T {args.seconds}"):
            tps = run_pgbench(args.pgbench, admin, pgbench_db, args.clients, args.seconds)
        drop_database(admin, pgbench_db)
        created.remove(pgbench_db)
        console.print(f"pgbench: {tps:,.0f} TPS")

        # 2. the ledger
        db_url = create_database(admin, ledger_db)
        created.append(ledger_db)
        apply_migrations(db_url)
        clean_broker(broker)
        platform_port, api_port = free_port(), free_port()
        env = sandbox_env(db_url, platform_port, int(args.timeout) * 2, broker=broker,
                          worker_threads=args.worker_threads)  # fmt: skip
        platform_url = f"http://127.0.0.1:{platform_port}"
        api_url = f"http://127.0.0.1:{api_port}"
        import httpx

        with console.status("starting the sandbox platform, ledger serve and the worker"):
            platform = start("platform", ["sandbox-platform", "--port", str(platform_port)], env)
            processes.append(platform)
            wait_until(platform, lambda: httpx.get(f"{platform_url}/sandbox/faults").is_success)
            measured = counted_env(env, counter_folder) if args.statements else env
            serve = start("serve", ["serve", "--port", str(api_port)], measured)
            processes.append(serve)
            wait_until(serve, lambda: httpx.get(f"{api_url}/health").is_success)
            if broker:
                worker = start("worker", ["worker"], measured)
                processes.append(worker)
                wait_until(worker, lambda: "worker on" in worker.output())
        with console.status(
            f"set-up over HTTP: {args.recharges} codes, {args.recharges} verification codes"
        ):
            token = operator_token(env)
            prepared = set_up(api_url, token, platform_url, db_url, args.recharges, args.clients)
        if args.statements:
            with console.status("waiting for the set-up's effects to settle"):
                before_counts = quiet_counts(counter_folder)
        console.print("set-up done; measuring")

        # 3. and 4.
        with console.status("recharging"):
            acceptance = accept_all(api_url, prepared, args.clients)
            completion = wait_for_completion(db_url, len(acceptance.accepted), args.timeout)
            books = check_books(db_url, platform_url, acceptance)
        if args.statements:
            with console.status("waiting for the recharges' effects to settle"):
                statements = statements_between(
                    before_counts, quiet_counts(counter_folder), len(acceptance.accepted)
                )
    finally:
        for process in reversed(processes):
            process.stop()
        for name in created:
            drop_database(admin, name)
        shutil.rmtree(counter_folder, ignore_errors=True)
        if broker:
            try:
                clean_broker(broker)
            except Exception as error:  # noqa: BLE001 - report, the run is over anyway
                console.print(f"could not clean the broker: {error}")

    accepted = len(acceptance.accepted)
    completed_window = completion.finished_at - acceptance.first_accepted
    completed_rate = completion.succeeded / completed_window if completed_window > 0 else math.nan
    table = Table(
        title=f"Recharges vs pgbench, {args.clients} clients, {started_at:%Y-%m-%d}",
        caption=f"broker: {where}",
    )
    for column in ("measure", "count", "seconds", "per second", "p50 ms", "p99 ms", "÷ pgbench"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row(
        f"pgbench TPS (-c {args.clients} -j {args.clients})", "", f"{args.seconds}",
        f"{tps:,.0f}", "", "", "1",
    )  # fmt: skip
    table.add_row(
        "recharges accepted (202) over HTTP",
        f"{accepted:,}",
        f"{acceptance.window:.1f}",
        f"{acceptance.per_second:,.1f}",
        f"{acceptance.percentile_ms(50):.0f}",
        f"{acceptance.percentile_ms(99):.0f}",
        f"{acceptance.per_second / tps:.4f}",
    )
    table.add_row(
        "recharges completed (succeeded)",
        f"{completion.succeeded:,}",
        f"{completed_window:.1f}",
        f"{completed_rate:,.1f}",
        "",
        "",
        f"{completed_rate / tps:.4f}",
    )
    console.print(table)
    if statements is not None:
        console.print(
            f"SQL statements per acceptance: {statements.per_acceptance:.1f} "
            f"({statements.transactions_per_acceptance:.1f} transactions); per recharge end to "
            f"end: {statements.end_to_end:.1f} ({statements.transactions_end_to_end:.1f} "
            "transactions), counted in ledger serve and ledger worker"
        )
        for side, top in (("acceptance", statements.top_requests),
                          ("end to end, besides", statements.top_background)):  # fmt: skip
            console.print(f"  per recharge, {side}:")
            for text, n in top[:25]:
                console.print(f"    {n:5.2f}  {text}", markup=False, highlight=False)
    notes = []
    if acceptance.refused:
        notes.append(f"refused: {acceptance.refused}")
    if completion.other or completion.timed_out:
        notes.append(f"{completion.other} failed or in review; timed out: {completion.timed_out}")
    console.print(books)
    for note in notes:
        console.print(note)
    if args.readme:
        record = Console(width=160, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        record.print(table)
        with open(args.readme, "a") as readme:
            readme.write(
                f"\n{started_at:%Y-%m-%d %H:%M} UTC — {context}:\n\n```\n"
                + "\n".join(line.rstrip() for line in record.export_text().splitlines())
                + f"\n{books}\n"
                + "".join(f"{n}\n" for n in notes)
                + "```\n"
            )
        console.print(f"appended to {args.readme}")
    ok = books.startswith("books check: OK") and not completion.timed_out and not notes
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
