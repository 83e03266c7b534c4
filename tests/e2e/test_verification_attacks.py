"""Issue 10, item 1: nobody can use the verification flow to stop another person's account from
recharging. Each attack measured against main is replayed here, without credentials, through
the recharge pages' API from other addresses, and then the real user recharges to the end.

One `ledger serve` in sandbox mode (its sandbox platform, its SMS outbox). Every party is a
client address behind the trusted proxy (127.0.0.1 sends X-Forwarded-For); each test uses an
account, addresses and codes of its own.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Api, Caller, Server, free_port, sandbox_serving

pytestmark = pytest.mark.e2e

TRIES_PER_SENDER, TRIES_PER_CODE = 5, 15  # adapters/verification.py
SENDS_PER_ACCOUNT = 20  # an hour, from every sender together (ledger/recharges/placement.py)


@pytest.fixture(scope="module")
def platform_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(database_url: str, platform_port: int) -> Iterator[Server]:
    """Overrides conftest's server: sandbox mode, the sandbox platform on a free port."""
    with sandbox_serving(database_url, platform_port, "verification-attacks") as started:
        yield started


@dataclass
class Shop:
    channel: Caller
    codes: list[str]


@pytest.fixture(scope="module")
def shops(api: Api, platform_port: int) -> list[Shop]:
    """Two channels, each with its recharge page and codes to sell."""
    platform = api.operator.post(
        "/v1/platforms",
        {"name": "iQiyi (sandbox)", "gateway_url": f"http://127.0.0.1:{platform_port}"},
    )
    assert platform.status_code == 201, platform.text
    product_id = api.product(platform.json()["id"])
    made = []
    for name in ("Pudong shop", "Xuhui shop"):
        channel = api.top_channel(name)
        api.deposit(channel, 100_000)
        api.buy(channel, product_id, 6)
        batch = channel.post("/v1/code-batches", {"product_id": product_id, "quantity": 6})
        assert batch.status_code == 201, batch.text
        made.append(Shop(channel, list(batch.json()["codes"])))
    return made


def new_account() -> str:
    return f"137{uuid.uuid4().int % 10**8:08d}"


