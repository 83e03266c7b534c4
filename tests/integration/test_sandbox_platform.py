"""The sandbox video platform as a real process (`ledger sandbox-platform`), through the gateway."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.platform_gateway import (
    RECHARGE_PATH,
    HttpPlatformGateway,
    encode_body,
    new_nonce,
    signed_headers,
)

pytestmark = pytest.mark.integration

SECRET = "integration-platform-secret"
PARTNER = "integration-partner"
READ_TIMEOUT = 1.0
HANG_SECONDS = 2.0  # longer than READ_TIMEOUT
BLOCKED_AT_START = "blocked-at-start"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ledger_command() -> list[str]:
    script = Path(sys.executable).with_name("ledger")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from api.cli import main; main()"]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    env = os.environ | {"LEDGER_PLATFORM_SECRET": SECRET, "LEDGER_PLATFORM_PARTNER_ID": PARTNER}
    process = subprocess.Popen(
        [
            *ledger_command(),
            "sandbox-platform",
            "--port",
            str(port),
            "--hang-seconds",
            str(HANG_SECONDS),
            "--fail-account",
            BLOCKED_AT_START,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"the sandbox platform exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/sandbox/faults", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the sandbox platform did not start within 20 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


@pytest.fixture
def sandbox(base_url: str) -> Iterator[httpx.Client]:
    """A client for the sandbox's own endpoints, on a platform reset to its start state."""
    with httpx.Client(base_url=base_url, timeout=5) as client:
        assert client.post("/sandbox/reset").status_code == 200
        yield client


@pytest.fixture
def gateway(base_url: str) -> Iterator[HttpPlatformGateway]:
    with HttpPlatformGateway(base_url, PARTNER, SECRET, timeout=READ_TIMEOUT) as gateway:
        yield gateway


def credits(sandbox: httpx.Client, account: str | None = None) -> list[dict[str, Any]]:
    params = {"account": account} if account else {}
    reply = sandbox.get("/sandbox/credits", params=params)
    assert reply.status_code == 200
    return reply.json()["credits"]


def set_faults(sandbox: httpx.Client, **faults: Any) -> dict[str, Any]:
    reply = sandbox.post("/sandbox/faults", json=faults)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_recharge_credits_once_and_is_recorded(
    sandbox: httpx.Client, gateway: HttpPlatformGateway
) -> None:
    assert gateway.order_status("rch_a").outcome == "not_found"

    result = gateway.recharge("rch_a", "13800000001", "vip-month", 30)

    assert result.outcome == "succeeded"
    assert result.platform_order_id
    assert result.starts_at and result.ends_at
    assert (result.ends_at - result.starts_at).days == 30
    [credit] = credits(sandbox, "13800000001")
    assert credit["order_no"] == "rch_a"
    assert credit["product_code"] == "vip-month"
    assert credit["platform_order_id"] == result.platform_order_id
    assert credit["period"]["ends_at"] == result.ends_at.isoformat().replace("+00:00", "Z")
    assert gateway.order_status("rch_a") == result
    assert credits(sandbox, "someone-else") == []


def test_the_same_order_number_credits_once(
    sandbox: httpx.Client, gateway: HttpPlatformGateway
) -> None:
    first = gateway.recharge("rch_b", "13800000002", "vip-month", 30)
    again = gateway.recharge("rch_b", "13800000002", "vip-month", 30)
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(
            pool.map(lambda _: gateway.recharge("rch_b", "13800000002", "vip-month", 30), range(16))
        )

    assert first.outcome == "succeeded"
    assert again == first
    assert all(result == first for result in concurrent)
    assert [c["order_no"] for c in credits(sandbox, "13800000002")] == ["rch_b"]


def test_a_second_order_extends_the_current_period(
    sandbox: httpx.Client, gateway: HttpPlatformGateway
) -> None:
    first = gateway.recharge("rch_c1", "13800000003", "vip-month", 30)
    second = gateway.recharge("rch_c2", "13800000003", "vip-month", 7)
    other_product = gateway.recharge("rch_c3", "13800000003", "vip-year", 365)

    assert second.starts_at == first.ends_at
    assert (second.ends_at - second.starts_at).days == 7  # type: ignore[operator]
    assert other_product.starts_at < first.ends_at  # type: ignore[operator]
    assert len(credits(sandbox, "13800000003")) == 3


def test_fail_accounts_fail_definitely_with_a_reason(
    sandbox: httpx.Client, gateway: HttpPlatformGateway
) -> None:
    at_start = gateway.recharge("rch_d2", BLOCKED_AT_START, "vip-month", 30)
    set_faults(sandbox, fail_accounts=["13800000004"])  # replaces the list given at start

    result = gateway.recharge("rch_d", "13800000004", "vip-month", 30)

    assert result.outcome == "failed"
    assert result.reason
    assert at_start.outcome == "failed"  # --fail-account given at start
    assert gateway.order_status("rch_d").outcome == "failed"
    assert gateway.recharge("rch_d", "13800000004", "vip-month", 30).outcome == "failed"
    assert credits(sandbox) == []


