"""The case queue over HTTP, against `ledger serve` in sandbox mode and `ledger
sandbox-platform`: recharges credited through the platform, its statement changing one
amount and adding an order we never sent; today settled (close_now) waits for an operator
with one case per difference; the operator lists and resolves them through the API (a second
resolution and an unknown outcome refused, recording nothing), and the sweeper then pays the
agreed amount once, with the resolution's postings in a zero trial balance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Api
from tests.e2e.test_cards_api import assert_problem
from tests.e2e.test_settlement_e2e import (
    PLATFORM_ENV,
    payments,
    recharge,
    serving,
    status_of,
    wait_until,
)
from tests.recharge_support import Platform, start_platform

pytestmark = pytest.mark.e2e

WHOLESALE = 2000
DELTA = 300


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    started = start_platform(PLATFORM_ENV)
    try:
        yield started
    finally:
        started.stop()


def case_events(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM settlements_events WHERE topic LIKE %s", ("%Case%",)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_operator_resolves_each_difference_and_the_settlement_then_pays_itself(
    database_url: str, tokens: dict[str, str], http: httpx.Client, platform: Platform
) -> None:
    with serving(database_url, platform, "cases") as server:
        api = Api(http, server.base_url, tokens)
        reply = api.operator.post(
            "/v1/platforms", {"name": "Cases (sandbox)", "gateway_url": platform.url}
        )
        assert reply.status_code == 201, reply.text
        platform_id = str(reply.json()["id"])
        product = api.product(platform_id, wholesale=WHOLESALE)
        shop = api.top_channel("Case shop")
        api.deposit(shop, 100_000)
        api.buy(shop, product, 2)
        reply = shop.post("/v1/code-batches", {"product_id": product, "quantity": 2})
        assert reply.status_code == 201, reply.text
        orders = [recharge(api, shop, code) for code in reply.json()["codes"]]
        for order in orders:
            wait_until(f"{order} final", lambda o=order: status_of(shop, o) != "pending")
            assert status_of(shop, order) == "succeeded"
        kept, changed = orders
        platform.faults(
            statement_amount_orders=[changed],
            statement_amount_delta=DELTA,
            statement_extra_lines=1,
        )
        today = datetime.now(UTC).date().isoformat()
        body = {"platform_id": platform_id, "period": today, "close_now": True}
        reply = api.operator.post("/v1/settlements", body)
        assert reply.status_code == 202, reply.text
        path = f"/v1/settlements/{reply.json()['id']}"

        shown = wait_until(
            "awaiting approval",
            lambda: (s := api.finance.get(path).json())["status"] == "awaiting_approval" and s,
        )
        assert shown["counts"] == {
            "matched": 1,
            "amount_differs": 1,
            "ours_only": 0,
            "theirs_only": 1,
        }
        assert shown["agreed"]["amount"] == WHOLESALE
        lines = api.finance.get(f"{path}/lines?limit=2").json()
        assert len(lines["items"]) == 2 and lines["next_cursor"] == "2"
        rest = api.finance.get(f"{path}/lines?limit=2&after=2").json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None
        by_order = {line["order_no"]: line for line in lines["items"] + rest["items"]}
        assert by_order[changed]["match"] == "amount_differs"
        assert by_order[changed]["theirs"] == {"amount": WHOLESALE + DELTA, "currency": "CNY"}
        assert by_order[kept]["match"] == "matched"

        mine = [
            c
            for c in api.finance.get("/v1/cases?status=open&limit=100").json()["items"]
            if c["settlement_id"] == shown["id"]
        ]
        assert sorted(c["kind"] for c in mine) == ["amount_differs", "theirs_only"]
        (differs,) = [c for c in mine if c["kind"] == "amount_differs"]
        (extra,) = [c for c in mine if c["kind"] == "theirs_only"]
        listed = api.operator.get("/v1/cases?kind=amount_differs&status=open").json()["items"]
        assert differs["id"] in [c["id"] for c in listed]

        reply = api.operator.post(
            f"/v1/cases/{differs['id']}/resolution",
            {"outcome": "accept_theirs", "note": "their price list changed"},
        )
        assert reply.status_code == 200, reply.text
        resolved = reply.json()
        assert resolved["status"] == "resolved"
        assert resolved["resolution"]["outcome"] == "accept_theirs"
        assert resolved["resolution"]["pay"] == {"amount": WHOLESALE + DELTA, "currency": "CNY"}
        before = case_events(database_url)
        assert_problem(
            api.operator.post(
                f"/v1/cases/{differs['id']}/resolution", {"outcome": "write_off", "note": ""}
            ),
            409,
            "state_conflict",
        )
        assert_problem(
            api.operator.post(
                f"/v1/cases/{extra['id']}/resolution", {"outcome": "ignore", "note": ""}
            ),
            422,
            "validation_failed",
        )
        assert_problem(
            api.finance.post(
                f"/v1/cases/{extra['id']}/resolution", {"outcome": "write_off", "note": ""}
            ),
            403,
            "forbidden",
        )
        assert case_events(database_url) == before
        assert api.finance.get(path).json()["status"] == "awaiting_approval"

        reply = api.operator.post(
            f"/v1/cases/{extra['id']}/resolution",
            {"outcome": "request_refund", "note": "we never sent this order"},
        )
        assert reply.status_code == 200, reply.text
        paid = wait_until(
            "paid by the sweeper",
            lambda: (s := api.finance.get(path).json())["status"] == "paid" and s,
        )

        agreed = WHOLESALE + WHOLESALE + DELTA
        assert (paid["agreed"]["amount"], paid["paid"]["amount"], paid["open_cases"]) == (
            agreed,
            agreed,
            0,
        )
        made = [p for p in payments(platform) if p["payment_id"] == shown["id"]]
        assert [p["amount"] for p in made] == [agreed]
        assert paid["payment_reference"] == made[0]["reference"]
        assert api.operator.get(f"/v1/cases/{extra['id']}").json()["status"] == "resolved"
        assert api.trial_balance()["balanced"] is True
        for account, posted in (
            ("external:platform_settlements:CNY", agreed),  # what left, once
            ("operator:settlement_differences:CNY", -DELTA),  # the accepted extra
        ):
            reply = api.finance.get(f"/v1/ledger/accounts/{account}/balance")
            assert reply.status_code == 200, reply.text
            assert reply.json()["balances"] == [
                {"asset": "CNY", "posted": posted, "pending": 0, "available": posted}
            ]
