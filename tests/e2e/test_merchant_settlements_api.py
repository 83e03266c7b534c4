"""Merchant settlement over HTTP against `ledger serve` in sandbox mode: a merchant's
consumptions and refunds settled for today (close_now), paid once through the sandbox
payouts, the statement read as JSON and CSV by the operator, finance and the merchant itself
(another merchant finds nothing); bad input records nothing; and a settlement whose process
is SIGKILLed right after its payout is finished by the next process's sweeper, paid once."""

from __future__ import annotations

import csv
import io
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Api, free_port, sandbox_serving
from tests.e2e.test_cards_api import Shop, assert_problem, cny, server

pytestmark = pytest.mark.e2e

__all__ = ["server"]  # the module's `ledger serve`, shared with the cards e2e tests

ZONE = ZoneInfo("Asia/Shanghai")


def today() -> str:
    return datetime.now(UTC).astimezone(ZONE).date().isoformat()


def payouts_made(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT payout_id, payee_id, amount, reference FROM sandbox_payouts ORDER BY at"
        ).fetchall()


def settlement_rows(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM cards_events WHERE topic LIKE %s", ("%MerchantSettlement%",)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_merchant_is_settled_and_reads_its_statement_as_json_and_csv(
    api: Api, database_url: str
) -> None:
    shop, other = Shop(api), Shop(api)
    owner = shop.member("Owner")
    card = shop.open_card(owner)["id"]
    first = shop.consume(card, 10_000).json()["id"]
    shop.consume(card, 5_000)
    refund = shop.merchant.post(f"/v1/consumptions/{first}/refunds")
    assert refund.status_code == 201, refund.text
    body = {"merchant_id": shop.merchant.id, "period": today(), "close_now": True}

    reply = api.operator.post("/v1/merchant-settlements", body)

    assert reply.status_code == 202, reply.text
    settlement = reply.json()
    assert settlement["status"] == "paid"
    again = api.operator.post("/v1/merchant-settlements", body)
    assert again.status_code == 202 and again.json()["id"] == settlement["id"]
    path = f"/v1/merchant-settlements/{settlement['id']}"

    statement = shop.merchant.get(path)
    assert statement.status_code == 200, statement.text
    shown = statement.json()
    assert (shown["merchant_id"], shown["period"], shown["status"]) == (
        shop.merchant.id,
        today(),
        "paid",
    )
    assert sorted(c["amount"]["amount"] for c in shown["consumptions"]) == [4_000, 8_000]
    assert [(r["consumption_id"], r["amount"]) for r in shown["refunds"]] == [(first, cny(-8_000))]
    assert shown["totals"] == [
        {
            "currency": "CNY",
            "consumptions": 12_000,
            "refunds": -8_000,
            "carried_in": 0,
            "amount": 4_000,
            "carried_forward": 0,
        }
    ]
    (payout,) = shown["payouts"]
    assert (payout["amount"], payout["status"]) == (cny(4_000), "paid")
    made = [row for row in payouts_made(database_url) if str(row[0]) == payout["id"]]
    assert [(str(row[1]), row[2], row[3]) for row in made] == [
        (shop.merchant.id, 4_000, payout["reference"])
    ]
    for reader in (api.operator, api.finance):
        assert reader.get(path).json() == shown

    exported = shop.merchant.get(path + "?format=csv")
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted((r["kind"], int(r["amount"])) for r in rows) == [
        ("consumption", 4_000),
        ("consumption", 8_000),
        ("refund", -8_000),
        ("total", 4_000),
    ]

    assert_problem(other.merchant.get(path), 404, "not_found")
    assert_problem(other.merchant.get(path + "?format=csv"), 404, "not_found")
    assert_problem(owner.get(path), 403, "forbidden")

    listed = shop.merchant.get("/v1/merchant-settlements")
    assert listed.status_code == 200, listed.text
    assert [(s["id"], s["status"], s["lines"]) for s in listed.json()["items"]] == [
        (settlement["id"], "paid", 3)
    ]
    assert other.merchant.get("/v1/merchant-settlements").json()["items"] == []
    assert_problem(
        other.merchant.get(f"/v1/merchant-settlements?merchant_id={shop.merchant.id}"),
        404,
        "not_found",
    )
    by_operator = api.operator.get(f"/v1/merchant-settlements?merchant_id={shop.merchant.id}")
    assert [s["id"] for s in by_operator.json()["items"]] == [settlement["id"]]
    assert api.trial_balance()["balanced"] is True


