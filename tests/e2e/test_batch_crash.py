"""A code batch whose process is SIGKILLed after the batch is saved and before its answer is
stored: the retry with the same Idempotency-Key gets exactly the codes that hold the batch's
units (kept sealed meanwhile, never in clear in the database), and they redeem."""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Api, Caller, free_port, sandbox_serving

pytestmark = pytest.mark.e2e


def rows(database_url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


def redeem(api: Api, channel: Caller, code: str, account: str) -> str:
    sent = channel.post("/v1/verification-codes", {"account": account})
    assert sent.status_code == 202, sent.text
    sms = api.operator.get(f"/v1/sandbox/sms?account={account}")
    assert sms.status_code == 200, sms.text
    body = {"code": code, "account": account, "verification_code": sms.json()["code"]}
    reply = channel.post("/v1/recharges", body)
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 60
    while True:
        status = channel.get(f"/v1/recharges/{reply.json()['id']}").json().get("status")
        if status not in (None, "pending"):
            return str(status)
        assert time.monotonic() < deadline, "the recharge did not finish"
        time.sleep(0.2)


def stock(channel: Caller, product_id: str) -> tuple[int, int, int]:
    reply = channel.get(f"/v1/channels/{channel.id}/stock")
    assert reply.status_code == 200, reply.text
    for item in reply.json()["items"]:
        if item["product_id"] == product_id:
            return item["on_hand"], item["held"], item["consumed"]
    return 0, 0, 0


def test_a_batch_killed_between_its_save_and_its_answer_is_answered_again_with_its_codes(
    database_url: str, tokens: dict[str, str], http: httpx.Client
) -> None:
    platform_port = free_port()
    key = f"batch-{uuid.uuid4().hex}"
    with sandbox_serving(
        database_url, platform_port, "batch-crash", LEDGER_SANDBOX_BATCH_EXIT="true"
    ) as first:
        api = Api(http, first.base_url, tokens)
        reply = api.operator.post(
            "/v1/platforms",
            {"name": "iQiyi (sandbox)", "gateway_url": f"http://127.0.0.1:{platform_port}"},
        )
        assert reply.status_code == 201, reply.text
        product_id = api.product(reply.json()["id"])
        shop = api.top_channel("Crashing shop")
        api.deposit(shop, 100_000)
        api.buy(shop, product_id, 5)
        body = {"product_id": product_id, "quantity": 3}

        with pytest.raises(httpx.TransportError):
            shop.post("/v1/code-batches", body, idempotency_key=key)
        assert first.process.wait(timeout=30) == -signal.SIGKILL

    saved = rows(
        database_url,
        "SELECT originator_id FROM distribution_events WHERE topic LIKE %s",
        "%CodeBatch.Issued",
    )
    assert len(saved) == 1, "the batch was saved before the process died"
    (state,) = rows(database_url, "SELECT state FROM idempotency_keys WHERE key = %s", key)
    assert state == ("in_flight",), "and its answer was never stored"
    assert len(rows(database_url, "SELECT 1 FROM issued_batch_codes")) == 1
    # the client retries after the first request counts as abandoned (a minute): now
    rows(
        database_url,
        "UPDATE idempotency_keys SET started_at = now() - interval '2 minutes' "
        "WHERE key = %s RETURNING 1",
        key,
    )

    with sandbox_serving(database_url, platform_port, "batch-crash-retry") as second:
        api = Api(http, second.base_url, tokens)
        shop = shop.at(second.base_url)
        retried = shop.post("/v1/code-batches", body, idempotency_key=key)
        assert retried.status_code == 201, retried.text
        codes = retried.json()["codes"]
        assert retried.json()["id"] == str(saved[0][0])
        assert len(codes) == len(set(codes)) == 3
        assert stock(shop, product_id) == (2, 3, 0), "held once, by these codes"

        again = shop.post("/v1/code-batches", body, idempotency_key=key)
        assert (again.status_code, again.json()["codes"]) == (201, codes)
        assert rows(database_url, "SELECT 1 FROM issued_batch_codes") == []

        kept = rows(database_url, "SELECT body::text FROM idempotency_keys WHERE key = %s", key)
        dumped = rows(database_url, "SELECT string_agg(t::text, ' ') FROM idempotency_keys t")
        for code in codes:
            plain = code.replace("-", "")
            assert code not in str(kept + dumped) and plain not in str(kept + dumped)
            assert code.encode().hex() not in str(kept)

        assert [redeem(api, shop, code, f"1390000{i:04d}") for i, code in enumerate(codes)] == [
            "succeeded"
        ] * 3
        # a recharge shows succeeded once its saga ends; the dispatcher redeems its code after
        deadline = time.monotonic() + 30
        while stock(shop, product_id) != (2, 0, 3) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stock(shop, product_id) == (2, 0, 3)
        assert api.trial_balance()["balanced"] is True
