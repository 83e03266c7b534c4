"""The e2e ring: real `ledger serve` processes on free ports, tokens from the CLI, an HTTP client.

Each e2e module gets one database (`database_url` is module-scoped here, so the processes
start once per module); tests inside a module stay independent by creating their own
platforms, products and channels.
"""

from __future__ import annotations

import hashlib
import json as jsonlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from adapters.signing import new_nonce, sign_request

ADMIN_URL = os.environ.get("LEDGER_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
STARTUP_SECONDS = 90  # a loaded machine (or the demo) can take a while; a hang still fails
AUTO = object()
"""Default of `idempotency_key`: a fresh key for every POST."""


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for the module's processes, dropped afterwards."""
    from api.runtime.schema import apply_migrations

    name = f"ledger_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    apply_migrations(url)
    try:
        yield url
    finally:
        drop_database(name)


def drop_database(name: str, attempts: int = 10) -> None:
    """Retried: a server crowded by other test runs may refuse a connection for a moment."""
    for attempt in range(attempts):
        try:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            return
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)


# processes


def ledger_command() -> str:
    beside_python = Path(sys.executable).parent / "ledger"
    found = str(beside_python) if beside_python.exists() else shutil.which("ledger")
    assert found, "the `ledger` console script is not installed"
    return found


