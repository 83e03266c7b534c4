"""The production topology under load with a crash: scripts/cluster (HAProxy in front of two
`ledger serve` processes, a projection runner, a dramatiq worker on RabbitMQ) against a fresh
database and a sandbox platform; 200 recharges and 200 stock purchases through the balancer
from several client threads while one API process is SIGKILLed (the cluster starts it again).
Clients retry a failed request with the same Idempotency-Key (a new nonce) until they get an
answer. Then nothing is lost or doubled: every 2xx recorded once, every recharge credited once
at the platform, the trial balance zero, `ledger verify` passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Api, Caller, create_tokens, free_port, ledger_command, ledger_env
from tests.recharge_support import Platform, rabbitmq_isolated, start_platform

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
N = 200  # recharges, and as many stock purchases of one unit
CLIENTS = 6
WHOLESALE, FACE = 2000, 3000
UNLIMITED = str(10**9)
RUN_SECONDS = 120  # the whole load phase, retries included
RETRIED = {502, 503, 504}  # the balancer found no process, or lost the one it used


@dataclass
class Cluster:
    process: subprocess.Popen[bytes]
    run_dir: Path
    log: Path
    url: str

    def state(self) -> dict[str, Any]:
        path = self.run_dir / "cluster.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def ready(self, url: str) -> bool:
        try:
            return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the cluster exited with {self.process.returncode}:\n{self.output()}")
            apis = [v for k, v in self.state().items() if k.startswith("api-")]
            if (
                len(apis) == 2
                and all(self.ready(f"http://127.0.0.1:{api['port']}") for api in apis)
                and self.ready(self.url)
            ):
                return
            time.sleep(0.2)
        pytest.fail(f"the cluster was not ready in {seconds} s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for entry in self.state().values():  # whatever the cluster could not stop itself
            pid = entry.get("pid")
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    started = start_platform()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def cluster(database_url: str, platform: Platform) -> Iterator[Cluster]:
    with rabbitmq_isolated() as broker:
        port = free_port()
        run_dir = Path(tempfile.mkdtemp(prefix="ledger-cluster-test-"))
        log = run_dir / "cluster.log"
        env = ledger_env(database_url) | {
            "BROKER_URL": broker,
            "LEDGER_SANDBOX": "true",  # the SMS outbox the test reads verification codes from
            "LEDGER_SANDBOX_PLATFORM_PORT": str(platform.port),  # ours; serve starts none
            "LEDGER_SANDBOX_PLATFORM_START": "false",
            "LEDGER_RATE_ACCOUNT_PER_MINUTE": UNLIMITED,
            "LEDGER_RATE_ADDRESS_PER_MINUTE": UNLIMITED,
            "LEDGER_RATE_CHANNEL_PER_MINUTE": UNLIMITED,
            "LEDGER_POOL_SIZE": "4",
        }
        command = [
            sys.executable,
            str(ROOT / "scripts" / "cluster"),
            "--api", "2",
            "--projections", "1",
            "--port", str(port),
            "--check-interval-ms", "300",
            "--run-dir", str(run_dir),
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        started = Cluster(process, run_dir, log, f"http://127.0.0.1:{port}")
        try:
            started.wait_ready()
            yield started
        finally:
            started.stop()


@dataclass
class Work:
    kind: str  # "recharge" or "purchase"
    path: str
    body: dict[str, Any]
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)


def until_answered(caller: Caller, work: Work, deadline: float) -> None:
    """The same Idempotency-Key every time, a new nonce (Caller signs each try afresh)."""
    while time.monotonic() < deadline:
        work.attempts += 1
        try:
            reply = caller.post(work.path, work.body, idempotency_key=work.key)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        code = reply.json().get("code") if reply.status_code >= 400 else None
        if reply.status_code in RETRIED or code == "request_in_flight":
            time.sleep(0.3)  # in flight on the killed process: taken over once abandoned
            continue
        work.status, work.answer = reply.status_code, dict(reply.json())
        return
    raise AssertionError(f"no answer for {work.kind} {work.key} in {RUN_SECONDS} s")


def count(db: psycopg.Connection[Any], table: str, topic: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table} WHERE topic LIKE %s", (f"%:{topic}",))
    found = row.fetchone()
    assert found is not None
    return int(found[0])


def test_nothing_is_lost_or_doubled_when_an_api_process_dies_behind_the_balancer(
    cluster: Cluster, platform: Platform, database_url: str, db: psycopg.Connection[Any]
) -> None:
    operator_token, finance_token = create_tokens(database_url, "operator", "finance")
    tokens = {"operator": operator_token, "finance": finance_token}
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    with httpx.Client(timeout=30, limits=limits) as http:
        api = Api(http, cluster.url, tokens)
        platform_id = api.operator.post(
            "/v1/platforms", {"name": "Balanced", "gateway_url": platform.url}
        ).json()["id"]
        product = api.product(platform_id, wholesale=WHOLESALE, face=FACE)
        shop = api.top_channel("Behind the balancer")
        api.deposit(shop, 2 * N * WHOLESALE)
        api.buy(shop, product, N)
        batch = shop.post("/v1/code-batches", {"product_id": product, "quantity": N})
        assert batch.status_code == 201, batch.text
        codes = batch.json()["codes"]
        accounts = [f"139{i:08d}" for i in range(N)]
        for account in accounts:
            sent = shop.post("/v1/verification-codes", {"account": account})
            assert sent.status_code == 202, sent.text
        rows = db.execute(
            "SELECT DISTINCT ON (account) account, code FROM sandbox_sms_outbox "
            "ORDER BY account, id DESC"
        ).fetchall()
        verification = dict(rows)
        assert set(accounts) <= set(verification)

        recharges = [
            Work(
                "recharge",
                "/v1/recharges",
                {"code": c, "account": a, "verification_code": verification[a]},
            )
            for c, a in zip(codes, accounts, strict=True)
        ]
        purchases = [
            Work("purchase", "/v1/stock-purchases", {"product_id": product, "quantity": 1})
            for _ in range(N)
        ]
        work = [w for pair in zip(recharges, purchases, strict=True) for w in pair]
        shares = [work[i::CLIENTS] for i in range(CLIENTS)]
        done = [0]
        lock = threading.Lock()
        errors: list[BaseException] = []
        deadline = time.monotonic() + RUN_SECONDS

        def client(share: list[Work]) -> None:
            with httpx.Client(timeout=30) as own:
                caller = Caller(own, cluster.url, key_id=shop.key_id, key_secret=shop.key_secret)
                try:
                    for item in share:
                        until_answered(caller, item, deadline)
                        with lock:
                            done[0] += 1
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)

        threads = [threading.Thread(target=client, args=(s,)) for s in shares]
        for thread in threads:
            thread.start()
        try:
            while done[0] < len(work) // 4 and not errors and time.monotonic() < deadline:
                time.sleep(0.05)
            victim = cluster.state()["api-1"]
            killed_at = done[0]
            os.kill(victim["pid"], signal.SIGKILL)
            restarted = time.monotonic() + 60
            while time.monotonic() < restarted:
                now = cluster.state()["api-1"]
                if now["pid"] != victim["pid"] and cluster.ready(f"http://127.0.0.1:{now['port']}"):
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"api-1 was not started again:\n{cluster.output()}")
        finally:
            for thread in threads:
                thread.join()
        assert not errors, errors
        assert killed_at < len(work), "the process died after the run, not during it"

        # every request answered with success, and recorded once
        refused = [(w.status, w.attempts, w.answer) for w in work if w.status >= 400]
        assert [w.status for w in recharges] == [202] * N, refused
        assert [w.status for w in purchases] == [201] * N, refused
        assert len({w.answer["id"] for w in recharges}) == N
        assert len({w.answer["id"] for w in purchases}) == N
        assert count(db, "distribution_events", "Code.Reserved") == N
        # the saga starter follows Code.Reserved in its own process: give it time to catch up,
        # then the count must be exact (a reservation without its recharge is a loss)
        started = time.monotonic() + 60
        while count(db, "recharges_events", "Recharge.Requested") < N:
            assert time.monotonic() < started, f"recharges not started:\n{cluster.output()}"
            time.sleep(0.2)
        assert count(db, "recharges_events", "Recharge.Requested") == N
        assert count(db, "distribution_events", "StockPurchase.Recorded") == N + 1  # + set-up

        # every accepted recharge succeeded and was credited once at the platform
        settled = time.monotonic() + 90
        while count(db, "recharges_events", "Recharge.Succeeded") < N:
            assert time.monotonic() < settled, f"recharges unfinished:\n{cluster.output()}"
            time.sleep(0.5)
        assert count(db, "recharges_events", "Recharge.Succeeded") == N
        credited = [c["account"] for c in platform.credits()]
        assert sorted(credited) == sorted(accounts)

        # the books, once every view caught up
        caught_up = time.monotonic() + 60
        while True:
            reply = api.operator.get("/v1/projections?limit=100")
            assert reply.status_code == 200, reply.text
            if all(item["lag"] == 0 for item in reply.json()["items"]):
                break
            assert time.monotonic() < caught_up, reply.text
            time.sleep(0.5)
        assert api.funds(shop) == 0
        trial = api.trial_balance()
        assert trial["balanced"] is True
        assert all(item["total"] == 0 for item in trial["items"]), trial

    verified = subprocess.run(
        [ledger_command(), "verify"],
        env=ledger_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_api_sees_the_client_behind_the_balancer_not_a_forged_header(
    cluster: Cluster, db: psycopg.Connection[Any]
) -> None:
    """From 127.0.0.2, with a forged X-Forwarded-For: the refusal's audit line names 127.0.0.2,
    not the balancer's 127.0.0.1 (HAProxy forwarded the client's address; the API believed it
    from the trusted 127.0.0.1) nor the forged one. (The forged header alone would not pass
    either way: the API takes the right-most untrusted address; HAProxy drops it besides.)"""
    path = f"/v1/channels/{uuid.uuid4()}/funds"
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as http:
        reply = http.get(
            cluster.url + path,
            headers={"Authorization": "Bearer not-a-token", "X-Forwarded-For": "203.0.113.7"},
        )
    assert reply.status_code == 401, reply.text
    written = time.monotonic() + 10
    while (
        row := db.execute("SELECT address FROM audit_log WHERE path = %s", (path,)).fetchone()
    ) is None:
        assert time.monotonic() < written, "no audit line for the refusal"
        time.sleep(0.1)
    assert row[0] == "127.0.0.2"
