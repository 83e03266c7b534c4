"""Outbound calls and internal addresses, over real processes: with
`LEDGER_OUTBOUND_ALLOW_PRIVATE=true` (the sandbox's default) a webhook on 127.0.0.1 is saved
and delivered; with it `false` such URLs are refused when saved (422 `address_not_allowed`,
nothing recorded), and at delivery time a webhook saved earlier and the platform gateway on
127.0.0.1 are refused at the connection: nothing reaches them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Api, Caller, free_port, sandbox_serving

pytestmark = pytest.mark.e2e

DEADLINE_SECONDS = 4


class Receiver:
    """A channel's webhook endpoint on 127.0.0.1, counting connections and deliveries."""

    def __init__(self) -> None:
        self.connections = 0
        self.deliveries: list[bytes] = []
        receiver = self

        class Server(ThreadingHTTPServer):
            def get_request(self) -> Any:
                accepted = super().get_request()
                receiver.connections += 1
                return accepted

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                receiver.deliveries.append(
                    self.rfile.read(int(self.headers.get("Content-Length", "0")))
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/hooks/ledger"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.http.shutdown()
    started.http.server_close()


def accept(api: Api, channel: Caller, code: str) -> str:
    account = f"139{uuid.uuid4().int % 10**8:08d}"
    sent = channel.post("/v1/verification-codes", {"account": account})
    assert sent.status_code == 202, sent.text
    sms = api.operator.get(f"/v1/sandbox/sms?account={account}").json()["code"]
    reply = channel.post(
        "/v1/recharges", {"code": code, "account": account, "verification_code": sms}
    )
    assert reply.status_code == 202, reply.text
    return str(reply.json()["id"])


def final(channel: Caller, recharge_id: str, seconds: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        found = channel.get(f"/v1/recharges/{recharge_id}")
        if found.status_code == 200 and found.json()["status"] != "pending":
            return dict(found.json())
        assert time.monotonic() < deadline, f"recharge {recharge_id} did not leave pending"
        time.sleep(0.2)


def wait_for(probe: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_internal_webhooks_and_gateways_are_refused_unless_allowed(
    database_url: str, tokens: dict[str, str], http: httpx.Client, receiver: Receiver
) -> None:
    platform_port = free_port()
    platform_url = f"http://127.0.0.1:{platform_port}"

    with sandbox_serving(
        database_url, platform_port, "outbound-on", LEDGER_OUTBOUND_ALLOW_PRIVATE="true"
    ) as allowed:
        api = Api(http, allowed.base_url, tokens)
        reply = api.operator.post(
            "/v1/platforms", {"name": "iQiyi (sandbox)", "gateway_url": platform_url}
        )
        assert reply.status_code == 201, reply.text
        product_id = api.product(reply.json()["id"])
        shop = api.top_channel("Shop with a webhook")
        api.deposit(shop, 100_000)
        api.buy(shop, product_id, 2)
        batch = shop.post("/v1/code-batches", {"product_id": product_id, "quantity": 2})
        assert batch.status_code == 201, batch.text
        codes = batch.json()["codes"]
        saved = shop.put(f"/v1/channels/{shop.id}/webhook", {"url": receiver.url})
        assert saved.status_code == 200, saved.text

        assert final(shop, accept(api, shop, codes[0]))["status"] == "succeeded"
        wait_for(lambda: len(receiver.deliveries) == 1, "the allowed webhook was not delivered")
        delivered_before = (receiver.connections, len(receiver.deliveries))

    with sandbox_serving(
        database_url,
        platform_port,
        "outbound-off",
        LEDGER_OUTBOUND_ALLOW_PRIVATE="false",
        LEDGER_RECHARGE_DEADLINE_SECONDS=str(DEADLINE_SECONDS),
        LEDGER_GATEWAY_TIMEOUT_SECONDS="1",
    ) as refusing:
        api = Api(http, refusing.base_url, tokens)
        shop = shop.at(refusing.base_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            events = conn.execute("SELECT count(*) FROM distribution_events").fetchone()
            for url in (
                receiver.url,
                "http://169.254.169.254/latest/meta-data/iam/",
                "http://[::1]:8080/hook",
                "http://10.0.0.8/hook",
                "http://metadata.google.internal/computeMetadata/v1/",
                "http://localhost:9/hook",
            ):
                refused = shop.put(f"/v1/channels/{shop.id}/webhook", {"url": url})
                assert refused.status_code == 422, refused.text
                assert refused.headers["content-type"].startswith("application/problem+json")
                assert refused.json()["code"] == "address_not_allowed", refused.text
            after = conn.execute("SELECT count(*) FROM distribution_events").fetchone()
            assert after == events, "a refused URL records nothing"

        # the platform on 127.0.0.1: nothing is sent, the outcome cannot be learnt: review
        recharge_id = accept(api, shop, codes[1])
        reviewed = final(shop, recharge_id, DEADLINE_SECONDS + 30)
        assert reviewed["status"] == "review", reviewed
        credits = httpx.get(f"{platform_url}/sandbox/credits", timeout=5).json()["credits"]
        assert credits == [], "the platform was called"
        with psycopg.connect(database_url, autocommit=True) as conn:
            reasons = conn.execute(
                "SELECT state FROM recharges_events WHERE originator_id = %s "
                "AND topic LIKE %s",
                (recharge_id, "%StepCompleted"),
            ).fetchall()
        assert reasons and all(b"outbound address refused" in bytes(r[0]) for r in reasons)

        # the webhook saved while allowed: its delivery is refused at the connection
        resolved = api.operator.post(
            f"/v1/recharges/{recharge_id}/resolution",
            {"outcome": "failed", "note": "the platform never saw the order"},
        )
        assert resolved.status_code == 200, resolved.text
        wait_for(
            lambda: "address refused" in refusing.output(),
            "the refused delivery was not logged",
        )
        time.sleep(1.0)
        assert (receiver.connections, len(receiver.deliveries)) == delivered_before
        assert delivered_before == (1, 1)