def new_address() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@dataclass
class Person:
    """Someone at an address using a channel's recharge page: no credentials at all."""

    api: Api
    address: str

    def post(self, shop: Shop, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.api.anonymous.post(
            path, {**body, "channel_id": shop.channel.id}, headers={"X-Forwarded-For": self.address}
        )

    def send_code(self, shop: Shop, account: str) -> httpx.Response:
        return self.post(shop, "/v1/verification-codes", {"account": account})

    def recharge(self, shop: Shop, code: str, account: str, verification: str) -> httpx.Response:
        return self.post(
            shop,
            "/v1/recharges",
            {"code": code, "account": account, "verification_code": verification},
        )


def sms(api: Api, account: str) -> str:
    """The last code the sandbox SMS adapter sent to `account` (what the user's phone shows)."""
    reply = api.operator.get(f"/v1/sandbox/sms?account={account}")
    assert reply.status_code == 200, reply.text
    return str(reply.json()["code"])


def not_it(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def a_well_formed_code() -> str:
    from ledger.distribution.code_format import new_code

    return new_code()


def recharges_to_the_end(api: Api, user: Person, shop: Shop, account: str, code: str) -> None:
    """The real user's recharge with the code on their phone: accepted, then succeeded."""
    placed = user.recharge(shop, shop.codes.pop(), account, code)
    assert placed.status_code == 202, f"the real user got {placed.status_code}: {placed.text}"
    deadline = time.monotonic() + 30
    while True:
        reply = shop.channel.get(f"/v1/recharges/{placed.json()['id']}")
        if reply.status_code == 200 and reply.json()["status"] != "pending":
            assert reply.json()["status"] == "succeeded", reply.text
            return
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.2)


def test_sends_from_another_address_through_any_page_leave_the_users_quota_whole(
    api: Api, shops: list[Shop]
) -> None:
    """Before: three sends from the attacker through any channel's page, and the real user
    got 429 on every channel for ten minutes."""
    pudong, xuhui = shops
    account, attacker, user = new_account(), Person(api, new_address()), Person(api, new_address())
    sent = [attacker.send_code(pudong, account).status_code for _ in range(3)]
    assert sent == [202, 202, 202]

    for shop in (pudong, xuhui):
        mine = user.send_code(shop, account)
        assert mine.status_code == 202, f"the real user got {mine.status_code}: {mine.text}"
    # the attacker through the other page too: 3 more there, then its own quota is spent
    sent = [attacker.send_code(xuhui, account).status_code for _ in range(3)]
    assert sent == [202, 202, 202]
    refused = attacker.send_code(pudong, account)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    assert user.send_code(xuhui, account).status_code == 202

    recharges_to_the_end(api, user, xuhui, account, sms(api, account))


def test_wrong_codes_from_another_address_lock_only_that_address(
    api: Api, shops: list[Shop]
) -> None:
    """Before: five wrong verification codes from the attacker, and the real user's right
    code got 423 verification_locked."""
    pudong, _ = shops
    account, attacker, user = new_account(), Person(api, new_address()), Person(api, new_address())
    assert user.send_code(pudong, account).status_code == 202
    right = sms(api, account)

    guesses = [
        attacker.recharge(pudong, a_well_formed_code(), account, not_it(right))
        for _ in range(TRIES_PER_SENDER + 1)
    ]
    assert [(r.status_code, r.json()["code"]) for r in guesses] == [
        (422, "verification_failed")
    ] * (TRIES_PER_SENDER - 1) + [(423, "verification_locked")] * 2
    # locked for the attacker even with the right code: no more guesses from there
    locked = attacker.recharge(pudong, a_well_formed_code(), account, right)
    assert (locked.status_code, locked.json()["code"]) == (423, "verification_locked")

    recharges_to_the_end(api, user, pudong, account, right)


def test_a_send_from_another_address_does_not_replace_the_code_the_user_holds(
    api: Api, shops: list[Shop]
) -> None:
    """Before: one more send from the attacker replaced the user's code, and the code on the
    user's phone got 422 verification_failed."""
    pudong, _ = shops
    account, attacker, user = new_account(), Person(api, new_address()), Person(api, new_address())
    mine = user.send_code(pudong, account)
    assert mine.status_code == 202 and mine.json()["expires_in"] == 300, mine.text
    held = sms(api, account)

    again = attacker.send_code(pudong, account)
    assert again.status_code == 202, again.text
    assert 0 < again.json()["expires_in"] <= 300

    recharges_to_the_end(api, user, pudong, account, held)
    assert sms(api, account) == held  # the attacker's send sent the same code again


def test_guesses_at_one_code_from_many_addresses_are_bounded_and_the_user_recovers(
    api: Api, shops: list[Shop]
) -> None:
    """The bound against brute force, and its price: a code takes TRIES_PER_CODE wrong tries
    from every address together, then it is refused everywhere (423). The user asks again,
    gets a new code (the user's own send quota is whole) and recharges."""
    _, xuhui = shops
    account, user = new_account(), Person(api, new_address())
    assert user.send_code(xuhui, account).status_code == 202
    right = sms(api, account)
    guessers = [Person(api, new_address()) for _ in range(TRIES_PER_CODE // TRIES_PER_SENDER)]
    answers = [
        guesser.recharge(xuhui, a_well_formed_code(), account, not_it(right)).status_code
        for guesser in guessers
        for _ in range(TRIES_PER_SENDER)
    ]
    assert answers.count(422) == TRIES_PER_CODE - len(guessers), answers
    late = Person(api, new_address()).recharge(xuhui, a_well_formed_code(), account, right)
    assert late.status_code == 423, "a burned code is refused to everyone, even the right one"
    burned = user.recharge(xuhui, a_well_formed_code(), account, right)
    assert (burned.status_code, burned.json()["code"]) == (423, "verification_locked")

    assert user.send_code(xuhui, account).status_code == 202
    renewed = sms(api, account)
    recharges_to_the_end(api, user, xuhui, account, renewed)


def test_many_addresses_reaching_the_accounts_ceiling_do_not_stop_a_returning_user(
    api: Api, shops: list[Shop]
) -> None:
    """The ceiling on codes sent to one phone is reached by four addresses through two pages;
    then a new address gets 429, while a user who recharged the account from their address
    before still gets a code (only someone who read a code on the phone becomes known)."""
    pudong, xuhui = shops
    account, user = new_account(), Person(api, new_address())
    assert user.send_code(pudong, account).status_code == 202
    recharges_to_the_end(api, user, pudong, account, sms(api, account))

    attackers = [Person(api, new_address()) for _ in range(4)]
    answers = [
        attacker.send_code(shop, account).status_code
        for attacker in attackers
        for shop in (pudong, xuhui)
        for _ in range(3)
    ]
    assert answers.count(202) == SENDS_PER_ACCOUNT - 1, answers  # the user's send was one
    stranger = Person(api, new_address()).send_code(xuhui, account)
    assert stranger.status_code == 429, stranger.text
    assert "from everywhere" in stranger.json()["detail"]

    again = user.send_code(pudong, account)
    assert again.status_code == 202, f"the returning user got {again.status_code}: {again.text}"
    recharges_to_the_end(api, user, pudong, account, sms(api, account))
