"""A state machine over member cards: open, share, pass, claim, consume, refund, withdraw,
freeze and revoke in any order, against a plain model of what each command should do.

After every step the whole log is checked: the postings of all events sum to zero per asset,
the balance the postings imply for every card and wallet equals what the aggregate holds and
what the model expects, holds equal what withdrawals in flight set aside, and no main card's
balance is negative. A refused command must record nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from ledger import accounts
from ledger.cards.application import Cards
from ledger.cards.intimate import ACCEPT_WITHIN
from ledger.cards.splits import apply_bp, split_shared
from ledger.cards.wallets import wallet_id
from ledger.errors import (
    AlreadyExists,
    CardExpired,
    CardFrozen,
    CardNotAccepted,
    CardNotPassable,
    CardRevoked,
    DomainError,
    InsufficientBalance,
    InvalidAmount,
    LimitExceeded,
    NotCardHolder,
    NotFound,
    NotPermitted,
    ShareDepthExceeded,
    StateConflict,
)
from ledger.money import Money
from tests.card_fakes import FakeMemberTokens, FakePayments, FakePayouts

T = TypeVar("T")

MEMBERS = 4
ACTIVITIES = [(10_000, 1_000, 8000, None), (5_000, 0, 9500, 20_000)]
"""(pay, bonus, main discount, shared cap bp)"""


@dataclass
class MainModel:
    owner: int
    balance: int
    discount: int
    shared_cap: int | None
    shared_consumed: int = 0


@dataclass
class SharedModel:
    main: UUID
    owner: int
    holder: int | None
    sharer: int | None
    discount: int
    ratio: int
    depth: int
    expires_at: datetime | None
    cap: int | None
    max_uses: int | None
    spent: int = 0
    uses: int = 0
    claimed: set[int] = field(default_factory=set)


@dataclass
class IntimateModel:
    main: UUID
    owner: int
    holder: int
    monthly: int
    per_use: int | None
    total: int | None
    offered_at: datetime
    accepted: bool = False
    frozen: bool = False
    revoked: bool = False
    drawn_total: int = 0
    by_month: Counter[str] = field(default_factory=Counter)


@dataclass
class ConsumptionModel:
    kind: str
    card: UUID
    main: UUID
    price: int
    paid: int
    drawn: int
    merchant: int
    wallets: dict[int, int]
    month: str
    refunded: bool = False


class Refused(Exception):
    """The model expects the command to be refused with one of these."""


class CardsMachine(RuleBasedStateMachine):
    mains = Bundle("mains")
    shared = Bundle("shared")
    intimates = Bundle("intimates")
    consumptions = Bundle("consumptions")
    pending = Bundle("pending")

    @initialize()
    def open_the_shop(self) -> None:
        self.now = datetime(2024, 1, 31, 10, 0, tzinfo=UTC)  # 18:00 in Shanghai
        self.payments = FakePayments()
        self.app = Cards(
            env={"AGGREGATE_CACHE_MAXSIZE": "1000"},
            clock=lambda: self.now,
            payments=self.payments,
            payouts=FakePayouts(),
            tokens=FakeMemberTokens(),
        )
        self.merchant = uuid4()
        self.app.register_merchant(self.merchant, "Tea house", "Asia/Shanghai")
        self.members = [uuid4() for _ in range(MEMBERS)]
        for number, member in enumerate(self.members):
            self.app.register_member(member, f"member {number}", "13800138000")
        self.activities = [uuid4() for _ in ACTIVITIES]
        for activity, (pay, bonus, bp, cap) in zip(self.activities, ACTIVITIES, strict=True):
            self.app.publish_activity(activity, self.merchant, Money(pay), Money(bonus), bp, cap)
        self.main_models: dict[UUID, MainModel] = {}
        self.shared_models: dict[UUID, SharedModel] = {}
        self.intimate_models: dict[UUID, IntimateModel] = {}
        self.consumption_models: dict[UUID, ConsumptionModel] = {}
        self.wallet_posted: Counter[int] = Counter()
        self.wallet_held: Counter[int] = Counter()
        self.withdrawals: dict[UUID, tuple[int, int]] = {}
        self.payments_in = 0
        self.paid_out = 0
        self.ledger: Counter[tuple[str, str]] = Counter()
        self.holds: Counter[tuple[str, str]] = Counter()
        self.read_up_to = 0

    # running commands against expectations

    def recorded(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def attempt(self, expected: set[type[DomainError]], command: Callable[..., T], *args: Any) -> T:
        """Run the command; it must be refused exactly when the model expects a refusal."""
        before = self.recorded()
        try:
            result = command(*args)
        except DomainError as refusal:
            assert expected, f"refused with {refusal!r}, the model expected success"
            assert type(refusal) in expected, f"{refusal!r} is none of {expected}"
            assert self.recorded() == before, "a refused command recorded something"
            event(f"{command.__name__} refused: {refusal.code}")
            raise Refused from refusal
        assert not expected, f"went through, the model expected one of {expected}"
        event(f"{command.__name__} recorded")
        return result

    def month(self) -> str:
        return self.now.astimezone(self.app.merchant(self.merchant).zone).strftime("%Y-%m")

    # rules

    @rule(target=mains, member=st.integers(0, MEMBERS - 1), which=st.integers(0, 1))
    def open_card(self, member: int, which: int) -> Any:
        pay, bonus, bp, cap_bp = ACTIVITIES[which]
        card = self.app.buy_card(uuid4(), self.members[member], self.activities[which])
        cap = None if cap_bp is None else apply_bp(pay, cap_bp)
        self.main_models[card.id] = MainModel(member, pay + bonus, bp, cap)
        self.payments_in += pay
        return card.id

    @rule(
        target=shared,
        main=mains,
        extra_bp=st.integers(0, 3000),
        ratio=st.sampled_from([0, 1, 3333, 9999]),
        to=st.none() | st.integers(0, MEMBERS - 1),
        hours=st.none() | st.integers(1, 48),
        cap=st.none() | st.integers(1, 20_000),
        max_uses=st.none() | st.integers(1, 3),
    )
    def share(
        self,
        main: UUID,
        extra_bp: int,
        ratio: int,
        to: int | None,
        hours: int | None,
        cap: int | None,
        max_uses: int | None,
    ) -> Any:
        model = self.main_models[main]
        discount = min(10_000, model.discount + extra_bp)
        expires_at = self.now + timedelta(hours=hours) if hours else None
        expected: set[type[DomainError]] = {NotPermitted} if to == model.owner else set()
        try:
            card = self.attempt(
                expected,
                self.app.share_card,
                uuid4(),
                self.members[model.owner],
                main,
                discount,
                ratio,
                None if to is None else self.members[to],
                expires_at,
                None if cap is None else Money(cap),
                max_uses,
            )
        except Refused:
            return multiple()
        self.shared_models[card.id] = SharedModel(
            main, model.owner, to, None, discount, ratio, 0, expires_at, cap, max_uses
        )
        return card.id

    @rule(target=shared, card=shared, to=st.none() | st.integers(0, MEMBERS - 1))
    def pass_on(self, card: UUID, to: int | None) -> Any:
        model = self.shared_models.get(card)
        expected: set[type[DomainError]] = set()
        if model is None:
            expected.add(NotFound)
            holder = 0
        else:
            holder = model.holder if model.holder is not None else model.owner
            if model.holder is None:
                expected.add(NotCardHolder)
            elif model.expires_at is not None and self.now >= model.expires_at:
                expected.add(CardExpired)
            elif model.ratio == 0:
                expected.add(CardNotPassable)
            elif model.depth >= 1:
                expected.add(ShareDepthExceeded)
            elif to == holder:
                expected.add(NotPermitted)
        try:
            passed = self.attempt(
                expected,
                self.app.pass_on,
                uuid4(),
                self.members[holder],
                card,
                None if to is None else self.members[to],
            )
        except Refused:
            return multiple()
        assert model is not None
        self.shared_models[passed.id] = SharedModel(
            model.main,
            model.owner,
            to,
            holder,
            model.discount,
            model.ratio,
            model.depth + 1,
            model.expires_at,
            model.cap,
            model.max_uses,
        )
        return passed.id

    @rule(target=shared, listing=shared, member=st.integers(0, MEMBERS - 1))
    def claim(self, listing: UUID, member: int) -> Any:
        model = self.shared_models.get(listing)
        expected: set[type[DomainError]] = set()
        if model is None or model.holder is not None:
            expected.add(NotFound)
        elif member in (model.owner, model.sharer):
            expected.add(NotPermitted)
        elif model.expires_at is not None and self.now >= model.expires_at:
            expected.add(CardExpired)
        elif member in model.claimed:
            expected.add(AlreadyExists)
        try:
            card = self.attempt(expected, self.app.claim, uuid4(), self.members[member], listing)
        except Refused:
            return multiple()
        assert model is not None
        model.claimed.add(member)
        self.shared_models[card.id] = SharedModel(
            model.main,
            model.owner,
            member,
            model.sharer,
            model.discount,
            model.ratio,
            model.depth,
            model.expires_at,
            model.cap,
            model.max_uses,
        )
        return card.id

    @rule(
        target=intimates,
        main=mains,
        holder=st.integers(0, MEMBERS - 1),
        monthly=st.integers(1, 10_000),
        per_use=st.none() | st.integers(1, 5_000),
        total=st.none() | st.integers(1, 20_000),
    )
    def offer_intimate(
        self, main: UUID, holder: int, monthly: int, per_use: int | None, total: int | None
    ) -> Any:
        model = self.main_models[main]
        expected: set[type[DomainError]] = {NotPermitted} if holder == model.owner else set()
        try:
            card = self.attempt(
                expected,
                self.app.offer_intimate,
                uuid4(),
                self.members[model.owner],
                main,
                self.members[holder],
                Money(monthly),
                None if per_use is None else Money(per_use),
                None if total is None else Money(total),
                True,
            )
        except Refused:
            return multiple()
        self.intimate_models[card.id] = IntimateModel(
            main, model.owner, holder, monthly, per_use, total, self.now
        )
        return card.id

    @rule(card=intimates)
    def accept(self, card: UUID) -> None:
        model = self.intimate_models.get(card)
        expected: set[type[DomainError]] = set()
        if model is None:
            expected.add(NotFound)
        elif model.revoked:
            expected.add(CardRevoked)
        elif not model.accepted and self.now > model.offered_at + ACCEPT_WITHIN:
            expected.add(CardExpired)
        holder = self.members[model.holder] if model else self.members[0]
        try:
            self.attempt(expected, self.app.accept_intimate, card, holder)
        except Refused:
            return
        assert model is not None
        model.accepted = True

    @rule(card=intimates, change=st.sampled_from(["freeze", "unfreeze", "revoke"]))
    def owner_changes_intimate(self, card: UUID, change: str) -> None:
        model = self.intimate_models.get(card)
        expected: set[type[DomainError]] = set()
        if model is None:
            expected.add(NotFound)
        elif model.revoked and change != "revoke":
            expected.add(CardRevoked)
        owner = self.members[model.owner] if model else self.members[0]
        try:
            self.attempt(expected, getattr(self.app, change), card, owner)
        except Refused:
            return
        assert model is not None
        if change == "revoke":
            model.revoked = True
        else:
            model.frozen = change == "freeze"

    @rule(target=consumptions, card=mains, price=st.integers(-5, 20_000))
    def consume_main(self, card: UUID, price: int) -> Any:
        model = self.main_models[card]
        drawn = apply_bp(price, model.discount) if price > 0 else 0
        expected: set[type[DomainError]] = set()
        if drawn <= 0:
            expected.add(InvalidAmount)
        elif drawn > model.balance:
            expected.add(InsufficientBalance)
        recorded = self.record_consumption(expected, "main", card, card, price, drawn)
        return multiple() if recorded is None else recorded

    @rule(target=consumptions, card=intimates, price=st.integers(1, 10_000))
    def consume_intimate(self, card: UUID, price: int) -> Any:
        model = self.intimate_models[card]
        expected: set[type[DomainError]] = set()
        main = self.main_models[model.main]
        drawn = apply_bp(price, main.discount)
        month = self.month()
        if drawn == 0:
            expected.add(InvalidAmount)
        elif model.revoked:
            expected.add(CardRevoked)
        elif model.frozen:
            expected.add(CardFrozen)
        elif not model.accepted:
            lapsed = self.now > model.offered_at + ACCEPT_WITHIN
            expected.add(CardExpired if lapsed else CardNotAccepted)
        elif (
            (model.per_use is not None and drawn > model.per_use)
            or model.by_month[month] + drawn > model.monthly
            or (model.total is not None and model.drawn_total + drawn > model.total)
        ):
            expected.add(LimitExceeded)
        elif drawn > main.balance:
            expected.add(InsufficientBalance)
        recorded = self.record_consumption(expected, "intimate", card, model.main, price, drawn)
        if recorded is None:
            return multiple()
        model.drawn_total += drawn
        model.by_month[month] += drawn
        return recorded

    @rule(target=consumptions, card=shared, price=st.integers(1, 10_000))
    def consume_shared(self, card: UUID, price: int) -> Any:
        model = self.shared_models[card]
        expected: set[type[DomainError]] = set()
        main = self.main_models[model.main]
        paid = apply_bp(price, model.discount)
        if model.holder is None:
            expected.add(NotCardHolder)
        elif model.expires_at is not None and self.now >= model.expires_at:
            expected.add(CardExpired)
        elif paid == 0:
            expected.add(InvalidAmount)
        elif self.over_a_limit(model, main, price, paid):
            expected.add(LimitExceeded)
        recorded = self.record_consumption(expected, "shared", card, model.main, price, 0)
        if recorded is None:
            return multiple()
        model.spent += paid
        model.uses += 1
        main.shared_consumed += price
        return recorded

    @staticmethod
    def over_a_limit(model: SharedModel, main: MainModel, price: int, paid: int) -> bool:
        return (
            (model.cap is not None and model.spent + paid > model.cap)
            or (model.max_uses is not None and model.uses >= model.max_uses)
            or (main.shared_cap is not None and main.shared_consumed + price > main.shared_cap)
        )

    def record_consumption(
        self,
        expected: set[type[DomainError]],
        kind: str,
        card: UUID,
        main: UUID,
        price: int,
        drawn: int,
    ) -> UUID | None:
        try:
            consumption = self.attempt(
                expected, self.app.consume, uuid4(), self.merchant, card, Money(price)
            )
        except Refused:
            return None
        wallets: dict[int, int] = {}
        merchant = drawn
        paid = 0
        if kind == "shared":
            model = self.shared_models[card]
            split = split_shared(
                price,
                self.main_models[main].discount,
                model.discount,
                model.ratio,
                model.sharer is not None,
            )
            paid, merchant = split.consumer_pays, split.merchant
            if split.sharer:
                assert model.sharer is not None
                wallets[model.sharer] = split.sharer
            if split.owner:
                wallets[model.owner] = wallets.get(model.owner, 0) + split.owner
            self.payments_in += paid
        assert consumption.consumer_pays == Money(paid)
        assert consumption.card_debited == Money(drawn)
        assert sum(line["amount"] for line in consumption.splits) == paid + drawn
        self.main_models[main].balance -= drawn
        for member, amount in wallets.items():
            self.wallet_posted[member] += amount
        self.consumption_models[consumption.id] = ConsumptionModel(
            kind, card, main, price, paid, drawn, merchant, wallets, self.month()
        )
        return consumption.id

    @rule(consumption=consumptions)
    def refund(self, consumption: UUID) -> None:
        model = self.consumption_models.get(consumption)
        expected: set[type[DomainError]] = set()
        if model is None:
            expected.add(NotFound)
        elif model.refunded:
            expected.add(StateConflict)
        try:
            self.attempt(expected, self.app.refund_consumption, uuid4(), self.merchant, consumption)
        except Refused:
            return
        assert model is not None
        model.refunded = True
        main = self.main_models[model.main]
        main.balance += model.drawn
        for member, amount in model.wallets.items():
            self.wallet_posted[member] -= amount
        self.payments_in -= model.paid
        if model.kind == "intimate":
            intimate = self.intimate_models[model.card]
            intimate.drawn_total -= model.drawn
            intimate.by_month[model.month] -= model.drawn
        elif model.kind == "shared":
            shared = self.shared_models[model.card]
            shared.spent -= model.paid
            shared.uses -= 1
            main.shared_consumed -= model.price

    def earners(self) -> list[int]:
        return [m for m in range(MEMBERS) if self.wallet_posted[m] - self.wallet_held[m] > 0]

    @precondition(lambda self: self.earners())
    @rule(target=pending, data=st.data())
    def withdraw(self, data: st.DataObject) -> Any:
        member = data.draw(st.sampled_from(self.earners()), label="member")
        available = self.wallet_posted[member] - self.wallet_held[member]
        amount = data.draw(st.integers(1, available + 10), label="amount")
        expected: set[type[DomainError]] = {InsufficientBalance} if amount > available else set()
        try:
            withdrawal = self.attempt(
                expected, self.app.request_withdrawal, uuid4(), self.members[member], Money(amount)
            )
        except Refused:
            return multiple()
        self.wallet_held[member] += amount
        self.withdrawals[withdrawal.id] = (member, amount)
        return withdrawal.id

    @rule(withdrawal=consumes(pending), paid=st.booleans())
    def payout_answers(self, withdrawal: UUID, paid: bool) -> None:
        if withdrawal not in self.withdrawals:
            with pytest.raises(NotFound):
                self.app.finish_withdrawal(withdrawal, paid, "sandbox")
            return
        member, amount = self.withdrawals.pop(withdrawal)
        result = self.app.finish_withdrawal(withdrawal, paid, "sandbox")
        assert result.status == ("paid" if paid else "failed")
        self.wallet_held[member] -= amount
        if paid:
            self.wallet_posted[member] -= amount
            self.paid_out += amount

    @rule(main=mains, stranger=st.integers(0, MEMBERS - 1))
    def strangers_find_nothing(self, main: UUID, stranger: int) -> None:
        """Another member, another merchant, an unknown card: each gets not_found."""
        before = self.recorded()
        if stranger != self.main_models[main].owner:
            with pytest.raises(NotFound):
                self.app.share_card(uuid4(), self.members[stranger], main, 10_000, 0, None)
            with pytest.raises(NotFound):
                self.app.card_for(self.members[stranger], main)
        with pytest.raises(NotFound):
            self.app.consume(uuid4(), uuid4(), main, Money(100))
        with pytest.raises(NotFound):
            self.app.consume(uuid4(), self.merchant, uuid4(), Money(100))
        with pytest.raises(NotFound):
            self.app.refund_consumption(uuid4(), self.merchant, uuid4())
        assert self.recorded() == before

    @rule(hours=st.integers(1, 30))
    def time_passes(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @precondition(lambda self: self.consumption_models)
    @rule(data=st.data())
    def a_repeated_consumption_records_nothing(self, data: st.DataObject) -> None:
        consumption = data.draw(st.sampled_from(sorted(self.consumption_models)))
        model = self.consumption_models[consumption]
        before = self.recorded()
        again = self.app.consume(consumption, self.merchant, model.card, Money(model.price))
        assert again.id == consumption
        assert self.recorded() == before

    # invariants

    def read_new_events(self) -> None:
        notifications = self.app.recorder.select_notifications(
            start=self.read_up_to + 1, limit=100_000
        )
        for notification in notifications:
            domain_event = self.app.mapper.to_domain_event(notification)
            for leg in getattr(domain_event, "postings", None) or ():
                self.ledger[(leg.account, leg.asset)] += leg.amount
            for leg in getattr(domain_event, "holds", None) or ():
                self.holds[(leg.account, leg.asset)] += leg.amount
            self.read_up_to = notification.id

    def peek(self, aggregate_id: UUID) -> Any:
        """The cached aggregate itself, without the copy the application makes (read only)."""
        return self.app.repository.get(aggregate_id, deepcopy_from_cache=False)

    @invariant()
    def money_is_conserved(self) -> None:
        if not hasattr(self, "app"):
            return
        self.read_new_events()
        per_asset: Counter[str] = Counter()
        for (_account, asset), amount in self.ledger.items():
            per_asset[asset] += amount
        assert all(total == 0 for total in per_asset.values()), per_asset
        assert self.ledger[(accounts.external_payments("CNY"), "CNY")] == -self.payments_in
        assert self.payments.kept == self.payments_in, "the gateway keeps what the ledger took in"
        assert self.ledger[(accounts.external_payouts("CNY"), "CNY")] == self.paid_out

    @invariant()
    def balances_implied_match_the_aggregates(self) -> None:
        if not hasattr(self, "app"):
            return
        self.read_new_events()
        for card, model in self.main_models.items():
            aggregate = self.peek(card)
            implied = self.ledger[(accounts.card_balance(card), "CNY")]
            assert implied == aggregate.balance == model.balance >= 0
            assert aggregate.shared_consumed == model.shared_consumed
        for number, member in enumerate(self.members):
            wallet = self.peek(wallet_id(member))
            account = (accounts.user_wallet(member), "CNY")
            assert self.ledger[account] == wallet.posted.get("CNY", 0)
            assert wallet.posted.get("CNY", 0) == self.wallet_posted[number]
            assert self.holds[account] == wallet.held.get("CNY", 0) == self.wallet_held[number]
        merchant_part = sum(c.merchant for c in self.consumption_models.values() if not c.refunded)
        assert self.ledger[(accounts.merchant_payable(self.merchant), "CNY")] == merchant_part

    @invariant()
    def intimate_cards_stay_within_their_limits(self) -> None:
        if not hasattr(self, "app"):
            return
        for card, model in self.intimate_models.items():
            aggregate = self.peek(card)
            assert aggregate.drawn_total == model.drawn_total
            assert all(drawn <= model.monthly for drawn in aggregate.drawn_by_month.values())
            assert model.total is None or aggregate.drawn_total <= model.total


CardsMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_cards_state_machine = CardsMachine.TestCase
