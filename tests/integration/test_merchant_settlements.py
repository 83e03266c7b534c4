"""Merchant settlement on PostgreSQL: the merchant statements view follows the cards log, a
settlement takes its unsettled lines, pays through the sandbox payouts kept in the database
(once per payout id, even when the process dies between paying and recording), and the
ledger verifies with the view recomputed."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import psycopg
import pytest

from adapters.database import event_store_env, open_pool
from adapters.payments import SandboxPaymentGateway
from adapters.sandbox_payouts import PostgresSandboxPayouts
from adapters.settings import Settings
from adapters.tokens import PostgresMemberTokens
from ledger import accounts
from ledger.cards.application import Cards
from ledger.cards.merchant_settlement import payout_id
from ledger.cards.ports import PayoutResult
from ledger.cards.settlements import MerchantSettlements
from ledger.money import Money
from projections.catalog import view
from projections.merchant_statements import MerchantStatementsReader
from projections.rebuild import rebuild
from projections.runner import SupervisedRunner
from projections.verify import verify
from projections.views import Views
from tests.integration.test_rebuild import ledger_command

pytestmark = pytest.mark.integration

ZONE = "Asia/Shanghai"


def today() -> str:
    return datetime.now(UTC).astimezone(ZoneInfo(ZONE)).date().isoformat()


def two_days_on() -> datetime:
    """A clock two days ahead: today (in the merchant's zone) is a closed day for it."""
    return datetime.now(UTC) + timedelta(days=2)


class DiesAfterPaying:
    """The sandbox payouts, but the process 'dies' right after the payout is made: the
    answer never reaches the settlement."""

    def __init__(self, database_url: str) -> None:
        self.real = PostgresSandboxPayouts(database_url)

    def pay_out(self, payout: UUID, payee_id: UUID, amount: Money) -> PayoutResult:
        self.real.pay_out(payout, payee_id, amount)
        raise ConnectionError("killed between the payout and its record")


@pytest.fixture
def runners(database_url: str) -> Iterator[None]:
    feeds = [
        feed
        for name in ("merchant_statements", "balances")
        for feed in view(name).feeds()
        if feed.application_class is Cards
    ]
    env = event_store_env(database_url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="1")
    started = [SupervisedRunner(feed, database_url, env) for feed in feeds]
    for runner in started:
        runner.start()
    yield
    for runner in started:
        runner.stop()
    for runner in started:
        runner.join(timeout=20)


@pytest.fixture
def pool(database_url: str) -> Iterator[Any]:
    pool = open_pool(database_url, size=3, name="merchant-settlements-test")
    yield pool
    pool.close()


def cards_app(database_url: str, pool: Any, payouts: Any) -> Cards:
    return Cards(
        env=event_store_env(database_url, POSTGRES_POOL_SIZE="2"),
        clock=two_days_on,
        payments=SandboxPaymentGateway(),
        payouts=payouts,
        tokens=PostgresMemberTokens(pool),
    )


@pytest.fixture
def cards(database_url: str, pool: Any) -> Iterator[Cards]:
    app = cards_app(database_url, pool, PostgresSandboxPayouts(database_url))
    yield app
    app.close()


def tea_house(cards: Cards) -> tuple[UUID, UUID]:
    merchant, owner, activity = uuid4(), uuid4(), uuid4()
    cards.register_merchant(merchant, "Tea house", ZONE)
    cards.register_member(owner, "Owner", "13800138000")
    cards.publish_activity(activity, merchant, Money(100_000), Money(10_000), 8000)
    card = cards.open_card(uuid4(), owner, activity, "sandbox").id
    return merchant, card


def sandbox_payouts(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT payout_id, payee_id, amount FROM sandbox_payouts ORDER BY amount"
        ).fetchall()


def test_a_day_is_settled_from_the_view_and_paid_once_and_the_ledger_verifies(
    database_url: str, cards: Cards, pool: Any, runners: None
) -> None:
    merchant, card = tea_house(cards)
    refunded = uuid4()
    cards.consume(refunded, merchant, card, Money(10_000))
    cards.consume(uuid4(), merchant, card, Money(5_000))
    cards.refund_consumption(uuid4(), merchant, refunded)
    reader = MerchantStatementsReader(pool, catch_up_seconds=15)
    settlements = MerchantSettlements(cards, reader)

    settlement = settlements.open(merchant, today())
    again = settlements.open(merchant, today())

    assert settlement.status == "paid" and again.id == settlement.id
    total = settlement.totals["CNY"]
    assert (total.consumptions, total.refunds, total.amount) == (12_000, -8_000, 4_000)
    assert sandbox_payouts(database_url) == [(payout_id(settlement.id, "CNY"), merchant, 4_000)]
    views = Views(pool)
    assert views.catch_up("balances", timeout=15) and views.catch_up("merchant_statements", 15)
    payable = views.balances.of_account(accounts.merchant_payable(merchant))
    assert payable == {"CNY": (0, 0)}
    (row,) = reader.settlements(merchant, None, 10)
    assert (row["status"], row["lines"], row["totals"]) == ("paid", 3, {"CNY": 4_000})
    assert reader.unsettled(merchant, two_days_on(), 100) == []

    report = verify(database_url, event_store_env(database_url, **app_settings()))
    assert report.ok, str(report.divergence)
    assert report.rows_compared["merchant_statement_lines"] == 3

    before = (statement_rows(database_url), reader.settlements(merchant, None, 10))
    rebuilt = rebuild(view("merchant_statements"), database_url, event_store_env(database_url))
    assert rebuilt.new_version == 2
    assert (statement_rows(database_url), reader.settlements(merchant, None, 10)) == before


def statement_rows(database_url: str) -> list[tuple[Any, ...]]:
    """The live version's lines, through the readers' SQL view."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, merchant_id, kind, consumption_id, currency, amount, recorded_at, "
            "settlement_id FROM merchant_statement_lines ORDER BY id"
        ).fetchall()


def app_settings() -> dict[str, str]:
    settings = Settings()
    return {
        "CODE_HASH_KEY": settings.ledger_code_hash_key,
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "2",
    }


def test_a_process_killed_between_payout_and_record_is_paid_once_by_the_retry(
    database_url: str, cards: Cards, pool: Any, runners: None
) -> None:
    merchant, card = tea_house(cards)
    cards.consume(uuid4(), merchant, card, Money(10_000))
    reader = MerchantStatementsReader(pool, catch_up_seconds=15)
    dying = cards_app(database_url, pool, DiesAfterPaying(database_url))
    try:
        left = MerchantSettlements(dying, reader).open(merchant, today())
    finally:
        dying.close()
    assert left.status == "paying"
    assert len(sandbox_payouts(database_url)) == 1, "the payout was made before the 'crash'"

    finished = MerchantSettlements(cards, reader).advance(left.id)

    assert finished.status == "paid"
    assert finished.payouts["CNY"]["reference"] == f"sandbox-payout-{payout_id(left.id, 'CNY').hex}"
    assert sandbox_payouts(database_url) == [(payout_id(left.id, "CNY"), merchant, 8_000)]
    assert Views(pool).catch_up("merchant_statements", timeout=15)
    assert reader.unfinished(grace_seconds=0) == []


def test_two_periods_settled_at_once_never_take_the_same_line(
    database_url: str, cards: Cards, pool: Any, runners: None
) -> None:
    merchant, card = tea_house(cards)
    for price in (1_000, 2_000, 3_000, 4_000):
        cards.consume(uuid4(), merchant, card, Money(price))
    reader = MerchantStatementsReader(pool, catch_up_seconds=15)
    tomorrow = (datetime.fromisoformat(today()) + timedelta(days=1)).date().isoformat()
    other = cards_app(database_url, pool, PostgresSandboxPayouts(database_url))
    results: dict[str, Any] = {}

    def settle(app: Cards, period: str) -> None:
        results[period] = MerchantSettlements(app, reader).open(merchant, period)

    threads = [
        threading.Thread(target=settle, args=(cards, today())),
        threading.Thread(target=settle, args=(other, tomorrow)),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        other.close()

    taken = [line.id for s in results.values() for line in s.lines]
    assert len(taken) == len(set(taken)) == 4
    paid = sum(s.totals["CNY"].amount for s in results.values() if "CNY" in s.totals)
    assert paid == 8_000
    assert sum(row[2] for row in sandbox_payouts(database_url)) == 8_000


def test_the_command_line_settles_today_in_sandbox_mode_and_shows_and_exports_it(
    database_url: str, cards: Cards
) -> None:
    merchant, card = tea_house(cards)
    cards.consume(uuid4(), merchant, card, Money(10_000))
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LEDGER_SANDBOX": "true",
        "LEDGER_SANDBOX_PAYOUT_EXIT": "false",
    }

    def ledger(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ledger_command(), "merchant-settlements", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    ran = ledger("run", str(merchant), today(), "--close-now")
    assert ran.returncode == 0, ran.stderr
    settled = json.loads(ran.stdout)
    assert (settled["status"], settled["totals"][0]["amount"]) == ("paid", 8_000)
    again = ledger("run", str(merchant), today(), "--close-now")
    assert json.loads(again.stdout)["id"] == settled["id"]
    assert [row[2] for row in sandbox_payouts(database_url)] == [8_000]

    shown = ledger("show", settled["id"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == settled
    exported = ledger("export", settled["id"])
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.splitlines()[0] == "kind,id,consumption_id,at,currency,amount"
    assert exported.stdout.splitlines()[-1].endswith(",CNY,8000")

    refused = ledger("run", str(merchant), "2999-01-01")
    assert refused.returncode == 1
    assert "period_not_closed" in refused.stderr
    assert ledger("show", str(uuid4())).returncode == 1
