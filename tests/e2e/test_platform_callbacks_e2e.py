"""Platform order callbacks across processes: `ledger sandbox-platform` posts signed callbacks
to a `ledger serve` (sandbox mode, its worker in-process) as its knobs say: duplicated, out
of order, late, badly signed, a success after a failure. One server and one platform for the
module; every test uses fresh shops and accounts.

What must hold: a callback is news of the outcome like a query's answer (a recharge whose
answer hangs ends from the callback alone); duplicates and stale statuses record nothing; a
late success after a failure is one `late_success` discrepancy and no second credit; a badly
signed callback is refused (401 `signature_invalid`), written to the audit log and records
nothing, and the platform's retry, signed right, is taken.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from adapters.platform_gateway import encode_body, new_nonce, signed_headers
from tests.e2e.conftest import Api, Caller, Server, start_servers
from tests.recharge_support import Platform, start_platform

pytestmark = pytest.mark.e2e

SECRET = "e2e-callbacks-platform-secret"
PARTNER = "e2e-callbacks-partner"
PLATFORM_ENV = {"LEDGER_PLATFORM_SECRET": SECRET, "LEDGER_PLATFORM_PARTNER_ID": PARTNER}
GATEWAY_TIMEOUT_SECONDS = 3
SETTLE_SECONDS = 30


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    started = start_platform(PLATFORM_ENV)
    try:
        yield started
    finally:
        started.stop()


def server_env(platform: Platform, **extra: str) -> dict[str, str]:
    """Sandbox mode (SMS outbox, private addresses allowed), the module's own platform, no
    broker (the worker runs in the server)."""
    return PLATFORM_ENV | {
        "LEDGER_SANDBOX": "true",
        "LEDGER_SANDBOX_PLATFORM_PORT": str(platform.port),
        "LEDGER_SANDBOX_PLATFORM_START": "false",
        "LEDGER_GATEWAY_TIMEOUT_SECONDS": str(GATEWAY_TIMEOUT_SECONDS),
        "LEDGER_RECHARGE_DEADLINE_SECONDS": "60",
        **extra,
    }


@pytest.fixture(scope="module")
def server(database_url: str, platform: Platform) -> Iterator[Server]:
    """Overrides conftest's: see `server_env`."""
    (started,) = start_servers(database_url, 1, [server_env(platform)])
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Setup:
    api: Api
    platform: Platform
    platform_id: str
    product_id: str
    callback_url: str
    database_url: str


@pytest.fixture(scope="module")
def setup(api: Api, platform: Platform, server: Server, database_url: str) -> Setup:
    reply = api.operator.post(
        "/v1/platforms", {"name": "Callbacks (sandbox)", "gateway_url": platform.url}
    )
    assert reply.status_code == 201, reply.text
    platform_id = str(reply.json()["id"])
    return Setup(
        api,
        platform,
        platform_id,
        api.product(platform_id),
        f"{server.base_url}/v1/platform-callbacks/{platform_id}",
        database_url,
    )


@pytest.fixture
def knobs(setup: Setup) -> Iterator[Setup]:
    """The platform calls back to this module's server; its knobs back to calm afterwards."""
    calm = {
        "callback_url": setup.callback_url,
        "callback_probability": 1.0,
        "callback_delay_ms": 0,
        "callback_duplicates": 0,
        "callback_out_of_order": False,
        "callback_bad_signatures": 0,
        "late_success_accounts": [],
        "timeout_after_credit": 0,
        "hang_seconds": 10,
    }
    setup.platform.faults(**calm)
    try:
        yield setup
    finally:
        setup.platform.faults(**calm)


# helpers


def new_account() -> str:
    return f"139{uuid.uuid4().int % 10**8:08d}"


def shop_with_a_code(setup: Setup) -> tuple[Caller, str]:
    channel = setup.api.top_channel(f"Shop {uuid.uuid4().hex[:6]}")
    setup.api.deposit(channel, 100_000)
    setup.api.buy(channel, setup.product_id, 1)
    reply = channel.post("/v1/code-batches", {"product_id": setup.product_id, "quantity": 1})
    assert reply.status_code == 201, reply.text
    return channel, str(reply.json()["codes"][0])


