"""Cards on the real PostgreSQL: an intimate holder and the owner spend the last of a balance
at once, from threads of two application instances (as two API processes would)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from uuid import UUID, uuid4

import pytest

from adapters.database import event_store_env, open_pool
from adapters.tokens import PostgresMemberTokens
from ledger import accounts
from ledger.cards.application import Cards
from ledger.errors import InsufficientBalance
from ledger.money import Money

pytestmark = pytest.mark.integration

PAY, BONUS, DISCOUNT = 100_000, 10_000, 8000
PRICE = 12_500  # draws 10_000: the balance holds exactly 11 of them


@pytest.fixture
def apps(database_url: str) -> Iterator[Callable[[], Cards]]:
    made: list[Cards] = []
    pool = open_pool(database_url, size=1, name="cards-tokens-test")

    def make() -> Cards:
        app = Cards(env=event_store_env(database_url), tokens=PostgresMemberTokens(pool))
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()
    pool.close()


def postings_by_account(app: Cards) -> Counter[str]:
    totals: Counter[str] = Counter()
    for notification in app.recorder.select_notifications(start=1, limit=100_000):
        for leg in getattr(app.mapper.to_domain_event(notification), "postings", None) or ():
            totals[leg.account] += leg.amount
    return totals


def test_the_owner_and_an_intimate_holder_never_overdraw_the_main_card(
    apps: Callable[[], Cards],
) -> None:
    first, second = apps(), apps()
    merchant, owner, holder, activity = uuid4(), uuid4(), uuid4(), uuid4()
    first.register_merchant(merchant, "Tea house", "Asia/Shanghai")
    first.register_member(owner, "Owner", "13800138000")
    first.register_member(holder, "Daughter", "13800138001")
    first.publish_activity(activity, merchant, Money(PAY), Money(BONUS), DISCOUNT)
    card = first.open_card(uuid4(), owner, activity, "sandbox").id
    intimate = first.offer_intimate(
        uuid4(), owner, card, holder, Money(10**9), None, None, show_details=True
    ).id
    second.accept_intimate(intimate, holder)

    attempts = [(app, spender) for app in (first, second) for spender in (card, intimate) * 5]
    start = threading.Barrier(len(attempts))
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def spend(app: Cards, spender: UUID) -> None:
        start.wait()
        try:
            app.consume(uuid4(), merchant, spender, Money(PRICE))
            outcome = "main" if spender == card else "intimate"
        except InsufficientBalance:
            outcome = "refused"
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=spend, args=attempt) for attempt in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert outcomes["main"] + outcomes["intimate"] == 11
    assert outcomes["refused"] == len(attempts) - 11
    assert outcomes["intimate"] > 0 and outcomes["main"] > 0
    fresh = apps()
    assert fresh.main_card(card).balance == 0
    assert fresh.intimate_card(intimate).drawn_total == 10_000 * outcomes["intimate"]
    ledger = postings_by_account(fresh)
    assert ledger[accounts.card_balance(card)] == 0
    assert ledger[accounts.merchant_payable(merchant)] == PAY + BONUS
    assert sum(ledger.values()) == 0


def test_a_repeated_consumption_from_two_processes_records_once(
    apps: Callable[[], Cards],
) -> None:
    first, second = apps(), apps()
    merchant, owner, activity = uuid4(), uuid4(), uuid4()
    first.register_merchant(merchant, "Tea house", "Asia/Shanghai")
    first.register_member(owner, "Owner", "13800138000")
    first.publish_activity(activity, merchant, Money(PAY), None, DISCOUNT)
    card = first.open_card(uuid4(), owner, activity, "sandbox").id
    consumption = uuid4()
    start = threading.Barrier(8)

    def consume(app: Cards) -> None:
        start.wait()
        app.consume(consumption, merchant, card, Money(PRICE))

    threads = [threading.Thread(target=consume, args=(app,)) for app in (first, second) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert apps().main_card(card).balance == PAY - 10_000