def test_bad_settlement_requests_are_refused_and_record_nothing(
    api: Api, database_url: str
) -> None:
    shop = Shop(api)
    before = settlement_rows(database_url)
    tomorrow = (datetime.now(UTC).astimezone(ZONE) + timedelta(days=1)).date().isoformat()
    post = api.operator.post

    assert_problem(
        post("/v1/merchant-settlements", {"merchant_id": shop.activity, "period": "2024-01-01"}),
        404,
        "not_found",
    )
    assert_problem(
        post("/v1/merchant-settlements", {"merchant_id": "nope", "period": "2024-01-01"}),
        404,
        "not_found",
    )
    for period in ("2024-13-01", "yesterday", "2024-1-1"):
        assert_problem(
            post("/v1/merchant-settlements", {"merchant_id": shop.merchant.id, "period": period}),
            422,
            "invalid_period",
        )
    assert_problem(
        post("/v1/merchant-settlements", {"merchant_id": shop.merchant.id, "period": today()}),
        422,
        "period_not_closed",
    )
    assert_problem(
        post(
            "/v1/merchant-settlements",
            {"merchant_id": shop.merchant.id, "period": tomorrow, "close_now": True},
        ),
        422,
        "period_not_closed",
    )
    assert_problem(
        post("/v1/merchant-settlements", {"merchant_id": shop.merchant.id}),
        422,
        "validation_failed",
    )
    assert_problem(
        shop.merchant.post(
            "/v1/merchant-settlements", {"merchant_id": shop.merchant.id, "period": "2024-01-01"}
        ),
        403,
        "forbidden",
    )
    assert_problem(api.operator.get("/v1/merchant-settlements/nope"), 404, "not_found")
    assert settlement_rows(database_url) == before


def test_a_settlement_killed_after_its_payout_is_finished_by_the_sweeper_paid_once(
    database_url: str, tokens: dict[str, str], http: httpx.Client
) -> None:
    platform_port = free_port()
    with sandbox_serving(
        database_url, platform_port, "merchant-payouts", LEDGER_SANDBOX_PAYOUT_EXIT="true"
    ) as first:
        api = Api(http, first.base_url, tokens)
        shop = Shop(api)
        card = shop.open_card(shop.member("Owner"))["id"]
        assert shop.consume(card, 10_000).status_code == 201
        before = len(payouts_made(database_url))

        with pytest.raises(httpx.TransportError):
            api.operator.post(
                "/v1/merchant-settlements",
                {"merchant_id": shop.merchant.id, "period": today(), "close_now": True},
            )
        assert first.process.wait(timeout=30) == -signal.SIGKILL

    made = payouts_made(database_url)[before:]
    assert [(str(row[1]), row[2]) for row in made] == [(shop.merchant.id, 8_000)]

    with sandbox_serving(
        database_url, platform_port, "merchant-payouts", LEDGER_PAYOUT_GRACE_SECONDS="1"
    ) as second:
        api = Api(http, second.base_url, tokens)
        deadline = time.monotonic() + 60
        while True:
            listed = api.operator.get(f"/v1/merchant-settlements?merchant_id={shop.merchant.id}")
            assert listed.status_code == 200, listed.text
            (row,) = listed.json()["items"]
            if row["status"] == "paid":
                break
            assert time.monotonic() < deadline, "the sweeper did not finish the settlement"
            time.sleep(0.5)
        shown = api.finance.get(f"/v1/merchant-settlements/{row['id']}").json()
        (payout,) = shown["payouts"]
        assert (payout["status"], payout["reference"]) == ("paid", made[0][3])
        assert payout["id"] == str(made[0][0])
        assert api.trial_balance()["balanced"] is True

    assert payouts_made(database_url)[before:] == made
