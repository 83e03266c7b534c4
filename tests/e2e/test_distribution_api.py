"""Distribution over HTTP: the S100 flow, who sees what, who may do what, and suspensions."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import Api, Caller

pytestmark = pytest.mark.e2e


def cny(amount: int) -> dict[str, object]:
    return {"amount": amount, "currency": "CNY"}


def assert_problem(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["code"] == code, reply.text


def stocked_tree(api: Api, wholesale: int = 1000, price: int = 1500) -> tuple[str, Caller, Caller]:
    """A product, a top-level channel with 10 units and funds, a sub-channel with funds."""
    product = api.product(api.platform(), wholesale=wholesale, face=2 * wholesale)
    top = api.top_channel()
    sub = api.sub_channel(top)
    api.deposit(top, 100 * wholesale)
    api.deposit(sub, 100 * price)
    api.buy(top, product, 10)
    api.set_price(top, product, price)
    return product, top, sub


def test_s100_stock_flows_down_the_channel_tree_and_money_flows_up(api: Api) -> None:
    platform = api.platform("iQiyi")
    product = api.product(platform, wholesale=2000, face=3000)
    top = api.top_channel("Shanghai")
    sub = api.sub_channel(top, "Pudong")

    assert api.deposit(top, 100_000)["funds"] == cny(100_000)
    assert api.deposit(sub, 30_000)["funds"] == cny(30_000)

    bought = api.buy(top, product, 20)
    assert bought["unit_price"] == cny(2000)
    assert bought["total"] == cny(40_000)
    assert bought["stock"]["on_hand"] == 20

    api.set_price(top, product, 2500)
    sub_bought = api.buy(sub, product, 5)
    assert sub_bought["unit_price"] == cny(2500)
    assert sub_bought["total"] == cny(12_500)
    assert sub_bought["stock"] == {
        "product_id": product,
        "on_hand": 5,
        "held": 0,
        "consumed": 0,
    }
    assert sub_bought["id"] != bought["id"]

    top_stock = top.get(f"/v1/channels/{top.id}/stock")
    assert top_stock.status_code == 200
    assert top_stock.json() == {
        "items": [{"product_id": product, "on_hand": 15, "held": 0, "consumed": 0}],
        "next_cursor": None,
    }
    assert api.on_hand(sub, product) == 5

    top_funds = top.get(f"/v1/channels/{top.id}/funds")
    assert top_funds.status_code == 200
    assert top_funds.json() == {
        "posted": cny(72_500),
        "pending": cny(0),
        "available": cny(72_500),
    }
    assert api.funds(sub) == 17_500

    view = api.operator.get(f"/v1/channels/{sub.id}")
    assert view.status_code == 200
    assert view.json()["parent_id"] == top.id
    assert view.json()["suspended"] is False

    trial = api.trial_balance()
    assert trial["balanced"] is True
    totals = {item["asset"]: item["total"] for item in trial["items"]}
    assert totals == {"CNY": 0, f"unit:{product}": 0}

    def balance(account: str) -> dict[str, dict[str, int]]:
        reply = api.finance.get(f"/v1/ledger/accounts/{account}/balance")
        assert reply.status_code == 200, reply.text
        return {b["asset"]: b for b in reply.json()["balances"]}

    assert balance(f"channel:{top.id}:funds")["CNY"]["posted"] == 72_500
    assert balance(f"channel:{top.id}:funds")["CNY"]["available"] == 72_500
    assert balance(f"channel:{sub.id}:stock:{product}")[f"unit:{product}"]["posted"] == 5
    assert balance(f"platform:{platform}:payable")["CNY"]["posted"] == 40_000
    assert balance("external:deposits:CNY")["CNY"]["posted"] == -130_000


def test_a_channel_sees_its_subtree_and_nothing_else(api: Api) -> None:
    parent = api.top_channel("Parent")
    child = api.sub_channel(parent, "Child")
    sibling = api.sub_channel(parent, "Sibling")
    grandchild = api.sub_channel(child, "Grandchild")
    stranger = api.top_channel("Stranger")

    for reader, target in [
        (parent, child),
        (parent, grandchild),
        (child, grandchild),
        (child, child),
    ]:
        for what in ("funds", "stock"):
            reply = reader.get(f"/v1/channels/{target.id}/{what}")
            assert reply.status_code == 200, (reader.id, target.id, what, reply.text)

    unknown = str(uuid.uuid4())
    for reader, target_id in [
        (child, sibling.id),
        (child, parent.id),
        (grandchild, child.id),
        (stranger, child.id),
        (child, stranger.id),
        (child, unknown),
    ]:
        for what in ("funds", "stock"):
            assert_problem(reader.get(f"/v1/channels/{target_id}/{what}"), 404, "not_found")
        assert_problem(reader.get(f"/v1/channels/{target_id}"), 404, "not_found")

    assert_problem(
        child.post(f"/v1/channels/{sibling.id}/subchannels", {"name": "Intruder"}), 404, "not_found"
    )


def test_finance_reads_the_ledger_but_may_post_nothing(api: Api, events: Callable[[], int]) -> None:
    product, top, sub = stocked_tree(api)
    finance = api.finance

    assert finance.get("/v1/ledger/trial-balance").status_code == 200
    assert finance.get(f"/v1/ledger/accounts/channel:{top.id}:funds/balance").status_code == 200
    assert finance.get(f"/v1/channels/{top.id}/funds").status_code == 200

    before = events()
    for path, body in [
        ("/v1/platforms", {"name": "P", "gateway_url": "http://127.0.0.1:9/"}),
        (
            "/v1/products",
            {
                "platform_id": str(uuid.uuid4()),
                "name": "Plan",
                "duration_days": 30,
                "face_value": cny(10),
                "wholesale_cost": cny(5),
            },
        ),
        ("/v1/channels", {"name": "Rogue"}),
        (f"/v1/channels/{top.id}/deposits", {"amount": cny(100)}),
        (f"/v1/channels/{top.id}/subchannels", {"name": "Rogue"}),
        (f"/v1/channels/{sub.id}/suspension", None),
        ("/v1/stock-purchases", {"product_id": product, "quantity": 1}),
    ]:
        assert_problem(finance.post(path, body), 403, "forbidden")
    assert_problem(
        finance.put(f"/v1/channels/{top.id}/prices/{product}", {"price": cny(1)}), 403, "forbidden"
    )
    assert_problem(finance.delete(f"/v1/channels/{sub.id}/suspension"), 403, "forbidden")
    assert events() == before


def test_a_channel_cannot_act_as_the_operator_or_finance(
    api: Api, events: Callable[[], int]
) -> None:
    platform = api.platform()
    top = api.top_channel()

    before = events()
    for path, body in [
        ("/v1/platforms", {"name": "P", "gateway_url": "http://127.0.0.1:9/"}),
        (
            "/v1/products",
            {
                "platform_id": platform,
                "name": "Plan",
                "duration_days": 30,
                "face_value": cny(10),
                "wholesale_cost": cny(5),
            },
        ),
        ("/v1/channels", {"name": "Self-made top"}),
        (f"/v1/channels/{top.id}/deposits", {"amount": cny(1_000_000)}),
    ]:
        assert_problem(top.post(path, body), 403, "forbidden")
    assert_problem(top.get("/v1/ledger/trial-balance"), 403, "forbidden")
    assert_problem(top.get(f"/v1/ledger/accounts/channel:{top.id}:funds/balance"), 403, "forbidden")
    assert events() == before
    assert api.funds(top) == 0


def test_operator_suspension_blocks_purchases_through_and_below_and_delete_resumes(
    api: Api, events: Callable[[], int]
) -> None:
    product, top, sub = stocked_tree(api)

    suspended = api.operator.post(f"/v1/channels/{top.id}/suspension")
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["suspended"] is True

    before = events()
    purchase = {"product_id": product, "quantity": 1}
    assert_problem(top.post("/v1/stock-purchases", purchase), 409, "channel_suspended")
    assert_problem(sub.post("/v1/stock-purchases", purchase), 409, "channel_suspended")
    assert_problem(
        sub.post(f"/v1/channels/{sub.id}/subchannels", {"name": "Late"}), 409, "channel_suspended"
    )
    assert events() == before
    assert api.on_hand(top, product) == 10
    assert api.on_hand(sub, product) == 0

    resumed = api.operator.delete(f"/v1/channels/{top.id}/suspension")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["suspended"] is False
    assert api.buy(top, product, 1)["stock"]["on_hand"] == 11
    assert api.buy(sub, product, 1)["stock"]["on_hand"] == 1


def test_a_parent_channel_suspends_its_subtree_and_only_a_parent_resumes_it(
    api: Api, events: Callable[[], int]
) -> None:
    product, top, sub = stocked_tree(api)
    leaf = api.sub_channel(sub, "Leaf")
    api.deposit(leaf, 100_000)
    api.buy(sub, product, 5)
    api.set_price(sub, product, 1800)

    assert top.post(f"/v1/channels/{sub.id}/suspension").status_code == 200
    assert api.operator.get(f"/v1/channels/{sub.id}").json()["suspended"] is True

    before = events()
    purchase = {"product_id": product, "quantity": 1}
    assert_problem(sub.post("/v1/stock-purchases", purchase), 409, "channel_suspended")
    assert_problem(leaf.post("/v1/stock-purchases", purchase), 409, "channel_suspended")
    assert_problem(sub.delete(f"/v1/channels/{sub.id}/suspension"), 403, "forbidden")
    assert_problem(leaf.delete(f"/v1/channels/{sub.id}/suspension"), 404, "not_found")
    assert_problem(sub.post(f"/v1/channels/{top.id}/suspension"), 404, "not_found")
    assert events() == before
    assert api.buy(top, product, 1)["stock"]["on_hand"] == 6

    assert top.delete(f"/v1/channels/{sub.id}/suspension").status_code == 200
    assert api.buy(leaf, product, 2)["total"] == cny(3600)
    assert api.buy(sub, product, 1)["stock"]["on_hand"] == 4


def test_openapi_lists_the_distribution_and_ledger_paths(api: Api) -> None:
    reply = api.anonymous.get("/openapi.json")
    assert reply.status_code == 200
    paths = reply.json()["paths"]
    expected = {
        "/v1/platforms": {"post"},
        "/v1/products": {"post"},
        "/v1/channels": {"post"},
        "/v1/channels/{channel_id}/subchannels": {"post"},
        "/v1/channels/{channel_id}/deposits": {"post"},
        "/v1/channels/{channel_id}/prices/{product_id}": {"put"},
        "/v1/channels/{channel_id}/suspension": {"post", "delete"},
        "/v1/channels/{channel_id}/webhook": {"put"},
        "/v1/stock-purchases": {"post"},
        "/v1/channels/{channel_id}/stock": {"get"},
        "/v1/channels/{channel_id}/funds": {"get"},
        "/v1/ledger/accounts/{account}/balance": {"get"},
        "/v1/ledger/trial-balance": {"get"},
        "/health": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))


def test_health_is_liveness_and_ready_says_the_database_answers(api: Api) -> None:
    reply = api.anonymous.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "sandbox": False}
    ready = api.anonymous.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok"}


def test_metrics_count_requests_by_route_template_not_by_id(api: Api) -> None:
    channel = api.top_channel("Counted")
    assert channel.get(f"/v1/channels/{channel.id}/funds").status_code == 200
    reply = api.anonymous.get("/metrics")
    assert reply.status_code == 200
    text = reply.text
    assert 'ledger_http_requests_total{method="GET",route="/v1/channels/{channel_id}/funds"' in text
    assert channel.id not in text
    assert "ledger_http_request_seconds_bucket" in text
