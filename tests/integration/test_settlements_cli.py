"""`ledger settlements run|list|show|export` on the real PostgreSQL against the sandbox
platform as a process: today's orders settled with close_now, the progress bar reaching
100 %, the amount the platform changed open as a case (awaiting approval), the dropped line
carried; a second run answers the same settlement, and once approved a run pays it, once."""

from __future__ import annotations

import csv
import io
import os
import subprocess
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import httpx
import pytest

from adapters.platform_gateway import HttpPlatformGateway
from ledger.distribution.application import Distribution
from ledger.money import Money
from ledger.recharges.application import Recharges
from ledger.recharges.saga import Recharge
from ledger.settlement.application import Settlements
from ledger.settlement.saga import settlement_id
from tests.integration.test_rebuild import app_env
from tests.integration.test_sandbox_platform import ledger_command, set_faults
from tests.integration.test_settlement_statements import PARTNER, SECRET, base_url, sandbox

pytestmark = pytest.mark.integration

__all__ = ["base_url", "sandbox"]  # fixtures: the sandbox platform process, reset per test


def credited_orders(url: str, gateway_url: str, count: int) -> tuple[UUID, list[str]]:
    """A platform at `gateway_url` with one product, and `count` recharges of it credited by
    the platform and recorded as succeeded sagas."""
    env = app_env(url)
    distribution, recharges = Distribution(env=env), Recharges(env=env)
    platform, product = uuid4(), uuid4()
    orders: list[str] = []
    try:
        distribution.register_platform(platform, "iQiyi", gateway_url)
        distribution.register_product(product, platform, "Gold", 30, Money(3000), Money(2000))
        with HttpPlatformGateway(gateway_url, PARTNER, SECRET) as gateway:
            for n in range(count):
                now = datetime.now(UTC)
                recharge = Recharge.request(
                    uuid4(), uuid4(), uuid4(), product, f"1380000{n:04d}", None, now,
                    now + timedelta(hours=1),
                )  # fmt: skip
                assert recharge.step is not None
                result = gateway.recharge(str(recharge.id), recharge.account, str(product), 30)
                assert result.outcome == "succeeded"
                recharge.record(recharge.step.id, result, now)
                recharges.save(recharge)
                orders.append(str(recharge.id))
    finally:
        distribution.close()
        recharges.close()
    return platform, orders


def test_the_command_line_settles_today_shows_lists_and_exports_it(
    database_url: str, base_url: str, sandbox: httpx.Client
) -> None:
    platform, orders = credited_orders(database_url, base_url, 3)
    dropped, changed, kept = sorted(orders)
    set_faults(sandbox, statement_drop_orders=[dropped], statement_amount_orders=[changed])
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LEDGER_SANDBOX": "true",
        "LEDGER_PLATFORM_SECRET": SECRET,
        "LEDGER_PLATFORM_PARTNER_ID": PARTNER,
        "COLUMNS": "200",
    }

    def ledger(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ledger_command(), "settlements", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    today = datetime.now(UTC).date().isoformat()
    ran = ledger("run", str(platform), today, "--close-now")
    assert ran.returncode == 0, ran.stderr
    assert "awaiting_approval" in ran.stderr and "100 %" in ran.stderr
    assert "awaiting_approval" in ran.stdout
    the_id = str(settlement_id(platform, datetime.now(UTC).date()))
    assert the_id in ran.stdout

    shown = ledger("show", the_id)
    assert shown.returncode == 0, shown.stderr
    assert "amount_differs" in shown.stdout and "60.00 CNY" in shown.stdout  # owed: 3 x 20.00
    listed = ledger("list", "--platform", str(platform))
    assert listed.returncode == 0, listed.stderr
    assert the_id in listed.stdout and "awaiting_approval" in listed.stdout

    exported = ledger("export", the_id)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    lines = {r["order_no"]: (r["ours"], r["theirs"], r["match"], r["disposition"]) for r in rows}
    assert lines == {
        dropped: ("2000", "", "ours_only", "carried"),
        changed: ("2000", "2250", "amount_differs", "case"),  # the sandbox adds 250
        kept: ("2000", "2000", "matched", "agreed"),
    }
    assert sandbox.get("/sandbox/payments").json()["payments"] == []

    again = ledger("run", str(platform), today, "--close-now")
    assert again.returncode == 0 and the_id in again.stdout
    settlements = Settlements(env=app_env(database_url))
    try:
        settlements.approve(UUID(the_id), "operator")
    finally:
        settlements.close()
    paid = ledger("run", str(platform), today, "--close-now")
    assert paid.returncode == 0, paid.stderr
    assert "paid" in paid.stdout
    assert ledger("run", str(platform), today, "--close-now").returncode == 0
    payments = sandbox.get("/sandbox/payments").json()["payments"]
    assert [(p["payment_id"], p["amount"]) for p in payments] == [(the_id, 2000)]

    refused = ledger("run", str(platform), "2999-01-01")
    assert refused.returncode == 1 and "period_not_closed" in refused.stderr
    assert ledger("show", str(uuid4())).returncode == 1
    assert ledger("run", "not-an-id", today).returncode == 2
