"""A withdrawal whose process dies between the payout and recording its answer stays
pending; the sweeper of the next process pays it out again with the same payout id, and the
payout is made once."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Api, free_port, sandbox_serving
from tests.e2e.test_cards_api import Shop, cny

pytestmark = pytest.mark.e2e


def payouts_made(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT payout_id, amount, reference FROM sandbox_payouts").fetchall()


def withdrawal_events(database_url: str, withdrawal_id: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT topic FROM cards_events WHERE originator_id = %s ORDER BY originator_version",
            (withdrawal_id,),
        ).fetchall()
    return [row[0].rsplit(".", 1)[-1] for row in rows]


def test_a_withdrawal_killed_after_its_payout_is_finished_by_the_sweeper_paid_once(
    database_url: str, tokens: dict[str, str], http: httpx.Client
) -> None:
    platform_port = free_port()
    with sandbox_serving(
        database_url, platform_port, "payouts", LEDGER_SANDBOX_PAYOUT_EXIT="true"
    ) as first:
        api = Api(http, first.base_url, tokens)
        shop = Shop(api)
        owner, alice, bob = (shop.member(n) for n in ("Owner", "Alice", "Bob"))
        card = shop.open_card(owner)
        reply = owner.post(
            f"/v1/cards/{card['id']}/shared-cards",
            {"discount_bp": 9000, "commission_bp": 3000, "to_member_id": alice.id},
        )
        assert reply.status_code == 201, reply.text
        reply = alice.post(
            f"/v1/shared-cards/{reply.json()['id']}/passes", {"to_member_id": bob.id}
        )
        assert reply.status_code == 201, reply.text
        assert shop.consume(reply.json()["id"], 10_001).status_code == 201
        assert shop.wallet(alice) == {"posted": 300, "pending": 0, "available": 300}

        with pytest.raises(httpx.TransportError):
            alice.post("/v1/withdrawals", {"amount": cny(200)})
        assert first.process.wait(timeout=30) == -signal.SIGKILL

    (made,) = payouts_made(database_url)
    withdrawal_id = str(made[0])
    assert made[1] == 200
    assert withdrawal_events(database_url, withdrawal_id) == ["Requested"]

    with sandbox_serving(
        database_url, platform_port, "payouts", LEDGER_PAYOUT_GRACE_SECONDS="1"
    ) as second:
        api = Api(http, second.base_url, tokens)
        alice = alice.at(second.base_url)
        deadline = time.monotonic() + 60
        while True:
            reply = alice.get(f"/v1/withdrawals/{withdrawal_id}")
            assert reply.status_code == 200, reply.text
            if reply.json()["status"] != "pending":
                break
            assert time.monotonic() < deadline, "the sweeper did not finish the withdrawal"
            time.sleep(0.5)
        assert reply.json()["status"] == "paid"
        assert shop.wallet(alice) == {"posted": 100, "pending": 0, "available": 100}

        listed = api.operator.get("/v1/withdrawals?status=paid").json()["items"]
        assert [(w["id"], w["amount"], w["reference"]) for w in listed] == [
            (withdrawal_id, 200, made[2])
        ]
        assert api.operator.get("/v1/withdrawals?status=pending").json()["items"] == []
        assert api.trial_balance()["balanced"] is True

    assert payouts_made(database_url) == [made]
    assert withdrawal_events(database_url, withdrawal_id) == ["Requested", "Paid"]
