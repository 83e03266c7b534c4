"""Issue 11, item 2: how many SQL statements and transactions one accepted POST /v1/recharges
sends, counted in a real `ledger serve` (sandbox mode) by benchmarks/statement_counter, the hook
the recharge benchmark uses; and that each aggregate (the channel, the code) is read once."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Api, Server, free_port, sandbox_serving

pytestmark = pytest.mark.e2e

COUNTER = Path(__file__).resolve().parents[2] / "benchmarks" / "statement_counter"
RECHARGES = 12
STATEMENTS_PER_ACCEPTANCE = 8
"""Issue 11's target (27 measured before, 32 with pre-pings): the nonce spent with the key's
claim, the channel, the code, the limits, the verification code, the reservation, the
verification code used with its sender known to the account (one statement, migration 0020),
the answer stored. Housekeeping is counted apart: connection checks (a pooled connection that
rested over 2 s) and the pruning of old nonces (one request in a hundred)."""
HOUSEKEEPING = ("(empty: a connection check)", "DELETE FROM used_nonces")
AGGREGATE_READ = 'SELECT * FROM "public"."distribution_events" WHERE originator_id'


@pytest.fixture(scope="module")
def counts_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="statement-counts-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def platform_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(database_url: str, counts_folder: Path, platform_port: int) -> Iterator[Server]:
    """Overrides conftest's server: sandbox mode, its statements counted (and its sandbox
    platform's, apart: another process)."""
    path = os.pathsep.join(p for p in (str(COUNTER), os.environ.get("PYTHONPATH", "")) if p)
    with sandbox_serving(
        database_url,
        platform_port,
        "statement-counts",
        PYTHONPATH=path,
        LEDGER_BENCH_STATEMENT_COUNTS=str(counts_folder),
    ) as started:
        yield started


def request_counts(folder: Path, server: Server) -> dict[str, Any]:
    """What the server's request threads sent so far (the hook writes every 0.1 s); the
    runners, sagas and worker in the same process are counted apart."""
    time.sleep(0.5)
    written = folder / f"{server.process.pid}.json"
    counts: dict[str, Any] = json.loads(written.read_text())["request"]
    counts["top"] = dict(counts.pop("top"))
    return counts


def test_an_acceptance_sends_few_statements_and_reads_each_aggregate_once(
    api: Api, counts_folder: Path, server: Server, platform_port: int
) -> None:
    platform = api.operator.post(
        "/v1/platforms",
        {"name": "Counted", "gateway_url": f"http://127.0.0.1:{platform_port}"},
    )
    assert platform.status_code == 201, platform.text
    product = api.product(platform.json()["id"])
    shop = api.top_channel("Counted shop")
    api.deposit(shop, 100_000)
    api.buy(shop, product, RECHARGES)
    batch = shop.post("/v1/code-batches", {"product_id": product, "quantity": RECHARGES})
    assert batch.status_code == 201, batch.text
    work = []
    for code in batch.json()["codes"]:
        account = f"139{uuid.uuid4().int % 10**8:08d}"
        sent = shop.post("/v1/verification-codes", {"account": account})
        assert sent.status_code == 202, sent.text
        reply = api.operator.get(f"/v1/sandbox/sms?account={account}")
        assert reply.status_code == 200, reply.text
        work.append((code, account, reply.json()["code"]))

    before = request_counts(counts_folder, server)
    for code, account, verification in work:
        placed = shop.post(
            "/v1/recharges", {"code": code, "account": account, "verification_code": verification}
        )
        assert placed.status_code == 202, placed.text
    after = request_counts(counts_folder, server)

    checks = (
        sum(
            n - before["top"].get(text, 0)
            for text, n in after["top"].items()
            if text.startswith(HOUSEKEEPING)
        )
        / RECHARGES
    )
    statements = (after["statements"] - before["statements"]) / RECHARGES - checks
    transactions = (after["transactions"] - before["transactions"]) / RECHARGES
    sent = {
        text: (n - before["top"].get(text, 0)) / RECHARGES
        for text, n in after["top"].items()
        if n > before["top"].get(text, 0)
    }
    shown = "\n".join(f"{n:5.2f} {text}" for text, n in sorted(sent.items(), key=lambda x: -x[1]))
    print(f"\nper acceptance: {statements:.2f} statements, {transactions:.2f} transactions")
    print(shown)
    assert statements <= STATEMENTS_PER_ACCEPTANCE, shown
    assert checks <= 0.5, shown
    assert transactions <= statements + checks
    reads = sum(n for text, n in sent.items() if text.startswith(AGGREGATE_READ))
    assert reads <= 2, f"the channel and the code, each read once:\n{shown}"
