"""The balances view follows the cards application: card balances, wallets, and a withdrawal
in flight shown as pending until the payout answers."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from adapters.database import event_store_env, open_pool
from adapters.payments import SandboxPaymentGateway
from adapters.tokens import PostgresMemberTokens
from ledger import accounts
from ledger.cards.application import Cards
from ledger.money import Money
from projections.catalog import view
from projections.runner import SupervisedRunner
from projections.views import Views

pytestmark = pytest.mark.integration


@pytest.fixture
def cards(database_url: str) -> Iterator[Cards]:
    pool = open_pool(database_url, size=1, name="cards-tokens-test")
    app = Cards(
        env=event_store_env(database_url, POSTGRES_POOL_SIZE="2"),
        payments=SandboxPaymentGateway(),
        tokens=PostgresMemberTokens(pool),
    )
    yield app
    app.close()
    pool.close()


@pytest.fixture
def views(database_url: str) -> Iterator[Views]:
    """The balances view fed from the cards log by a runner, as `ledger serve` runs it."""
    (feed,) = [f for f in view("balances").feeds() if f.application_class is Cards]
    env = event_store_env(database_url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="1")
    runner = SupervisedRunner(feed, database_url, env)
    runner.start()
    pool = open_pool(database_url, size=2, name="cards-balances-test")
    yield Views(pool)
    runner.stop()
    runner.join(timeout=20)
    pool.close()


def balance(views: Views, account: str) -> tuple[int, int]:
    assert views.catch_up(timeout=15), "the balances view did not catch up"
    posted, pending = views.balances.of_account(account).get("CNY", (0, 0))
    return posted, pending


def test_a_withdrawal_in_flight_is_pending_until_the_payout_answers(
    cards: Cards, views: Views
) -> None:
    merchant, owner, friend, activity = uuid4(), uuid4(), uuid4(), uuid4()
    cards.register_merchant(merchant, "Tea house", "Asia/Shanghai")
    cards.register_member(owner, "Owner", "13800138000")
    cards.register_member(friend, "Friend", "13800138001")
    cards.publish_activity(activity, merchant, Money(100_000), Money(10_000), 8000)
    card = cards.open_card(uuid4(), owner, activity, "sandbox").id
    shared = cards.share_card(uuid4(), owner, card, 9000, 0, friend).id
    cards.consume(uuid4(), merchant, shared, Money(30_000))  # owner earns 3000
    cards.consume(uuid4(), merchant, card, Money(10_000))  # draws 8000

    wallet = accounts.user_wallet(owner)
    assert balance(views, accounts.card_balance(card)) == (102_000, 0)
    assert balance(views, wallet) == (3000, 0)

    paid = cards.request_withdrawal(uuid4(), owner, Money(1000))
    failed = cards.request_withdrawal(uuid4(), owner, Money(500))
    assert balance(views, wallet) == (3000, 1500), "posted 3000, 1500 held: 1500 available"

    cards.finish_withdrawal(paid.id, paid=True, detail="ref")
    cards.finish_withdrawal(failed.id, paid=False, detail="refused")
    assert balance(views, wallet) == (2000, 0)
    assert balance(views, accounts.external_payouts("CNY")) == (1000, 0)
    assert balance(views, accounts.merchant_payable(merchant)) == (24_000 + 8000, 0)
    assert all(total == 0 for total in views.balances.trial_balance().values())
