"""A database outage under load, on a PostgreSQL cluster of the test's own: `ledger serve`
answers no 500, answers 503 `unavailable` with Retry-After fast while the database is away,
serves fully again once it is back, and its views catch up; `/health` stays 200 throughout
(liveness) while `/health/ready` follows the database."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import Api, Caller, Server, create_tokens, start_servers
from tests.e2e.private_postgres import PrivateCluster, private_cluster

DEPOSIT = 100
OUTAGE_SECONDS = 6.0
FAST_SECONDS = 6.0
"""No answer during the outage may take longer (the pool's wait is 5 s; most are at once)."""
SETTLE_SECONDS = 3.0
"""After the database is back, the time the process may take to notice (its probe runs twice
a second) before every answer must be a success."""


@dataclass
class Answer:
    kind: str
    sent: float
    seconds: float
    status: int
    code: str | None
    retry_after: str | None
    key: str | None = None


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def database_url(cluster: PrivateCluster) -> str:
    from api.runtime.schema import apply_migrations

    url = cluster.create_database("ledger")
    apply_migrations(url)
    return url


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[Server]:
    (only,) = start_servers(database_url, 1)
    try:
        yield only
    finally:
        only.stop()


@pytest.fixture(scope="module")
def api(served: Server, database_url: str) -> Iterator[Api]:
    operator, finance = create_tokens(database_url, "operator", "finance")
    with httpx.Client(timeout=30) as http:
        yield Api(http, served.base_url, {"operator": operator, "finance": finance})


class Load:
    """Threads sending signed GETs (a channel's funds) and operator deposits, each with a
    fresh Idempotency-Key, recording every answer."""

    def __init__(self, api: Api, channel: Caller, threads: int = 4) -> None:
        self.api = api
        self.channel = channel
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=30) as http:
            operator = Caller(http, self.api.base_url, token=self.api.tokens["operator"])
            channel = Caller(http, self.api.base_url, key_id=self.channel.key_id,
                             key_secret=self.channel.key_secret, id=self.channel.id)
            n = 0
            while not self.stopping.is_set():
                n += 1
                if (n + index) % 3 == 0:
                    key = uuid.uuid4().hex
                    self._send("deposit", key, lambda key=key: operator.post(
                        f"/v1/channels/{channel.id}/deposits",
                        {"amount": {"amount": DEPOSIT, "currency": "CNY"}},
                        idempotency_key=key,
                    ))
                else:
                    self._send("funds", None,
                               lambda: channel.get(f"/v1/channels/{channel.id}/funds"))
                time.sleep(0.02)

    def _send(self, kind: str, key: str | None, send: object) -> None:
        sent = time.monotonic()
        try:
            reply = send()  # type: ignore[operator]
        except httpx.TransportError as error:
            with self.lock:
                self.answers.append(Answer(kind, sent, time.monotonic() - sent, 0,
                                           type(error).__name__, None, key))
            return
        seconds = time.monotonic() - sent
        code = None
        if reply.headers.get("content-type", "").startswith("application/problem+json"):
            code = reply.json().get("code")
        answer = Answer(kind, sent, seconds, reply.status_code, code,
                        reply.headers.get("Retry-After"), key)
        with self.lock:
            self.answers.append(answer)

    def between(self, start: float, end: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if start <= a.sent < end]


