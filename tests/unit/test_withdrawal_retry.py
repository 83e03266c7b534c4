"""The sweeper's use case: a withdrawal left pending is retried with the same payout id
until paid or failed, and paid once."""

from __future__ import annotations

from uuid import uuid4

import pytest

from ledger import accounts
from ledger.cards.application import Cards
from ledger.errors import NotFound, Unavailable
from ledger.money import Money
from tests.unit.test_card_use_cases import Shop


@pytest.fixture
def shop() -> Shop:
    return Shop()


def test_a_pending_withdrawal_whose_answer_was_lost_is_paid_once_by_the_retry(
    shop: Shop,
) -> None:
    shop.owner_earns(3000)
    shop.payouts.answers_to_lose = 2
    withdrawal = uuid4()
    with pytest.raises(ConnectionError):
        shop.app.withdraw(withdrawal, shop.owner, Money(1000))
    with pytest.raises(ConnectionError):
        shop.app.retry_withdrawal(withdrawal)
    assert shop.app.withdrawal(withdrawal).status == "pending"

    retried = shop.app.retry_withdrawal(withdrawal)

    assert retried.status == "paid"
    assert shop.payouts.asked == [withdrawal] * 3
    assert shop.payouts.paid_out == 1000
    wallet = shop.app.wallet(shop.owner)
    assert (wallet.posted["CNY"], wallet.held["CNY"]) == (2000, 0)
    assert shop.ledger(accounts.external_payouts("CNY")) == 1000


def test_a_retried_payout_that_is_refused_releases_the_hold(shop: Shop) -> None:
    shop.owner_earns(3000)
    shop.payouts.refusing, shop.payouts.answers_to_lose = True, 1
    withdrawal = uuid4()
    with pytest.raises(ConnectionError):
        shop.app.withdraw(withdrawal, shop.owner, Money(1000))

    failed = shop.app.retry_withdrawal(withdrawal)

    assert (failed.status, failed.failure) == ("failed", "the bank said no")
    wallet = shop.app.wallet(shop.owner)
    assert (wallet.posted["CNY"], wallet.held["CNY"]) == (3000, 0)
    assert shop.payouts.paid_out == 0


def test_a_finished_withdrawal_is_not_asked_again(shop: Shop) -> None:
    shop.owner_earns(3000)
    withdrawal = shop.app.withdraw(uuid4(), shop.owner, Money(1000)).id
    again = shop.app.retry_withdrawal(withdrawal)
    assert again.status == "paid"
    assert shop.payouts.asked == [withdrawal]


def test_retrying_needs_the_payouts_port_and_a_known_withdrawal(shop: Shop) -> None:
    with pytest.raises(NotFound):
        shop.app.retry_withdrawal(uuid4())
    with pytest.raises(Unavailable):
        Cards(env={}).retry_withdrawal(uuid4())
