"""Finance and operators over HTTP: reads never fail while a view is rebuilt beside the live
one, the journal pages through the log with chain hashes, balances as of a moment, and
GET /v1/projections answers what `ledger projections status` prints.

The module's ledger holds thousands of events (deposits and purchases saved in big batches,
as group commit does) so that rebuilding the balances takes seconds; the balances and journal
views are filled before `ledger serve` starts, so its runners have no backlog there.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from adapters.database import application_env
from adapters.payments import SandboxPaymentGateway
from adapters.settings import Settings
from api.runtime.dispatcher import DISPATCHER_FEED
from ledger.cards.application import Cards
from ledger.distribution.application import Distribution
from ledger.distribution.movements import Deposit, StockPurchase
from ledger.money import Money
from projections.catalog import view
from projections.positions import head, live_version
from projections.rebuild import catch_up, open_view, rebuild
from projections.status import standings
from tests.card_fakes import FakeMemberTokens
from tests.e2e.conftest import Api, Server, ledger_command, ledger_env, start_servers

pytestmark = pytest.mark.e2e

DEPOSIT_SAVES, DEPOSITS_PER_SAVE = 4, 500  # 1,000 events a save
PURCHASE_SAVES, PURCHASES_PER_SAVE = 2, 300  # 900 events a save
PRICE, DEPOSIT = 2500, 10_000


def app_env(url: str) -> dict[str, str]:
    return application_env(Settings(), url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="2")


@dataclass(frozen=True)
class Story:
    top: UUID
    sub: UUID
    sub_funds: int
    events: int


def write_story(url: str) -> Story:
    env = app_env(url)
    d = Distribution(env=env)
    cards = Cards(env=env, payments=SandboxPaymentGateway(), tokens=FakeMemberTokens())
    try:
        platform, product, top, sub = uuid4(), uuid4(), uuid4(), uuid4()
        d.register_platform(platform, "iQiyi", "http://127.0.0.1:9/gateway")
        d.register_product(product, platform, "VIP monthly", 30, Money(3000), Money(2000))
        d.register_channel(top, "Top")
        d.register_channel(sub, "Sub", parent_id=top)
        d.deposit(uuid4(), top, Money(10**9))
        d.purchase_stock(uuid4(), top, product, 100_000)
        d.set_price(top, product, Money(PRICE))
        for _ in range(DEPOSIT_SAVES):
            channel = d.channel(sub)
            deposits = [
                Deposit.record(uuid4(), sub, Money(DEPOSIT)) for _ in range(DEPOSITS_PER_SAVE)
            ]
            for deposit in deposits:
                channel.deposit(deposit.id, deposit.amount)
            d.save(*deposits, channel)
        for _ in range(PURCHASE_SAVES):
            buyer, parent = d.channel(sub), d.channel(top)
            purchases = []
            for _ in range(PURCHASES_PER_SAVE):
                purchase = StockPurchase.from_parent(uuid4(), sub, top, product, 1, Money(PRICE))
                buyer.buy(purchase.id, product, 1, purchase.total)
                parent.sell(purchase.id, product, 1, purchase.total)
                purchases.append(purchase)
            d.save(*purchases, buyer, parent)

        merchant, owner, activity = uuid4(), uuid4(), uuid4()
        cards.register_merchant(merchant, "Tea house", "Asia/Shanghai")
        cards.register_member(owner, "Owner", "13800138000")
        cards.publish_activity(activity, merchant, Money(100_000), Money(10_000), 8000)
        card = cards.open_card(uuid4(), owner, activity, "sandbox").id
        cards.consume(uuid4(), merchant, card, Money(10_000))
        cards.consume(uuid4(), merchant, card, Money(20_000))

        with psycopg.connect(url, autocommit=True) as conn:
            events = head(conn, "distribution") + head(conn, "cards")
        return Story(top, sub, d.channel(sub).funds["CNY"], events)
    finally:
        d.close()
        cards.close()


def fill_live_views(url: str, *names: str) -> None:
    """Apply the whole log to the live versions at once (no runner is running yet)."""
    env = app_env(url)
    for name in names:
        spec = view(name)
        with psycopg.connect(url, autocommit=True) as conn:
            version = live_version(conn, name)
        live = open_view(spec.view_class.at_version(version), env)
        applications = [cls(env=env) for cls in spec.applications]
        try:
            catch_up(url, live, applications, None, 1000)
        finally:
            live.datastore.close()
            for application in applications:
                application.close()


def skip_saga_starter(url: str) -> None:
    """The saga starter follows the distribution log for code reservations; the story has
    none, so it has nothing to start: its position moves to the head at once instead of the
    server's runner recording thousands of empty steps while the tests run."""
    with psycopg.connect(url, autocommit=True) as conn:
        reserved = conn.execute(
            "SELECT count(*) FROM distribution_events WHERE topic LIKE '%Code.Reserved'"
        ).fetchone()[0]
        assert reserved == 0
        conn.execute(
            "INSERT INTO recharges_tracking (application_name, notification_id) "
            "VALUES ('distribution', %s)",
            (head(conn, "distribution"),),
        )


@pytest.fixture(scope="module")
def story(database_url: str) -> Story:
    written = write_story(database_url)
    fill_live_views(database_url, "balances", "journal", "codes")
    skip_saga_starter(database_url)
    return written


@pytest.fixture(scope="module")
def server(database_url: str, story: Story) -> Iterator[Server]:
    """`ledger serve` on the module's ledger, started once the story is written."""
    (only,) = start_servers(database_url, 1)
    try:
        yield only
    finally:
        only.stop()


@dataclass
class Read:
    at: float
    what: str
    status: int
    good: bool
    body: str


