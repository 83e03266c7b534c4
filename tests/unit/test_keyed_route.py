"""A keyed POST in one hop (api/keyed_route.py): the key claimed, the body validated and the
endpoint run on one worker thread, entered once; in FastAPI's order (a 422 after the claim,
which it gives up); every keyed route of the API served this way."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.routing import APIRoute
from pydantic import BaseModel

from api import problems
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent, idempotent_page
from api.keyed_route import KeyedRoute
from api.routes import ROUTERS


class Connection:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def execute(self, statement: str, *_: Any) -> Connection:
        self.pool.seen.append((statement.split()[0], threading.get_ident()))
        return self

    def fetchone(self) -> tuple[int]:
        return (1,)


class Pool:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        yield Connection(self)


class Order(BaseModel):
    code: str
    units: int


def app_with(pool: Pool, ran: list[tuple[str, int]]) -> FastAPI:
    router = APIRouter(route_class=KeyedRoute, prefix="/v1")

    @router.post("/orders/{shop}", status_code=202)
    def place(
        shop: str,
        body: Order,
        call: IdempotentCall = Depends(idempotent_page),
        services: Services = Depends(get_services),
    ) -> Any:
        ran.append((f"{shop} {body.code} {body.units} {services.name}", threading.get_ident()))
        return call.run(lambda command_id: (202, {"id": str(command_id)}))

    @router.get("/orders")
    def orders() -> Any:
        return []

    app = FastAPI()
    problems.install(app)
    app.include_router(router)
    app.state.services = SimpleNamespace(name="services", pool=pool, settings=None)
    return app


def post(app: FastAPI, path: str, **sent: Any) -> httpx.Response:
    """One request through the app in-process, on an event loop run on this thread."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:
            return await client.post(path, **sent)

    return asyncio.run(send())


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each entry to the worker threads (what FastAPI's run_in_threadpool calls)."""
    entered: list[int] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(*args: Any, **kwargs: Any) -> Any:
        entered.append(1)
        return await run_sync(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return entered


def test_the_claim_the_body_and_the_endpoint_run_on_one_worker_thread_entered_once(
    hops: list[int],
) -> None:
    pool, ran = Pool(), []
    loop_thread = threading.get_ident()  # post() runs the event loop here
    reply = post(
        app_with(pool, ran),
        "/v1/orders/north",
        json={"code": "A1", "units": 2},
        headers={"Idempotency-Key": "k1"},
    )
    assert reply.status_code == 202, reply.text
    assert [what for what, _ in ran] == ["north A1 2 services"]
    assert [statement for statement, _ in pool.seen] == ["INSERT", "UPDATE"]  # claim, finish
    threads = {thread for _, thread in pool.seen} | {thread for _, thread in ran}
    assert len(threads) == 1 and loop_thread not in threads
    assert len(hops) == 1


def test_an_invalid_body_is_refused_after_the_claim_which_is_given_up(hops: list[int]) -> None:
    pool, ran = Pool(), []
    app = app_with(pool, ran)
    wrong = post(
        app,
        "/v1/orders/north",
        json={"code": "A1", "units": "two"},
        headers={"Idempotency-Key": "k"},
    )
    missing = post(
        app,
        "/v1/orders/north",
        headers={"Idempotency-Key": "k2", "Content-Type": "application/json"},
    )
    assert wrong.status_code == 422
    assert wrong.json()["code"] == "validation_failed"
    assert [error["field"] for error in wrong.json()["errors"]] == ["units"]
    assert missing.status_code == 422
    assert missing.json()["errors"] == [{"field": "", "message": "Field required"}]
    assert ran == []
    # each claimed, then given up: the key is free again
    assert [statement for statement, _ in pool.seen] == ["INSERT", "DELETE", "INSERT", "DELETE"]


def test_a_post_without_a_key_is_refused_before_its_body_is_looked_at() -> None:
    pool, ran = Pool(), []
    reply = post(app_with(pool, ran), "/v1/orders/north", json={"code": "A1"})
    assert reply.status_code == 400
    assert reply.json()["code"] == "idempotency_key_missing"
    assert pool.seen == [] and ran == []


def test_a_keyed_route_takes_nothing_the_hop_does_not_know() -> None:
    router = APIRouter(route_class=KeyedRoute)

    with pytest.raises(TypeError, match="path parameters and one body"):

        @router.post("/x")
        def with_query(
            limit: int = Query(1), call: IdempotentCall = Depends(idempotent)
        ) -> Any:
            return call

    with pytest.raises(TypeError, match="path parameters are str"):

        @router.post("/z/{number}")
        def with_int(number: int, call: IdempotentCall = Depends(idempotent)) -> Any:
            return call

    async def other() -> int:
        return 1

    with pytest.raises(TypeError, match="takes no"):

        @router.post("/y")
        def with_other(
            value: int = Depends(other), call: IdempotentCall = Depends(idempotent)
        ) -> Any:
            return call


def test_every_keyed_route_of_the_api_is_served_in_one_hop() -> None:
    keyed = [
        route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        and {idempotent, idempotent_page} & {d.call for d in route.dependant.dependencies}
    ]
    assert len(keyed) >= 30
    assert [route.path for route in keyed if not isinstance(route, KeyedRoute)] == []
    with pytest.raises(TypeError, match="route_class=KeyedRoute"):
        idempotent()
