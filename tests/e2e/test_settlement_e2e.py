"""A platform settlement across processes, its server SIGKILLed inside each step in turn.

`ledger sandbox-platform` runs on its own for the whole test (its books outlive the servers),
with every statement difference switched on: a line dropped, a line of an order we never
sent, an amount changed, a line moved past midnight to the next day's statement. Recharges
are credited through it by a `ledger serve` in sandbox mode, one of them refunded. Then today
is settled (close_now) by the servers' sweeper while each server is killed
(LEDGER_SANDBOX_SETTLEMENT_EXIT) inside the step named, before it is recorded: collect,
statement, reconcile, and, once an operator approved the open cases, pay (after the platform
took the payment). A last server finishes.

What must hold: each step killed left nothing recorded and the next process did it again;
the changed amount and the order we never sent are each exactly one case; the dropped line
and the line the platform moved to tomorrow are each carried exactly once (timing: they open
a case only if still unmatched in tomorrow's settlement); the refund matches its charge; the
platform received exactly one payment for the settlement, of what was agreed, and the ledger
recorded it paid with the platform's reference; the trial balance is zero.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Api, Caller, Server, sandbox_serving
from tests.recharge_support import Platform, start_platform

pytestmark = pytest.mark.e2e

SECRET = "e2e-settlement-platform-secret"
PARTNER = "e2e-settlement-partner"
PLATFORM_ENV = {"LEDGER_PLATFORM_SECRET": SECRET, "LEDGER_PLATFORM_PARTNER_ID": PARTNER}
ORDERS = 6
WHOLESALE = 2000
DELTA = 300
STEP_SECONDS = 90


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    started = start_platform(PLATFORM_ENV)
    try:
        yield started
    finally:
        started.stop()


def serving(database_url: str, platform: Platform, name: str, **env: str) -> Any:
    """`ledger serve` in sandbox mode using the test's platform (never one of its own)."""
    return sandbox_serving(
        database_url,
        platform.port,
        name,
        **PLATFORM_ENV,
        LEDGER_SANDBOX_PLATFORM_START="false",
        LEDGER_RECHARGE_DEADLINE_SECONDS="60",
        **env,
    )


def wait_until(what: str, check: Any, seconds: float = STEP_SECONDS) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting until {what}")
        time.sleep(0.3)


def recharge(api: Api, channel: Caller, code: str) -> str:
    account = f"139{uuid.uuid4().int % 10**8:08d}"
    assert channel.post("/v1/verification-codes", {"account": account}).status_code == 202
    sms = api.operator.get(f"/v1/sandbox/sms?account={account}")
    assert sms.status_code == 200, sms.text
    reply = channel.post(
        "/v1/recharges",
        {"code": code, "account": account, "verification_code": sms.json()["code"]},
    )
    assert reply.status_code == 202, reply.text
    return str(reply.json()["id"])


def status_of(channel: Caller, recharge_id: str) -> str:
    reply = channel.get(f"/v1/recharges/{recharge_id}")
    assert reply.status_code == 200, reply.text
    return str(reply.json()["status"])


def settlement_events(database_url: str, settlement_id: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT topic FROM settlements_events WHERE originator_id = %s "
            "ORDER BY originator_version",
            (uuid.UUID(settlement_id),),
        ).fetchall()
    return [str(topic).rsplit(".", 1)[-1] for (topic,) in rows]


def payments(platform: Platform) -> list[dict[str, Any]]:
    reply = httpx.get(f"{platform.url}/sandbox/payments", timeout=5)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["payments"])


def killed(server: Server) -> None:
    assert server.process.wait(timeout=STEP_SECONDS) == -signal.SIGKILL, server.output()