def test_api_reads_never_fail_while_the_balances_are_rebuilt(
    api: Api, database_url: str, story: Story
) -> None:
    reads: list[Read] = []
    stop = threading.Event()
    headers = {"Authorization": f"Bearer {api.tokens['finance']}"}

    def reader() -> None:
        with httpx.Client(base_url=api.base_url, headers=headers, timeout=30) as http:
            while not stop.is_set():
                reply = http.get("/v1/ledger/trial-balance")
                body = reply.json() if reply.status_code == 200 else {}
                good = (
                    bool(body.get("balanced"))
                    and all(item["total"] == 0 for item in body.get("items", []))
                    and len(body.get("items", [])) >= 2
                )
                reads.append(Read(time.monotonic(), "trial", reply.status_code, good, reply.text))
                reply = http.get(f"/v1/channels/{story.sub}/funds")
                good = reply.status_code == 200 and reply.json()["posted"]["amount"] == (
                    story.sub_funds
                )
                reads.append(Read(time.monotonic(), "funds", reply.status_code, good, reply.text))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        result = rebuild(view("balances"), database_url, app_env(database_url))
        finished = time.monotonic()
        time.sleep(1.5)  # the server's runners move to the new version meanwhile
    finally:
        stop.set()
        thread.join(timeout=30)

    assert result.events == story.events and result.new_version == 2
    bad = [r for r in reads if r.status != 200 or not r.good]
    assert not bad, f"{len(bad)} of {len(reads)} reads failed, the first: {bad[0]}"
    during = [r for r in reads if started <= r.at <= finished]
    assert len(during) >= 10, (
        f"only {len(during)} reads during a {finished - started:.1f} s rebuild"
    )
    assert any(r.at < started for r in reads) and any(r.at > finished for r in reads)
    rows = api.operator.get("/v1/projections").json()["items"]
    assert {r["version"] for r in rows if r["name"] == "balances"} == {2}
    print(f"rebuilt {result.events} events in {finished - started:.1f} s; {len(reads)} reads")


def test_the_journal_pages_through_every_movement_in_log_order_with_its_chain_hash(
    api: Api, database_url: str, story: Story
) -> None:
    items, cursor, pages = [], None, 0
    while True:
        path = "/v1/ledger/journal?application=cards&limit=2" + (
            f"&after={cursor}" if cursor else ""
        )
        reply = api.finance.get(path)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    with psycopg.connect(database_url, autocommit=True) as conn:
        expected = conn.execute(
            "SELECT j.notification_id, j.originator_id, j.originator_version, c.hash "
            "FROM journal j JOIN cards_events_chain c USING (notification_id) "
            "WHERE j.application = 'cards' ORDER BY j.notification_id"
        ).fetchall()
    assert len(expected) >= 3 and pages == (len(expected) + 1) // 2
    assert [(i["position"], i["event_id"], i["chain_hash"]) for i in items] == [
        (n, f"{o}:{v}", bytes(h).hex()) for n, o, v, h in expected
    ]
    for item in items:
        assert sum(p["amount"] for p in item["postings"]) == 0
        assert item["application"] == "cards"

    first = api.finance.get("/v1/ledger/journal?limit=100").json()
    positions = [(i["application"], i["position"]) for i in first["items"]]
    assert positions == sorted(positions) and len(positions) == 100
    assert first["next_cursor"] == "{}:{}".format(*positions[-1])


def test_balances_as_of_a_moment_differ_before_and_after_a_deposit(api: Api) -> None:
    channel = api.top_channel("As of")
    account = f"channel:{channel.id}:funds"
    api.deposit(channel, 300)
    time.sleep(0.01)
    between = datetime.now(UTC)
    time.sleep(0.01)
    api.deposit(channel, 500)

    def as_of(moment: datetime | None) -> Any:
        query = f"?as_of={moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}" if moment else ""
        reply = api.finance.get(f"/v1/ledger/accounts/{account}/balance{query}")
        assert reply.status_code == 200, reply.text
        return reply.json()["balances"]

    cny = {"asset": "CNY", "pending": 0}
    assert as_of(between) == [cny | {"posted": 300, "available": 300}]
    assert as_of(datetime.now(UTC)) == [cny | {"posted": 800, "available": 800}]
    assert as_of(None) == [cny | {"posted": 800, "available": 800}]
    assert as_of(datetime(2000, 1, 1, tzinfo=UTC)) == []


def test_get_projections_answers_what_ledger_projections_status_prints(
    api: Api, database_url: str
) -> None:
    def settled() -> list[Any]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            return [row.as_dict() for row in standings(conn, [DISPATCHER_FEED])]

    deadline = time.monotonic() + 60
    while any(row["lag"] for row in settled()):
        assert time.monotonic() < deadline, "the server's runners did not catch up"
        time.sleep(0.2)

    reply = api.operator.get("/v1/projections")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"items": settled(), "next_cursor": None}
    paged, cursor = [], None
    while True:
        query = "/v1/projections?limit=2" + (f"&after={cursor}" if cursor else "")
        page = api.operator.get(query).json()
        assert len(page["items"]) <= 2
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == settled() and len(paged) > 2
    assert api.operator.get("/v1/projections?after=nowhere").status_code == 422
    assert api.finance.get("/v1/projections").status_code == 403

    printed = subprocess.run(
        [ledger_command(), "projections", "status"],
        env={**ledger_env(database_url), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    lines = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in printed.stdout.splitlines()
        if line.count("│") >= 8
    ]
    assert lines == [
        [
            r["name"],
            r["application"],
            "-" if r["version"] is None else str(r["version"]),
            str(r["position"]),
            str(r["head"]),
            str(r["lag"]),
            r["status"],
            str(r["dead_letters"]),
        ]
        for r in reply.json()["items"]
    ]
    assert {r["status"] for r in reply.json()["items"]} == {"running"}
