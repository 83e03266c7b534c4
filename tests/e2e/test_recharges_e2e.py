"""Recharges across processes: two `ledger serve` processes (A runs the projections, the saga
starter, the outbox dispatcher and the sweeper; B only answers requests), `ledger worker`
processes on the real RabbitMQ, and `ledger sandbox-platform` as the video platform.

The module's settings keep it fast: a 3 s gateway timeout, a 12 s saga deadline, small rate
limits (so each limit can be reached) and a lock-out after 4 wrong codes. Every test uses
end-user addresses of its own (`user.ip` in a channel's request; for the recharge page the
client address, which uvicorn takes from `X-Forwarded-For` sent by the trusted 127.0.0.1), fresh
channels and fresh accounts, so the limits of one test never touch another; and it waits for
each recharge it started to leave `pending` before the platform's fault switches are reset.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import (
    Api,
    Caller,
    Server,
    ledger_command,
    ledger_env,
    start_servers,
)
from tests.recharge_support import (
    Platform,
    connected_to,
    rabbitmq_isolated,
    start_platform,
)

pytestmark = pytest.mark.e2e

DEADLINE_SECONDS = 12
GATEWAY_TIMEOUT_SECONDS = 3
HANG_SECONDS = 5  # longer than the gateway's timeout
LATENCY_MS = 2500  # shorter than the gateway's timeout: a call in flight long enough to kill
RATE_ACCOUNT, RATE_ADDRESS, RATE_CHANNEL, LOCKOUT = 6, 12, 15, 4
PLATFORM_ENV = {
    "LEDGER_PLATFORM_SECRET": "e2e-recharges-platform-secret",
    "LEDGER_PLATFORM_PARTNER_ID": "e2e-recharges-partner",
}
SETTLE_SECONDS = 30


# processes


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[str]:
    with rabbitmq_isolated() as url:
        yield url


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    started = start_platform(PLATFORM_ENV)
    try:
        yield started
    finally:
        started.stop()


def settings_env(platform: Platform, rabbitmq: str) -> dict[str, str]:
    return {
        **PLATFORM_ENV,
        "LEDGER_SANDBOX": "true",
        "LEDGER_SANDBOX_PLATFORM_PORT": str(platform.port),
        "LEDGER_SANDBOX_PLATFORM_START": "false",  # the module's own platform, with its faults
        "BROKER_URL": rabbitmq,
        "LEDGER_POOL_SIZE": "4",
        "LEDGER_RECHARGE_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
        "LEDGER_GATEWAY_TIMEOUT_SECONDS": str(GATEWAY_TIMEOUT_SECONDS),
        "LEDGER_RATE_ACCOUNT_PER_MINUTE": str(RATE_ACCOUNT),
        "LEDGER_RATE_ADDRESS_PER_MINUTE": str(RATE_ADDRESS),
        "LEDGER_RATE_CHANNEL_PER_MINUTE": str(RATE_CHANNEL),
        "LEDGER_LOCKOUT_WRONG_CODES": str(LOCKOUT),
        "LEDGER_WORKER_THREADS": "4",
    }


@pytest.fixture(scope="module")
def servers(database_url: str, platform: Platform, rabbitmq: str) -> Iterator[list[Server]]:
    env = settings_env(platform, rabbitmq)
    started = start_servers(database_url, 2, [env, env | {"LEDGER_RUN_PROJECTIONS": "false"}])
    try:
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def server(servers: list[Server]) -> Server:
    """Overrides conftest's: `api` talks to process A."""
    return servers[0]


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Workers:
    """`ledger worker` processes on the module's RabbitMQ."""

    env: dict[str, str]
    running: list[Worker] = field(default_factory=list)

    def start(self) -> Worker:
        log = Path(tempfile.mkstemp(prefix="ledger-worker-", suffix=".log")[1])
        with log.open("wb") as out:
            process = subprocess.Popen(
                [ledger_command(), "worker"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        worker = Worker(process, log)
        self.running.append(worker)
        deadline = time.monotonic() + 30
        while "worker on" not in worker.output():
            if process.poll() is not None:
                pytest.fail(f"ledger worker exited with {process.returncode}:\n{worker.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"ledger worker did not start in 30 s:\n{worker.output()}")
            time.sleep(0.05)
        return worker

    def kill(self, worker: Worker) -> None:
        """SIGKILL: no clean-up, no acknowledgement, no goodbye to the broker."""
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        self.running.remove(worker)
        worker.log.unlink(missing_ok=True)

    def stop_all(self) -> None:
        for worker in list(self.running):
            if worker.process.poll() is None:
                worker.process.terminate()
                try:
                    worker.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait(timeout=10)
            self.running.remove(worker)
            worker.log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def workers(
    database_url: str, platform: Platform, rabbitmq: str, servers: list[Server]
) -> Iterator[Workers]:
    pool = Workers(ledger_env(database_url) | settings_env(platform, rabbitmq))
    pool.start()
    try:
        yield pool
    finally:
        pool.stop_all()


# the desk: shops, accounts, addresses, recharges


def new_account() -> str:
    return f"138{uuid.uuid4().int % 10**8:08d}"


def new_address() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def mistype(code: str) -> str:
    """One symbol changed: the check symbol no longer matches."""
    return ("7" if code[0] != "7" else "8") + code[1:]


def well_formed_unknown_code() -> str:
    from ledger.distribution.code_format import new_code

    return new_code()


def assert_problem(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.headers
    problem = reply.json()
    assert problem["code"] == code and problem["status"] == status, problem
    assert problem["detail"] and problem["request_id"], problem
    return dict(problem)


def clear_of_window_edge(window_seconds: int, needed: float = 5.0) -> None:
    """The limits are fixed-window counters (adapters/rate_limits.py) that restart at multiples
    of their window: a burst that must land in one window starts with `needed` seconds left."""
    left = window_seconds - time.time() % window_seconds
    if left < needed:
        time.sleep(left + 0.05)


def assert_rate_limited(reply: httpx.Response, at_most: int) -> int:
    assert_problem(reply, 429, "rate_limited")
    wait = int(reply.headers["Retry-After"])
    assert 1 <= wait <= at_most, wait
    return wait


@dataclass
class Shop:
    channel: Caller
    product_id: str
    batch_id: str
    codes: list[str]
    expires_at: str | None = None


@dataclass
class Desk:
    """What a test does through the API, remembering each recharge it got accepted."""

    api: Api
    servers: list[Server]
    platform: Platform
    product_id: str
    accepted: list[tuple[Caller, str]] = field(default_factory=list)

    def shop(
        self,
        codes: int = 1,
        stock: int | None = None,
        expires_in: float | None = None,
        **batch: Any,
    ) -> Shop:
        channel = self.api.top_channel(f"Shop {uuid.uuid4().hex[:6]}")
        self.api.deposit(channel, 1_000_000)
        self.api.buy(channel, self.product_id, stock or codes)
        if expires_in is not None:
            batch["expires_at"] = (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat()
        reply = channel.post(
            "/v1/code-batches", {"product_id": self.product_id, "quantity": codes, **batch}
        )
        assert reply.status_code == 201, reply.text
        return Shop(
            channel,
            self.product_id,
            reply.json()["id"],
            list(reply.json()["codes"]),
            reply.json()["expires_at"],
        )

    def send_code(self, channel: Caller, account: str) -> httpx.Response:
        """A channel's server asks for a code: no per-address limit applies (it is not the
        end user's address)."""
        return channel.post("/v1/verification-codes", {"account": account})

    def sms(self, account: str) -> str:
        reply = self.api.operator.get(f"/v1/sandbox/sms?account={account}")
        assert reply.status_code == 200, reply.text
        return str(reply.json()["code"])

    def verified(self, channel: Caller, account: str) -> str:
        """Send a verification code to `account` and read it from the sandbox SMS outbox."""
        sent = self.send_code(channel, account)
        assert sent.status_code == 202, sent.text
        return self.sms(account)

    def recharge(
        self, channel: Caller, code: str, account: str, verification: str, address: str | None
    ) -> httpx.Response:
        """A channel's server places a recharge for its end user at `address` (`user.ip`;
        None: no user.ip given)."""
        body: dict[str, Any] = {"code": code, "account": account, "verification_code": verification}
        if address is not None:
            body["user"] = {"ip": address, "name": f"user at {address}"}
        reply = channel.post("/v1/recharges", body)
        if reply.status_code == 202:
            self.accepted.append((channel, reply.json()["id"]))
        return reply

    def accept(self, shop: Shop, code: str, account: str | None = None) -> str:
        """A recharge that passes every check: 202 pending; its id."""
        account = account or new_account()
        address = new_address()
        verification = self.verified(shop.channel, account)
        reply = self.recharge(shop.channel, code, account, verification, address)
        assert reply.status_code == 202, reply.text
        assert reply.json()["status"] == "pending"
        return str(reply.json()["id"])

    def status(self, channel: Caller, recharge_id: str) -> dict[str, Any]:
        reply = channel.get(f"/v1/recharges/{recharge_id}")
        assert reply.status_code in (200, 404), reply.text
        return dict(reply.json()) if reply.status_code == 200 else {"status": "unseen"}

    def final(self, channel: Caller, recharge_id: str, seconds: float = SETTLE_SECONDS) -> dict:
        """The recharge once it left `pending` (succeeded, failed or review)."""
        deadline = time.monotonic() + seconds
        while True:
            found = self.status(channel, recharge_id)
            if found["status"] not in ("pending", "unseen"):
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"recharge {recharge_id} still {found['status']} after {seconds} s")
            time.sleep(0.1)

    def on_hand_held_consumed(self, shop: Shop) -> tuple[int, int, int]:
        reply = shop.channel.get(f"/v1/channels/{shop.channel.id}/stock")
        assert reply.status_code == 200, reply.text
        for item in reply.json()["items"]:
            if item["product_id"] == shop.product_id:
                return item["on_hand"], item["held"], item["consumed"]
        return 0, 0, 0

    def settle(self) -> None:
        for channel, recharge_id in self.accepted:
            self.final(channel, recharge_id, DEADLINE_SECONDS + SETTLE_SECONDS)


@pytest.fixture(scope="module")
def product_id(api: Api, platform: Platform) -> str:
    reply = api.operator.post(
        "/v1/platforms", {"name": "iQiyi (sandbox)", "gateway_url": platform.url}
    )
    assert reply.status_code == 201, reply.text
    return api.product(reply.json()["id"])


@pytest.fixture
def desk(
    api: Api, servers: list[Server], platform: Platform, product_id: str, workers: Workers
) -> Iterator[Desk]:
    platform.clear_faults()
    at_work = Desk(api, servers, platform, product_id)
    try:
        yield at_work
    finally:
        try:
            at_work.settle()
        finally:
            platform.clear_faults()
            if not workers.running:
                workers.start()


def saga_steps(database_url: str, recharge_id: str) -> list[tuple[str, str]]:
    """(step id, outcome) of every step the saga completed, read from its event stream."""
    from adapters.database import application_env
    from adapters.settings import Settings
    from ledger.recharges.application import Recharges
    from ledger.recharges.saga import Recharge

    env = application_env(Settings(), database_url, POSTGRES_POOL_SIZE="1")
    env["POSTGRES_MAX_OVERFLOW"] = "0"
    recharges = Recharges(env=env)
    try:
        stream = recharges.repository.event_store.get(uuid.UUID(recharge_id))
        return [(e.step_id, e.outcome) for e in stream if isinstance(e, Recharge.StepCompleted)]
    finally:
        recharges.close()


# (1) one code, two API processes, many hands


def test_concurrent_redemptions_of_one_code_through_two_processes_accept_exactly_one(
    desk: Desk, servers: list[Server], platform: Platform
) -> None:
    shop = desk.shop(codes=1)
    (code,) = shop.codes
    attempts = 8
    address = new_address()
    accounts = [new_account() for _ in range(attempts)]
    verifications = {a: desk.verified(shop.channel, a) for a in accounts}
    callers = [shop.channel.at(servers[i % 2].base_url) for i in range(attempts)]
    start = threading.Barrier(attempts)

    def attempt(i: int) -> httpx.Response:
        start.wait(timeout=30)
        return desk.recharge(callers[i], code, accounts[i], verifications[accounts[i]], address)

    with ThreadPoolExecutor(attempts) as pool:
        replies = list(pool.map(attempt, range(attempts)))

    accepted = [i for i, r in enumerate(replies) if r.status_code == 202]
    assert len(accepted) == 1, [(r.status_code, r.text) for r in replies]
    for i, reply in enumerate(replies):
        if i not in accepted:
            problem = assert_problem(reply, 409, reply.json().get("code", "?"))
            assert problem["code"] in ("code_in_use", "code_already_redeemed"), problem
    winner = accounts[accepted[0]]
    recharge_id = replies[accepted[0]].json()["id"]

    final = desk.final(shop.channel, recharge_id)

    assert final["status"] == "succeeded", final
    assert final["account"] == winner
    credits = [c for a in accounts for c in platform.credits(a)]
    assert [(c["account"], c["order_no"]) for c in credits] == [(winner, recharge_id)]
    # both processes know it is spent now
    loser = accounts[(accepted[0] + 1) % attempts]
    for server in servers:
        again = desk.recharge(
            shop.channel.at(server.base_url), code, loser, verifications[loser], address
        )
        assert_problem(again, 409, "code_already_redeemed")
    assert desk.on_hand_held_consumed(shop) == (0, 0, 1)


# (2) the platform credits, then times out


def test_a_platform_that_times_out_after_crediting_is_queried_and_credits_once(
    desk: Desk, platform: Platform, database_url: str
) -> None:
    shop = desk.shop(codes=1)
    account = new_account()
    platform.faults(timeout_after_credit=1, hang_seconds=HANG_SECONDS)

    recharge_id = desk.accept(shop, shop.codes[0], account)
    final = desk.final(shop.channel, recharge_id)

    assert final["status"] == "succeeded", final
    assert len(platform.credits(account)) == 1
    assert (
        final["membership"]["platform_order_id"]
        == platform.credits(account)[0]["platform_order_id"]
    )
    stranger = desk.shop(codes=1).channel  # another channel does not see it at all
    assert_problem(stranger.get(f"/v1/recharges/{recharge_id}"), 404, "not_found")
    # the reply was lost to the timeout; the saga asked instead of sending again
    assert saga_steps(database_url, recharge_id) == [
        ("1-recharge", "unknown"),
        ("2-query", "succeeded"),
    ]


# (3) a worker dies in the middle of a step


def test_a_worker_killed_in_the_middle_of_a_step_is_replaced_and_the_saga_finishes(
    desk: Desk, platform: Platform, workers: Workers
) -> None:
    shop = desk.shop(codes=1)
    account = new_account()
    workers.stop_all()
    victim = workers.start()  # a fresh process: no connection to the platform yet
    platform.faults(latency_ms=LATENCY_MS)

    recharge_id = desk.accept(shop, shop.codes[0], account)
    deadline = time.monotonic() + 20
    while not connected_to(victim.pid, platform.port):
        assert time.monotonic() < deadline, f"the step never started:\n{victim.output()}"
        time.sleep(0.02)
    # the platform answers only after its latency: the call is in flight
    assert platform.credits(account) == []
    assert desk.status(shop.channel, recharge_id)["status"] == "pending"
    workers.kill(victim)
    assert victim.process.returncode == -signal.SIGKILL

    workers.start()  # RabbitMQ gives the unacknowledged step to the new worker
    final = desk.final(shop.channel, recharge_id)

    assert final["status"] == "succeeded", final
    assert len(platform.credits(account)) == 1
    again = desk.recharge(
        shop.channel, shop.codes[0], account, desk.verified(shop.channel, account), new_address()
    )
    assert_problem(again, 409, "code_already_redeemed")
    assert desk.on_hand_held_consumed(shop) == (0, 0, 1)


# (4) definite failure


def test_a_definite_failure_fails_the_recharge_and_releases_the_code(
    desk: Desk, platform: Platform
) -> None:
    shop = desk.shop(codes=1)
    refused, other = new_account(), new_account()
    platform.faults(fail_accounts=[refused])

    failed_id = desk.accept(shop, shop.codes[0], refused)
    failed = desk.final(shop.channel, failed_id)

    assert failed["status"] == "failed", failed
    assert "account_not_eligible" in failed["failure"]
    assert platform.credits(refused) == []
    assert desk.on_hand_held_consumed(shop) == (0, 1, 0)  # the code holds its unit again

    # the released code is redeemable again (the dispatcher releases it right after the failure)
    verification = desk.verified(shop.channel, other)
    deadline = time.monotonic() + 10
    while True:
        reply = desk.recharge(shop.channel, shop.codes[0], other, verification, new_address())
        if reply.status_code == 202 or time.monotonic() > deadline:
            break
        assert_problem(reply, 409, "code_in_use")
        time.sleep(0.2)
    assert reply.status_code == 202, reply.text
    assert desk.final(shop.channel, reply.json()["id"])["status"] == "succeeded"
    assert len(platform.credits(other)) == 1


# (5) outcome unknown past the deadline: review, then an operator


def test_an_unknown_outcome_past_the_deadline_goes_to_review_and_an_operator_resolves_it(
    desk: Desk, platform: Platform, api: Api
) -> None:
    shop = desk.shop(codes=2)
    first, second = new_account(), new_account()
    platform.faults(error_rate=1.0)

    ids = [desk.accept(shop, shop.codes[0], first), desk.accept(shop, shop.codes[1], second)]
    reviewed = [desk.final(shop.channel, i, DEADLINE_SECONDS + SETTLE_SECONDS) for i in ids]

    assert [r["status"] for r in reviewed] == ["review", "review"], reviewed
    assert "deadline" in reviewed[0]["failure"]
    assert platform.credits(first) == platform.credits(second) == []
    platform.clear_faults()

    body = {"outcome": "succeeded", "note": "the platform's back office shows the order"}
    refused = shop.channel.post(f"/v1/recharges/{ids[0]}/resolution", body)
    assert_problem(refused, 403, "forbidden")
    resolved = api.operator.post(f"/v1/recharges/{ids[0]}/resolution", body)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "succeeded"
    failed = api.operator.post(
        f"/v1/recharges/{ids[1]}/resolution",
        {"outcome": "failed", "note": "the platform never saw the order"},
    )
    assert failed.status_code == 200, failed.text
    assert failed.json()["status"] == "failed"
    assert "never saw" in failed.json()["failure"]
    twice = api.operator.post(f"/v1/recharges/{ids[1]}/resolution", body)
    assert_problem(twice, 409, "state_conflict")
    assert desk.status(shop.channel, ids[0])["status"] == "succeeded"
    assert desk.status(shop.channel, ids[1])["status"] == "failed"

    # the dispatcher settles both codes: one consumed, one back to be redeemed
    deadline = time.monotonic() + 10
    while desk.on_hand_held_consumed(shop) != (0, 1, 1):
        assert time.monotonic() < deadline, desk.on_hand_held_consumed(shop)
        time.sleep(0.2)
    retry = desk.accept(shop, shop.codes[1])
    assert desk.final(shop.channel, retry)["status"] == "succeeded"


# (6) webhooks


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A channel's webhook endpoint: answers 500 to the first `failures` deliveries, then 200."""

    def __init__(self, failures: int) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = 500 if len(receiver.deliveries) < failures else 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.deliveries.append(Delivery(self.path, headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(failures=2)
    try:
        yield started
    finally:
        started.close()


def test_each_final_state_reaches_the_channels_webhook_signed_and_retried_until_2xx(
    desk: Desk, receiver: Receiver
) -> None:
    shop = desk.shop(codes=1)
    hook = f"{receiver.url}/hooks/ledger?tenant=7"
    set_url = shop.channel.put(f"/v1/channels/{shop.channel.id}/webhook", {"url": hook})
    assert set_url.status_code == 200, set_url.text
    secret = set_url.json()["secret"]
    account = new_account()

    recharge_id = desk.accept(shop, shop.codes[0], account)
    assert desk.final(shop.channel, recharge_id)["status"] == "succeeded"
    deadline = time.monotonic() + SETTLE_SECONDS
    while not any(d.answered == 200 for d in receiver.deliveries):
        assert time.monotonic() < deadline, receiver.deliveries
        time.sleep(0.1)
    time.sleep(1.5)  # nothing more comes once a delivery was answered 2xx

    deliveries = list(receiver.deliveries)
    assert [d.answered for d in deliveries] == [500, 500, 200]
    events = [json.loads(d.body) for d in deliveries]
    assert all(e == events[0] for e in events), "a retry resends the same event"
    event = events[0]
    assert event["event_id"] and event["type"] == "recharge.succeeded"
    assert event["data"]["id"] == recharge_id
    assert (event["data"]["status"], event["data"]["account"]) == ("succeeded", account)
    assert event["data"]["channel_id"] == shop.channel.id
    for delivery in deliveries:
        assert delivery.path == "/hooks/ledger?tenant=7"
        assert delivery.headers["x-event-id"] == event["event_id"]
        timestamp, nonce = delivery.headers["x-timestamp"], delivery.headers["x-nonce"]
        assert abs(int(timestamp) - time.time()) < 120
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,64}", nonce), nonce
        # signing v2: method, path?query, timestamp, nonce, an empty idempotency key, body digest
        digest = hashlib.sha256(delivery.body).hexdigest()
        signed = "\n".join(["POST", delivery.path, timestamp, nonce, "", digest])
        expected = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        assert hmac.compare_digest(delivery.headers["x-signature"], expected)
    assert len({d.headers["x-nonce"] for d in deliveries}) == len(deliveries), "a nonce each"


# (7) the recharge API's checks


def test_verification_codes_wrong_expired_and_at_most_three_sends_in_ten_minutes(
    desk: Desk, database_url: str, events: Callable[[], int]
) -> None:
    shop = desk.shop(codes=1)
    account, address = new_account(), new_address()
    clear_of_window_edge(600)  # the three sends below fall in one ten-minute window
    right = desk.verified(shop.channel, account)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    before = events()

    reply = desk.recharge(shop.channel, shop.codes[0], account, wrong, address)
    assert_problem(reply, 422, "verification_failed")

    with psycopg.connect(database_url, autocommit=True) as conn:  # five minutes pass
        conn.execute(
            "UPDATE verification_codes SET expires_at = now() - interval '1 second' "
            "WHERE account = %s",
            (account,),
        )
    reply = desk.recharge(shop.channel, shop.codes[0], account, right, address)
    assert_problem(reply, 422, "verification_failed")
    assert events() == before

    for _ in range(2):  # the second and third code of the ten minutes
        assert desk.send_code(shop.channel, account).status_code == 202
    assert_rate_limited(desk.send_code(shop.channel, account), 905)

    fresh = desk.sms(account)
    assert desk.recharge(shop.channel, shop.codes[0], account, fresh, address).status_code == 202


def test_five_wrong_verification_codes_lock_the_code(desk: Desk) -> None:
    shop = desk.shop(codes=1)
    account, address = new_account(), new_address()
    right = desk.verified(shop.channel, account)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    answers = [
        desk.recharge(shop.channel, shop.codes[0], account, wrong, address).json()["code"]
        for _ in range(5)
    ]
    assert answers == ["verification_failed"] * 4 + ["verification_locked"]
    locked = desk.recharge(shop.channel, shop.codes[0], account, right, address)
    assert_problem(locked, 423, "verification_locked")


def test_each_wrong_code_has_its_documented_answer(desk: Desk, events: Callable[[], int]) -> None:
    expiring = desk.shop(codes=1, expires_in=2)
    shop = desk.shop(codes=3, stock=4)
    inactive = shop.channel.post(
        "/v1/code-batches", {"product_id": shop.product_id, "quantity": 1, "inactive": True}
    )
    assert inactive.status_code == 201, inactive.text
    foreign = desk.shop(codes=1)
    voided = shop.channel.post("/v1/code-voids", {"codes": [shop.codes[2]]})
    assert voided.status_code == 200 and voided.json() == {"voided": 1}, voided.text
    accounts = [new_account(), new_account()]
    verification = {a: desk.verified(shop.channel, a) for a in accounts}

    def attempt(channel: Caller, code: str, n: int) -> httpx.Response:
        account = accounts[n % 2]  # each account stays under its limit
        return desk.recharge(channel, code, account, verification[account], new_address())

    before = events()
    malformed = assert_problem(attempt(shop.channel, mistype(shop.codes[0]), 0), 422,
                               "code_malformed")  # fmt: skip
    invalid = [
        assert_problem(attempt(shop.channel, code, n), 422, "code_invalid")
        for n, code in enumerate(
            [
                well_formed_unknown_code(),  # unknown
                shop.codes[2],  # voided
                foreign.codes[0],  # another channel's
                inactive.json()["codes"][0],  # inactive
            ]
        )
    ]
    assert len({p["detail"] for p in invalid}) == 1, "one answer for all, nothing leaks"
    assert "check" in malformed["detail"]
    assert events() == before

    # past its date (whether or not the sweeper expired it yet)
    expiring_account = new_account()
    verified = desk.verified(expiring.channel, expiring_account)
    assert expiring.expires_at is not None
    left = datetime.fromisoformat(expiring.expires_at) - datetime.now(UTC)
    time.sleep(max(0.0, left.total_seconds()) + 0.05)
    expired = desk.recharge(
        expiring.channel, expiring.codes[0], expiring_account, verified, new_address()
    )
    assert_problem(expired, 422, "code_expired")

    # the sweeper expires it: the unit a sold code held becomes breakage, and the books balance
    deadline = time.monotonic() + 15
    while desk.on_hand_held_consumed(expiring) != (0, 0, 0):
        assert time.monotonic() < deadline, desk.on_hand_held_consumed(expiring)
        time.sleep(0.2)
    breakage = f"channel:{expiring.channel.id}:breakage:{expiring.product_id}"
    reply = desk.api.finance.get(f"/v1/ledger/accounts/{breakage}/balance")
    assert reply.status_code == 200, reply.text
    assert [(b["asset"], b["posted"]) for b in reply.json()["balances"]] == [
        (f"unit:{expiring.product_id}", 1)
    ]
    assert desk.api.trial_balance()["balanced"] is True

    # the right code, typed sloppily, is still the right code
    sloppy = shop.codes[0].lower().replace("-", " ")
    assert attempt(shop.channel, sloppy, 1).status_code == 202


def test_rate_limits_per_account_address_and_channel_answer_429_with_retry_after(
    desk: Desk,
) -> None:
    # per account and sender: the 7th try in a minute for one account from one sender (here
    # the channel's server, no user.ip, so no lock-out either); the account's other senders
    # are not held back by it (issue 10: before, 7 tries from 7 addresses stopped the account)
    shop = desk.shop(codes=1)
    account = new_account()
    verification = desk.verified(shop.channel, account)
    unknown = well_formed_unknown_code()
    clear_of_window_edge(60)
    replies = [
        desk.recharge(shop.channel, unknown, account, verification, None)
        for _ in range(RATE_ACCOUNT + 1)
    ]
    assert [r.status_code for r in replies] == [422] * RATE_ACCOUNT + [429]
    assert_rate_limited(replies[-1], 120)
    elsewhere = desk.recharge(shop.channel, shop.codes[0], account, verification, new_address())
    assert elsewhere.status_code == 202, elsewhere.text

    # per address: the 13th try from one address, each for another account
    shop = desk.shop(codes=1)
    address = new_address()
    clear_of_window_edge(60)
    replies = [
        desk.recharge(shop.channel, shop.codes[0], new_account(), "123456", address)
        for _ in range(RATE_ADDRESS + 1)
    ]
    assert [r.json()["code"] for r in replies] == ["verification_failed"] * RATE_ADDRESS + [
        "rate_limited"
    ]
    assert_rate_limited(replies[-1], 120)

    # per channel: the 16th try on one channel, each from another address and account
    shop = desk.shop(codes=1)
    clear_of_window_edge(60)
    replies = [
        desk.recharge(shop.channel, shop.codes[0], new_account(), "123456", new_address())
        for _ in range(RATE_CHANNEL + 1)
    ]
    assert [r.json()["code"] for r in replies] == ["verification_failed"] * RATE_CHANNEL + [
        "rate_limited"
    ]
    assert_rate_limited(replies[-1], 120)


def test_repeated_wrong_codes_from_one_address_lock_it_out(desk: Desk) -> None:
    shop = desk.shop(codes=1)
    account, address = new_account(), new_address()
    verification = desk.verified(shop.channel, account)
    clear_of_window_edge(900)
    wrong = [
        desk.recharge(shop.channel, code, account, verification, address)
        for code in [well_formed_unknown_code(), mistype(shop.codes[0])] * (LOCKOUT // 2)
    ]
    assert [r.json()["code"] for r in wrong] == ["code_invalid", "code_malformed"] * (LOCKOUT // 2)

    locked = desk.recharge(shop.channel, shop.codes[0], account, verification, address)

    wait = assert_rate_limited(locked, 900 + 900 // LOCKOUT + 2)
    # a sliding 15-minute window: the next try comes once enough of these ten have slid out of
    # it, past the end of the current window (the boundary itself does not reset the count)
    expected = (900 - time.time() % 900) + 900 * (1 - (LOCKOUT - 1) / LOCKOUT)
    assert abs(wait - expected) <= 2, (wait, expected)
    # the lock-out is the address's, whatever the account
    other = new_account()
    other_verification = desk.verified(shop.channel, other)
    assert_rate_limited(
        desk.recharge(shop.channel, shop.codes[0], other, other_verification, address), 1800
    )
    # another end user through the same channel server is not locked out, nor is the same
    # request from elsewhere
    elsewhere = desk.recharge(shop.channel, shop.codes[0], account, verification, new_address())
    assert elsewhere.status_code == 202, elsewhere.text


def test_a_channels_server_is_never_limited_or_locked_out_for_its_own_address(desk: Desk) -> None:
    """Every request below comes from the one channel server (127.0.0.1); the end users' own
    addresses are `user.ip`, or absent."""
    # more recharges than one address may place in a minute, for users without user.ip
    shop = desk.shop(codes=1)
    clear_of_window_edge(60)
    replies = [
        desk.recharge(shop.channel, shop.codes[0], new_account(), "123456", None)
        for _ in range(RATE_ADDRESS + 1)
    ]
    assert [r.json()["code"] for r in replies] == ["verification_failed"] * (RATE_ADDRESS + 1)

    # and for users each at an address of their own
    shop = desk.shop(codes=1)
    clear_of_window_edge(60)
    replies = [
        desk.recharge(shop.channel, shop.codes[0], new_account(), "123456", new_address())
        for _ in range(RATE_ADDRESS + 1)
    ]
    assert [r.json()["code"] for r in replies] == ["verification_failed"] * (RATE_ADDRESS + 1)

    # more verification codes than one address may ask for in a minute
    clear_of_window_edge(60)
    sent = [desk.send_code(shop.channel, new_account()) for _ in range(RATE_ADDRESS + 1)]
    assert [r.status_code for r in sent] == [202] * (RATE_ADDRESS + 1), sent[-1].text

    # wrong codes without user.ip lock nobody out: the right code still goes through
    shop = desk.shop(codes=1)
    account = new_account()
    verification = desk.verified(shop.channel, account)
    clear_of_window_edge(900)
    wrong = [
        desk.recharge(shop.channel, well_formed_unknown_code(), account, verification, None)
        for _ in range(LOCKOUT + 1)
    ]
    assert [r.json()["code"] for r in wrong] == ["code_invalid"] * (LOCKOUT + 1)
    right = desk.recharge(shop.channel, shop.codes[0], account, verification, None)
    assert right.status_code == 202, right.text


def test_a_double_tap_on_a_redeemed_code_does_not_count_towards_the_lock_out(
    desk: Desk,
) -> None:
    shop = desk.shop(codes=2)
    address = new_address()
    first = desk.accept(shop, shop.codes[0])
    assert desk.final(shop.channel, first)["status"] == "succeeded"

    account = new_account()
    verification = desk.verified(shop.channel, account)
    clear_of_window_edge(900)
    taps = [
        desk.recharge(shop.channel, shop.codes[0], account, verification, address)
        for _ in range(LOCKOUT + 1)
    ]
    assert [r.json()["code"] for r in taps] == ["code_already_redeemed"] * (LOCKOUT + 1)
    fresh = desk.recharge(shop.channel, shop.codes[1], account, verification, address)
    assert fresh.status_code == 202, fresh.text


def test_the_recharge_pages_limits_apply_to_the_client_behind_the_trusted_proxy(
    desk: Desk,
) -> None:
    """The page is anonymous: its end user is the client address, which uvicorn takes from the
    X-Forwarded-For that the trusted proxy (127.0.0.1 here) sends."""
    shop = desk.shop(codes=1)
    page = desk.api.anonymous
    account, guesser, other = new_account(), new_address(), new_address()

    def via(address: str, path: str, body: dict[str, Any]) -> httpx.Response:
        body = {**body, "channel_id": shop.channel.id}
        return page.post(path, body, headers={"X-Forwarded-For": address})

    sent = via(guesser, "/v1/verification-codes", {"account": account})
    assert sent.status_code == 202, sent.text
    verification = desk.sms(account)
    clear_of_window_edge(900)
    attempt = {"account": account, "verification_code": verification}
    wrong = [
        via(guesser, "/v1/recharges", attempt | {"code": well_formed_unknown_code()})
        for _ in range(LOCKOUT)
    ]
    assert [r.json()["code"] for r in wrong] == ["code_invalid"] * LOCKOUT
    right = attempt | {"code": shop.codes[0]}
    assert_rate_limited(via(guesser, "/v1/recharges", right), 1800)
    # the same end user through a channel's server (user.ip) is the same address
    through_channel = desk.recharge(shop.channel, shop.codes[0], account, verification, guesser)
    assert_rate_limited(through_channel, 1800)
    # another client behind the same proxy is not locked out
    accepted = via(other, "/v1/recharges", right)
    assert accepted.status_code == 202, accepted.text
    desk.accepted.append((shop.channel, accepted.json()["id"]))

    # the page's per-address limit: the 13th verification code from one client in a minute
    crowded = new_address()
    clear_of_window_edge(60)
    replies = [
        via(crowded, "/v1/verification-codes", {"account": new_account()})
        for _ in range(RATE_ADDRESS + 1)
    ]
    assert [r.status_code for r in replies] == [202] * RATE_ADDRESS + [429]
    assert_rate_limited(replies[-1], 120)


def test_an_inactive_batch_redeems_only_after_its_codes_are_activated(desk: Desk) -> None:
    shop = desk.shop(codes=2, inactive=True)
    account = new_account()
    verification = desk.verified(shop.channel, account)
    refused = desk.recharge(shop.channel, shop.codes[0], account, verification, new_address())
    assert_problem(refused, 422, "code_invalid")

    activated = shop.channel.post("/v1/code-activations", {"codes": [shop.codes[0]]})
    assert activated.status_code == 200, activated.text
    assert activated.json() == {"activated": 1}

    accepted = desk.recharge(shop.channel, shop.codes[0], account, verification, new_address())
    assert accepted.status_code == 202, accepted.text
    other = new_account()
    unsold = desk.recharge(
        shop.channel, shop.codes[1], other, desk.verified(shop.channel, other), new_address()
    )
    assert_problem(unsold, 422, "code_invalid")
    assert desk.final(shop.channel, accepted.json()["id"])["status"] == "succeeded"


def test_voids_by_codes_and_by_batch_return_the_units_to_stock(desk: Desk) -> None:
    shop = desk.shop(codes=3, stock=5)
    assert desk.on_hand_held_consumed(shop) == (2, 3, 0)

    by_codes = shop.channel.post("/v1/code-voids", {"codes": [shop.codes[0]]})
    assert by_codes.status_code == 200 and by_codes.json() == {"voided": 1}, by_codes.text
    assert desk.on_hand_held_consumed(shop) == (3, 2, 0)

    by_batch = shop.channel.post("/v1/code-voids", {"batch_id": shop.batch_id})
    assert by_batch.status_code == 200 and by_batch.json() == {"voided": 2}, by_batch.text
    assert desk.on_hand_held_consumed(shop) == (5, 0, 0)

    other = desk.shop(codes=1)
    foreign = other.channel.post("/v1/code-voids", {"batch_id": shop.batch_id})
    assert_problem(foreign, 404, "not_found")


def test_a_batch_answer_is_sealed_and_its_replay_shows_the_same_codes(
    desk: Desk, database_url: str
) -> None:
    shop = desk.shop(codes=1, stock=4)
    key = f"batch-{uuid.uuid4().hex}"
    body = {"product_id": shop.product_id, "quantity": 3}
    first = shop.channel.post("/v1/code-batches", body, idempotency_key=key)
    replay = shop.channel.post("/v1/code-batches", body, idempotency_key=key)

    assert first.status_code == replay.status_code == 201, (first.text, replay.text)
    assert replay.json() == first.json()
    codes = first.json()["codes"]
    assert len(set(codes)) == 3
    assert desk.on_hand_held_consumed(shop) == (0, 4, 0)  # held once, not twice
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sealed, body, state FROM idempotency_keys WHERE key = %s", (key,)
        ).fetchone()
        states = [
            bytes(r[0])
            for r in conn.execute(
                "SELECT state FROM distribution_events ORDER BY notification_id DESC LIMIT 50"
            ).fetchall()
        ]
    assert row is not None
    sealed, stored, state = row
    assert (sealed, state) == (True, "done")
    for code in codes:
        for form in (code, code.replace("-", "")):
            assert form.encode() not in bytes(stored)
            assert not any(form.encode() in s for s in states)
    with pytest.raises(ValueError):
        json.loads(bytes(stored))


BAD_INPUTS: dict[str, tuple[str, str, Any, int, str]] = {
    # name: (method, path, body (bytes are sent as they are), status, code)
    "batch, malformed JSON": ("POST", "/v1/code-batches", b'{"product_id": ', 422,
                              "validation_failed"),
    "batch, quantity as a string": ("POST", "/v1/code-batches", {"quantity": "3"}, 422,
                                    "validation_failed"),
    "batch, quantity 0": ("POST", "/v1/code-batches", {"quantity": 0}, 422, "validation_failed"),
    "batch, quantity past 1000": ("POST", "/v1/code-batches", {"quantity": 1001}, 422,
                                  "validation_failed"),
    "batch, inactive as a string": ("POST", "/v1/code-batches", {"inactive": "yes"}, 422,
                                    "validation_failed"),
    "batch, expiry without a zone": ("POST", "/v1/code-batches",
                                     {"expires_at": "2099-01-01T00:00:00"}, 422,
                                     "validation_failed"),
    "batch, expiry in the past": ("POST", "/v1/code-batches",
                                  {"expires_at": "2001-01-01T00:00:00Z"}, 422,
                                  "validation_failed"),
    "batch, an unknown field": ("POST", "/v1/code-batches", {"codes": ["X"]}, 422,
                                "validation_failed"),
    "batch, unknown product": ("POST", "/v1/code-batches", {"product_id": str(uuid.uuid4())},
                               404, "not_found"),
    "batch, malformed product id": ("POST", "/v1/code-batches", {"product_id": "nope"}, 404,
                                    "not_found"),
    "batch, absurdly long product id": ("POST", "/v1/code-batches",
                                        {"product_id": "9" * 5000}, 422, "validation_failed"),
    "recharge, malformed JSON": ("POST", "/v1/recharges", b"{code: 1}", 422,
                                 "validation_failed"),
    "recharge, a code 10,000 long": ("POST", "/v1/recharges", {"code": "A" * 10_000}, 422,
                                     "validation_failed"),
    "recharge, an account with spaces": ("POST", "/v1/recharges", {"account": "1 3 9 x"}, 422,
                                         "validation_failed"),
    "recharge, verification code as a list": ("POST", "/v1/recharges",
                                              {"verification_code": ["1"]}, 422,
                                              "validation_failed"),
    "recharge, user's name past 200 characters": ("POST", "/v1/recharges",
                                                  {"user": {"name": "u" * 201}}, 422,
                                                  "validation_failed"),
    "recharge, user as a string": ("POST", "/v1/recharges", {"user": "u"}, 422,
                                   "validation_failed"),
    "recharge, user's ip not an address": ("POST", "/v1/recharges",
                                           {"user": {"ip": "300.1.2.3"}}, 422,
                                           "validation_failed"),
    "recharge, user's ip as a number": ("POST", "/v1/recharges", {"user": {"ip": 167772161}},
                                        422, "validation_failed"),
    "recharge, user with an unknown field": ("POST", "/v1/recharges",
                                             {"user": {"ip": "10.0.0.1", "agent": "x"}}, 422,
                                             "validation_failed"),
    "recharge, body past the size limit": ("POST", "/v1/recharges",
                                           b'{"code": "' + b"A" * 70_000 + b'"}', 413,
                                           "body_too_large"),
    "verification, account too short": ("POST", "/v1/verification-codes", {"account": "1"},
                                         422, "validation_failed"),
    "activation, codes as a string": ("POST", "/v1/code-activations", {"codes": "ABCD"}, 422,
                                      "validation_failed"),
    "activation, no codes": ("POST", "/v1/code-activations", {"codes": []}, 422,
                             "validation_failed"),
    "activation, 1001 codes": ("POST", "/v1/code-activations", {"codes": ["A"] * 1001}, 422,
                               "validation_failed"),
    "activation, a malformed code": ("POST", "/v1/code-activations", {"codes": ["ABCD"]}, 422,
                                     "code_malformed"),
    "void, codes and batch_id": ("POST", "/v1/code-voids", {"codes": ["A"], "batch_id": "x"},
                                 422, "validation_failed"),
    "void, neither": ("POST", "/v1/code-voids", {}, 422, "validation_failed"),
    "void, unknown batch": ("POST", "/v1/code-voids", {"batch_id": str(uuid.uuid4())}, 404,
                            "not_found"),
    "void, an unknown code": ("POST", "/v1/code-voids",
                              {"codes": ["0000-0000-0000-0000-0000"]}, 422, "code_invalid"),
    "webhook, not http": ("PUT", "/v1/channels/{channel}/webhook", {"url": "ftp://x.example"},
                          422, "validation_failed"),
    "webhook, not a URL": ("PUT", "/v1/channels/{channel}/webhook", {"url": "hooks here"}, 422,
                           "validation_failed"),
}  # fmt: skip


def test_bad_input_gets_a_problem_with_a_stable_code_and_records_nothing(
    desk: Desk, events: Callable[[], int]
) -> None:
    shop = desk.shop(codes=1)
    account = new_account()
    verification = desk.verified(shop.channel, account)
    defaults = {
        "/v1/code-batches": {"product_id": shop.product_id, "quantity": 1},
        "/v1/recharges": {
            "code": shop.codes[0],
            "account": account,
            "verification_code": verification,
        },  # fmt: skip
    }
    stock = desk.on_hand_held_consumed(shop)
    before = events()

    for name, (method, path, body, status, code) in BAD_INPUTS.items():
        path = path.format(channel=shop.channel.id)
        headers = {"X-Forwarded-For": new_address()}
        if isinstance(body, bytes):
            headers["Content-Type"] = "application/json"
            reply = shop.channel.request(method, path, content=body, headers=headers)
        else:
            reply = shop.channel.request(
                method, path, {**defaults.get(path, {}), **body}, headers=headers
            )
        try:
            assert_problem(reply, status, code)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None

    assert events() == before
    assert desk.on_hand_held_consumed(shop) == stock
    # and the good request still works: nothing above spent the code
    good = desk.recharge(shop.channel, shop.codes[0], account, verification, new_address())
    assert good.status_code == 202, good.text
