"""A card's cost per use must not grow with its age: what the repository copies on every get of
a card (its cache hands out deep copies) stays the same size however often the card was used,
and the copy is still independent of the cached card."""

from __future__ import annotations

from copy import deepcopy
from typing import Any
from uuid import uuid4

from ledger.cards.application import Cards
from ledger.cards.cards import MainCard
from ledger.money import Money
from tests.card_fakes import FakeMemberTokens, FakePayments, FakePayouts

PAY, BONUS, MAIN_BP, PRICE = 100_000, 10_000, 8000, 100


def objects_copied(aggregate: Any) -> int:
    """How many objects a deep copy made (each one is entered in the memo)."""
    memo: dict[int, Any] = {}
    deepcopy(aggregate, memo)
    return len(memo)


def main_card_used(times: int) -> MainCard:
    card = MainCard(
        id=uuid4(),
        merchant_id=uuid4(),
        activity_id=uuid4(),
        owner_id=uuid4(),
        discount_bp=MAIN_BP,
        balance=Money(10**9),
        shared_cap=None,
    )
    for _ in range(times):
        card.draw(uuid4(), 80, card.id)
    card.collect_events()  # as a save does: a card handed out by the repository holds none
    return card


def test_copying_a_main_card_copies_as_many_objects_after_1000_uses_as_after_10() -> None:
    young, old = main_card_used(10), main_card_used(1000)
    assert len(old.consumptions) == 1000
    assert objects_copied(old) == objects_copied(young)


def test_a_copied_card_is_independent_and_keeps_its_history() -> None:
    card = main_card_used(3)
    copy = deepcopy(card)
    assert copy.consumptions == card.consumptions and copy.balance == card.balance
    copy.draw(uuid4(), 80, copy.id)
    assert len(card.consumptions) == 3 and len(copy.consumptions) == 4
    assert card.balance == copy.balance + 80
    assert card.version == copy.version - 1


def test_a_card_used_1000_times_through_the_cached_repository() -> None:
    app = Cards(
        env={"AGGREGATE_CACHE_MAXSIZE": "100"},
        payments=FakePayments(),
        payouts=FakePayouts(),
        tokens=FakeMemberTokens(),
    )
    merchant, activity, owner, holder = uuid4(), uuid4(), uuid4(), uuid4()
    app.register_merchant(merchant, "Tea house", "Asia/Shanghai")
    app.publish_activity(activity, merchant, Money(PAY), Money(BONUS), MAIN_BP)
    app.register_member(owner, "Owner", "13800138000")
    app.register_member(holder, "Daughter", "13800138001")
    card = app.buy_card(uuid4(), owner, activity).id
    intimate = app.offer_intimate(
        uuid4(), owner, card, holder, Money(10**9), None, None, show_details=True
    ).id
    app.accept_intimate(intimate, holder)
    young = objects_copied(app.main_card(card)), objects_copied(app.intimate_card(intimate))
    consumed = [app.consume(uuid4(), merchant, spender, Money(PRICE)).id for spender in
                (card, intimate) * 500]  # fmt: skip
    main = app.main_card(card)
    assert main.balance == PAY + BONUS - 1000 * 80
    assert app.consumptions_seen_by(owner, main) == consumed
    assert app.intimate_card(intimate).consumption_ids == consumed[1::2]
    # what every later get copies has not grown with the 1000 uses
    old = objects_copied(app.main_card(card)), objects_copied(app.intimate_card(intimate))
    assert old == young
    # a command's mutation of its copy does not reach the cached card
    main.consumptions.append((uuid4(), card))
    assert len(app.main_card(card).consumptions) == 1000