def ledger_env(database_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "LEDGER_SANDBOX": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One `ledger serve` process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"ledger serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"ledger serve was not healthy in {STARTUP_SECONDS} s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.unlink(missing_ok=True)


def start_servers(
    database_url: str, count: int, extra_env: Sequence[dict[str, str]] = ()
) -> list[Server]:
    """Start `count` processes at once (the i-th with `extra_env[i]` added to its environment)
    and wait until every one answers /health."""
    servers = []
    for i in range(count):
        env = ledger_env(database_url) | (dict(extra_env[i]) if i < len(extra_env) else {})
        port = free_port()
        log = Path(tempfile.mkstemp(prefix="ledger-e2e-", suffix=".log")[1])
        with log.open("wb") as out:
            process = subprocess.Popen(
                [ledger_command(), "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        servers.append(Server(process, f"http://127.0.0.1:{port}", log))
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        for server in servers:
            server.wait_healthy(deadline)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


@contextmanager
def sandbox_serving(
    database_url: str, platform_port: int, name: str, args: Sequence[str] = (), **extra: str
) -> Iterator[Server]:
    """`ledger serve` in sandbox mode (with `args` added, e.g. `--demo`), its sandbox platform on
    `platform_port`, in a session of its own, so that the platform is stopped too even when the
    server was killed."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix=f"ledger-e2e-{name}-", suffix=".log")[1])
    env = {
        **ledger_env(database_url),
        "LEDGER_SANDBOX": "true",
        "LEDGER_SANDBOX_PLATFORM_PORT": str(platform_port),
        **extra,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ledger_command(), "serve", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        started.wait_healthy(deadline)
        wait_for_port(platform_port, deadline, started)
        yield started
    finally:
        started.stop()
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)


def wait_for_port(port: int, deadline: float, server: Server) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"the sandbox platform did not listen on {port}:\n{server.output()}")


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    (only,) = start_servers(database_url, 1)
    try:
        yield only
    finally:
        only.stop()


def create_tokens(database_url: str, *roles: str) -> list[str]:
    """`ledger tokens create --role <role>` for each role, in parallel; the last stdout lines."""
    processes = [
        subprocess.Popen(
            [ledger_command(), "tokens", "create", "--role", role],
            env=ledger_env(database_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for role in roles
    ]
    tokens = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode(errors="replace")
        tokens.append(out.decode().strip().splitlines()[-1])
    return tokens


@pytest.fixture(scope="module")
def tokens(database_url: str) -> dict[str, str]:
    operator, finance = create_tokens(database_url, "operator", "finance")
    return {"operator": operator, "finance": finance}


# the client


@dataclass
class Caller:
    """Sends requests as one principal: a bearer token, a channel's key, or nobody."""

    http: httpx.Client
    base_url: str
    token: str | None = None
    key_id: str | None = None
    key_secret: str | None = None
    id: str | None = None

    def at(self, base_url: str) -> Caller:
        """The same principal, talking to another process."""
        return Caller(self.http, base_url, self.token, self.key_id, self.key_secret, self.id)

    def signed_headers(
        self,
        method: str,
        path: str,
        body: bytes,
        timestamp: int | None = None,
        *,
        nonce: str | None = None,
        idempotency_key: str = "",
    ) -> dict[str, str]:
        """Signing v2: a fresh nonce unless one is given, the Idempotency-Key inside."""
        assert self.key_id and self.key_secret, "only a channel or a merchant signs"
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        nonce = new_nonce() if nonce is None else nonce
        signature = sign_request(self.key_secret, method, path, stamp, nonce, idempotency_key, body)
        return {
            "X-Key-Id": self.key_id,
            "X-Timestamp": stamp,
            "X-Nonce": nonce,
            "X-Signature": signature,
        }

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        content: bytes | None = None,
        idempotency_key: Any = AUTO,
        headers: dict[str, str] | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        method = method.upper()
        body = content if content is not None else b""
        all_headers: dict[str, str] = {}
        if json is not None:
            body = jsonlib.dumps(json).encode()
            all_headers["Content-Type"] = "application/json"
        if method == "POST" and idempotency_key is AUTO:
            all_headers["Idempotency-Key"] = uuid.uuid4().hex
        elif idempotency_key not in (AUTO, None):
            all_headers["Idempotency-Key"] = str(idempotency_key)
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        all_headers |= headers or {}
        if not self.token and self.key_id:
            idempotency = all_headers.get("Idempotency-Key", "")
            all_headers |= self.signed_headers(
                method, path, body, timestamp, idempotency_key=idempotency
            )
        return self.send(method, path, body, all_headers)

    def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Exactly these bytes and headers, signed or not."""
        return self.http.request(method, self.base_url + path, content=body, headers=headers)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


@dataclass
class Api:
    """The principals of one module, against one process (or more, by `Caller.at`)."""

    http: httpx.Client
    base_url: str
    tokens: dict[str, str]

    @property
    def anonymous(self) -> Caller:
        return Caller(self.http, self.base_url)

    @property
    def operator(self) -> Caller:
        return Caller(self.http, self.base_url, token=self.tokens["operator"])

    @property
    def finance(self) -> Caller:
        return Caller(self.http, self.base_url, token=self.tokens["finance"])

    def channel(self, created: dict[str, Any]) -> Caller:
        """A channel's caller from the answer that created it: {id, key_id, key_secret}."""
        return Caller(
            self.http,
            self.base_url,
            key_id=created["key_id"],
            key_secret=created["key_secret"],
            id=created["id"],
        )

    # the scenario's steps, each checked

    def platform(self, name: str = "iQiyi") -> str:
        reply = self.operator.post(
            "/v1/platforms", {"name": name, "gateway_url": "http://127.0.0.1:9/gateway"}
        )
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    def product(self, platform_id: str, wholesale: int = 2000, face: int = 3000) -> str:
        reply = self.operator.post(
            "/v1/products",
            {
                "platform_id": platform_id,
                "name": "Gold VIP, 1 month",
                "duration_days": 30,
                "face_value": {"amount": face, "currency": "CNY"},
                "wholesale_cost": {"amount": wholesale, "currency": "CNY"},
            },
        )
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    def top_channel(self, name: str = "Top") -> Caller:
        reply = self.operator.post("/v1/channels", {"name": name})
        assert reply.status_code == 201, reply.text
        return self.channel(reply.json())

    def sub_channel(self, parent: Caller, name: str = "Sub") -> Caller:
        reply = parent.post(f"/v1/channels/{parent.id}/subchannels", {"name": name})
        assert reply.status_code == 201, reply.text
        return self.channel(reply.json())

    def deposit(self, channel: Caller, amount: int) -> dict[str, Any]:
        reply = self.operator.post(
            f"/v1/channels/{channel.id}/deposits", {"amount": {"amount": amount, "currency": "CNY"}}
        )
        assert reply.status_code == 201, reply.text
        return dict(reply.json())

    def set_price(self, channel: Caller, product_id: str, amount: int) -> None:
        reply = channel.put(
            f"/v1/channels/{channel.id}/prices/{product_id}",
            {"price": {"amount": amount, "currency": "CNY"}},
        )
        assert reply.status_code == 200, reply.text

    def buy(self, channel: Caller, product_id: str, quantity: int) -> dict[str, Any]:
        reply = channel.post(
            "/v1/stock-purchases", {"product_id": product_id, "quantity": quantity}
        )
        assert reply.status_code == 201, reply.text
        return dict(reply.json())

    def funds(self, channel: Caller) -> int:
        reply = channel.get(f"/v1/channels/{channel.id}/funds")
        assert reply.status_code == 200, reply.text
        return int(reply.json()["available"]["amount"])

    def on_hand(self, channel: Caller, product_id: str) -> int:
        reply = channel.get(f"/v1/channels/{channel.id}/stock")
        assert reply.status_code == 200, reply.text
        positions = {item["product_id"]: item["on_hand"] for item in reply.json()["items"]}
        return int(positions.get(product_id, 0))

    def trial_balance(self) -> dict[str, Any]:
        reply = self.finance.get("/v1/ledger/trial-balance")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with httpx.Client(timeout=60, limits=limits) as client:
        yield client


@pytest.fixture(scope="module")
def api(tokens: dict[str, str], server: Server, http: httpx.Client) -> Api:
    return Api(http, server.base_url, tokens)


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """One connection for the module's own queries, held so a busy server cannot refuse it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def events(db: psycopg.Connection[Any]) -> Callable[[], int]:
    """How many events the distribution application has stored."""

    def count() -> int:
        row = db.execute("SELECT count(*) FROM distribution_events").fetchone()
        assert row is not None
        return int(row[0])

    return count


def body_hash(method: str, path: str, body: bytes) -> bytes:
    """What api/idempotency.py stores as a request's hash."""
    return hashlib.sha256(f"{method}\n{path}\n".encode() + body).digest()