def place(setup: Setup, channel: Caller, code: str, account: str) -> str:
    sent = channel.post("/v1/verification-codes", {"account": account})
    assert sent.status_code == 202, sent.text
    sms = setup.api.operator.get(f"/v1/sandbox/sms?account={account}")
    assert sms.status_code == 200, sms.text
    reply = channel.post(
        "/v1/recharges",
        {"code": code, "account": account, "verification_code": sms.json()["code"]},
    )
    assert reply.status_code == 202, reply.text
    return str(reply.json()["id"])


def final(channel: Caller, recharge_id: str, seconds: float = SETTLE_SECONDS) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        reply = channel.get(f"/v1/recharges/{recharge_id}")
        if reply.status_code == 200 and reply.json()["status"] not in ("pending",):
            return dict(reply.json())
        if time.monotonic() > deadline:
            pytest.fail(f"recharge {recharge_id} not final after {seconds} s: {reply.text}")
        time.sleep(0.1)


def callbacks(setup: Setup, order_no: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{setup.platform.url}/sandbox/callbacks", timeout=5)
    assert reply.status_code == 200, reply.text
    return [c for c in reply.json()["callbacks"] if c["order_no"] == order_no]


def answered(setup: Setup, order_no: str, count: int, seconds: float = 20) -> list[dict]:
    """The platform's posts for the order once `count` of them were answered 2xx."""
    deadline = time.monotonic() + seconds
    while True:
        posts = callbacks(setup, order_no)
        if sum(1 for p in posts if p["answer"] == 200) >= count:
            return posts
        if time.monotonic() > deadline:
            pytest.fail(
                f"{count} callbacks for {order_no} not answered 200 in {seconds} s: {posts}"
            )
        time.sleep(0.1)


def saga_events(setup: Setup, recharge_id: str) -> list[str]:
    """The names of the recharge's events, in order, from its stream in the event store."""
    with psycopg.connect(setup.database_url) as conn:
        rows = conn.execute(
            "SELECT topic FROM recharges_events WHERE originator_id = %s "
            "ORDER BY originator_version",
            (uuid.UUID(recharge_id),),
        ).fetchall()
    return [str(topic).rsplit(".", 1)[-1] for (topic,) in rows]


def listed_discrepancies(setup: Setup) -> dict[str, dict[str, Any]]:
    """The operator's list of recharges with a late_success discrepancy (every page)."""
    found: dict[str, dict[str, Any]] = {}
    after = ""
    while True:
        reply = setup.api.operator.get(f"/v1/recharges?discrepancy=late_success&limit=100{after}")
        assert reply.status_code == 200, reply.text
        for item in reply.json()["items"]:
            assert item["discrepancy"] == "late_success"
            found[item["id"]] = item
        if not reply.json()["next_cursor"]:
            return found
        after = f"&after={reply.json()['next_cursor']}"


def stock(channel: Caller, product_id: str) -> tuple[int, int, int]:
    reply = channel.get(f"/v1/channels/{channel.id}/stock")
    assert reply.status_code == 200, reply.text
    for item in reply.json()["items"]:
        if item["product_id"] == product_id:
            return item["on_hand"], item["held"], item["consumed"]
    return 0, 0, 0


def post_callback(
    setup: Setup,
    payload: dict[str, Any],
    *,
    secret: str = SECRET,
    platform_id: str | None = None,
    nonce: str | None = None,
) -> httpx.Response:
    body = encode_body(payload)
    headers = signed_headers(secret, PARTNER, str(int(time.time())), nonce or new_nonce(), body)
    url = setup.callback_url.rsplit("/", 1)[0] + f"/{platform_id or setup.platform_id}"
    return httpx.post(url, content=body, headers=headers, timeout=10)


# the tests


def test_a_callback_is_news_of_the_outcome_while_the_platforms_answer_hangs(knobs: Setup) -> None:
    """The platform credits and hangs past the gateway's timeout; its callback, duplicated,
    out of order and with a stale `processing` after it, ends the saga at once, once."""
    setup = knobs
    setup.platform.faults(
        timeout_after_credit=1,
        hang_seconds=8,
        callback_duplicates=2,
        callback_out_of_order=True,
        callback_delay_ms=100,
    )
    channel, code = shop_with_a_code(setup)
    account = new_account()
    started = time.monotonic()
    recharge_id = place(setup, channel, code, account)
    done = final(channel, recharge_id)
    took = time.monotonic() - started
    assert done["status"] == "succeeded", done
    assert took < GATEWAY_TIMEOUT_SECONDS, f"ended by the callback, not a query ({took:.1f} s)"
    # the same without callbacks: the saga waits out the gateway's timeout, then queries
    setup.platform.faults(callback_url="", timeout_after_credit=1)
    channel_b, code_b = shop_with_a_code(setup)
    started = time.monotonic()
    queried = place(setup, channel_b, code_b, new_account())
    assert final(channel_b, queried)["status"] == "succeeded"
    without = time.monotonic() - started
    assert without >= GATEWAY_TIMEOUT_SECONDS
    print(
        f"credited, answer hung 8 s: succeeded in {took:.2f} s by the callback, "
        f"{without:.2f} s by timeout and query without it"
    )
    [credit] = setup.platform.credits(account)
    assert done["membership"]["platform_order_id"] == credit["platform_order_id"]

    posts = answered(setup, recharge_id, 4)  # 3 successes and a stale processing, all 200
    assert sorted(p["status"] for p in posts if p["answer"] == 200) == [
        "processing",
        "success",
        "success",
        "success",
    ]
    time.sleep(GATEWAY_TIMEOUT_SECONDS)  # the hung answer is past its timeout: no more news
    names = saga_events(setup, recharge_id)
    assert names.count("CallbackReceived") == 1
    assert names.count("Succeeded") == 1
    assert names.index("Succeeded") == names.index("CallbackReceived") + 1
    assert "CallbackIgnored" not in names and "DiscrepancyFound" not in names
    assert recharge_id not in listed_discrepancies(setup)
    assert stock(channel, setup.product_id) == (0, 0, 1)
    assert len(setup.platform.credits(account)) == 1


def test_a_late_success_after_a_failure_is_one_discrepancy_and_no_second_credit(
    knobs: Setup,
) -> None:
    setup = knobs
    account = new_account()
    setup.platform.faults(
        late_success_accounts=[account],
        late_success_after_ms=1500,
        callback_duplicates=1,
    )
    channel, code = shop_with_a_code(setup)
    recharge_id = place(setup, channel, code, account)
    failed = final(channel, recharge_id)
    assert failed["status"] == "failed", failed
    assert failed["discrepancy"] is None

    # 2 failed callbacks (duplicates), then the platform credits after all: 2 successes
    posts = answered(setup, recharge_id, 4)
    assert [p["status"] for p in posts if p["answer"] == 200] == [
        "failed",
        "failed",
        "success",
        "success",
    ]
    assert len(setup.platform.credits(account)) == 1  # the platform did credit it, late

    seen = setup.api.operator.get(f"/v1/recharges/{recharge_id}").json()
    assert seen["status"] == "failed"
    assert seen["membership"] is None
    assert seen["discrepancy"]["kind"] == "late_success"
    assert (
        seen["discrepancy"]["platform_order_id"]
        == setup.platform.credits(account)[0]["platform_order_id"]
    )
    names = saga_events(setup, recharge_id)
    assert names.count("DiscrepancyFound") == 1
    listed = listed_discrepancies(setup)
    assert recharge_id in listed and listed[recharge_id]["status"] == "failed"
    assert "Succeeded" not in names
    assert names.count("Failed") == 1  # from the answer or the failed callback, once
    assert stock(channel, setup.product_id) == (0, 1, 0)  # released, not consumed

    # the released code is sold again: credited once more, consumed once in our books
    other = new_account()
    again = place(setup, channel, code, other)
    assert final(channel, again)["status"] == "succeeded"
    deadline = time.monotonic() + SETTLE_SECONDS  # the dispatcher redeems after the saga ends
    while stock(channel, setup.product_id) != (0, 0, 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stock(channel, setup.product_id) == (0, 0, 1)
    assert len(setup.platform.credits(other)) == 1


def test_a_badly_signed_callback_is_refused_logged_and_the_signed_retry_applies(
    knobs: Setup,
) -> None:
    setup = knobs
    setup.platform.faults(callback_bad_signatures=1, timeout_after_credit=1, hang_seconds=8)
    channel, code = shop_with_a_code(setup)
    account = new_account()
    recharge_id = place(setup, channel, code, account)
    assert final(channel, recharge_id)["status"] == "succeeded"
    posts = answered(setup, recharge_id, 1)
    assert [(p["attempt"], p["answer"], p["signed_right"]) for p in posts] == [
        (1, 401, False),
        (2, 200, True),
    ]
    audit = setup.api.operator.get("/v1/audit-log?kind=callback_refused&limit=100")
    assert audit.status_code == 200, audit.text
    lines = [
        line
        for line in audit.json()["items"]
        if line["path"] == f"/v1/platform-callbacks/{setup.platform_id}"
        and line["code"] == "signature_invalid"
    ]
    assert lines, audit.json()
    assert SECRET not in json.dumps(audit.json())


def test_refusals_record_nothing(knobs: Setup) -> None:
    """Unknown platform or order, a wrong secret, a replayed nonce, a bad body: problem+json
    with a stable code, audited, and the recharge's stream unchanged."""
    setup = knobs
    setup.platform.faults(callback_url="")  # only this test's own posts
    channel, code = shop_with_a_code(setup)
    recharge_id = place(setup, channel, code, new_account())
    assert final(channel, recharge_id)["status"] == "succeeded"
    before = saga_events(setup, recharge_id)
    failure = {"order_no": recharge_id, "status": "failed", "reason": "made up"}

    def refused(reply: httpx.Response, status: int, code: str) -> None:
        assert reply.status_code == status, reply.text
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert reply.json()["code"] == code

    refused(post_callback(setup, failure, secret="wrong"), 401, "signature_invalid")
    refused(post_callback(setup, failure, platform_id=str(uuid.uuid4())), 404, "not_found")
    refused(post_callback(setup, failure | {"order_no": str(uuid.uuid4())}), 404, "not_found")
    refused(post_callback(setup, failure | {"order_no": "not-an-order"}), 404, "not_found")
    refused(post_callback(setup, failure | {"status": "weird"}), 422, "validation_failed")
    refused(
        post_callback(setup, {"order_no": recharge_id, "status": "success"}),
        422,
        "validation_failed",
    )
    nonce = new_nonce()
    once = post_callback(
        setup,
        {
            "order_no": recharge_id,
            "status": "success",
            "platform_order_id": "X",
            "starts_at": "2026-01-01T00:00:00Z",
            "ends_at": "2026-02-01T00:00:00Z",
        },
        nonce=nonce,
    )
    assert once.status_code == 200 and once.json() == {"received": True}  # a duplicate
    refused(post_callback(setup, failure, nonce=nonce), 401, "signature_invalid")
    assert saga_events(setup, recharge_id) == before

    # a failure after success is signed and legal to send, but not a legal transition
    for _ in range(2):
        reply = post_callback(setup, failure)
        assert reply.status_code == 200 and reply.json() == {"received": True}
    assert saga_events(setup, recharge_id) == [*before, "CallbackIgnored"]
    assert final(channel, recharge_id)["status"] == "succeeded"


def test_the_callback_knobs_are_flags_of_ledger_sandbox_platform() -> None:
    flagged = start_platform(
        PLATFORM_ENV,
        "--callback-url",
        "http://127.0.0.1:9/v1/platform-callbacks/x",
        "--callback-probability",
        "0.5",
        "--callback-delay-ms",
        "250",
        "--callback-duplicates",
        "2",
        "--callback-out-of-order",
        "--callback-bad-signatures",
        "3",
        "--late-success-account",
        "13900000001",
        "--late-success-account",
        "13900000002",
        "--late-success-after-ms",
        "700",
    )
    try:
        faults = httpx.get(f"{flagged.url}/sandbox/faults", timeout=5).json()
        assert {k: v for k, v in faults.items() if k.startswith(("callback", "late_success"))} == {
            "callback_url": "http://127.0.0.1:9/v1/platform-callbacks/x",
            "callback_probability": 0.5,
            "callback_delay_ms": 250,
            "callback_duplicates": 2,
            "callback_out_of_order": True,
            "callback_bad_signatures": 3,
            "late_success_accounts": ["13900000001", "13900000002"],
            "late_success_after_ms": 700,
        }
        unset = httpx.post(f"{flagged.url}/sandbox/faults", json={"callback_url": ""}, timeout=5)
        assert unset.json()["callback_url"] is None
    finally:
        flagged.stop()
