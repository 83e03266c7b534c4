"""The operator's lists over HTTP: recharges across channels (the review queue), channels,
platforms, products, code batches with their codes' states, withdrawals, dead letters; every
one cursor-paged, refusing bad input with a problem and other channels' rows with a 404."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Api, Caller, Server, free_port, start_servers

pytestmark = pytest.mark.e2e

DEADLINE_SECONDS = 4


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    env = {
        "LEDGER_SANDBOX": "true",
        "LEDGER_SANDBOX_PLATFORM_PORT": str(free_port()),
        "LEDGER_RECHARGE_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
        "LEDGER_GATEWAY_TIMEOUT_SECONDS": "1",
    }
    (only,) = start_servers(database_url, 1, [env])
    try:
        yield only
    finally:
        only.stop()


def problem(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.text
    assert reply.json()["code"] == code, reply.text


def every_page(caller: Caller, path: str, limit: int) -> list[dict[str, Any]]:
    """Walk a list page by page; every page at most `limit` long, no item twice."""
    items: list[dict[str, Any]] = []
    after = None
    joiner = "&" if "?" in path else "?"
    for _ in range(100):
        query = f"{path}{joiner}limit={limit}" + (f"&after={after}" if after else "")
        reply = caller.get(query)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        items += body["items"]
        after = body["next_cursor"]
        if after is None:
            ids = [item["id"] for item in items]
            assert len(ids) == len(set(ids)), "an item came twice"
            return items
    pytest.fail(f"{path} did not end")


def place(api: Api, channel: Caller, code: str, account: str) -> str:
    sent = channel.post("/v1/verification-codes", {"account": account})
    assert sent.status_code == 202, sent.text
    sms = api.operator.get(f"/v1/sandbox/sms?account={account}")
    assert sms.status_code == 200, sms.text
    body = {"code": code, "account": account, "verification_code": sms.json()["code"]}
    reply = channel.post("/v1/recharges", body)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["id"])


@pytest.fixture(scope="module")
def world(api: Api) -> dict[str, Any]:
    platform_id = api.platform("Youku")
    product_id = api.product(platform_id)
    top = api.top_channel(f"Top {uuid.uuid4().hex[:6]}")
    sub = api.sub_channel(top, "Sub")
    other = api.top_channel(f"Other {uuid.uuid4().hex[:6]}")
    batches: dict[str, str] = {}
    codes: dict[str, list[str]] = {}
    for name, channel in (("top", top), ("other", other)):
        api.deposit(channel, 100_000)
        api.buy(channel, product_id, 5)
        reply = channel.post("/v1/code-batches", {"product_id": product_id, "quantity": 3})
        assert reply.status_code == 201, reply.text
        batches[name], codes[name] = reply.json()["id"], reply.json()["codes"]
    return {
        "platform_id": platform_id,
        "product_id": product_id,
        "top": top,
        "sub": sub,
        "other": other,
        "batches": batches,
        "codes": codes,
    }


def test_the_operator_lists_recharges_across_channels_by_status_and_account(
    api: Api, world: dict[str, Any]
) -> None:
    top, other = world["top"], world["other"]
    account = f"139{uuid.uuid4().int % 10**8:08d}"
    mine = [place(api, top, world["codes"]["top"][0], account)]
    mine.append(place(api, top, world["codes"]["top"][1], f"138{uuid.uuid4().int % 10**8:08d}"))
    theirs = place(api, other, world["codes"]["other"][0], f"137{uuid.uuid4().int % 10**8:08d}")

    everyone = every_page(api.operator, "/v1/recharges", 1)
    assert {*mine, theirs} <= {item["id"] for item in everyone}
    assert everyone[0]["requested_at"][10] == "T", everyone[0]
    by_account = api.operator.get(f"/v1/recharges?account={account}").json()["items"]
    assert [item["id"] for item in by_account] == [mine[0]]
    assert by_account[0]["channel_id"] == top.id

    own = every_page(top, "/v1/recharges", 1)
    assert {item["id"] for item in own} == set(mine)
    problem(other.get(f"/v1/recharges?channel_id={top.id}"), 404, "not_found")

    # the platform never answers: past the deadline every one waits in the review queue
    deadline = time.monotonic() + DEADLINE_SECONDS + 30
    while True:
        queue = every_page(api.operator, "/v1/recharges?status=review", 2)
        if {*mine, theirs} <= {item["id"] for item in queue}:
            break
        assert time.monotonic() < deadline, queue
        time.sleep(0.5)
    assert {item["status"] for item in queue} == {"review"}
    assert api.operator.get("/v1/recharges?status=pending&account=" + account).json() == {
        "items": [],
        "next_cursor": None,
    }

    problem(api.operator.get("/v1/recharges?status=lost"), 422, "validation_failed")
    problem(api.operator.get("/v1/recharges?after=nope"), 422, "validation_failed")
    problem(api.operator.get("/v1/recharges?limit=101"), 422, "validation_failed")
    problem(api.operator.get("/v1/recharges?account=" + "9" * 65), 422, "validation_failed")
    problem(api.finance.get("/v1/recharges"), 403, "forbidden")


def test_channels_platforms_and_products_are_listed_paged(api: Api, world: dict[str, Any]) -> None:
    top, sub, other = world["top"], world["sub"], world["other"]
    channels = every_page(api.operator, "/v1/channels", 1)
    assert {top.id, sub.id, other.id} <= {item["id"] for item in channels}
    children = every_page(api.operator, f"/v1/channels?parent_id={top.id}", 5)
    assert [item["id"] for item in children] == [sub.id]
    assert children[0]["parent_id"] == top.id
    assert {item["id"] for item in every_page(top, "/v1/channels", 1)} == {top.id, sub.id}
    assert {item["id"] for item in every_page(sub, "/v1/channels", 1)} == {sub.id}
    problem(sub.get(f"/v1/channels?parent_id={top.id}"), 404, "not_found")
    problem(other.get(f"/v1/channels?parent_id={top.id}"), 404, "not_found")

    platforms = every_page(api.operator, "/v1/platforms", 1)
    assert world["platform_id"] in {item["id"] for item in platforms}
    products = every_page(api.operator, f"/v1/products?platform_id={world['platform_id']}", 1)
    assert [p["id"] for p in products] == [world["product_id"]]
    assert products[0]["face_value"] == 3000 and products[0]["wholesale_cost"] == 2000
    problem(top.get("/v1/platforms"), 403, "forbidden")
    problem(top.get("/v1/products"), 403, "forbidden")
    problem(api.operator.get(f"/v1/products?platform_id={uuid.uuid4()}"), 404, "not_found")
    problem(api.operator.get("/v1/channels?limit=0"), 422, "validation_failed")
    problem(api.operator.get("/v1/platforms?after=1;drop"), 422, "validation_failed")


def test_code_batches_are_listed_with_their_codes_by_state(api: Api, world: dict[str, Any]) -> None:
    top, other = world["top"], world["other"]
    voided = top.post("/v1/code-voids", {"codes": [world["codes"]["top"][2]]})
    assert voided.status_code == 200, voided.text
    own = every_page(top, "/v1/code-batches", 1)
    assert [b["id"] for b in own] == [world["batches"]["top"]]
    counts = own[0]["codes"]
    assert sum(counts.values()) == own[0]["quantity"] == 3
    assert (
        counts["voided"] == 1
        and counts["issued"] + counts["reserved"] + counts["redeemed"] + counts["expired"] == 2
    )
    everyone = every_page(api.operator, "/v1/code-batches", 1)
    assert set(world["batches"].values()) <= {b["id"] for b in everyone}
    only = api.operator.get(f"/v1/code-batches?channel_id={other.id}").json()["items"]
    assert [b["id"] for b in only] == [world["batches"]["other"]]
    problem(top.get(f"/v1/code-batches?channel_id={other.id}"), 403, "forbidden")
    problem(api.finance.get("/v1/code-batches"), 403, "forbidden")


def test_withdrawals_and_dead_letters_are_the_operators(
    api: Api, world: dict[str, Any], database_url: str
) -> None:
    listed = every_page(api.operator, "/v1/withdrawals?status=paid", 10)
    assert {item["status"] for item in listed} <= {"paid"}
    problem(api.operator.get("/v1/withdrawals?status=lost"), 422, "validation_failed")
    problem(world["top"].get("/v1/withdrawals"), 403, "forbidden")

    with psycopg.connect(database_url, autocommit=True) as conn:
        for n in range(3):
            conn.execute(
                "INSERT INTO dead_letters (view, version, application, notification_id, topic, "
                "originator_id, error) VALUES ('codes', 1, 'Distribution', %s, 'X', '', 'boom')",
                (10_000 + n,),
            )
    letters = every_page(api.operator, "/v1/dead-letters", 2)
    assert [letter["notification_id"] for letter in letters][-3:] == [10_000, 10_001, 10_002]
    assert letters[-1]["error"] == "boom"
    problem(api.operator.get("/v1/dead-letters?after=x"), 422, "validation_failed")
    problem(world["top"].get("/v1/dead-letters"), 403, "forbidden")


def test_a_channels_stock_is_paged_by_product(api: Api, world: dict[str, Any]) -> None:
    top = world["top"]
    second = api.product(world["platform_id"], wholesale=1000, face=1500)
    api.buy(top, second, 2)
    whole = top.get(f"/v1/channels/{top.id}/stock").json()
    assert whole["next_cursor"] is None and len(whole["items"]) == 2

    paged, cursor = [], None
    while True:
        query = f"/v1/channels/{top.id}/stock?limit=1" + (f"&after={cursor}" if cursor else "")
        page = top.get(query).json()
        assert len(page["items"]) <= 1
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == whole["items"]
    assert {item["product_id"]: item["on_hand"] for item in paged}[second] == 2
    problem(top.get(f"/v1/channels/{top.id}/stock?after=x"), 422, "validation_failed")
    problem(top.get(f"/v1/channels/{top.id}/stock?limit=500"), 422, "validation_failed")
    problem(world["other"].get(f"/v1/channels/{top.id}/stock"), 404, "not_found")


def test_an_inactive_batch_is_exported_once_as_csv_and_audited(
    api: Api, world: dict[str, Any], database_url: str
) -> None:
    top, sub, other = world["top"], world["sub"], world["other"]
    body = {"product_id": world["product_id"], "quantity": 2, "inactive": True}
    issued = top.post("/v1/code-batches", body)
    assert issued.status_code == 201, issued.text
    batch, codes = issued.json()["id"], issued.json()["codes"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        (sealed,) = conn.execute(
            "SELECT sealed FROM sealed_batch_codes WHERE batch_id = %s", (batch,)
        ).fetchone() or (None,)
    assert sealed is not None and not any(code.encode() in bytes(sealed) for code in codes)

    problem(other.post(f"/v1/code-batches/{batch}/export"), 404, "not_found")
    problem(sub.post(f"/v1/code-batches/{batch}/export"), 404, "not_found")
    problem(api.operator.post(f"/v1/code-batches/{batch}/export"), 403, "forbidden")
    problem(top.post(f"/v1/code-batches/{uuid.uuid4()}/export"), 404, "not_found")
    problem(top.post("/v1/code-batches/not-an-id/export"), 404, "not_found")
    active = world["batches"]["top"]
    problem(top.post(f"/v1/code-batches/{active}/export"), 409, "state_conflict")

    problem(
        top.post(f"/v1/code-batches/{batch}/export", idempotency_key=None),
        400,
        "idempotency_key_missing",
    )
    key = uuid.uuid4().hex
    exported = top.post(f"/v1/code-batches/{batch}/export", idempotency_key=key)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0] == "batch_id,code"
    assert lines[1:] == [f"{batch},{code}" for code in codes]
    # the answer lost, the same request again gets the same codes; a new one gets none
    again = top.post(f"/v1/code-batches/{batch}/export", idempotency_key=key)
    assert (again.status_code, again.text) == (200, exported.text)
    assert again.headers["content-type"].startswith("text/csv")

    problem(top.post(f"/v1/code-batches/{batch}/export"), 409, "state_conflict")
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sealed, exported_at FROM sealed_batch_codes WHERE batch_id = %s", (batch,)
        ).fetchone()
        audited = conn.execute(
            "SELECT principal, channel_id, detail FROM audit_log WHERE kind = 'batch_export'"
        ).fetchall()
    assert row is not None and row[0] is None and row[1] is not None
    assert len(audited) == 1
    assert audited[0][1] == uuid.UUID(top.id) and batch in audited[0][2]
    assert not any(code in audited[0][2] for code in codes)


def test_two_exports_at_once_give_the_codes_to_one(api: Api, world: dict[str, Any]) -> None:
    top = world["top"]
    body = {"product_id": world["product_id"], "quantity": 1, "inactive": True}
    issued = top.post("/v1/code-batches", body)
    assert issued.status_code == 201, issued.text
    batch = issued.json()["id"]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: top.post(f"/v1/code-batches/{batch}/export"), range(4)))
    assert sorted(r.status_code for r in replies) == [200, 409, 409, 409], [r.text for r in replies]


TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?\+00:00")
LOOKS_LIKE_A_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")


def times_in(value: Any, where: str = "") -> list[tuple[str, str]]:
    """Every string of an answer that holds a date and time, with where it was found."""
    if isinstance(value, dict):
        return [t for key, item in value.items() for t in times_in(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [t for n, item in enumerate(value) for t in times_in(item, f"{where}[{n}]")]
    if isinstance(value, str) and LOOKS_LIKE_A_TIME.match(value):
        return [(where, value)]
    return []


def test_every_answer_writes_times_one_way(api: Api, world: dict[str, Any]) -> None:
    """ISO 8601 with a T and the UTC offset, in lists as in the single GET."""
    top = world["top"]
    account = f"136{uuid.uuid4().int % 10**8:08d}"
    api.buy(top, world["product_id"], 1)
    batch = top.post("/v1/code-batches", {"product_id": world["product_id"], "quantity": 1})
    assert batch.status_code == 201, batch.text
    recharge = place(api, top, batch.json()["codes"][0], account)
    answers = {
        "recharge": api.operator.get(f"/v1/recharges/{recharge}"),
        "recharges": api.operator.get(f"/v1/recharges?account={account}"),
        "channel's recharges": top.get("/v1/recharges"),
        "channels": api.operator.get("/v1/channels"),
        "platforms": api.operator.get("/v1/platforms"),
        "products": api.operator.get("/v1/products"),
        "code batches": api.operator.get("/v1/code-batches"),
        "withdrawals": api.operator.get("/v1/withdrawals"),
        "dead letters": api.operator.get("/v1/dead-letters"),
        "audit log": api.operator.get("/v1/audit-log"),
        "projections": api.operator.get("/v1/projections"),
        "journal": api.finance.get("/v1/ledger/journal"),
    }
    found: list[tuple[str, str]] = []
    for name, reply in answers.items():
        assert reply.status_code == 200, (name, reply.text)
        found += times_in(reply.json(), name)
    named = {where.split(".")[0].split("[")[0] for where, _ in found}
    assert {"recharge", "recharges", "channels", "platforms", "journal"} <= named, named
    wrong = [(where, value) for where, value in found if not TIME.fullmatch(value)]
    assert not wrong, wrong
    (listed,) = answers["recharges"].json()["items"]
    assert listed["id"] == recharge, "the account filter is applied"


def test_a_filter_a_list_does_not_apply_is_refused_not_ignored(
    api: Api, world: dict[str, Any]
) -> None:
    for caller, path, unknown in (
        (api.operator, "/v1/platforms?name=Youku", "name"),
        (api.operator, f"/v1/channels?parent={world['top'].id}", "parent"),
        (api.operator, "/v1/products?currency=CNY&limit=5", "currency"),
        (api.operator, "/v1/withdrawals?state=paid", "state"),
        (world["top"], "/v1/code-batches?product_id=x", "product_id"),
        (api.operator, "/v1/audit-log?account=13900000000", "account"),
        (api.finance, "/v1/ledger/journal?account=x", "account"),
        (api.operator, "/v1/recharges?state=review", "state"),
        (world["top"], "/v1/recharges?code=x", "code"),
        (api.operator, "/v1/projections?name=journal", "name"),
    ):
        reply = caller.get(path)
        problem(reply, 422, "validation_failed")
        body = reply.json()
        assert body["errors"] == [
            {"field": unknown, "message": body["errors"][0]["message"]}
        ], body
        assert body["detail"].startswith(f"{unknown}: not a query parameter of GET /v1/"), body
    takes = api.operator.get("/v1/platforms?name=Youku").json()["detail"]
    assert takes.endswith("(it takes after, limit)"), takes
    assert api.operator.get("/v1/platforms?limit=1").status_code == 200
