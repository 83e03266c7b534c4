"""The HTTP protocol of API.md: Idempotency-Key, signed requests, problem details, refusals."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from adapters.signing import new_nonce
from tests.e2e.conftest import Api, Caller, body_hash, ledger_command

pytestmark = pytest.mark.e2e

MAX_AMOUNT = 10**13
MAX_BODY = 65_536
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "request_id"}


def cny(amount: Any) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


def assert_problem(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.headers
    problem = reply.json()
    assert set(problem) >= PROBLEM_FIELDS, problem
    assert problem["status"] == status
    assert problem["code"] == code, problem
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    assert isinstance(problem["request_id"], str) and problem["request_id"]
    return dict(problem)


@dataclass
class World:
    """What the refusals below are aimed at; each would succeed if the bad part were fixed."""

    platform: str
    product: str
    top: Caller
    sub: Caller
    broke: Caller


@pytest.fixture(scope="module")
def world(api: Api) -> World:
    platform = api.platform()
    product = api.product(platform, wholesale=1000, face=2000)
    top = api.top_channel("Funded")
    api.deposit(top, 1_000_000)
    api.buy(top, product, 5)
    sub = api.sub_channel(top, "Funded sub")
    api.deposit(sub, 1_000_000)
    broke = api.top_channel("Broke")
    return World(platform, product, top, sub, broke)


def principal_scope(db: psycopg.Connection[Any], caller: Caller) -> str:
    """How api/idempotency.py names a principal: `operator:<token id>`, `channel:<id>`."""
    if caller.token is None:
        return f"channel:{caller.id}"
    row = db.execute(
        "SELECT id, role FROM api_tokens WHERE token_hash = %s",
        (hashlib.sha256(caller.token.encode()).digest(),),
    ).fetchone()
    assert row is not None
    return f"{row[1]}:{row[0]}"


def insert_in_flight(
    db: psycopg.Connection[Any], caller: Caller, key: str, path: str, body: Any, ago_s: int = 0
) -> None:
    """The row a first request with this key leaves while it runs (or after its process died)."""
    db.execute(
        "INSERT INTO idempotency_keys (principal, key, request_hash, state, started_at) "
        "VALUES (%s, %s, %s, 'in_flight', now() - make_interval(secs => %s))",
        (
            principal_scope(db, caller),
            key,
            body_hash("POST", path, json.dumps(body).encode()),
            ago_s,
        ),
    )


# Idempotency-Key


def test_a_post_without_idempotency_key_is_refused_and_records_nothing(
    api: Api, world: World, events: Callable[[], int]
) -> None:
    before = events()
    platform = {"name": "Keyless", "gateway_url": "http://127.0.0.1:9/"}
    assert_problem(
        api.operator.post("/v1/platforms", platform, idempotency_key=None),
        400,
        "idempotency_key_missing",
    )
    purchase = {"product_id": world.product, "quantity": 1}
    assert_problem(
        world.top.post("/v1/stock-purchases", purchase, idempotency_key=None),
        400,
        "idempotency_key_missing",
    )
    assert_problem(
        world.top.post("/v1/stock-purchases", purchase, idempotency_key=""),
        400,
        "idempotency_key_missing",
    )
    assert events() == before


def test_the_same_key_and_body_get_the_first_response_again_and_record_once(
    api: Api, world: World, events: Callable[[], int]
) -> None:
    body = {"name": "Once", "gateway_url": "http://127.0.0.1:9/"}
    before = events()
    first = api.operator.post("/v1/platforms", body, idempotency_key="platform-once")
    again = api.operator.post("/v1/platforms", body, idempotency_key="platform-once")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert events() == before + 1

    top = api.top_channel()
    api.deposit(top, 10_000)
    purchase = {"product_id": world.product, "quantity": 3}
    bought = top.post("/v1/stock-purchases", purchase, idempotency_key="buy-3")
    replayed = top.post("/v1/stock-purchases", purchase, idempotency_key="buy-3")
    assert bought.status_code == replayed.status_code == 201
    assert bought.json() == replayed.json()
    assert api.on_hand(top, world.product) == 3
    assert api.funds(top) == 10_000 - 3 * 1000


def test_a_replayed_channel_registration_answers_the_same_channel_and_key(api: Api) -> None:
    first = api.operator.post("/v1/channels", {"name": "Twice"}, idempotency_key="channel-k")
    again = api.operator.post("/v1/channels", {"name": "Twice"}, idempotency_key="channel-k")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert api.funds(api.channel(again.json())) == 0


def test_a_refused_request_stays_refused_under_its_key(
    api: Api, world: World, events: Callable[[], int]
) -> None:
    top = api.top_channel()
    purchase = {"product_id": world.product, "quantity": 1}
    refused = top.post("/v1/stock-purchases", purchase, idempotency_key="too-early")
    problem = assert_problem(refused, 409, "insufficient_funds")

    api.deposit(top, 5_000)
    before = events()
    replayed = top.post("/v1/stock-purchases", purchase, idempotency_key="too-early")
    assert replayed.status_code == 409
    assert replayed.headers["content-type"].startswith("application/problem+json")
    assert replayed.json() == problem
    assert events() == before

    assert top.post("/v1/stock-purchases", purchase, idempotency_key="in-time").status_code == 201


def test_the_same_key_with_another_body_or_path_is_refused(
    api: Api, world: World, events: Callable[[], int]
) -> None:
    body = {"name": "Original", "gateway_url": "http://127.0.0.1:9/"}
    first = api.operator.post("/v1/platforms", body, idempotency_key="reused-k")
    assert first.status_code == 201

    before = events()
    other = {"name": "Other", "gateway_url": "http://127.0.0.1:9/"}
    assert_problem(
        api.operator.post("/v1/platforms", other, idempotency_key="reused-k"),
        422,
        "idempotency_key_reused",
    )
    assert_problem(
        api.operator.post("/v1/channels", {"name": "Other"}, idempotency_key="reused-k"),
        422,
        "idempotency_key_reused",
    )
    assert events() == before
    again = api.operator.post("/v1/platforms", body, idempotency_key="reused-k")
    assert (again.status_code, again.json()) == (201, first.json())


def test_a_request_refused_before_its_command_ran_leaves_its_key_free(
    api: Api, world: World, db: psycopg.Connection[Any]
) -> None:
    """Refused by its body (FastAPI's validation) or by the route before the command (a
    malformed id): the key's claim is given up before the answer, so the same key then
    carries another request, neither in flight nor reused."""
    top = api.top_channel("Free key")
    api.deposit(top, 5_000)
    invalid = {"product_id": world.product, "quantity": 0}
    assert_problem(top.post("/v1/stock-purchases", invalid, idempotency_key="free-k"), 422,
                   "validation_failed")  # fmt: skip
    scope = principal_scope(db, top)
    claims = "SELECT count(*) FROM idempotency_keys WHERE principal = %s AND key = %s"
    assert db.execute(claims, (scope, "free-k")).fetchone() == (0,)
    valid = {"product_id": world.product, "quantity": 1}
    bought = top.post("/v1/stock-purchases", valid, idempotency_key="free-k")
    assert bought.status_code == 201, bought.text

    resolution = {"outcome": "failed", "note": "no such recharge"}
    malformed = api.operator.post(
        "/v1/recharges/not-an-id/resolution", resolution, idempotency_key="free-op-k"
    )
    assert malformed.status_code in (404, 422), malformed.text
    assert db.execute(claims, (principal_scope(db, api.operator), "free-op-k")).fetchone() == (0,)
    platform = {"name": "After a refusal", "gateway_url": "http://127.0.0.1:9/"}
    created = api.operator.post("/v1/platforms", platform, idempotency_key="free-op-k")
    assert created.status_code == 201, created.text


def test_a_key_whose_first_request_is_still_running_is_refused(
    api: Api, world: World, db: psycopg.Connection[Any], events: Callable[[], int]
) -> None:
    platform = {"name": "Running", "gateway_url": "http://127.0.0.1:9/"}
    insert_in_flight(db, api.operator, "running", "/v1/platforms", platform)
    purchase = {"product_id": world.product, "quantity": 1}
    insert_in_flight(db, world.top, "running", "/v1/stock-purchases", purchase)

    before = events()
    assert_problem(
        api.operator.post("/v1/platforms", platform, idempotency_key="running"),
        409,
        "request_in_flight",
    )
    assert_problem(
        world.top.post("/v1/stock-purchases", purchase, idempotency_key="running"),
        409,
        "request_in_flight",
    )
    assert events() == before


def test_a_first_request_abandoned_long_ago_is_taken_over(
    api: Api, db: psycopg.Connection[Any], events: Callable[[], int]
) -> None:
    platform = {"name": "Abandoned", "gateway_url": "http://127.0.0.1:9/"}
    insert_in_flight(db, api.operator, "abandoned", "/v1/platforms", platform, ago_s=3600)
    before = events()
    reply = api.operator.post("/v1/platforms", platform, idempotency_key="abandoned")
    assert reply.status_code == 201, reply.text
    assert events() == before + 1


def test_idempotency_keys_are_scoped_to_the_principal(api: Api, world: World) -> None:
    first, second = api.top_channel("First"), api.top_channel("Second")
    api.deposit(first, 10_000)
    api.deposit(second, 10_000)
    purchase = {"product_id": world.product, "quantity": 2}

    a = first.post("/v1/stock-purchases", purchase, idempotency_key="shared-key")
    b = second.post("/v1/stock-purchases", purchase, idempotency_key="shared-key")
    assert a.status_code == b.status_code == 201, (a.text, b.text)
    assert a.json()["id"] != b.json()["id"]
    assert api.on_hand(first, world.product) == api.on_hand(second, world.product) == 2

    platform = {"name": "Shared key", "gateway_url": "http://127.0.0.1:9/"}
    reply = api.operator.post("/v1/platforms", platform, idempotency_key="shared-key")
    assert reply.status_code == 201, reply.text


# signed requests


def funds_path(channel: Caller) -> str:
    return f"/v1/channels/{channel.id}/funds"


def test_a_wrong_signature_is_refused(api: Api, world: World, events: Callable[[], int]) -> None:
    top = world.top
    impostor = Caller(api.http, api.base_url, key_id=top.key_id, key_secret="ks_" + "0" * 64)
    assert_problem(impostor.get(funds_path(top)), 401, "signature_invalid")
    other_channel = Caller(
        api.http, api.base_url, key_id=top.key_id, key_secret=world.broke.key_secret
    )
    assert_problem(other_channel.get(funds_path(top)), 401, "signature_invalid")

    before = events()
    body = json.dumps({"product_id": world.product, "quantity": 1}).encode()
    key = uuid.uuid4().hex
    headers = top.signed_headers("POST", "/v1/stock-purchases", body, idempotency_key=key)
    tampered = json.dumps({"product_id": world.product, "quantity": 2}).encode()
    reply = top.send(
        "POST",
        "/v1/stock-purchases",
        tampered,
        headers | {"Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert_problem(reply, 401, "signature_invalid")

    signed_without_query = top.signed_headers("GET", funds_path(top), b"")
    reply = top.send("GET", funds_path(top) + "?currency=USD", b"", signed_without_query)
    assert_problem(reply, 401, "signature_invalid")

    # the v1 string (no nonce, no idempotency key), even with a nonce header beside it
    stamp = str(int(time.time()))
    v1 = "\n".join(["GET", funds_path(top), stamp, hashlib.sha256(b"").hexdigest()])
    assert top.key_secret is not None and top.key_id is not None
    v1_headers = {
        "X-Key-Id": top.key_id,
        "X-Timestamp": stamp,
        "X-Nonce": new_nonce(),
        "X-Signature": hmac.new(top.key_secret.encode(), v1.encode(), hashlib.sha256).hexdigest(),
    }
    assert_problem(top.send("GET", funds_path(top), b"", v1_headers), 401, "signature_invalid")
    assert events() == before
    assert top.get(funds_path(top) + "?currency=USD").status_code == 200


def test_a_timestamp_outside_the_window_is_refused(world: World, events: Callable[[], int]) -> None:
    top = world.top
    now = int(time.time())
    before = events()
    purchase = {"product_id": world.product, "quantity": 1}
    for timestamp in (now - 400, now + 400, 0):
        assert_problem(
            top.post("/v1/stock-purchases", purchase, timestamp=timestamp),
            401,
            "signature_invalid",
        )
    assert events() == before
    assert top.get(funds_path(top), timestamp=now - 200).status_code == 200
    assert top.get(funds_path(top), timestamp=now + 200).status_code == 200


def test_two_identical_requests_in_one_second_with_their_own_nonces_both_pass(
    api: Api, world: World
) -> None:
    top = world.top
    stamp = int(time.time())
    first = top.signed_headers("GET", funds_path(top), b"", stamp)
    second = top.signed_headers("GET", funds_path(top), b"", stamp)
    assert first["X-Timestamp"] == second["X-Timestamp"]
    assert first["X-Nonce"] != second["X-Nonce"]
    assert top.send("GET", funds_path(top), b"", first).status_code == 200
    assert top.send("GET", funds_path(top), b"", second).status_code == 200

    # two identical purchases in one second, under their own keys: two purchases
    shop = api.top_channel()
    api.deposit(shop, 10_000)
    body = json.dumps({"product_id": world.product, "quantity": 1}).encode()
    for key in ("first", "second"):
        headers = shop.signed_headers("POST", "/v1/stock-purchases", body, stamp,
                                      idempotency_key=key)  # fmt: skip
        headers |= {"Idempotency-Key": key, "Content-Type": "application/json"}
        reply = shop.send("POST", "/v1/stock-purchases", body, headers)
        assert reply.status_code == 201, reply.text
    assert api.on_hand(shop, world.product) == 2


def test_a_captured_request_replayed_is_refused(
    api: Api, world: World, events: Callable[[], int]
) -> None:
    top = api.top_channel()
    api.deposit(top, 10_000)
    body = json.dumps({"product_id": world.product, "quantity": 1}).encode()
    headers = top.signed_headers("POST", "/v1/stock-purchases", body, idempotency_key="one")
    headers |= {"Content-Type": "application/json", "Idempotency-Key": "one"}

    first = top.send("POST", "/v1/stock-purchases", body, headers)
    assert first.status_code == 201, first.text
    before = events()
    replay = assert_problem(top.send("POST", "/v1/stock-purchases", body, headers), 401,
                            "signature_invalid")  # fmt: skip
    assert "nonce" in replay["detail"]
    # with a new Idempotency-Key the signature no longer matches
    renamed = top.send("POST", "/v1/stock-purchases", body, headers | {"Idempotency-Key": "two"})
    assert_problem(renamed, 401, "signature_invalid")
    # nor with a new nonce the captured signature does not cover
    renonced = headers | {"Idempotency-Key": "two", "X-Nonce": new_nonce()}
    assert_problem(top.send("POST", "/v1/stock-purchases", body, renonced), 401,
                   "signature_invalid")  # fmt: skip
    assert events() == before
    assert api.on_hand(top, world.product) == 1

    read = top.signed_headers("GET", funds_path(top), b"")
    assert top.send("GET", funds_path(top), b"", read).status_code == 200
    assert_problem(top.send("GET", funds_path(top), b"", read), 401, "signature_invalid")


@pytest.mark.parametrize(
    "nonce",
    [None, "", "fifteen-chars-x", "x" * 65, "has space in the nonce", "slash/in/the/nonce/x",
     "dots.are.not.allowed", "non-ascii-nönce-0123"],
)  # fmt: skip
def test_a_missing_or_malformed_nonce_is_refused(world: World, nonce: str | None) -> None:
    top = world.top
    headers = top.signed_headers("GET", funds_path(top), b"", nonce=nonce or "")
    if nonce is None:
        del headers["X-Nonce"]
    reply = top.http.request(
        "GET",
        top.base_url + funds_path(top),
        headers={k: v.encode() for k, v in headers.items()},
    )
    problem = assert_problem(reply, 401, "signature_invalid")
    assert "nonce" in problem["detail"].lower()


def test_nonces_of_16_and_64_characters_are_accepted(world: World) -> None:
    top = world.top
    for length in (16, 64):
        nonce = (uuid.uuid4().hex * 2)[: length - 2] + "_-"
        headers = top.signed_headers("GET", funds_path(top), b"", nonce=nonce)
        assert top.send("GET", funds_path(top), b"", headers).status_code == 200


def test_the_same_nonce_under_two_keys_is_two_requests(api: Api, world: World) -> None:
    nonce = new_nonce()
    for caller in (world.top, world.broke):
        headers = caller.signed_headers("GET", funds_path(caller), b"", nonce=nonce)
        assert caller.send("GET", funds_path(caller), b"", headers).status_code == 200


def ledger_call(api: Api, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ledger_command(), "call", *args, "--base-url", api.base_url],
        env={k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ledger_call_signs_v2_and_an_explicit_token_wins_over_the_environments_key(
    api: Api, world: World
) -> None:
    top = world.top
    assert top.key_id and top.key_secret
    keys = {"LEDGER_KEY_ID": top.key_id, "LEDGER_KEY_SECRET": top.key_secret}
    # signed with the key from the environment, twice at once: two requests, both answered
    calls = [
        subprocess.Popen(
            [ledger_command(), "call", "GET", funds_path(top), "--base-url", api.base_url],
            env={k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | keys,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for call in calls:
        out, err = call.communicate(timeout=60)
        assert call.returncode == 0, err
        assert "200" in err and json.loads(out)["available"]["currency"] == "CNY"
    posted = ledger_call(
        api, keys, "POST", f"/v1/channels/{top.id}/subchannels", "--body", '{"name": "By CLI"}'
    )
    assert posted.returncode == 0, posted.stderr
    assert "201" in posted.stderr

    # --token on the command line: the bearer token, not the channel's key
    finance = ledger_call(
        api, keys, "GET", "/v1/ledger/trial-balance", "--token", api.tokens["finance"]
    )
    assert finance.returncode == 0, finance.stdout + finance.stderr
    assert json.loads(finance.stdout)["balanced"] is True
    # the key from the environment alone is a channel, which may not read the trial balance
    as_channel = ledger_call(api, keys, "GET", "/v1/ledger/trial-balance")
    assert as_channel.returncode == 1 and "403" in as_channel.stderr, as_channel.stderr


def test_ledger_call_names_the_principal_it_used_on_stderr(api: Api, world: World) -> None:
    """stdout is the JSON answer alone; stderr says whose credentials signed or carried the
    request and where they came from, then the status."""
    top, broke = world.top, world.broke
    assert top.key_id and top.key_secret and broke.key_id and broke.key_secret
    keys = {"LEDGER_KEY_ID": top.key_id, "LEDGER_KEY_SECRET": top.key_secret}
    finance = {"LEDGER_TOKEN": api.tokens["finance"]}

    from_env = ledger_call(api, keys, "GET", funds_path(top))
    assert from_env.returncode == 0, from_env.stderr
    assert from_env.stderr.splitlines() == [
        f"signed as key {top.key_id} (from LEDGER_KEY_ID)",
        "200 OK",
    ]
    assert json.loads(from_env.stdout)["available"]["currency"] == "CNY"

    token_given = ledger_call(
        api, keys, "GET", "/v1/ledger/trial-balance", "--token", api.tokens["finance"]
    )
    assert token_given.stderr.splitlines() == ["bearer token from --token", "200 OK"]
    assert json.loads(token_given.stdout)["balanced"] is True

    token_from_env = ledger_call(api, finance, "GET", "/v1/ledger/trial-balance")
    assert token_from_env.stderr.splitlines() == ["bearer token from LEDGER_TOKEN", "200 OK"]

    # a key given on the command line wins over the environment's token and key alike
    for flag in ("--key-id", "--key"):
        key_given = ledger_call(
            api,
            keys | finance,
            "GET",
            funds_path(broke),
            flag,
            broke.key_id,
            "--secret",
            broke.key_secret,
        )
        assert key_given.returncode == 0, key_given.stderr
        assert key_given.stderr.splitlines() == [
            f"signed as key {broke.key_id} (from --key-id)",
            "200 OK",
        ]
        json.loads(key_given.stdout)

    nobody = ledger_call(api, {}, "GET", "/v1/ledger/trial-balance")
    assert nobody.returncode == 1
    assert nobody.stderr.splitlines()[0].startswith("anonymous: no --token")
    assert nobody.stderr.splitlines()[1].startswith("401")


def test_an_unknown_or_malformed_key_is_refused(api: Api, world: World) -> None:
    for key_id in (
        f"ck_{uuid.uuid4().hex}",
        "ck_short",
        "nonsense",
        f"zz_{uuid.UUID(world.top.id).hex}",
    ):
        stranger = Caller(api.http, api.base_url, key_id=key_id, key_secret="ks_whatever")
        assert_problem(stranger.get(funds_path(world.top)), 401, "signature_invalid")
    bare = world.top.signed_headers("GET", funds_path(world.top), b"")
    del bare["X-Signature"]
    assert_problem(
        world.top.send("GET", funds_path(world.top), b"", bare), 401, "signature_invalid"
    )


def test_a_missing_or_unknown_bearer_token_is_refused(api: Api, world: World) -> None:
    assert_problem(api.anonymous.get(funds_path(world.top)), 401, "unauthorized")
    nobody = Caller(api.http, api.base_url, token="lt_" + "x" * 43)
    assert_problem(nobody.get("/v1/ledger/trial-balance"), 401, "unauthorized")
    assert_problem(
        nobody.post("/v1/platforms", {"name": "X", "gateway_url": "http://127.0.0.1:9/"}),
        401,
        "unauthorized",
    )


# problem details


def test_problems_have_the_documented_shape_and_a_request_id_each(api: Api, world: World) -> None:
    unknown = f"/v1/channels/{uuid.uuid4()}/funds"
    first = assert_problem(api.operator.get(unknown), 404, "not_found")
    second = assert_problem(api.operator.get(unknown), 404, "not_found")
    assert first["request_id"] != second["request_id"]
    assert first["type"] != ""


def test_validation_errors_list_the_bad_fields(api: Api, world: World) -> None:
    reply = api.operator.post(
        "/v1/products",
        {
            "platform_id": world.platform,
            "name": "Plan",
            "duration_days": "30",
            "wholesale_cost": cny(1.5),
            "colour": "gold",
        },
    )
    problem = assert_problem(reply, 422, "validation_failed")
    fields = {error["field"] for error in problem["errors"]}
    assert {"duration_days", "face_value", "wholesale_cost.amount", "colour"} <= fields, fields
    assert all(error["message"] for error in problem["errors"])


# bad input records nothing

Send = Callable[[], httpx.Response]
Prepare = Callable[[Api, World], Send]
"""Sets up what the request needs (that may record), then gives the request to send."""


def post(who: str, path: str, body: Any) -> Prepare:
    def prepare(api: Api, world: World) -> Send:
        caller = {"operator": api.operator, "top": world.top, "sub": world.sub}[who]
        payload = body(world) if callable(body) else body
        return lambda: caller.post(path.format(w=world), payload)

    return prepare


def raw(who: str, path: str, content: bytes) -> Prepare:
    def prepare(api: Api, world: World) -> Send:
        caller = {"operator": api.operator, "top": world.top}[who]
        headers = {"Content-Type": "application/json"}
        return lambda: caller.request(
            "POST", path.format(w=world), content=content, headers=headers
        )

    return prepare


def price(amount: Any, currency: str = "CNY") -> Prepare:
    def prepare(api: Api, world: World) -> Send:
        return lambda: world.top.put(
            f"/v1/channels/{world.top.id}/prices/{world.product}",
            {"price": {"amount": amount, "currency": currency}},
        )

    return prepare


def product_body(**changes: Any) -> Callable[[World], dict[str, Any]]:
    def body(world: World) -> dict[str, Any]:
        product = {
            "platform_id": world.platform,
            "name": "Plan",
            "duration_days": 30,
            "face_value": cny(2000),
            "wholesale_cost": cny(1000),
        }
        product.update(changes)
        return {k: v for k, v in product.items() if v is not None}

    return body


def purchase_body(quantity: Any = 1, **changes: Any) -> Callable[[World], dict[str, Any]]:
    return lambda world: {"product_id": world.product, "quantity": quantity, **changes}


def broke_buys(api: Api, world: World) -> Send:
    return lambda: world.broke.post(
        "/v1/stock-purchases", {"product_id": world.product, "quantity": 1}
    )


def sub_buys_more_than_the_parent_has(api: Api, world: World) -> Send:
    api.set_price(world.top, world.product, 1500)
    assert api.on_hand(world.top, world.product) < 6
    return lambda: world.sub.post(
        "/v1/stock-purchases", {"product_id": world.product, "quantity": 6}
    )


def sub_buys_unpriced(api: Api, world: World) -> Send:
    cheap = api.product(world.platform, wholesale=10, face=20)
    api.buy(world.top, cheap, 1)
    return lambda: world.sub.post("/v1/stock-purchases", {"product_id": cheap, "quantity": 1})


def buys_past_the_amount_limit(api: Api, world: World) -> Send:
    dear = api.product(world.platform, wholesale=10**12, face=2 * 10**12)
    return lambda: world.top.post("/v1/stock-purchases", {"product_id": dear, "quantity": 11})


def chunked_past_the_size_limit(who: str) -> Prepare:
    """Sent without Content-Length, so only counting the bytes as they come can stop it."""
    chunks = [b'{"name": "', *[b"x" * 8192] * 9, b'"}']

    def prepare(api: Api, world: World) -> Send:
        headers = {"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"}
        if who == "operator":
            path = PLATFORMS
            headers["Authorization"] = f"Bearer {api.tokens['operator']}"
        else:
            path = f"/v1/channels/{world.top.id}/subchannels"
            headers |= world.top.signed_headers(
                "POST", path, b"".join(chunks), idempotency_key=headers["Idempotency-Key"]
            )
        return lambda: api.http.post(api.base_url + path, content=iter(chunks), headers=headers)

    return prepare


UNKNOWN = "4b1c1a52-0000-4000-8000-000000000000"
DEPOSITS = "/v1/channels/{w.top.id}/deposits"
PURCHASES = "/v1/stock-purchases"
PLATFORMS = "/v1/platforms"
PRODUCTS = "/v1/products"
PLATFORM_OK = {"name": "P", "gateway_url": "http://127.0.0.1:9/"}

STATUS = {
    "validation_failed": 422,
    "invalid_amount": 422,
    "currency_mismatch": 422,
    "not_found": 404,
    "insufficient_funds": 409,
    "insufficient_stock": 409,
    "price_not_set": 409,
    "body_too_large": 413,
}

REFUSALS: dict[str, tuple[Prepare, str]] = {
    # wrong types
    "name is a number": (
        post("operator", PLATFORMS, PLATFORM_OK | {"name": 5}),
        "validation_failed",
    ),
    "gateway_url is no URL": (
        post("operator", PLATFORMS, PLATFORM_OK | {"gateway_url": "not a url"}),
        "validation_failed",
    ),
    "duration_days is a string": (
        post("operator", PRODUCTS, product_body(duration_days="30")),
        "validation_failed",
    ),
    "amount is a string": (post("operator", DEPOSITS, {"amount": cny("100")}), "validation_failed"),
    "amount is a float": (post("operator", DEPOSITS, {"amount": cny(100.5)}), "validation_failed"),
    "amount is a bare number": (post("operator", DEPOSITS, {"amount": 100}), "validation_failed"),
    "quantity is a string": (post("top", PURCHASES, purchase_body("1")), "validation_failed"),
    "quantity is a float": (post("top", PURCHASES, purchase_body(1.0)), "validation_failed"),
    "quantity is a boolean": (post("top", PURCHASES, purchase_body(True)), "validation_failed"),
    "body is no JSON": (raw("top", PURCHASES, b"quantity=1"), "validation_failed"),
    "body is a JSON list": (raw("operator", DEPOSITS, b"[]"), "validation_failed"),
    "body is empty": (raw("top", PURCHASES, b""), "validation_failed"),
    "an unknown field": (post("top", PURCHASES, purchase_body(1, price=1)), "validation_failed"),
    "currency in lower case": (
        post("operator", DEPOSITS, {"amount": {"amount": 100, "currency": "cny"}}),
        "validation_failed",
    ),
    "an unknown currency": (
        post("operator", DEPOSITS, {"amount": {"amount": 100, "currency": "XYZ"}}),
        "invalid_amount",
    ),
    # missing fields
    "platform without gateway_url": (
        post("operator", PLATFORMS, {"name": "P"}),
        "validation_failed",
    ),
    "product without face_value": (
        post("operator", PRODUCTS, product_body(face_value=None)),
        "validation_failed",
    ),
    "purchase without quantity": (
        post("top", PURCHASES, lambda w: {"product_id": w.product}),
        "validation_failed",
    ),
    "channel with a blank name": (
        post("operator", "/v1/channels", {"name": "  "}),
        "validation_failed",
    ),
    # zero and negative
    "quantity zero": (post("top", PURCHASES, purchase_body(0)), "validation_failed"),
    "quantity negative": (post("top", PURCHASES, purchase_body(-1)), "validation_failed"),
    "deposit of zero": (post("operator", DEPOSITS, {"amount": cny(0)}), "invalid_amount"),
    "deposit negative": (post("operator", DEPOSITS, {"amount": cny(-500)}), "invalid_amount"),
    "product at face value zero": (
        post("operator", PRODUCTS, product_body(face_value=cny(0))),
        "invalid_amount",
    ),
    "product with a negative wholesale cost": (
        post("operator", PRODUCTS, product_body(wholesale_cost=cny(-1))),
        "invalid_amount",
    ),
    "product lasting zero days": (
        post("operator", PRODUCTS, product_body(duration_days=0)),
        "validation_failed",
    ),
    "price of zero": (price(0), "invalid_amount"),
    "price in another currency": (price(100, "USD"), "currency_mismatch"),
    # unknown ids
    "purchase of an unknown product": (
        post("top", PURCHASES, {"product_id": UNKNOWN, "quantity": 1}),
        "not_found",
    ),
    "purchase of a malformed product id": (
        post("top", PURCHASES, {"product_id": "not-an-id", "quantity": 1}),
        "not_found",
    ),
    "product of an unknown platform": (
        post("operator", PRODUCTS, product_body(platform_id=UNKNOWN)),
        "not_found",
    ),
    "deposit to an unknown channel": (
        post("operator", f"/v1/channels/{UNKNOWN}/deposits", {"amount": cny(100)}),
        "not_found",
    ),
    "sub-channel of an unknown channel": (
        post("top", f"/v1/channels/{UNKNOWN}/subchannels", {"name": "Orphan"}),
        "not_found",
    ),
    # past the limits
    "deposit past 10**13": (
        post("operator", DEPOSITS, {"amount": cny(MAX_AMOUNT + 1)}),
        "validation_failed",
    ),
    "face value past 10**13": (
        post("operator", PRODUCTS, product_body(face_value=cny(MAX_AMOUNT + 1))),
        "validation_failed",
    ),
    "price past 10**13": (price(MAX_AMOUNT + 1), "validation_failed"),
    "quantity past 100000": (post("top", PURCHASES, purchase_body(100_001)), "validation_failed"),
    "a purchase whose total is past 10**13": (buys_past_the_amount_limit, "invalid_amount"),
    # refused by the business rules
    "purchase without funds": (broke_buys, "insufficient_funds"),
    "purchase from a parent without a price": (sub_buys_unpriced, "price_not_set"),
    "purchase of more than the parent has": (
        sub_buys_more_than_the_parent_has,
        "insufficient_stock",
    ),
    # too large
    "operator body past the size limit": (
        raw("operator", PLATFORMS, b'{"name": "' + b"x" * MAX_BODY + b'"}'),
        "body_too_large",
    ),
    "signed body past the size limit": (
        raw("top", PURCHASES, b" " * (MAX_BODY + 1)),
        "body_too_large",
    ),
    "chunked body past the size limit": (chunked_past_the_size_limit("operator"), "body_too_large"),
    "chunked signed body past the size limit": (
        chunked_past_the_size_limit("top"),
        "body_too_large",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_input_is_refused_with_a_stable_code_and_records_nothing(
    case: str, api: Api, world: World, events: Callable[[], int]
) -> None:
    prepare, code = REFUSALS[case]
    send = prepare(api, world)
    before = events()
    funds = api.funds(world.top), api.funds(world.sub)
    stock = api.on_hand(world.top, world.product), api.on_hand(world.sub, world.product)

    assert_problem(send(), STATUS[code], code)

    assert events() == before
    assert (api.funds(world.top), api.funds(world.sub)) == funds
    assert (api.on_hand(world.top, world.product), api.on_hand(world.sub, world.product)) == stock


def test_a_body_of_exactly_the_size_limit_is_read(api: Api) -> None:
    head, tail = b'{"gateway_url": "http://127.0.0.1:9/", "name": "', b'"}'
    body = head + b"x" * (MAX_BODY - len(head) - len(tail)) + tail
    assert len(body) == MAX_BODY
    reply = api.operator.request(
        "POST", "/v1/platforms", content=body, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(reply, 422, "validation_failed")
    assert [error["field"] for error in problem["errors"]] == ["name"]


def test_funds_grow_past_one_commands_limit_and_stay_spendable(api: Api, world: World) -> None:
    rich = api.top_channel("Rich")
    api.deposit(rich, MAX_AMOUNT)

    reply = api.operator.post(f"/v1/channels/{rich.id}/deposits", {"amount": cny(MAX_AMOUNT)})

    assert reply.status_code == 201, reply.text
    assert reply.json()["funds"] == cny(2 * MAX_AMOUNT)
    assert api.funds(rich) == 2 * MAX_AMOUNT
    assert api.buy(rich, world.product, 1)["total"] == cny(1000)
    assert api.funds(rich) == 2 * MAX_AMOUNT - 1000