def test_error_rate_one_is_unknown_and_credits_nothing(
    sandbox: httpx.Client, gateway: HttpPlatformGateway
) -> None:
    set_faults(sandbox, error_rate=1)

    result = gateway.recharge("rch_e", "13800000005", "vip-month", 30)

    assert (result.outcome, result.reason) == ("unknown", "http 503")
    assert gateway.order_status("rch_e").outcome == "unknown"
    assert credits(sandbox) == []
    set_faults(sandbox, error_rate=0)
    assert gateway.order_status("rch_e").outcome == "not_found"


def test_a_timeout_after_crediting_is_unknown_but_the_platform_knows(
    sandbox: httpx.Client, gateway: HttpPlatformGateway
) -> None:
    set_faults(sandbox, timeout_after_credit=1)

    started = time.monotonic()
    result = gateway.recharge("rch_f", "13800000006", "vip-month", 30)
    elapsed = time.monotonic() - started

    assert result.outcome == "unknown"
    assert READ_TIMEOUT * 0.9 <= elapsed < HANG_SECONDS
    status = gateway.order_status("rch_f")
    assert status.outcome == "succeeded"
    assert len(credits(sandbox, "13800000006")) == 1
    assert sandbox.get("/sandbox/faults").json()["timeout_after_credit"] == 0
    # a retry with the same order number answers at once and credits nothing more
    assert gateway.recharge("rch_f", "13800000006", "vip-month", 30) == status
    assert len(credits(sandbox, "13800000006")) == 1


def test_latency_delays_answers(sandbox: httpx.Client, gateway: HttpPlatformGateway) -> None:
    set_faults(sandbox, latency_ms=300)

    started = time.monotonic()
    result = gateway.recharge("rch_g", "13800000007", "vip-month", 30)

    assert time.monotonic() - started >= 0.3
    assert result.outcome == "succeeded"


def raw_recharge(
    base_url: str, secret: str, partner: str = PARTNER, **changes: Any
) -> httpx.Response:
    timestamp = str(int(time.time()))
    nonce = new_nonce()
    payload = {
        "partner_id": partner,
        "order_no": "rch_h",
        "account": "13800000008",
        "product_code": "vip-month",
        "duration_days": 30,
        "timestamp": int(timestamp),
        "nonce": nonce,
    } | changes
    body = encode_body(payload)
    headers = signed_headers(secret, partner, timestamp, nonce, body)
    return httpx.post(base_url + RECHARGE_PATH, content=body, headers=headers, timeout=5)


def test_badly_signed_requests_are_refused(sandbox: httpx.Client, base_url: str) -> None:
    wrong_secret = raw_recharge(base_url, "not-the-secret")
    unknown_partner = raw_recharge(base_url, SECRET, partner="someone")
    stale = raw_recharge(base_url, SECRET, timestamp=0)

    assert (wrong_secret.status_code, wrong_secret.json()["code"]) == (401, "signature_invalid")
    assert (unknown_partner.status_code, unknown_partner.json()["code"]) == (401, "unknown_partner")
    assert stale.status_code in (400, 401)

    body = b'{"order_no":"rch_h"}'
    tampered_headers = signed_headers(SECRET, PARTNER, str(int(time.time())), new_nonce(), body)
    tampered = httpx.post(
        base_url + RECHARGE_PATH,
        content=body.replace(b"rch_h", b"rch_i"),
        headers=tampered_headers,
        timeout=5,
    )
    assert tampered.status_code == 401
    assert credits(sandbox) == []


def test_a_replayed_request_is_refused(sandbox: httpx.Client, base_url: str) -> None:
    first = raw_recharge(base_url, SECRET)
    assert first.status_code == 200
    replay = httpx.post(
        base_url + RECHARGE_PATH,
        content=first.request.content,
        headers=dict(first.request.headers),
        timeout=5,
    )
    assert (replay.status_code, replay.json()["code"]) == (401, "nonce_reused")
    assert len(credits(sandbox)) == 1


def test_a_gateway_with_the_wrong_secret_gets_unknown_and_credits_nothing(
    sandbox: httpx.Client, base_url: str
) -> None:
    with HttpPlatformGateway(base_url, PARTNER, "not-the-secret", timeout=READ_TIMEOUT) as wrong:
        result = wrong.recharge("rch_j", "13800000009", "vip-month", 30)
    assert (result.outcome, result.reason) == ("unknown", "http 401")
    assert credits(sandbox) == []


