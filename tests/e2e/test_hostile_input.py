"""Hostile input against one `ledger serve` in sandbox mode (issue 10, item 6).

Each attack measured against main is a test here: signed headers no integer can hold, control
characters in names, dates past year 9999, duplicate JSON keys, other UUID spellings, UTF-16
bodies, a shared card expired before it is made, a merchant's profile read by anyone. Every
refusal is a problem with a stable code, never a 5xx, and records nothing. A Hypothesis fuzz
over the signed headers (X-Timestamp, X-Nonce, X-Key-Id, Authorization, X-Signature,
Idempotency-Key) finds no 5xx either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.signing import new_nonce, sign_request
from tests.e2e.conftest import Api, Caller, Server, free_port, sandbox_serving
from tests.e2e.test_cards_api import Shop

pytestmark = pytest.mark.e2e

FAR_EXPIRY = "9999-12-31T23:59:59-14:00"
"""Year 10000 in UTC: a date Python and PostgreSQL cannot hold."""


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    """Sandbox mode: sandbox SMS, payments and platform (on a free port)."""
    with sandbox_serving(database_url, free_port(), "hostile-input") as started:
        yield started


@pytest.fixture(scope="module")
def recorded(db: psycopg.Connection[Any]) -> Callable[[], tuple[int, int]]:
    """Events stored by both applications: a refusal must not change them."""

    def count() -> tuple[int, int]:
        row = db.execute(
            "SELECT (SELECT count(*) FROM distribution_events), (SELECT count(*) FROM cards_events)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    return count


@pytest.fixture(scope="module")
def stocked(api: Api) -> tuple[Caller, str]:
    """A top-level channel with 5 units of a product on hand."""
    product = api.product(api.platform("Hostile"))
    channel = api.top_channel("Hostile top")
    api.deposit(channel, 100_000)
    api.buy(channel, product, 5)
    return channel, product


@pytest.fixture(scope="module")
def shop(api: Api) -> Shop:
    return Shop(api)


def assert_refused(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.text
    assert reply.json()["code"] == code, reply.text


def tracebacks(server: Server) -> int:
    return server.log.read_text(errors="replace").count("Traceback")


# signed headers


HOSTILE_TIMESTAMPS = {
    "superscript digits": "\u00b9\u00b2\u00b3",
    "400 digits": "4" * 400,
    "5000 digits": "7" * 5000,
    "fullwidth digits": "\uff11\uff17\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff10",
    "negative": "-1",
    "exponent": "1e9",
    "inner space": "1 7",
    "hex": "0x10",
}


@pytest.mark.parametrize("timestamp", HOSTILE_TIMESTAMPS.values(), ids=HOSTILE_TIMESTAMPS.keys())
def test_a_timestamp_no_clock_can_hold_is_signature_invalid_and_logs_nothing(
    api: Api, stocked: tuple[Caller, str], server: Server, timestamp: str
) -> None:
    channel, _ = stocked
    before = tracebacks(server)
    path = f"/v1/channels/{channel.id}/funds"
    headers = channel.signed_headers("GET", path, b"")
    raw = {k: v.encode() for k, v in headers.items()}
    # the bytes an attacker sends: latin-1 where it can (the server reads headers as latin-1)
    fits = all(ord(c) < 256 for c in timestamp)
    raw["X-Timestamp"] = timestamp.encode("latin-1" if fits else "utf-8")
    reply = api.http.get(server.base_url + path, headers=raw)
    assert_refused(reply, 401, "signature_invalid")
    assert tracebacks(server) == before, "a refusal is not an error in the log"


def test_a_timestamp_signed_correctly_but_thirteen_digits_long_is_refused(
    api: Api, stocked: tuple[Caller, str]
) -> None:
    channel, _ = stocked
    path = f"/v1/channels/{channel.id}/funds"
    far = channel.signed_headers("GET", path, b"", timestamp=10**12)
    assert_refused(channel.send("GET", path, b"", far), 401, "signature_invalid")
    assert channel.get(path).status_code == 200, "a fresh signature is still accepted"


# free text


CONTROL = {
    "NUL": "\x00",
    "newline": "\n",
    "tab": "\t",
    "escape": "\x1b[31m",
    "DEL": "\x7f",
    "C1": "\x85",
    "right-to-left override": "\u202e",
    "left-to-right isolate": "\u2066",
}


@pytest.mark.parametrize("character", CONTROL.values(), ids=CONTROL.keys())
def test_a_control_character_in_any_name_is_refused_and_records_nothing(
    api: Api,
    shop: Shop,
    stocked: tuple[Caller, str],
    recorded: Callable[[], tuple[int, int]],
    character: str,
) -> None:
    channel, _ = stocked
    name = f"Shop{character}name"
    attempts = [
        api.operator.post("/v1/channels", {"name": name}),
        channel.post(f"/v1/channels/{channel.id}/subchannels", {"name": name}),
        api.operator.post("/v1/platforms", {"name": name, "gateway_url": "http://127.0.0.1:9/g"}),
        api.operator.post("/v1/merchants", {"name": name, "timezone": "Asia/Shanghai"}),
        api.operator.post("/v1/merchants", {"name": "Fine", "timezone": f"Asia/{name}"}),
        api.operator.post("/v1/members", {"name": name, "phone": "13900000000"}),
        channel.post(
            "/v1/recharges",
            {
                "code": "AAAA-BBBB-CCCC-DDDD-EEEE",
                "account": "13900000001",
                "verification_code": "123456",
                "user": {"ip": "203.0.113.9", "name": name},
            },
        ),
        api.operator.post(
            f"/v1/recharges/{uuid.uuid4()}/resolution", {"outcome": "failed", "note": name}
        ),
    ]
    before = recorded()
    for reply in attempts:
        assert_refused(reply, 422, "validation_failed")
        assert any("control" in e["message"] for e in reply.json()["errors"]), reply.text
    assert recorded() == before


def test_a_channel_named_with_nul_cannot_be_made_so_its_verification_sends_work(
    api: Api, recorded: Callable[[], tuple[int, int]]
) -> None:
    before = recorded()
    assert_refused(api.operator.post("/v1/channels", {"name": "Nul\x00shop"}), 422,
                   "validation_failed")
    assert recorded() == before
    fine = api.top_channel("Plain shop")
    assert fine.post("/v1/verification-codes", {"account": "13900000002"}).status_code == 202


def test_ordinary_names_in_any_script_are_kept(api: Api) -> None:
    for name in ("北京 朝阳店", "Ça va — l'épicerie", "محل", "Shop 🛒"):
        reply = api.operator.post("/v1/channels", {"name": name})
        assert reply.status_code == 201, reply.text


# dates


def test_an_expiry_past_year_9999_is_refused_on_code_batches_and_shared_cards(
    shop: Shop, stocked: tuple[Caller, str], recorded: Callable[[], tuple[int, int]]
) -> None:
    channel, product = stocked
    owner = shop.member("Owner far")
    card = shop.open_card(owner)
    before = recorded()
    batch = channel.post(
        "/v1/code-batches", {"product_id": product, "quantity": 1, "expires_at": FAR_EXPIRY}
    )
    assert_refused(batch, 422, "validation_failed")
    shared = owner.post(
        f"/v1/cards/{card['id']}/shared-cards",
        {"discount_bp": 9000, "commission_bp": 0, "publish": True, "expires_at": FAR_EXPIRY},
    )
    assert_refused(shared, 422, "validation_failed")
    for late in ("2100-01-01T00:00:00Z", "2100-01-01T08:00:00+08:00", "2199-06-01T00:00:00Z"):
        reply = channel.post(
            "/v1/code-batches", {"product_id": product, "quantity": 1, "expires_at": late}
        )
        assert_refused(reply, 422, "validation_failed")
    assert recorded() == before
    fine = channel.post(
        "/v1/code-batches",
        {"product_id": product, "quantity": 1, "expires_at": "2099-12-31T23:59:59+00:00"},
    )
    assert fine.status_code == 201, fine.text


def test_a_shared_card_already_expired_is_refused(
    shop: Shop, recorded: Callable[[], tuple[int, int]]
) -> None:
    owner = shop.member("Owner past")
    card = shop.open_card(owner)
    share = f"/v1/cards/{card['id']}/shared-cards"
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    before = recorded()
    for expiry in ("2020-01-01T00:00:00Z", past):
        reply = owner.post(
            share, {"discount_bp": 9000, "commission_bp": 0, "publish": True, "expires_at": expiry}
        )
        assert_refused(reply, 422, "validation_failed")
    assert recorded() == before
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    reply = owner.post(
        share, {"discount_bp": 9000, "commission_bp": 0, "publish": True, "expires_at": soon}
    )
    assert reply.status_code == 201, reply.text


def test_a_control_character_in_a_query_is_refused(api: Api, stocked: tuple[Caller, str]) -> None:
    channel, _ = stocked
    for caller, path in (
        (api.operator, "/v1/recharges?account=139%0000000"),
        (api.operator, "/v1/sandbox/sms?account=139%0000000"),
        (api.operator, "/v1/recharges?status=pending&account=139%E2%80%AE0000"),
        (channel, f"/v1/channels?parent_id={channel.id}%00"),
        (api.operator, "/v1/audit-log?kind=%0A"),
    ):
        reply = caller.get(path)
        assert_refused(reply, 422, "validation_failed")
    assert api.operator.get("/v1/recharges?account=13900000000").status_code == 200


def test_time_filters_past_the_calendar_are_refused(api: Api) -> None:
    for path in (
        "/v1/ledger/accounts/asset:cash/balance?as_of=9999-12-31T23:59:59-14:00",
        "/v1/audit-log?from=9999-12-31T23:59:59-14:00",
        "/v1/audit-log?to=0001-01-01T00:00:00%2B14:00",
    ):
        caller = api.finance if "ledger" in path else api.operator
        reply = caller.get(path)
        assert_refused(reply, 422, "validation_failed")


# bodies


def test_duplicate_json_keys_are_refused_and_record_nothing(
    api: Api, stocked: tuple[Caller, str], recorded: Callable[[], tuple[int, int]]
) -> None:
    channel, product = stocked
    json_type = {"Content-Type": "application/json"}
    before = recorded()
    top = b'{"name": "First", "name": "Second"}'
    nested = b'{"amount": {"amount": 100, "currency": "CNY", "amount": 100000000}}'
    assert_refused(
        api.operator.post("/v1/channels", content=top, headers=json_type), 422, "validation_failed"
    )
    deposit = f"/v1/channels/{channel.id}/deposits"
    assert_refused(
        api.operator.post(deposit, content=nested, headers=json_type), 422, "validation_failed"
    )
    batch = json.dumps({"product_id": product, "quantity": 1})[:-1] + ', "quantity": 3}'
    reply = channel.post("/v1/code-batches", content=batch.encode(), headers=json_type)
    assert_refused(reply, 422, "validation_failed")
    assert "twice" in reply.json()["detail"], reply.text
    assert recorded() == before
    once = api.operator.post("/v1/channels", content=b'{"name": "Once"}', headers=json_type)
    assert once.status_code == 201, "the same body with its key once is taken"


def test_a_body_in_another_encoding_than_utf8_is_refused(
    api: Api, recorded: Callable[[], tuple[int, int]]
) -> None:
    body = json.dumps({"name": "Sixteen"})
    before = recorded()
    for encoding in ("utf-16", "utf-16-le", "utf-32", "utf-8-sig"):
        reply = api.operator.post(
            "/v1/channels", content=body.encode(encoding),
            headers={"Content-Type": "application/json"},
        )
        assert_refused(reply, 422, "validation_failed")
    for charset in ("utf-16", "latin-1", "ascii"):
        reply = api.operator.post(
            "/v1/channels",
            content=body.encode(),
            headers={"Content-Type": f"application/json; charset={charset}"},
        )
        assert_refused(reply, 415, "unsupported_media_type")
    reply = api.operator.post(
        "/v1/channels", content=body.encode(), headers={"Content-Type": "text/plain"}
    )
    assert_refused(reply, 415, "unsupported_media_type")
    assert recorded() == before
    for content_type in ("application/json; charset=utf-8", "application/json;charset=UTF-8"):
        reply = api.operator.post(
            "/v1/channels", content=body.encode(), headers={"Content-Type": content_type}
        )
        assert reply.status_code == 201, reply.text


# ids


def other_spellings(canonical: str) -> list[str]:
    value = uuid.UUID(canonical)
    return [
        f"urn:uuid:{value}",
        f"{{{value}}}",
        str(value).upper(),
        value.hex,
    ]


def test_only_the_canonical_uuid_form_finds_anything(
    api: Api, shop: Shop, stocked: tuple[Caller, str], recorded: Callable[[], tuple[int, int]]
) -> None:
    channel, product = stocked
    assert channel.id is not None
    for spelling in other_spellings(channel.id):
        path = f"/v1/channels/{spelling}/funds"
        assert_refused(channel.get(path), 404, "not_found")
        assert api.anonymous.get(f"/r/{spelling}").status_code == 404, "the recharge page"
    assert api.anonymous.get(f"/r/{channel.id}").status_code == 200
    before = recorded()
    for spelling in other_spellings(product):
        reply = channel.post("/v1/stock-purchases", {"product_id": spelling, "quantity": 1})
        assert_refused(reply, 404, "not_found")
    assert recorded() == before
    assert channel.get(f"/v1/channels/{channel.id}/funds").status_code == 200
    owner = shop.member("Cursor")
    card = shop.open_card(owner)["id"]
    assert owner.get(f"/v1/cards?after={card}").status_code == 200
    for spelling in other_spellings(card):
        assert_refused(owner.get(f"/v1/cards?after={spelling}"), 404, "not_found")


# merchants' profiles


def test_a_merchants_profile_is_seen_by_the_operator_and_the_merchant_only(
    api: Api, shop: Shop, stocked: tuple[Caller, str]
) -> None:
    path = f"/v1/merchants/{shop.merchant.id}"
    for caller in (api.operator, shop.merchant):
        reply = caller.get(path)
        assert reply.status_code == 200, reply.text
        assert reply.json()["activities"][0]["id"] == shop.activity
    other = Shop(api).merchant
    channel, _ = stocked
    for caller in (other, shop.member("Curious"), channel, api.finance):
        assert_refused(caller.get(path), 404, "not_found")
    assert_refused(api.anonymous.get(path), 401, "unauthorized")


# a fuzz over the signed headers


HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
)
"""What a header value can be on the wire: visible ASCII, spaces and obs-text (0x80-0xFF,
which the server reads as latin-1: `¹²³`, `½`, `ÿ`…); control bytes never reach the app (the
HTTP parser refuses the request first)."""


SIGNED_HEADERS = ("X-Key-Id", "X-Timestamp", "X-Nonce", "X-Signature", "Idempotency-Key")


def long_digits() -> st.SearchStrategy[str]:
    """Integers a clock cannot compare, up to past the 4300 digits `int()` refuses."""
    return st.integers(min_value=0, max_value=10**60).map(str) | st.text(
        "0123456789", min_size=13, max_size=5000
    )


@st.composite
def hostile_headers(draw: st.DrawFn) -> tuple[str, dict[str, str], bool]:
    """A signed GET or POST, some of its headers replaced (and then signed again, or not)."""
    method = draw(st.sampled_from(["GET", "POST"]))
    replaced: dict[str, str] = {}
    for name in draw(st.sets(st.sampled_from(SIGNED_HEADERS + ("Authorization",)), max_size=4)):
        if name == "X-Timestamp":
            replaced[name] = draw(HEADER_TEXT | long_digits())
        elif name == "Authorization":
            replaced[name] = draw(st.sampled_from(["Bearer ", "Basic ", ""])) + draw(HEADER_TEXT)
        else:
            replaced[name] = draw(HEADER_TEXT)
    return method, replaced, draw(st.booleans())


def test_fuzzed_signed_headers_never_get_a_server_error(
    api: Api, stocked: tuple[Caller, str], server: Server
) -> None:
    channel, product = stocked
    assert channel.key_secret is not None
    answers: list[int] = []
    codes: list[str] = []
    errors: list[str] = []

    @given(case=hostile_headers())
    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def attempt(case: tuple[str, dict[str, str], bool]) -> None:
        method, replaced, sign_again = case
        path = "/v1/code-batches" if method == "POST" else f"/v1/channels/{channel.id}/funds"
        batch = {"product_id": product, "quantity": 1}
        body = json.dumps(batch).encode() if method == "POST" else b""
        headers = {"Content-Type": "application/json"} if body else {}
        if method == "POST":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        headers |= channel.signed_headers(
            method, path, body, idempotency_key=headers.get("Idempotency-Key", "")
        )
        headers |= replaced
        if sign_again:
            assert channel.key_secret is not None
            headers["X-Signature"] = sign_request(
                channel.key_secret,
                method,
                path,
                headers.get("X-Timestamp", ""),
                headers.get("X-Nonce", new_nonce()),
                headers.get("Idempotency-Key", ""),
                body,
            )
        raw = {name: value.encode("latin-1") for name, value in headers.items()}
        try:
            reply = api.http.request(method, server.base_url + path, content=body, headers=raw)
        except httpx.LocalProtocolError:
            return  # a value the client will not send (leading or trailing space): no request
        answers.append(reply.status_code)
        if reply.status_code >= 500:
            errors.append(f"{method} {replaced!r} signed again: {sign_again} -> {reply.text}")
        elif reply.status_code >= 400:
            assert reply.headers["content-type"].startswith("application/problem+json")
            codes.append(reply.json()["code"])

    attempt()
    assert errors == [], "\n".join(errors[:10])
    assert len(answers) > 200, "most cases reached the server"
    assert {401} <= set(answers), "the fuzz reached the signature check"
    assert {200, 201} <= set(answers), "some cases were signed well enough to be served"
    print(sorted((s, answers.count(s)) for s in set(answers)))
    print(sorted((c, codes.count(c)) for c in set(codes)))
