"""Two `ledger serve` processes on one database: funds never go negative under contention."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Api, Server, start_servers

pytestmark = pytest.mark.e2e

BUYERS = 50
AFFORDABLE = 10


@pytest.fixture(scope="module")
def servers(database_url: str) -> Iterator[list[Server]]:
    """Started at once; the second serves only. Every process may run the projection runners
    (one holds each view's lock, the others stand by), but each runner holds connections of
    its own: a full process takes about 45 of PostgreSQL's default 100, so two full ones
    would crowd out the rest of a shared server. Reads on the second wait for the first's."""
    started = start_servers(database_url, 2, [{}, {"LEDGER_RUN_PROJECTIONS": "false"}])
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def test_fifty_simultaneous_purchases_on_two_processes_spend_the_funds_exactly_once(
    tokens: dict[str, str], servers: list[Server], http: httpx.Client
) -> None:
    api = Api(http, servers[0].base_url, tokens)
    product = api.product(api.platform(), wholesale=1000, face=1500)
    buyer = api.top_channel("Contended")
    api.deposit(buyer, AFFORDABLE * 1000)
    assert api.funds(buyer) == AFFORDABLE * 1000
    callers = [buyer.at(servers[i % len(servers)].base_url) for i in range(BUYERS)]
    start = threading.Barrier(BUYERS)
    replies: list[httpx.Response | BaseException] = [RuntimeError("not sent")] * BUYERS

    def purchase(i: int) -> None:
        start.wait(timeout=30)
        try:
            replies[i] = callers[i].post(
                "/v1/stock-purchases", {"product_id": product, "quantity": 1}
            )
        except BaseException as error:  # reported below, with the others
            replies[i] = error

    threads = [threading.Thread(target=purchase, args=(i,)) for i in range(BUYERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    answered = [r for r in replies if isinstance(r, httpx.Response)]
    assert len(answered) == BUYERS, [r for r in replies if not isinstance(r, httpx.Response)]
    outcomes = Counter((r.status_code, r.json().get("code")) for r in answered)
    assert outcomes == {(201, None): AFFORDABLE, (409, "insufficient_funds"): BUYERS - AFFORDABLE}
    ports = Counter(r.request.url.port for r in answered)
    assert sorted(ports.values()) == [BUYERS // 2, BUYERS // 2], ports

    bought = [r.json() for r in answered if r.status_code == 201]
    assert len({purchase["id"] for purchase in bought}) == AFFORDABLE
    assert sorted(purchase["stock"]["on_hand"] for purchase in bought) == list(
        range(1, AFFORDABLE + 1)
    )

    for server in servers:
        here = Api(http, server.base_url, tokens)
        seen = (
            here.funds(buyer.at(server.base_url)),
            here.on_hand(buyer.at(server.base_url), product),
        )
        assert seen == (0, AFFORDABLE), f"{server.base_url} reads {seen}\n{logs(servers)}"
        trial = here.trial_balance()
        assert trial["balanced"] is True
        assert {item["asset"]: item["total"] for item in trial["items"]} == {
            "CNY": 0,
            f"unit:{product}": 0,
        }


def logs(servers: list[Server]) -> str:
    return "\n".join(f"--- {server.base_url}\n{server.output()}" for server in servers)