def test_a_database_restart_under_load_costs_no_500(
    api: Api, served: Server, cluster: PrivateCluster
) -> None:
    channel = api.top_channel("Outage")
    assert api.anonymous.get("/health/ready").status_code == 200
    with Load(api, channel) as load:
        time.sleep(3.0)
        stopped_at = time.monotonic()
        cluster.stop("fast")
        time.sleep(1.0)
        during = [api.anonymous.get("/health"), api.anonymous.get("/health/ready")]
        time.sleep(OUTAGE_SECONDS - 1.0)
        cluster.start()
        back_at = time.monotonic()
        time.sleep(SETTLE_SECONDS + 6.0)
    answers = load.answers
    before = [a for a in load.between(0, stopped_at) if a.sent + a.seconds < stopped_at]
    outage = load.between(stopped_at, back_at)
    settling = load.between(back_at, back_at + SETTLE_SECONDS)
    after = load.between(back_at + SETTLE_SECONDS, float("inf"))

    def summary(group: list[Answer]) -> dict[tuple[int, str | None], int]:
        counted: dict[tuple[int, str | None], int] = {}
        for a in group:
            counted[(a.status, a.code)] = counted.get((a.status, a.code), 0) + 1
        return counted

    report = {name: summary(group) for name, group in
              [("before", before), ("outage", outage), ("settling", settling), ("after", after)]}
    outage_seconds = [a.seconds for a in outage]
    print(f"\nanswers by phase: {report}")
    print(f"outage answers: {len(outage)}, latency p50 {statistics.median(outage_seconds):.3f} s,"
          f" max {max(outage_seconds):.3f} s; slowest 503"
          f" {max([a.seconds for a in answers if a.status == 503] or [0]):.3f} s")

    assert not [a for a in answers if a.status >= 500 and a.status != 503], report
    assert not [a for a in answers if a.status == 0], f"requests left unanswered: {report}"
    assert before and all(a.status in (200, 201) for a in before), report
    unavailable = [a for a in answers if a.status == 503]
    assert len(unavailable) >= 10, f"the outage was not met: {report}"
    assert all(a.code == "unavailable" and a.retry_after for a in unavailable), report
    slowest_refusal = max(a.seconds for a in unavailable)
    assert slowest_refusal <= FAST_SECONDS, f"a 503 took {slowest_refusal:.1f} s"
    assert max(outage_seconds) <= 2 * FAST_SECONDS, f"an answer took {max(outage_seconds):.1f} s"
    assert statistics.median(outage_seconds) < 0.5
    assert len(after) >= 30, report
    assert all(a.status in (200, 201) for a in after), f"not fully served once back: {report}"

    live, ready = during
    assert live.status_code == 200, "liveness does not depend on the database"
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert api.anonymous.get("/health/ready").status_code == 200

    # the views caught up after the restart: every acknowledged deposit is in the channel's
    # funds, and none twice (a deposit answered 503 may or may not have been recorded)
    acknowledged = sum(DEPOSIT for a in answers if a.kind == "deposit" and a.status == 201)
    attempted = sum(DEPOSIT for a in answers if a.kind == "deposit")
    deadline = time.monotonic() + 30
    funds = api.funds(channel)
    while funds < acknowledged and time.monotonic() < deadline:
        time.sleep(0.5)
        funds = api.funds(channel)
    assert acknowledged <= funds <= attempted
    assert served.process.poll() is None, "ledger serve kept running"


def test_after_a_quiet_restart_rested_connections_are_checked_not_failed(
    api: Api, cluster: PrivateCluster
) -> None:
    """No request meets the restart: connections that rested in their pools are checked on
    their way out (no pre-ping otherwise), so every request after it succeeds at once."""
    channel = api.top_channel("Quiet")
    assert api.funds(channel) == 0
    cluster.stop("fast")
    cluster.start()
    time.sleep(2.5)  # longer than a pooled connection rests before it is checked
    replies = []
    for n in range(20):
        if n % 2:
            replies.append(api.operator.post(
                f"/v1/channels/{channel.id}/deposits",
                {"amount": {"amount": DEPOSIT, "currency": "CNY"}},
            ))
        else:
            replies.append(channel.get(f"/v1/channels/{channel.id}/funds"))
    assert [r.status_code for r in replies] == [200, 201] * 10, [r.text for r in replies]


def test_serve_waits_for_a_database_that_refuses_it_at_start_up(
    database_url: str, cluster: PrivateCluster
) -> None:
    cluster.stop("fast")
    starting = threading.Timer(10.0, cluster.start)
    starting.start()
    try:
        (late,) = start_servers(database_url, 1)
    finally:
        starting.join()
    try:
        assert "retrying for up to 30 s" in late.output()
        assert httpx.get(f"{late.base_url}/health/ready").status_code == 200
    finally:
        late.stop()
