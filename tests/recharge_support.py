"""What the recharge saga's integration and e2e tests share: the real brokers, isolated per
test run, and the sandbox video platform as a process of its own.

RabbitMQ: the actors' queues have fixed names (`recharges`, `webhooks`, with dramatiq's `.DQ`
delay and `.XQ` dead-letter queues) on the vhost of the URL, so a run holds a lock file while
it uses them and purges them before and after. Redis: a run claims a database of its own (one
that holds nothing but its claim) and deletes what dramatiq left there afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

RABBITMQ_URL = os.environ.get("LEDGER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("LEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ACTOR_QUEUES = ("recharges", "webhooks")
RABBITMQ_LOCK = Path(tempfile.gettempdir()) / "ledger-tests-rabbitmq.lock"
REDIS_CLAIM = "ledger-tests:claimed-by"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ledger_command() -> list[str]:
    script = Path(sys.executable).with_name("ledger")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "api.cli"]


# RabbitMQ


def rabbitmq_queue_names() -> list[str]:
    return [name for base in ACTOR_QUEUES for name in (base, f"{base}.DQ", f"{base}.XQ")]


def rabbitmq_messages(url: str) -> dict[str, int]:
    """Ready messages per existing actor queue (a passive declare; missing queues left out)."""
    import pika
    import pika.exceptions

    counts: dict[str, int] = {}
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for name in rabbitmq_queue_names():
            channel = connection.channel()
            try:
                declared = channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                continue  # not declared yet
            counts[name] = declared.method.message_count
            channel.close()
    finally:
        connection.close()
    return counts


def purge_rabbitmq(url: str) -> None:
    import pika
    import pika.exceptions

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for name in rabbitmq_queue_names():
            channel = connection.channel()
            try:
                channel.queue_declare(name, passive=True)
                channel.queue_purge(name)
            except pika.exceptions.ChannelClosedByBroker:
                continue
            channel.close()
    finally:
        connection.close()


@contextlib.contextmanager
def rabbitmq_isolated(url: str = RABBITMQ_URL, wait_seconds: float = 120) -> Iterator[str]:
    """Hold the run's lock on the actor queues; purge them before and after."""
    with RABBITMQ_LOCK.open("a") as lock:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another test run holds {RABBITMQ_LOCK}") from None
                time.sleep(0.2)
        try:
            purge_rabbitmq(url)
            yield url
        finally:
            with contextlib.suppress(Exception):
                purge_rabbitmq(url)
            fcntl.flock(lock, fcntl.LOCK_UN)


# Redis


@contextlib.contextmanager
def redis_isolated(base_url: str = REDIS_URL) -> Iterator[str]:
    """A Redis database of this run's own: `redis://host:port/<n>`; cleaned afterwards."""
    import redis

    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    admin = redis.Redis.from_url(f"{base_url}/0")
    try:
        databases = int(admin.config_get("databases").get("databases", 16))
    finally:
        admin.close()
    for number in range(databases - 1, 0, -1):
        client = redis.Redis.from_url(f"{base_url}/{number}")
        try:
            if client.dbsize() == 0 and client.set(REDIS_CLAIM, token, nx=True, ex=900):
                if client.dbsize() == 1:
                    break
                client.delete(REDIS_CLAIM)
        except BaseException:
            client.close()
            raise
        client.close()
    else:
        raise RuntimeError("no free Redis database to isolate this test run in")
    try:
        yield f"{base_url}/{number}"
    finally:
        try:
            keys = list(client.scan_iter("dramatiq:*"))
            if keys:
                client.delete(*keys)
            if client.get(REDIS_CLAIM) == token.encode():
                client.delete(REDIS_CLAIM)
        finally:
            client.close()


def redis_keys(url: str) -> list[str]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return sorted(k.decode() for k in client.scan_iter("*"))
    finally:
        client.close()


# The sandbox video platform


@dataclass
class Platform:
    """A `ledger sandbox-platform` process and its switches."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def faults(self, **switches: Any) -> dict[str, Any]:
        reply = httpx.post(f"{self.url}/sandbox/faults", json=switches, timeout=5)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def clear_faults(self) -> None:
        self.faults(
            latency_ms=0, error_rate=0.0, timeout_after_credit=0, fail_accounts=[], hang_seconds=10
        )

    def credits(self, account: str | None = None) -> list[dict[str, Any]]:
        params = {"account": account} if account else {}
        reply = httpx.get(f"{self.url}/sandbox/credits", params=params, timeout=5)
        assert reply.status_code == 200, reply.text
        return list(reply.json()["credits"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.unlink(missing_ok=True)


def start_platform(env: dict[str, str] | None = None, *args: str) -> Platform:
    """`ledger sandbox-platform --port <free>` with `args`; returns once it answers."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="ledger-sandbox-platform-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*ledger_command(), "sandbox-platform", "--port", str(port), *args],
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    platform = Platform(process, port, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            output = platform.output()
            platform.stop()
            raise RuntimeError(f"the sandbox platform exited:\n{output}")
        try:
            if httpx.get(f"{platform.url}/sandbox/faults", timeout=0.5).status_code == 200:
                return platform
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            platform.stop()
            raise RuntimeError("the sandbox platform did not answer within 30 s")
        time.sleep(0.1)


# A process's TCP connections (Linux), to see a call in flight


def connected_to(pid: int, port: int) -> bool:
    """Whether process `pid` has an established TCP connection to 127.0.0.1:`port`."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
            return True
    return False
