"""Recharge refunds across processes: a `ledger serve` (sandbox mode, its worker in-process)
and a `ledger sandbox-platform` of the module's own, which reviews refunds (delay, rejection
rate) and calls back their outcomes.

What must hold: an accepted refund makes the recharge `refunded` and returns the consumed unit
to the issuing channel's stock on hand, with the trial balance still zero; a rejected one
leaves it `succeeded` with the platform's reason; a reversal callback books the refund the
same way; refusals (a recharge that did not succeed, a second refund, an unknown recharge)
are problem+json and record nothing; a process killed right after the platform answered the
refund request resumes in the next process, and the platform saw one request per refund
number.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Api, Caller, Server, start_servers
from tests.e2e.test_platform_callbacks_e2e import (
    Setup,
    new_account,
    platform,
    post_callback,
    saga_events,
    server,
    server_env,
    setup,
    stock,
)
from tests.recharge_support import Platform

pytestmark = pytest.mark.e2e

SETTLE_SECONDS = 30

__all__ = ["platform", "server", "setup"]  # the callbacks module's fixtures


@pytest.fixture
def knobs(setup: Setup) -> Iterator[Setup]:
    calm = {
        "callback_url": setup.callback_url,
        "callback_probability": 1.0,
        "callback_delay_ms": 0,
        "callback_duplicates": 0,
        "callback_out_of_order": False,
        "fail_accounts": [],
        "refund_review_ms": 300,
        "refund_rejection_rate": 0.0,
        "refund_callbacks": True,
    }
    setup.platform.faults(**calm)
    try:
        yield setup
    finally:
        setup.platform.faults(**calm)


# helpers


def shop_with_a_code(setup: Setup, api: Api | None = None) -> tuple[Caller, str]:
    api = api or setup.api
    channel = api.top_channel(f"Shop {uuid.uuid4().hex[:6]}")
    api.deposit(channel, 100_000)
    api.buy(channel, setup.product_id, 1)
    reply = channel.post("/v1/code-batches", {"product_id": setup.product_id, "quantity": 1})
    assert reply.status_code == 201, reply.text
    return channel, str(reply.json()["codes"][0])


def place(api: Api, channel: Caller, code: str, account: str) -> str:
    sent = channel.post("/v1/verification-codes", {"account": account})
    assert sent.status_code == 202, sent.text
    sms = api.operator.get(f"/v1/sandbox/sms?account={account}")
    assert sms.status_code == 200, sms.text
    reply = channel.post(
        "/v1/recharges",
        {"code": code, "account": account, "verification_code": sms.json()["code"]},
    )
    assert reply.status_code == 202, reply.text
    return str(reply.json()["id"])


def until(channel: Caller, recharge_id: str, done: Any, seconds: float = SETTLE_SECONDS) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        reply = channel.get(f"/v1/recharges/{recharge_id}")
        if reply.status_code == 200 and done(reply.json()):
            return dict(reply.json())
        if time.monotonic() > deadline:
            pytest.fail(f"recharge {recharge_id} not as expected after {seconds} s: {reply.text}")
        time.sleep(0.2)


def succeeded(
    setup: Setup, api: Api | None = None, receiver: Receiver | None = None
) -> tuple[Caller, str]:
    api = api or setup.api
    channel, code = shop_with_a_code(setup, api)
    if receiver is not None:
        hooked(channel, receiver)
    recharge_id = place(api, channel, code, new_account())
    done = until(channel, recharge_id, lambda r: r["status"] != "pending")
    assert done["status"] == "succeeded", done
    wait_for_stock(channel, setup.product_id, (0, 0, 1))
    return channel, recharge_id


def wait_for_stock(channel: Caller, product_id: str, expected: tuple[int, int, int]) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while stock(channel, product_id) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"stock {stock(channel, product_id)} != {expected}")
        time.sleep(0.2)


def refunds_at_platform(setup: Setup, order_no: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{setup.platform.url}/sandbox/refunds", params={"order_no": order_no})
    assert reply.status_code == 200, reply.text
    return list(reply.json()["refunds"])


def refund(channel: Caller, recharge_id: str, key: str | None = None) -> httpx.Response:
    return channel.post(
        f"/v1/recharges/{recharge_id}/refund-requests",
        {"reason": "the customer bought the wrong plan"},
        idempotency_key=key or uuid.uuid4().hex,
    )


def refused(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["code"] == code


@dataclass
class Receiver:
    """A channel's webhook endpoint: keeps each delivery with whether its signature holds."""

    secret: bytes = b""
    deliveries: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    port: int = 0

    def events(self, recharge_id: str) -> list[dict[str, Any]]:
        return [e for ok, e in self.deliveries if e["data"]["id"] == recharge_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            h = self.headers
            signed = "\n".join(
                [
                    "POST",
                    self.path,
                    h["X-Timestamp"],
                    h["X-Nonce"],
                    "",
                    hashlib.sha256(body).hexdigest(),
                ]
            )
            expected = hmac.new(received.secret, signed.encode(), hashlib.sha256).hexdigest()
            good = hmac.compare_digest(expected, h["X-Signature"])
            received.deliveries.append((good, json.loads(body)))
            self.send_response(204 if good else 401)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def hooked(channel: Caller, receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.port}/hooks"
    reply = channel.put(f"/v1/channels/{channel.id}/webhook", {"url": url})
    assert reply.status_code == 200, reply.text
    receiver.secret = reply.json()["secret"].encode()


def delivered(receiver: Receiver, recharge_id: str, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        for good, event in receiver.deliveries:
            if event["data"]["id"] == recharge_id and event["type"] == kind:
                assert good, "the webhook is signed with the channel's secret"
                return event
        if time.monotonic() > deadline:
            pytest.fail(f"no {kind} webhook for {recharge_id}: {receiver.deliveries}")
        time.sleep(0.2)


def balance(api: Api, account: str) -> dict[str, int]:
    reply = api.finance.get(f"/v1/ledger/accounts/{account}/balance")
    assert reply.status_code == 200, reply.text
    return {b["asset"]: b["posted"] for b in reply.json()["balances"]}


# the tests


def test_an_accepted_refund_returns_the_unit_to_stock_on_hand_and_books_balance(
    knobs: Setup, receiver: Receiver
) -> None:
    setup = knobs
    channel, recharge_id = succeeded(setup, receiver=receiver)
    key = uuid.uuid4().hex
    asked = refund(channel, recharge_id, key)
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "pending"
    again = refund(channel, recharge_id, key)  # the same key replays
    assert again.status_code == 202 and again.json() == asked.json()
    refused(refund(channel, recharge_id), 409, "refund_already_requested")

    done = until(channel, recharge_id, lambda r: r["status"] == "refunded")
    shown = done["refund"]
    assert shown["id"] == asked.json()["id"]
    assert shown["status"] == "accepted" and shown["decided_at"] and shown["requested_at"]
    assert shown["reason"] == "the customer bought the wrong plan"
    wait_for_stock(channel, setup.product_id, (1, 0, 0))  # on hand again; the code stays spent
    [at_platform] = refunds_at_platform(setup, recharge_id)
    assert at_platform["refund_no"] == shown["refund_no"]
    assert at_platform["requests"] == 1
    assert at_platform["status"] == "accepted"
    refused(refund(channel, recharge_id), 409, "refund_already_requested")
    listed = setup.api.operator.get("/v1/recharges?status=refunded&limit=100").json()["items"]
    assert recharge_id in [item["id"] for item in listed]
    names = saga_events(setup, recharge_id)
    assert names.count("RefundRequested") == 1 and names.count("RefundAccepted") == 1
    assert setup.api.trial_balance()["balanced"] is True
    event = delivered(receiver, recharge_id, "recharge.refunded")
    assert event["data"]["status"] == "refunded"
    assert event["data"]["refund"]["refund_no"] == shown["refund_no"]
    assert [e["type"] for e in receiver.events(recharge_id)].count("recharge.refunded") == 1


def test_a_rejected_refund_leaves_the_recharge_succeeded_with_the_reason(
    knobs: Setup, receiver: Receiver
) -> None:
    setup = knobs
    setup.platform.faults(refund_rejection_rate=1.0, refund_callbacks=False)  # polled only
    channel, recharge_id = succeeded(setup, receiver=receiver)
    assert refund(channel, recharge_id).status_code == 202
    done = until(channel, recharge_id, lambda r: (r["refund"] or {}).get("status") == "rejected")
    assert done["status"] == "succeeded"
    assert done["refund"]["rejection"].startswith("refund_rejected")
    assert stock(channel, setup.product_id) == (0, 0, 1)
    event = delivered(receiver, recharge_id, "recharge.refund_rejected")
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["refund"]["rejection"] == done["refund"]["rejection"]
    # a rejection is final for that refund; another may be asked, under a new number
    setup.platform.faults(refund_rejection_rate=0.0)
    second = refund(channel, recharge_id)
    assert second.status_code == 202, second.text
    done = until(channel, recharge_id, lambda r: r["status"] == "refunded")
    assert done["refund"]["id"] == second.json()["id"]
    numbers = [r["refund_no"] for r in refunds_at_platform(setup, recharge_id)]
    assert len(set(numbers)) == 2
    wait_for_stock(channel, setup.product_id, (1, 0, 0))


def test_refund_callbacks_duplicated_and_out_of_order_decide_the_refund_once(
    knobs: Setup,
) -> None:
    setup = knobs
    setup.platform.faults(
        refund_review_ms=200,
        callback_duplicates=2,
        callback_out_of_order=True,
        callback_delay_ms=100,
    )
    channel, recharge_id = succeeded(setup)
    assert refund(channel, recharge_id).status_code == 202
    until(channel, recharge_id, lambda r: r["status"] == "refunded")
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:  # 3 accepted callbacks and a stale processing, all answered 200
        reply = httpx.get(f"{setup.platform.url}/sandbox/callbacks", timeout=5)
        posts = [
            c
            for c in reply.json()["callbacks"]
            if c["order_no"] == recharge_id
            and c["answer"] == 200
            and c["status"] in ("accepted", "processing")
        ]
        if len(posts) >= 4:
            break
        assert time.monotonic() < deadline, posts
        time.sleep(0.2)
    names = saga_events(setup, recharge_id)
    assert names.count("RefundAccepted") == 1
    assert names.count("RefundNewsReceived") <= 1  # none if a poll decided it first
    assert "RefundNewsIgnored" not in names and "RefundRejected" not in names
    wait_for_stock(channel, setup.product_id, (1, 0, 0))
    [at_platform] = refunds_at_platform(setup, recharge_id)
    assert at_platform["requests"] == 1


def test_refusals_are_problems_and_record_nothing(knobs: Setup) -> None:
    setup = knobs
    account = new_account()
    setup.platform.faults(fail_accounts=[account])
    channel, code = shop_with_a_code(setup)
    failed = place(setup.api, channel, code, account)
    assert until(channel, failed, lambda r: r["status"] != "pending")["status"] == "failed"
    before = saga_events(setup, failed)
    refused(refund(channel, failed), 409, "refund_not_allowed")
    refused(refund(setup.api.operator, failed), 409, "refund_not_allowed")
    assert saga_events(setup, failed) == before
    refused(refund(channel, str(uuid.uuid4())), 404, "not_found")
    refused(refund(channel, "not-a-recharge"), 404, "not_found")
    other = setup.api.top_channel("Someone else")
    refused(refund(other, failed), 404, "not_found")  # not its subtree: nothing leaks
    reply = channel.post(f"/v1/recharges/{failed}/refund-requests", {"reason": ""})
    assert reply.status_code == 422, reply.text
    assert saga_events(setup, failed) == before
    assert refunds_at_platform(setup, failed) == []


def test_a_reversal_callback_books_the_refund(knobs: Setup) -> None:
    setup = knobs
    setup.platform.faults(callback_url="")  # only this test's own posts
    channel, recharge_id = succeeded(setup)
    reversal = {"order_no": recharge_id, "status": "reversed", "refund_no": "PLATFORM-RV-1"}
    for _ in range(2):  # the platform retries: the second is no news
        reply = post_callback(setup, reversal)  # type: ignore[arg-type]
        assert reply.status_code == 200 and reply.json() == {"received": True}, reply.text
    done = until(channel, recharge_id, lambda r: r["status"] == "refunded")
    assert done["refund"]["refund_no"] == "PLATFORM-RV-1"
    wait_for_stock(channel, setup.product_id, (1, 0, 0))
    names = saga_events(setup, recharge_id)
    assert names.count("ReversalReported") == 1 and names.count("RefundAccepted") == 1
    assert setup.api.trial_balance()["balanced"] is True


def test_a_sold_code_expiring_unredeemed_is_breakage_income_not_owed_to_the_platform(
    knobs: Setup,
) -> None:
    """SPEC 3.4: the platform never bills a sold code that expired unredeemed; its wholesale
    cost leaves platform:<id>:payable for operator:breakage:<currency>."""
    setup = knobs
    api = setup.api
    reply = api.operator.post(
        "/v1/platforms", {"name": "Breakage", "gateway_url": setup.platform.url}
    )
    assert reply.status_code == 201, reply.text
    platform_id = str(reply.json()["id"])
    product_id = api.product(platform_id, wholesale=1700)
    channel = api.top_channel("Breakage shop")
    api.deposit(channel, 10_000)
    api.buy(channel, product_id, 1)
    payable = f"platform:{platform_id}:payable"
    assert balance(api, payable) == {"CNY": 1700}
    breakage_before = balance(api, "operator:breakage:CNY").get("CNY", 0)
    expires_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    reply = channel.post(
        "/v1/code-batches", {"product_id": product_id, "quantity": 1, "expires_at": expires_at}
    )
    assert reply.status_code == 201, reply.text
    deadline = time.monotonic() + SETTLE_SECONDS
    while stock(channel, product_id) != (0, 0, 0):  # the sweeper expired it
        assert time.monotonic() < deadline, stock(channel, product_id)
        time.sleep(0.5)
    assert balance(api, payable) == {"CNY": 0}  # nothing owed for it any more
    assert balance(api, "operator:breakage:CNY")["CNY"] - breakage_before == 1700
    unit = f"unit:{product_id}"
    assert balance(api, f"channel:{channel.id}:breakage:{product_id}") == {unit: 1}
    assert api.trial_balance()["balanced"] is True


def test_a_process_killed_after_the_refund_was_sent_resumes_without_asking_again(
    knobs: Setup, server: Server, database_url: str, platform: Platform
) -> None:
    """The module's server stops; a server with LEDGER_SANDBOX_REFUND_EXIT kills itself right
    after the platform answered the refund request; the next server's sweeper re-sends the
    step, which asks the refund's status: one request per refund number at the platform."""
    setup = knobs
    setup.platform.faults(refund_callbacks=False)  # the outcome comes from the saga's polls
    channel, recharge_id = succeeded(setup)
    server.stop()
    (crashing,) = start_servers(
        database_url, 1, [server_env(platform, LEDGER_SANDBOX_REFUND_EXIT="true")]
    )
    try:
        asked = refund(channel.at(crashing.base_url), recharge_id)
        assert asked.status_code == 202, asked.text
        assert crashing.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        crashing.stop()
    [at_platform] = refunds_at_platform(setup, recharge_id)
    assert at_platform["requests"] == 1
    names = saga_events(setup, recharge_id)
    assert "RefundSending" in names and "RefundStepCompleted" not in names

    (resumed,) = start_servers(database_url, 1, [server_env(platform)])
    try:
        again = channel.at(resumed.base_url)
        done = until(again, recharge_id, lambda r: r["status"] == "refunded", seconds=90)
        assert done["refund"]["refund_no"] == at_platform["refund_no"]
        wait_for_stock(again, setup.product_id, (1, 0, 0))
        [at_platform] = refunds_at_platform(setup, recharge_id)
        assert at_platform["requests"] == 1  # asked its status, never sent again
        names = saga_events(setup, recharge_id)
        assert names.count("RefundSending") == 1 and names.count("RefundAccepted") == 1
        finance = Api(setup.api.http, resumed.base_url, setup.api.tokens)
        assert finance.trial_balance()["balanced"] is True
    finally:
        resumed.stop()
