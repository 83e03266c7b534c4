"""A code batch whose answer was lost: the process died after the batch was saved and before
its answer was stored. The same batch id again returns the codes that were saved (kept
sealed in the `IssuedCodes` vault, a fake here), never new ones and never a second hold."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from ledger.distribution.application import BatchCodesUnavailable, Distribution
from ledger.distribution.code_format import new_code
from ledger.errors import InsufficientStock
from ledger.money import Money

STOCK = 10
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Vault:
    """The IssuedCodes port in memory (the adapter seals; the fake just keeps)."""

    def __init__(self) -> None:
        self.kept: dict[UUID, list[tuple[UUID, list[str]]]] = defaultdict(list)

    def keep(self, batch_id: UUID, channel_id: UUID, codes: list[str]) -> None:
        self.kept[batch_id].append((channel_id, list(codes)))

    def recall(self, batch_id: UUID, channel_id: UUID) -> list[list[str]]:
        return [codes for owner, codes in self.kept.get(batch_id, []) if owner == channel_id]

    def forget(self, batch_id: UUID) -> None:
        self.kept.pop(batch_id, None)


class Desk:
    def __init__(self, vault: Vault | None) -> None:
        self.vault = vault
        self.app = Distribution(env={"CODE_HASH_KEY": "unit-test-code-key"}, issued_codes=vault)
        platform, self.product, self.shop = uuid4(), uuid4(), uuid4()
        self.app.register_platform(platform, "iQiyi", "https://gateway.iqiyi.example")
        self.app.register_product(
            self.product, platform, "VIP monthly", 30, Money(3000), Money(2000)
        )
        self.app.register_channel(self.shop, "Shop")
        self.app.deposit(uuid4(), self.shop, Money(100_000))
        self.app.purchase_stock(uuid4(), self.shop, self.product, STOCK)

    def issue(self, batch_id: UUID, quantity: int = 3) -> list[str]:
        _, codes = self.app.issue_codes(batch_id, self.shop, self.product, quantity)
        return codes

    def on_hand(self) -> int:
        return self.app.channel(self.shop).stock_of(self.product)

    def redeem(self, typed: str) -> str:
        recharge = uuid4()
        code = self.app.reserve_code(
            self.app.find_code(typed).id, recharge, "13900000001", self.shop, NOW
        )
        return self.app.redeem_code(code.id, recharge).status


@pytest.fixture
def desk() -> Desk:
    return Desk(Vault())


def test_a_batch_whose_answer_was_lost_is_answered_again_with_the_codes_saved(
    desk: Desk,
) -> None:
    batch_id = uuid4()
    first = desk.issue(batch_id)  # saved; the process dies before the answer is stored

    again = desk.issue(batch_id)

    assert again == first
    assert desk.on_hand() == STOCK - 3
    assert [desk.redeem(code) for code in again] == ["redeemed"] * 3


def test_an_attempt_that_was_never_saved_does_not_stand_for_the_batch(desk: Desk) -> None:
    batch_id = uuid4()
    stale = [new_code() for _ in range(3)]
    desk.vault.keep(batch_id, desk.shop, stale)  # type: ignore[union-attr]  # kept, then died
    saved = desk.issue(batch_id)

    assert desk.issue(batch_id) == saved != stale


def test_once_the_answer_is_stored_the_vault_forgets_the_codes(desk: Desk) -> None:
    batch_id = uuid4()
    desk.issue(batch_id)
    desk.app.codes_shown(batch_id)

    assert desk.vault.kept == {}  # type: ignore[union-attr]
    with pytest.raises(BatchCodesUnavailable, match=str(batch_id)):
        desk.issue(batch_id)
    assert desk.on_hand() == STOCK - 3


def test_a_refused_batch_leaves_nothing_in_the_vault(desk: Desk) -> None:
    with pytest.raises(InsufficientStock):
        desk.issue(uuid4(), STOCK + 1)

    assert desk.vault.kept == {}  # type: ignore[union-attr]
    assert desk.on_hand() == STOCK


def test_without_a_vault_the_refusal_names_the_batch_so_that_it_can_be_voided() -> None:
    desk = Desk(None)
    batch_id = uuid4()
    desk.issue(batch_id)

    with pytest.raises(BatchCodesUnavailable, match=str(batch_id)) as refused:
        desk.issue(batch_id)
    assert refused.value.code == "state_conflict"
    assert len(desk.app.void_batch(desk.shop, batch_id)) == 3
    assert desk.on_hand() == STOCK