def test_a_settlement_killed_in_each_step_ends_with_each_difference_once_and_one_payment(
    database_url: str, tokens: dict[str, str], http: httpx.Client, platform: Platform
) -> None:
    # recharges credited through the platform, one refunded
    with serving(database_url, platform, "settlement-setup") as server:
        api = Api(http, server.base_url, tokens)
        reply = api.operator.post(
            "/v1/platforms", {"name": "Settled (sandbox)", "gateway_url": platform.url}
        )
        assert reply.status_code == 201, reply.text
        platform_id = str(reply.json()["id"])
        product = api.product(platform_id, wholesale=WHOLESALE)
        shop = api.top_channel("Settling shop")
        api.deposit(shop, 100_000)
        api.buy(shop, product, ORDERS)
        reply = shop.post("/v1/code-batches", {"product_id": product, "quantity": ORDERS})
        assert reply.status_code == 201, reply.text
        orders = [recharge(api, shop, code) for code in reply.json()["codes"]]
        for order in orders:
            wait_until(f"{order} succeeded", lambda o=order: status_of(shop, o) != "pending")
            assert status_of(shop, order) == "succeeded"
        dropped, changed, moved, refunded, kept, _ = orders
        platform.faults(refund_review_ms=0)
        reply = shop.post(f"/v1/recharges/{refunded}/refund-requests", {"reason": "test"})
        assert reply.status_code == 202, reply.text
        wait_until("the refund accepted", lambda: status_of(shop, refunded) == "refunded")
    platform.faults(
        statement_drop_orders=[dropped],
        statement_amount_orders=[changed],
        statement_amount_delta=DELTA,
        statement_next_day_orders=[moved],
        statement_extra_lines=1,
    )
    today = datetime.now(UTC).date().isoformat()
    body = {"platform_id": platform_id, "period": today, "close_now": True}

    # killed inside collect, then statement, then reconcile: nothing of the step recorded
    recorded_after = {
        "collect": ["Opened"],
        "statement": ["OursCollected"],
        "reconcile": ["StatementFetched"],
    }
    settlement_id = ""
    for step, last_event in recorded_after.items():
        with serving(
            database_url, platform, f"settlement-{step}", LEDGER_SANDBOX_SETTLEMENT_EXIT=step
        ) as server:
            api = Api(http, server.base_url, tokens)
            if not settlement_id:
                reply = api.operator.post("/v1/settlements", body)
                assert reply.status_code == 202, reply.text
                settlement_id = str(reply.json()["id"])
            killed(server)
        events = settlement_events(database_url, settlement_id)
        assert [e for e in events if e != "Deferred"][-1:] == last_event, (step, events)
        assert payments(platform) == []

    # reconciled with cases open: approved, then killed once the platform took the payment
    with serving(
        database_url, platform, "settlement-pay", LEDGER_SANDBOX_SETTLEMENT_EXIT="pay"
    ) as server:
        api = Api(http, server.base_url, tokens)
        path = f"/v1/settlements/{settlement_id}"
        shown = wait_until(
            "reconciled",
            lambda: (s := api.finance.get(path).json())["status"] == "awaiting_approval" and s,
        )
        assert (shown["open_cases"], shown["paid"]["amount"]) == (2, 0)
        assert api.operator.post(f"{path}/approval").status_code == 200
        killed(server)
    (paid,) = payments(platform)
    assert [e for e in settlement_events(database_url, settlement_id)][-1] != "Paid"

    # a last server records the payment the platform already took, without paying again
    with serving(database_url, platform, "settlement-finish") as server:
        api = Api(http, server.base_url, tokens)
        final = wait_until(
            "paid", lambda: (s := api.finance.get(path).json())["status"] == "paid" and s
        )
        lines = api.finance.get(f"{path}/lines?limit=100").json()["items"]
        cases = api.finance.get("/v1/cases?status=open&limit=100").json()["items"]
        balanced = api.trial_balance()["balanced"]

    assert payments(platform) == [paid]
    assert (paid["payment_id"], paid["amount"]) == (settlement_id, final["agreed"]["amount"])
    assert final["payment_reference"] == paid["reference"]
    by_key = {(line["order_no"], line["kind"]): line for line in lines}
    assert len(by_key) == len(lines)
    extra = f"sandbox-extra-{today}-1"
    differences = {
        (changed, "charge"): ("amount_differs", "case"),
        ((extra, "charge")): ("theirs_only", "case"),
        (dropped, "charge"): ("ours_only", "carried"),
        (moved, "charge"): ("ours_only", "carried"),
    }
    for key, (match, disposition) in differences.items():
        assert (by_key[key]["match"], by_key[key]["disposition"]) == (match, disposition), key
    agreed_keys = {
        (refunded, "charge"),
        (refunded, "refund"),
        (kept, "charge"),
        (orders[5], "charge"),
    }
    assert {k for k, line in by_key.items() if line["match"] == "matched"} == agreed_keys
    assert by_key[(changed, "charge")]["theirs"]["amount"] == WHOLESALE + DELTA
    ours_cases = [c for c in cases if c["settlement_id"] == settlement_id]
    assert sorted((c["order_no"], c["kind"]) for c in ours_cases) == sorted(
        [(changed, "amount_differs"), (extra, "theirs_only")]
    )
    assert final["agreed"]["amount"] == 2 * WHOLESALE  # kept and the last: the refund nets 0
    assert (final["carried_out"], final["cases"], final["open_cases"]) == (2, 2, 2)
    assert balanced is True