def test_faults_can_be_read_changed_and_reset(sandbox: httpx.Client) -> None:
    start = sandbox.get("/sandbox/faults").json()
    # every knob of the recharge and refund flows at its start value (other flows add theirs)
    assert {k: start[k] for k in RECHARGE_AND_REFUND_KNOBS} == {
        "latency_ms": 0,
        "error_rate": 0.0,
        "timeout_after_credit": 0,
        "fail_accounts": [BLOCKED_AT_START],
        "hang_seconds": HANG_SECONDS,
        "callback_url": None,
        "callback_probability": 1.0,
        "callback_delay_ms": 0,
        "callback_duplicates": 0,
        "callback_out_of_order": False,
        "callback_bad_signatures": 0,
        "late_success_accounts": [],
        "late_success_after_ms": 1000,
        "refund_review_ms": 500,
        "refund_rejection_rate": 0.0,
        "refund_callbacks": True,
    }
    changed = set_faults(sandbox, latency_ms=5, error_rate=0.25)
    assert (changed["latency_ms"], changed["error_rate"], changed["fail_accounts"]) == (
        5,
        0.25,
        [BLOCKED_AT_START],
    )
    assert sandbox.post("/sandbox/faults", json={"error_rate": 2}).status_code == 422
    assert sandbox.post("/sandbox/faults", json={"nonsense": 1}).status_code == 422
    assert sandbox.post("/sandbox/reset").json() == {"faults": start}
    assert json.loads(sandbox.get("/sandbox/faults").content) == start


RECHARGE_AND_REFUND_KNOBS = (
    "latency_ms",
    "error_rate",
    "timeout_after_credit",
    "fail_accounts",
    "hang_seconds",
    "callback_url",
    "callback_probability",
    "callback_delay_ms",
    "callback_duplicates",
    "callback_out_of_order",
    "callback_bad_signatures",
    "late_success_accounts",
    "late_success_after_ms",
    "refund_review_ms",
    "refund_rejection_rate",
    "refund_callbacks",
)


def refunds(sandbox: httpx.Client, order_no: str) -> list[dict[str, Any]]:
    reply = sandbox.get("/sandbox/refunds", params={"order_no": order_no})
    assert reply.status_code == 200, reply.text
    return list(reply.json()["refunds"])


def test_a_refund_is_reviewed_then_accepted_once_per_refund_number(
    sandbox: httpx.Client, gateway: HttpPlatformGateway
) -> None:
    set_faults(sandbox, refund_review_ms=300)
    assert gateway.recharge("rch_refund_1", "13800000101", "vip-month", 30).outcome == "succeeded"
    assert gateway.refund_status("RF-1").outcome == "not_found"

    first = gateway.refund("rch_refund_1", "RF-1", 2000)
    assert (first.outcome, first.reason) == ("pending", None)
    again = gateway.refund("rch_refund_1", "RF-1", 2000)  # a retry: the same refund
    assert again.outcome == "pending"
    assert gateway.refund_status("RF-1").outcome == "pending"
    time.sleep(0.4)
    assert gateway.refund_status("RF-1").outcome == "accepted"
    assert gateway.refund("rch_refund_1", "RF-1", 2000).outcome == "accepted"
    [taken] = refunds(sandbox, "rch_refund_1")
    assert (taken["refund_no"], taken["amount"], taken["requests"]) == ("RF-1", 2000, 3)


def test_a_rejected_refund_says_why_and_a_refund_of_an_uncredited_order_is_rejected(
    sandbox: httpx.Client, gateway: HttpPlatformGateway
) -> None:
    set_faults(sandbox, refund_review_ms=0, refund_rejection_rate=1.0)
    assert gateway.recharge("rch_refund_2", "13800000102", "vip-month", 30).outcome == "succeeded"
    rejected = gateway.refund("rch_refund_2", "RF-2")
    assert rejected.outcome == "rejected" and rejected.reason
    # a refund number is the platform's key: reused for another order it is refused
    assert gateway.recharge("rch_refund_3", "13800000103", "vip-month", 30).outcome == "succeeded"
    assert gateway.refund("rch_refund_3", "RF-2").outcome == "unknown"
    # an order never credited: rejected at once, a definite answer (nothing to poll for)
    assert gateway.recharge("rch_refund_4", BLOCKED_AT_START, "vip-month", 30).outcome == "failed"
    rejected = gateway.refund("rch_refund_4", "RF-4")
    assert rejected.outcome == "rejected"
    assert rejected.reason is not None and rejected.reason.startswith("order_not_refundable")
    assert gateway.refund("rch_refund_5", "RF-5").outcome == "rejected"  # never even sent
    assert [r["status"] for r in refunds(sandbox, "rch_refund_4")] == ["rejected"]
    assert sandbox.post("/sandbox/reset").status_code == 200
    assert refunds(sandbox, "rch_refund_2") == []


def test_the_refund_knobs_are_flags_of_ledger_sandbox_platform() -> None:
    port = free_port()
    env = os.environ | {"LEDGER_PLATFORM_SECRET": SECRET, "LEDGER_PLATFORM_PARTNER_ID": PARTNER}
    process = subprocess.Popen(
        [
            *ledger_command(),
            "sandbox-platform",
            "--port",
            str(port),
            "--refund-review-ms",
            "1500",
            "--refund-rejection-rate",
            "0.25",
            "--no-refund-callbacks",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                faults = httpx.get(f"http://127.0.0.1:{port}/sandbox/faults", timeout=0.5).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the sandbox platform did not start"
                time.sleep(0.1)
        assert {k: v for k, v in faults.items() if k.startswith("refund")} == {
            "refund_review_ms": 1500,
            "refund_rejection_rate": 0.25,
            "refund_callbacks": False,
        }
    finally:
        process.terminate()
        process.wait(timeout=10)
