"""Member cards over HTTP against a `ledger serve` process in sandbox mode (sandbox payments):
merchants sign their requests, members carry bearer tokens."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.signing import key_secret
from tests.e2e.conftest import (
    STARTUP_SECONDS,
    Api,
    Caller,
    Server,
    free_port,
    ledger_command,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    """`ledger serve` with the sandbox payment and payout gateways."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="ledger-e2e-cards-", suffix=".log")[1])
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LEDGER_SANDBOX": "true",
        "LEDGER_POOL_SIZE": "4",
        "LEDGER_SANDBOX_PLATFORM_PORT": str(free_port()),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ledger_command(), "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        started.wait_healthy(time.monotonic() + STARTUP_SECONDS)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def card_events(database_url: str) -> Callable[[], int]:
    def count() -> int:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM cards_events").fetchone()
        assert row is not None
        return int(row[0])

    return count


def cny(amount: int) -> dict[str, object]:
    return {"amount": amount, "currency": "CNY"}


def assert_problem(reply: Any, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["code"] == code, reply.text


class Shop:
    """A merchant with one activity (pay 1000.00, bonus 100.00, 80%) and its callers."""

    def __init__(self, api: Api) -> None:
        self.api = api
        reply = api.operator.post(
            "/v1/merchants", {"name": "Tea house", "timezone": "Asia/Shanghai"}
        )
        assert reply.status_code == 201, reply.text
        created = reply.json()
        assert created["key_id"] == f"mk_{uuid.UUID(created['id']).hex}"
        assert created["key_secret"] == key_secret(b"dev-secret-change-me", created["key_id"])
        self.merchant = Caller(
            api.http,
            api.base_url,
            key_id=created["key_id"],
            key_secret=created["key_secret"],
            id=created["id"],
        )
        reply = self.merchant.post(
            f"/v1/merchants/{self.merchant.id}/activities",
            {"pay": cny(100_000), "bonus": cny(10_000), "discount_bp": 8000},
        )
        assert reply.status_code == 201, reply.text
        self.activity = reply.json()["id"]

    def member(self, name: str) -> Caller:
        reply = self.api.operator.post("/v1/members", {"name": name, "phone": "+8613800138000"})
        assert reply.status_code == 201, reply.text
        created = reply.json()
        return Caller(self.api.http, self.api.base_url, token=created["token"], id=created["id"])

    def open_card(self, owner: Caller) -> dict[str, Any]:
        reply = owner.post("/v1/cards", {"activity_id": self.activity})
        assert reply.status_code == 201, reply.text
        return dict(reply.json())

    def consume(self, card: str, price: int, **kwargs: Any) -> Any:
        return self.merchant.post(
            "/v1/consumptions", {"card_id": card, "price": cny(price)}, **kwargs
        )

    def wallet(self, member: Caller) -> dict[str, int]:
        reply = member.get("/v1/wallet")
        assert reply.status_code == 200, reply.text
        return {name: money["amount"] for name, money in reply.json().items()}


@pytest.fixture(scope="module")
def shop(api: Api) -> Shop:
    return Shop(api)


def test_a_shared_card_passed_on_earns_commission_that_is_withdrawn_and_refunded(
    api: Api, shop: Shop
) -> None:
    owner, alice, bob, carol = (shop.member(n) for n in ("Owner", "Alice", "Bob", "Carol"))
    card = shop.open_card(owner)
    assert (card["balance"], card["discount_bp"]) == (cny(110_000), 8000)

    reply = owner.post(
        f"/v1/cards/{card['id']}/shared-cards",
        {"discount_bp": 9000, "commission_bp": 3000, "to_member_id": alice.id},
    )
    assert reply.status_code == 201, reply.text
    shared = reply.json()["id"]
    reply = alice.post(f"/v1/shared-cards/{shared}/passes", {"to_member_id": bob.id})
    assert reply.status_code == 201, reply.text
    passed = reply.json()["id"]
    assert_problem(
        bob.post(f"/v1/shared-cards/{passed}/passes", {"to_member_id": carol.id}),
        409,
        "share_depth_exceeded",
    )
    assert_problem(
        owner.post(f"/v1/shared-cards/{shared}/passes", {"to_member_id": carol.id}),
        403,
        "not_card_holder",
    )

    reply = shop.consume(passed, 10_001)
    assert reply.status_code == 201, reply.text
    consumption = reply.json()
    assert consumption["consumer_pays"] == cny(9001)
    assert consumption["card_debited"] == cny(0)
    assert {s["party"]: s["amount"] for s in consumption["splits"]} == {
        "merchant": 8001,
        "sharer": 300,
        "owner": 700,
    }
    assert sum(s["amount"] for s in consumption["splits"]) == 9001
    assert shop.wallet(alice) == {"posted": 300, "pending": 0, "available": 300}

    reply = alice.post("/v1/withdrawals", {"amount": cny(200)})
    assert reply.status_code == 201, reply.text
    assert reply.json()["status"] == "paid"
    assert_problem(alice.post("/v1/withdrawals", {"amount": cny(101)}), 409, "insufficient_balance")

    reply = shop.merchant.post(f"/v1/consumptions/{consumption['id']}/refunds")
    assert reply.status_code == 201, reply.text
    assert shop.wallet(alice)["posted"] == -200
    assert shop.wallet(owner)["posted"] == 0
    assert_problem(
        shop.merchant.post(f"/v1/consumptions/{consumption['id']}/refunds"), 409, "state_conflict"
    )

    reply = owner.get(f"/v1/cards/{card['id']}")
    assert reply.status_code == 200, reply.text
    view = reply.json()
    assert view["balance"] == cny(110_000), "shared consumption does not draw the main card"
    assert {c["id"] for c in view["shared_cards"]} == {shared, passed}
    assert [c["id"] for c in view["consumptions"]] == [consumption["id"]]
    assert api.trial_balance()["balanced"] is True


def test_the_owner_consumes_and_a_published_card_is_claimed(shop: Shop) -> None:
    owner, dave = shop.member("Owner"), shop.member("Dave")
    card = shop.open_card(owner)["id"]
    reply = shop.consume(card, 10_000)
    assert reply.status_code == 201, reply.text
    assert reply.json()["card_debited"] == cny(8000)

    reply = owner.post(
        f"/v1/cards/{card}/shared-cards",
        {"discount_bp": 9500, "commission_bp": 0, "publish": True, "max_uses": 1},
    )
    assert reply.status_code == 201, reply.text
    listing = reply.json()["id"]
    reply = dave.get("/v1/sharing-platform/listings?limit=100")
    assert reply.status_code == 200, reply.text
    assert listing in [item["id"] for item in reply.json()["items"]]

    reply = dave.post(f"/v1/shared-cards/{listing}/claims")
    assert reply.status_code == 201, reply.text
    mine = reply.json()["id"]
    assert mine in [c["id"] for c in dave.get("/v1/cards").json()["items"]]
    assert_problem(
        dave.post(f"/v1/shared-cards/{mine}/passes", {"publish": True}), 409, "card_not_passable"
    )
    assert shop.consume(mine, 1000).json()["consumer_pays"] == cny(950)
    assert_problem(shop.consume(mine, 1000), 409, "limit_exceeded")
    assert shop.wallet(owner)["posted"] == 150


def test_an_intimate_card_within_its_limits_frozen_and_revoked(shop: Shop) -> None:
    owner, daughter = shop.member("Owner"), shop.member("Daughter")
    card = shop.open_card(owner)["id"]
    reply = owner.post(
        f"/v1/cards/{card}/intimate-cards",
        {
            "holder_member_id": daughter.id,
            "monthly_limit": cny(5000),
            "per_use_limit": cny(4000),
            "show_details": False,
        },
    )
    assert reply.status_code == 201, reply.text
    intimate = reply.json()["id"]
    assert_problem(shop.consume(intimate, 1000), 409, "card_not_accepted")
    assert_problem(owner.post(f"/v1/intimate-cards/{intimate}/acceptance"), 403, "not_card_holder")
    reply = daughter.post(f"/v1/intimate-cards/{intimate}/acceptance")
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "active"

    reply = shop.consume(intimate, 5000)
    assert reply.status_code == 201, reply.text
    assert (reply.json()["consumer_pays"], reply.json()["card_debited"]) == (cny(0), cny(4000))
    assert_problem(shop.consume(intimate, 1251), 409, "limit_exceeded")  # 1001 > 1000 left

    owner_view = owner.get(f"/v1/cards/{card}").json()
    assert owner_view["balance"] == cny(106_000)
    assert owner_view["consumptions"] == [], "the owner chose totals only"
    assert owner_view["intimate_cards"][0]["drawn_total"] == cny(4000)
    holder_view = daughter.get(f"/v1/cards/{intimate}").json()
    assert len(holder_view["consumptions"]) == 1

    assert_problem(daughter.post(f"/v1/intimate-cards/{intimate}/freeze"), 403, "forbidden")
    assert owner.post(f"/v1/intimate-cards/{intimate}/freeze").json()["status"] == "frozen"
    assert_problem(shop.consume(intimate, 100), 409, "card_frozen")
    assert owner.post(f"/v1/intimate-cards/{intimate}/unfreeze").json()["status"] == "active"
    assert shop.consume(intimate, 100).status_code == 201
    assert owner.post(f"/v1/intimate-cards/{intimate}/revocation").json()["status"] == "revoked"
    assert_problem(shop.consume(intimate, 100), 409, "card_revoked")


def test_members_see_only_their_own_cards_and_merchants_only_theirs(api: Api, shop: Shop) -> None:
    owner, stranger = shop.member("Owner"), shop.member("Stranger")
    card = shop.open_card(owner)["id"]
    assert_problem(stranger.get(f"/v1/cards/{card}"), 404, "not_found")
    assert_problem(
        stranger.post(
            f"/v1/cards/{card}/shared-cards",
            {"discount_bp": 9000, "commission_bp": 0, "to_member_id": stranger.id},
        ),
        404,
        "not_found",
    )
    other = Shop(api)
    assert_problem(other.consume(card, 1000), 404, "not_found")
    assert_problem(
        other.merchant.post(
            f"/v1/merchants/{shop.merchant.id}/activities", {"pay": cny(1), "discount_bp": 1}
        ),
        404,
        "not_found",
    )
    assert_problem(
        owner.post("/v1/consumptions", {"card_id": card, "price": cny(1)}), 403, "forbidden"
    )


def test_bad_input_gets_a_problem_and_records_nothing(
    shop: Shop, card_events: Callable[[], int]
) -> None:
    owner = shop.member("Owner")
    card = shop.open_card(owner)["id"]
    before = card_events()
    share = f"/v1/cards/{card}/shared-cards"
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    cases = [
        (
            owner.post(share, {"discount_bp": 10_001, "commission_bp": 0, "publish": True}),
            422,
            "validation_failed",
        ),
        (
            owner.post(share, {"discount_bp": 9000, "commission_bp": 10_000, "publish": True}),
            422,
            "validation_failed",
        ),
        (
            owner.post(share, {"discount_bp": "9000", "commission_bp": 0, "publish": True}),
            422,
            "validation_failed",
        ),
        (owner.post(share, {"discount_bp": 9000, "commission_bp": 0}), 422, "validation_failed"),
        (
            owner.post(share, {"discount_bp": 7000, "commission_bp": 0, "publish": True}),
            422,
            "discount_below_main",
        ),
        (
            owner.post(
                share,
                {
                    "discount_bp": 9000,
                    "commission_bp": 0,
                    "publish": True,
                    "expires_at": "2020-01-01T00:00:00Z",
                },
            ),
            422,
            "validation_failed",
        ),
        (
            owner.post(
                share,
                {"discount_bp": 9000, "commission_bp": 0, "publish": True, "expires_at": soon},
            ),
            201,
            None,
        ),
        (shop.consume(card, -100), 422, "invalid_amount"),
        (shop.consume(card, 1_000_000), 409, "insufficient_balance"),
        (
            shop.merchant.post(
                f"/v1/merchants/{shop.merchant.id}/activities", {"pay": cny(100), "discount_bp": 0}
            ),
            422,
            "validation_failed",
        ),
        (
            shop.api.operator.post("/v1/merchants", {"name": "X", "timezone": "Mars/Base"}),
            422,
            "invalid_timezone",
        ),
        (owner.post("/v1/cards", {"activity_id": str(uuid.uuid4())}), 404, "not_found"),
        (owner.post("/v1/withdrawals", {"amount": cny(0)}), 422, "invalid_amount"),
    ]
    expired_listing = None
    for reply, status, code in cases:
        if code is None:
            assert reply.status_code == status, reply.text
            expired_listing = reply.json()["id"]
        else:
            assert_problem(reply, status, code)
    assert card_events() == before + 3, "only the one good share recorded (card, main, platform)"
    claimer = shop.member("Late")
    time.sleep(max(0.0, (datetime.fromisoformat(soon) - datetime.now(UTC)).total_seconds()) + 0.5)
    assert_problem(claimer.post(f"/v1/shared-cards/{expired_listing}/claims"), 409, "card_expired")


def test_a_repeated_request_gets_the_first_answer_and_records_once(
    shop: Shop, card_events: Callable[[], int]
) -> None:
    owner = shop.member("Owner")
    card = shop.open_card(owner)["id"]
    key = uuid.uuid4().hex
    first = shop.consume(card, 1000, idempotency_key=key)
    after_first = card_events()
    second = shop.consume(card, 1000, idempotency_key=key)
    assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert card_events() == after_first
    assert_problem(shop.consume(card, 2000, idempotency_key=key), 422, "idempotency_key_reused")
    assert owner.get(f"/v1/cards/{card}").json()["balance"] == cny(110_000 - 800)
