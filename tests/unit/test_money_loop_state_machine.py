"""A Hypothesis state machine over the whole money loop, in memory: the real Distribution,
Recharges and Settlements applications (eventsourcing's POPO persistence) with fakes only at
the edge: one video platform that credits, fails, answers unknown, credits after saying it
failed, reviews refunds, calls back (duplicated, late, out of order) and publishes a statement
per day computed from what IT credited and refunded, with differences injected; the step queue
and the webhooks; the settlement payments bank.

Rules: buy stock, issue codes (some expiring), place recharges (reserve), run saga steps with
the platform's answers, platform callbacks, refund requests and their review, code expiries
with the clock moved, the runtime dispatcher's work (settle, settle refunds, late-success
cases) delayed or delivered twice, days ending, statements published, settlements opened and
advanced, cases resolved, approvals. Our side of a settlement is fed from the recharge events
as they are recorded: `Succeeded` is a charge at the wholesale cost, `RefundAccepted` a
refund, each on the day (of the machine's clock) it was recorded.

After every step:

* every posting of every stored event of the three logs sums to zero per asset;
* units are conserved: per product what was bought is on hand, held by codes, consumed or
  breakage, and each of those balances is what the codes and the channel say;
* no recharge succeeds twice, is refunded twice or returns its unit twice; the platform
  credits an order once; our side bills an (order, kind) once; the bank is paid once per
  payment id and exactly what the settlements booked as paid out;
* every reconciled settlement keeps the invariant of `ledger.settlement.decisions`:
  agreed + open cases (at the platform's figure) + withheld = statement lines + their lines
  carried in - their lines carried out; no order is matched twice;
* a late success (a credit after we failed) moves no unit and no money, and opens one case.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from contextlib import suppress
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger import accounts
from ledger.distribution.application import Distribution
from ledger.distribution.codes import Code
from ledger.errors import DomainError
from ledger.money import Money
from ledger.postings import Postings
from ledger.recharges.application import Recharges
from ledger.recharges.callbacks import Callback
from ledger.recharges.decisions import StepResult
from ledger.recharges.platform_news import PlatformNews
from ledger.recharges.refunds import RefundAnswer
from ledger.recharges.saga import Recharge
from ledger.recharges.steps import RechargeSteps
from ledger.settlement.application import Settlements
from ledger.settlement.cases import Case, late_success_case_id
from ledger.settlement.chunks import rows_of
from ledger.settlement.decisions import OUTCOMES
from ledger.settlement.late_successes import LateSuccesses
from ledger.settlement.saga import Settlement, settlement_id
from ledger.settlement.steps import SettlementSteps
from tests.settlement_fakes import Clock, FakeLedgerSide, FakePayments, PaymentCrashed, line

# The machine's days lie ahead of the wall clock: a saga's first step is due at the time
# its reservation was recorded (wall clock), so every step is due on the machine's clock.
FIRST = datetime.now(UTC).date() + timedelta(days=2)
DAYS = 4
WHOLESALE, PRICE = 2000, 3000
GATEWAY = "https://gateway.platform.example"
ANSWERS = ("success", "failure", "unknown_credited", "unknown_not_sent", "failed_but_credits")
REFUND_ANSWERS = ("accepted", "rejected", "pending", "unknown_accepted", "unknown_not_sent")
DIFFERENCES = ("none", "none", "dropped", "amount", "extra")


def start_of(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


class Platform:
    """The video platform at the edge: credits an order at most once, reviews refunds (at
    most one accepted per order), and bills each day what it did that day."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.next_answer = "success"
        self.next_refund_answer = "accepted"
        self.credited: dict[str, date] = {}  # order no -> the day it was credited
        self.credit_calls: Counter[str] = Counter()
        self.asked: set[str] = set()  # the orders it was asked to credit
        self.failed: set[str] = set()  # said failed (and did not credit, or not yet)
        self.refunds: dict[str, tuple[str, str]] = {}  # refund no -> (order no, decision)
        self.refunded: dict[str, date] = {}  # order no -> the day it was taken back
        self.extras = 0
        self.billed: dict[date, list[Any]] = defaultdict(list)
        self.published: set[date] = set()
        self.difference: dict[str, str] = {}

    def gateway_for(self, base_url: str) -> Platform:
        assert base_url == GATEWAY
        return self

    def today(self) -> date:
        return self.clock().date()

    def credit(self, order_no: str) -> None:
        self.credit_calls[order_no] += 1
        if order_no in self.credited:
            return
        self.credited[order_no] = self.today()
        self.failed.discard(order_no)
        self._bill(order_no, "charge")

    def take_back(self, order_no: str) -> None:
        if order_no not in self.refunded:
            self.refunded[order_no] = self.today()
            self._bill(order_no, "refund")

    def _bill(self, order_no: str, kind: Any) -> None:
        day = self.today()
        if day in self.published:  # that statement is out: the line goes on the next one
            day += timedelta(days=1)
        difference = self.difference.get(order_no, "none")
        if difference == "dropped":
            return
        amount = WHOLESALE + (100 if difference == "amount" else 0)
        self.billed[day].append(line(order_no, amount, day, kind))
        if difference == "extra":
            self.extras += 1
            self.billed[day].append(line(f"X{self.extras:04d}", WHOLESALE, day))

    def credited_result(self, order_no: str) -> StepResult:
        day = self.credited[order_no]
        return StepResult(
            "succeeded",
            platform_order_id=f"PO-{order_no[:8]}",
            starts_at=start_of(day),
            ends_at=start_of(day) + timedelta(days=30),
        )

    # the partner API

    def recharge(
        self, order_no: str, account: str, product_code: str, duration_days: int
    ) -> StepResult:
        self.asked.add(order_no)
        if order_no in self.credited:  # the order number is the idempotency key
            return self.credited_result(order_no)
        answer = self.next_answer
        if answer == "success":
            self.credit(order_no)
            return self.credited_result(order_no)
        if answer == "unknown_credited":
            self.credit(order_no)
            return StepResult("unknown", reason="timeout", cause="timeout")
        if answer == "unknown_not_sent":
            return StepResult("unknown", reason="connection refused", cause="connect")
        self.failed.add(order_no)  # failure, or failed_but_credits (credits on late_credit)
        return StepResult("failed", reason="account_invalid: no such account")

    def order_status(self, order_no: str) -> StepResult:
        if order_no in self.credited:
            return self.credited_result(order_no)
        if order_no in self.failed:
            return StepResult("failed", reason="account_invalid: no such account")
        return StepResult("not_found", reason="no such order")

    def refund(self, order_no: str, refund_no: str, amount: int | None = None) -> RefundAnswer:
        assert amount == WHOLESALE
        if refund_no not in self.refunds:
            answer = self.next_refund_answer
            if answer == "unknown_not_sent":
                return RefundAnswer("unknown", reason="connection refused", cause="connect")
            decision = answer.removeprefix("unknown_")
            if decision == "accepted" and (
                order_no not in self.credited or order_no in self.refunded
            ):
                decision = "rejected"
            self.refunds[refund_no] = (order_no, decision)
            if decision == "accepted":
                self.take_back(order_no)
            if answer.startswith("unknown"):
                return RefundAnswer("unknown", reason="timeout", cause="timeout")
        return self.refund_status(refund_no)

    def refund_status(self, refund_no: str) -> RefundAnswer:
        if refund_no not in self.refunds:
            return RefundAnswer("not_found", reason="no such refund")
        decision = self.refunds[refund_no][1]
        if decision == "rejected":
            return RefundAnswer("rejected", reason="refund_rejected: the membership was used")
        return RefundAnswer(decision)  # type: ignore[arg-type]

    def decide_pending(self, refund_no: str, accept: bool) -> None:
        order_no, decision = self.refunds[refund_no]
        if decision != "pending":
            return
        if accept and order_no in self.credited and order_no not in self.refunded:
            self.refunds[refund_no] = (order_no, "accepted")
            self.take_back(order_no)
        else:
            self.refunds[refund_no] = (order_no, "rejected")

    # the statements

    def statement_lines(self, day: date) -> list[Any]:
        return list(self.billed.get(day, []))


class Statements:
    """The platform's statements: a day's is frozen once published."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.frozen: dict[date, list[Any]] = {}

    def publish(self, day: date) -> None:
        if day not in self.frozen:
            self.frozen[day] = self.platform.statement_lines(day)
            self.platform.published.add(day)

    def statement(self, platform_id: UUID, period: date) -> Any:
        from ledger.settlement.ports import Statement, StatementNotReady

        if period not in self.frozen:
            raise StatementNotReady(120)
        lines = tuple(self.frozen[period])
        return Statement(platform_id, period, lines, Money(sum(x.signed for x in lines)))


class Nowhere:
    """The step queue and the webhooks: the machine runs steps itself."""

    def enqueue_step(self, recharge_id: UUID, step_id: str, due_at: datetime) -> None:
        pass

    def notify(self, channel_id: UUID, url: str, event: dict[str, Any]) -> None:
        pass


class MoneyLoop(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # ids drawn from a seeded generator: Hypothesis replays an example and needs the same
        # run each time, and the refund numbers (our refund ids) were ordered by their value
        self._ids = random.Random(0)
        self.clock = Clock(start_of(FIRST) + timedelta(hours=1))
        self.distribution = Distribution(env={"CODE_HASH_KEY": "k"})
        self.recharges = Recharges()
        self.settlements = Settlements()
        self.platform_id, self.product, self.shop = self.new_id(), self.new_id(), self.new_id()
        self.distribution.register_platform(self.platform_id, "iQiyi", GATEWAY)
        self.distribution.register_product(
            self.product, self.platform_id, "VIP monthly", 30, Money(PRICE), Money(WHOLESALE)
        )
        assert self.distribution.product(self.product).wholesale_cost == Money(WHOLESALE)
        self.distribution.register_channel(self.shop, "Pudong shop")
        self.distribution.set_webhook(self.shop, "https://shop.example/hooks")
        self.distribution.deposit(self.new_id(), self.shop, Money(10_000_000))
        self.platform = Platform(self.clock)
        self.statements = Statements(self.platform)
        self.bank = FakePayments()
        self.ours = FakeLedgerSide()
        self.steps = RechargeSteps(
            self.recharges, self.distribution, self.platform, Nowhere(), Nowhere(), self.clock
        )
        self.news = PlatformNews(self.recharges, self.distribution, self.clock)
        self.late_successes = LateSuccesses(self.settlements, self.recharges, self.distribution)
        self.settlement_steps = SettlementSteps(
            self.settlements,
            self.distribution,
            self.ours,
            self.statements,
            self.bank,
            self.clock,
            sandbox=True,
        )
        self.bought = 0
        self.codes: list[str] = []
        self.recharge_ids: list[UUID] = []
        self.followed_distribution = 0
        self.followed_recharges = 0
        self.to_dispatch: list[Any] = []
        self.billed_ours: Counter[tuple[str, str]] = Counter()
        self.paid_asked: dict[UUID, set[int]] = defaultdict(set)

    def new_id(self) -> UUID:
        return UUID(int=self._ids.getrandbits(128), version=4)

    # the edge: the clock, our side fed from the recharges log, the dispatcher

    def today(self) -> date:
        return self.clock().date()

    def move_to(self, when: datetime) -> None:
        self.clock.now = max(self.clock.now, when)

    def follow(self) -> None:
        """What the runtime's followers do as soon as events are recorded: the saga starter
        (distribution -> recharges, with tracking) and our side's read model (recharges ->
        lines of the day they were recorded on). The dispatcher's work is queued."""
        recorder = self.distribution.recorder
        for n in recorder.select_notifications(self.followed_distribution + 1, limit=10_000):
            domain_event = self.distribution.mapper.to_domain_event(n)
            self.recharges.process_event(domain_event, Tracking(self.distribution.name, n.id))
            self.followed_distribution = n.id
        for n in self.recharges.recorder.select_notifications(
            self.followed_recharges + 1, limit=10_000
        ):
            self.followed_recharges = n.id
            e = self.recharges.mapper.to_domain_event(n)
            kind = None
            if isinstance(e, Recharge.Succeeded):
                kind = "charge"
            elif isinstance(e, Recharge.RefundAccepted):
                kind = "refund"
            if kind is not None:
                key = (str(e.originator_id), kind)
                self.billed_ours[key] += 1
                self.ours.add(self.today(), line(key[0], WHOLESALE, self.today(), kind))
            self.to_dispatch.append(e)

    def dispatch_one(self, e: Any) -> None:
        """The runtime dispatcher's handling of one recharges event (`api.runtime.dispatcher`)."""
        if isinstance(e, Recharge.Succeeded | Recharge.Failed):
            self.steps.settle(e.originator_id)
        elif isinstance(e, Recharge.RefundAccepted | Recharge.RefundRejected):
            self.steps.settle_refund(e.originator_id, e.refund_id)
        elif isinstance(e, Recharge.DiscrepancyFound):
            self.late_successes.open(e.originator_id, e.reason, e.timestamp)

    @precondition(lambda self: bool(self.to_dispatch))
    @rule(data=st.data(), again=st.booleans())
    def dispatch(self, data: st.DataObject, again: bool) -> None:
        """The dispatcher catches up on some of its backlog; `again`: redelivered as well."""
        if not self.to_dispatch:
            return
        count = data.draw(st.integers(1, len(self.to_dispatch)))
        batch, self.to_dispatch = self.to_dispatch[:count], self.to_dispatch[count:]
        for e in batch:
            self.dispatch_one(e)
        if again:
            for e in batch:
                self.dispatch_one(e)

    def dispatch_all(self) -> None:
        """The dispatcher catches up, every message delivered twice (at least once is all
        the broker promises, so each handling must be harmless the second time)."""
        while self.to_dispatch:
            e = self.to_dispatch.pop(0)
            self.dispatch_one(e)
            self.dispatch_one(e)

    def teardown(self) -> None:
        for r in self.all_recharges():
            event(f"recharge {r.status}")
        for s in self.all_settlements():
            event(f"settlement {s.status}")
            if s.is_reconciled:
                event(f"settlement lines: {s.ours_count} ours, {s.theirs_count} theirs")
                for match, count in s.counts.items():
                    if count and match != "matched":
                        event(f"settlement with {match}")
        for c in self.all_cases():
            event(f"case {c.kind} {c.status}")

    # stock and codes

    @initialize(quantity=st.integers(2, 6), expiring=st.integers(0, 2))
    def open_shop(self, quantity: int, expiring: int) -> None:
        """The shop starts with stock and codes (some expiring), so that runs go far."""
        self.buy_stock(quantity + 1)
        self.issue_codes(quantity - min(expiring, quantity - 1), None)
        if expiring:
            self.issue_codes(min(expiring, quantity - 1), 20)

    @rule(quantity=st.integers(1, 3))
    def buy_stock(self, quantity: int) -> None:
        self.distribution.purchase_stock(self.new_id(), self.shop, self.product, quantity)
        self.bought += quantity
        self.follow()

    @rule(quantity=st.integers(1, 2), expires_in_hours=st.none() | st.integers(1, 40))
    def issue_codes(self, quantity: int, expires_in_hours: int | None) -> None:
        on_hand = self.distribution.channel(self.shop).stock_of(self.product)
        expires_at = None
        if expires_in_hours is not None:
            expires_at = self.clock() + timedelta(hours=expires_in_hours)
        try:
            _, codes = self.distribution.issue_codes(
                self.new_id(), self.shop, self.product, quantity, expires_at
            )
        except DomainError:
            assert on_hand < quantity
            return
        self.codes += codes
        self.follow()

    @rule(data=st.data())
    def place_recharge(self, data: st.DataObject) -> None:
        if not self.codes:
            return
        typed = data.draw(st.sampled_from(self.codes))
        code = self.distribution.find_code(typed)
        recharge_id = self.new_id()
        try:
            self.distribution.reserve_code(
                code.id, recharge_id, "13800138000", self.shop, self.clock()
            )
        except DomainError:
            assert code.status != "issued" or code.is_past_expiry(self.clock())
            return
        self.recharge_ids.append(recharge_id)
        self.follow()
        assert self.recharges.recharge(recharge_id).status == "pending"

    @rule(hours=st.integers(1, 30))
    def codes_expire(self, hours: int) -> None:
        """Time passes (within the machine's days) and the sweeper expires codes."""
        self.move_to(min(self.clock() + timedelta(hours=hours), self.last_moment()))
        for typed in self.codes:
            self.distribution.expire_code(self.distribution.find_code(typed).id, self.clock())
        self.follow()

    def last_moment(self) -> datetime:
        return start_of(FIRST + timedelta(days=DAYS)) + timedelta(hours=1)

    @rule()
    def day_ends(self) -> None:
        self.move_to(min(start_of(self.today() + timedelta(days=1)), self.last_moment()))

    # the saga's steps and the platform's news

    def all_recharges(self) -> list[Recharge]:
        return [self.recharges.recharge(i) for i in self.recharge_ids]

    def pick(self, data: st.DataObject, found: list[Any]) -> Any:
        return found[data.draw(st.integers(0, len(found) - 1))] if found else None

    @precondition(lambda self: any(r.status == "pending" and r.step for r in self.all_recharges()))
    @rule(data=st.data(), answer=st.sampled_from(ANSWERS), difference=st.sampled_from(DIFFERENCES))
    def run_step(self, data: st.DataObject, answer: str, difference: str) -> None:
        pending = [r for r in self.all_recharges() if r.status == "pending" and r.step]
        recharge = self.pick(data, pending)
        if recharge is None:
            return
        self.platform.next_answer = answer
        self.platform.difference.setdefault(str(recharge.id), difference)
        self.move_to(recharge.step.due_at)
        self.steps.run_step(recharge.id, recharge.step.id)
        self.follow()

    @rule(data=st.data(), answer=st.sampled_from(ANSWERS), difference=st.sampled_from(DIFFERENCES))
    def a_recharge_goes_through(self, data: st.DataObject, answer: str, difference: str) -> None:
        """The usual course: a code is placed, its steps run (the first answer as drawn, the
        platform answering truly after it) and the dispatcher settles it."""
        if not any(self.distribution.find_code(c).status == "issued" for c in self.codes):
            self.buy_stock(1)
            self.issue_codes(1, None)
        before = set(self.recharge_ids)
        self.place_recharge(data)
        placed = set(self.recharge_ids) - before
        if not placed:
            return
        recharge_id = placed.pop()
        self.platform.difference[str(recharge_id)] = difference
        self.platform.next_answer = answer
        for _ in range(6):
            recharge = self.recharges.recharge(recharge_id)
            if recharge.status != "pending" or recharge.step is None:
                break
            self.move_to(recharge.step.due_at)
            self.steps.run_step(recharge.id, recharge.step.id)
            self.platform.next_answer = "success"
            self.follow()
        self.dispatch_all()

    @precondition(lambda self: any(r.status == "pending" for r in self.all_recharges()))
    @rule()
    def deadlines_pass(self) -> None:
        """The sweeper sends sagas still pending past their deadline to review."""
        # the machine's clock is days ahead of the wall clock the deadlines were set by:
        # only the sagas stuck on unsure answers (past their first step) are taken as late
        late = [
            r
            for r in self.all_recharges()
            if r.status == "pending" and r.step is not None and r.step.number > 1
        ]
        if late:
            self.move_to(max(r.deadline for r in late))
            self.steps.check_deadlines([r.id for r in late])
            self.follow()

    @precondition(lambda self: any(r.status == "review" for r in self.all_recharges()))
    @rule(data=st.data())
    def resolve_a_review(self, data: st.DataObject) -> None:
        """An operator checks with the platform and settles a recharge in review."""
        recharge = self.pick(data, [r for r in self.all_recharges() if r.status == "review"])
        if recharge is None:
            return
        credited = str(recharge.id) in self.platform.credited
        outcome = "succeeded" if credited else "failed"
        self.recharges.resolve(recharge.id, outcome, "checked with the platform", "op")
        self.follow()

    @precondition(lambda self: bool(self.recharge_ids))
    @rule(data=st.data())
    def step_delivered_again(self, data: st.DataObject) -> None:
        """A step that is no longer current (its message delivered twice) asks nothing."""
        recharge = self.pick(data, self.all_recharges())
        if recharge is None:
            return
        calls = self.platform.credit_calls.copy()
        version = self.recharges.recharge(recharge.id).version
        self.steps.run_step(recharge.id, "1-recharge")
        self.follow()
        if recharge.step is None or recharge.step.id != "1-recharge":
            assert self.recharges.recharge(recharge.id).version == version
            assert self.platform.credit_calls == calls

    @precondition(lambda self: bool(self.platform.asked))
    @rule(data=st.data(), status=st.sampled_from(["success", "failed", "reversed", "processing"]))
    def callback(self, data: st.DataObject, status: str) -> None:
        """The platform calls back about an order it was asked to credit: what it did (a
        success or failure, possibly again, possibly late), or a reversal it made."""
        asked = [r for r in self.all_recharges() if str(r.id) in self.platform.asked]
        recharge = self.pick(data, asked)
        if recharge is None:
            return
        order_no = str(recharge.id)
        credited = order_no in self.platform.credited
        if status == "success" and not credited or status == "failed" and credited:
            return  # the platform tells what it did
        if status == "reversed":
            if not credited:
                return
            self.platform.take_back(order_no)
        self.hear(order_no, Callback(status, **self.membership(order_no, status)))

    def membership(self, order_no: str, status: str) -> dict[str, Any]:
        if status != "success":
            return {"reason": "the platform says so"} if status == "failed" else {}
        credited = self.platform.credited_result(order_no)
        return {
            "platform_order_id": credited.platform_order_id,
            "starts_at": credited.starts_at,
            "ends_at": credited.ends_at,
        }

    def hear(self, order_no: str, callback: Callback) -> None:
        """A callback, with the late-success rule checked: a success for a recharge we had
        failed moves no unit and no money (in any log) and opens one case."""
        self.follow()
        self.dispatch_all()
        before = self.recharges.recharge(UUID(order_no))
        postings_before = len(self.all_postings())
        code_before = self.distribution.code(before.code_id).version
        self.news.hear(self.platform_id, order_no, callback)
        self.follow()
        self.dispatch_all()
        if before.status == "failed" and callback.status == "success":
            after = self.recharges.recharge(UUID(order_no))
            assert after.status == "failed" and after.discrepancy is not None
            assert len(self.all_postings()) == postings_before
            assert self.distribution.code(before.code_id).version == code_before
            case = self.settlements.case(late_success_case_id(UUID(order_no)))
            assert case.kind == "late_success" and case.order_no == order_no
            event("late success heard")

    @precondition(lambda self: bool(self.platform.failed))
    @rule(data=st.data())
    def platform_credits_late(self, data: st.DataObject) -> None:
        """The platform said it failed, credits the order anyway and calls back success."""
        said_failed = [i for i in self.recharge_ids if str(i) in self.platform.failed]
        recharge_id = self.pick(data, said_failed)
        if recharge_id is None:
            return
        order_no = str(recharge_id)
        self.platform.credit(order_no)
        self.hear(order_no, Callback("success", **self.membership(order_no, "success")))

    # refunds

    @precondition(lambda self: any(r.status == "succeeded" for r in self.all_recharges()))
    @rule(data=st.data())
    def request_refund(self, data: st.DataObject) -> None:
        recharge = self.pick(data, self.all_recharges())
        if recharge is None:
            return
        try:
            self.recharges.request_refund(recharge.id, self.new_id(), "asked", "op", self.clock())
        except DomainError:
            assert recharge.status != "succeeded" or recharge.refund_status == "pending"
        self.follow()

    @precondition(lambda self: any(r.status == "succeeded" for r in self.all_recharges()))
    @rule(data=st.data(), answer=st.sampled_from(REFUND_ANSWERS), twice=st.booleans())
    def a_refund_goes_through(self, data: st.DataObject, answer: str, twice: bool) -> None:
        """The usual course: a succeeded recharge is refunded, its steps run (the first
        answer as drawn, the platform accepting after it) and the dispatcher settles it
        (`twice`: its message delivered again)."""
        succeeded = [
            r
            for r in self.all_recharges()
            if r.status == "succeeded" and r.refund_status != "pending"
        ]
        recharge = self.pick(data, succeeded)
        if recharge is None:
            return
        self.dispatch_all()
        self.recharges.request_refund(recharge.id, self.new_id(), "asked", "op", self.clock())
        self.platform.next_refund_answer = answer
        for _ in range(6):
            step = self.recharges.recharge(recharge.id).refund_step
            if step is None:
                break
            self.move_to(step.due_at)
            self.steps.run_step(recharge.id, step.id)
            self.platform.next_refund_answer = "accepted"
        self.follow()
        pending = list(self.to_dispatch)
        self.dispatch_all()
        if twice:
            for e in pending:
                self.dispatch_one(e)

    @precondition(lambda self: any(r.refund_step for r in self.all_recharges()))
    @rule(data=st.data(), answer=st.sampled_from(REFUND_ANSWERS))
    def run_refund_step(self, data: st.DataObject, answer: str) -> None:
        refunding = [r for r in self.all_recharges() if r.refund_step is not None]
        recharge = self.pick(data, refunding)
        if recharge is None:
            return
        self.platform.next_refund_answer = answer
        self.move_to(recharge.refund_step.due_at)
        self.steps.run_step(recharge.id, recharge.refund_step.id)
        self.follow()

    @precondition(lambda self: bool(self.platform.refunds))
    @rule(data=st.data(), accept=st.booleans(), call_back=st.booleans())
    def platform_reviews_a_refund(self, data: st.DataObject, accept: bool, call_back: bool) -> None:
        """The platform decides a refund under review, and may call back with the decision."""
        numbers = list(self.platform.refunds)  # in the order the platform received them
        refund_no = self.pick(data, numbers)
        if refund_no is None:
            return
        self.platform.decide_pending(refund_no, accept)
        order_no, decision = self.platform.refunds[refund_no]
        if call_back and decision != "pending":
            self.hear(order_no, Callback(decision, refund_no=refund_no))  # type: ignore[arg-type]

    # settlements

    @precondition(lambda self: self.today() > FIRST)
    @rule(n=st.integers(0, DAYS - 1))
    def publish(self, n: int) -> None:
        period = FIRST + timedelta(days=n)
        if period < self.today():
            self.statements.publish(period)

    @precondition(lambda self: self.today() > FIRST)
    @rule(n=st.integers(0, DAYS - 1), published=st.booleans())
    def open_settlement(self, n: int, published: bool) -> None:
        period = FIRST + timedelta(days=n)
        if period >= self.today():
            return
        if published:
            self.statements.publish(period)
        self.settlement_steps.open(self.platform_id, period)

    @rule()
    def the_earliest_day_is_settled(self) -> None:
        """The usual course: the earliest closed day not yet settled has its statement out,
        its settlement opened and advanced (the day ends first when none is waiting)."""
        for n in range(DAYS):
            period = FIRST + timedelta(days=n)
            if period >= self.today():
                self.day_ends()
            if period >= self.today():
                return
            if self.settlements.find_settlement(settlement_id(self.platform_id, period)):
                continue
            self.open_settlement(n, True)
            self.sweep_settlements(False, False)
            return

    @precondition(lambda self: bool(self.all_settlements()))
    @rule(failing=st.booleans(), crash=st.booleans())
    def sweep_settlements(self, failing: bool, crash: bool) -> None:
        """Every settlement is advanced (time passing within the day), the bank as chosen."""
        self.move_to(min(self.clock() + timedelta(minutes=10), self.last_moment()))
        self.bank.failing = failing
        self.bank.crash_after_paying = crash
        for s in self.all_settlements():
            with suppress(PaymentCrashed):
                self.settlement_steps.advance(s.id)
        self.bank.failing = False
        self.bank.crash_after_paying = False

    @precondition(lambda self: any(c.is_open for c in self.all_cases()))
    @rule(data=st.data())
    def resolve_a_case(self, data: st.DataObject) -> None:
        case = self.pick(data, [c for c in self.all_cases() if c.is_open])
        if case is None:
            return
        outcome = data.draw(st.sampled_from(OUTCOMES))
        postings_before = len(self.all_postings())
        self.settlements.resolve_case(case.id, outcome, "checked", "op", self.clock())
        if case.kind == "late_success":
            assert len(self.all_postings()) == postings_before

    @precondition(lambda self: any(s.status == "awaiting_approval" for s in self.all_settlements()))
    @rule(data=st.data())
    def approve(self, data: st.DataObject) -> None:
        waiting = [s for s in self.all_settlements() if s.status == "awaiting_approval"]
        chosen = self.pick(data, waiting)
        if chosen is not None:
            self.settlements.approve(chosen.id, "op")

    # reading the logs

    def events(self, app: Any) -> list[Any]:
        return [
            app.mapper.to_domain_event(n)
            for n in app.recorder.select_notifications(1, limit=1_000_000)
        ]

    def all_postings(self) -> list[Postings]:
        found = []
        for app in (self.distribution, self.recharges, self.settlements):
            for e in self.events(app):
                postings = getattr(e, "postings", None)
                if postings is not None:
                    assert isinstance(postings, Postings), type(postings)
                    found.append(postings)
        return found

    def all_settlements(self) -> list[Settlement]:
        found = []
        for n in range(DAYS):
            s = self.settlements.find_settlement(
                settlement_id(self.platform_id, FIRST + timedelta(days=n))
            )
            if s is not None:
                found.append(s)
        return found

    def all_cases(self) -> list[Case]:
        ids = {n.originator_id for n in self.settlements.recorder.select_notifications(1, 10**6)}
        aggregates = [self.settlements.repository.get(i) for i in ids]
        return [a for a in aggregates if isinstance(a, Case)]

    def results(self, s: Settlement) -> list[list[Any]]:
        chunks = list(self.settlements.chunks(s.id, "results", s.result_chunks))
        return [row for _, row in rows_of(chunks)]

    def balances(self) -> Counter[tuple[str, str]]:
        totals: Counter[tuple[str, str]] = Counter()
        for postings in self.all_postings():
            for leg in postings:
                totals[(leg.account, leg.asset)] += leg.amount
        return totals

    # what must hold

    @invariant()
    def trial_balance_is_zero(self) -> None:
        per_asset: Counter[str] = Counter()
        for (_, asset), amount in self.balances().items():
            per_asset[asset] += amount
        assert all(total == 0 for total in per_asset.values()), per_asset

    @invariant()
    def units_are_conserved(self) -> None:
        totals = self.balances()
        unit = accounts.unit_asset(self.product)

        def of(account: str) -> int:
            return totals[(account, unit)]

        codes = [self.distribution.find_code(c) for c in self.codes]
        on_hand = of(accounts.channel_stock(self.shop, self.product))
        held = of(accounts.channel_held(self.shop, self.product))
        consumed = of(accounts.channel_consumed(self.shop, self.product))
        breakage = of(accounts.channel_breakage(self.shop, self.product))
        assert on_hand + held + consumed + breakage == self.bought
        assert on_hand == self.distribution.channel(self.shop).stock_of(self.product)
        assert held == sum(1 for c in codes if c.status in ("issued", "reserved"))
        assert consumed == sum(1 for c in codes if c.status == "redeemed" and not c.unit_returned)
        assert breakage == sum(1 for c in codes if c.status == "expired")

    @invariant()
    def nothing_happens_twice(self) -> None:
        counts: Counter[tuple[str, UUID]] = Counter()
        for e in self.events(self.recharges):
            counts[(type(e).__name__, e.originator_id)] += 1
        returned: Counter[UUID] = Counter()
        for e in self.events(self.distribution):
            if isinstance(e, Code.UnitReturned):
                returned[e.recharge_id] += 1
        for r in self.all_recharges():
            assert counts[("Succeeded", r.id)] <= 1
            assert counts[("RefundAccepted", r.id)] <= 1
            assert returned[r.id] <= 1
            assert (r.status == "refunded") == (counts[("RefundAccepted", r.id)] == 1)
            assert counts[("Succeeded", r.id)] + counts[("Failed", r.id)] <= 1
            if r.status in ("succeeded", "refunded"):  # never credited twice, never unpaid
                assert str(r.id) in self.platform.credited
        assert all(n <= 1 for n in self.billed_ours.values()), self.billed_ours.most_common(2)
        accepted = Counter(
            o for o, decision in self.platform.refunds.values() if decision == "accepted"
        )
        assert all(n <= 1 for n in accepted.values())

    @invariant()
    def the_bank_is_paid_what_was_booked_once(self) -> None:
        totals = self.balances()
        paid_out = totals[(accounts.external_platform_settlements("CNY"), "CNY")]
        booked: dict[UUID, int] = {}
        for s in self.all_settlements():
            if s.status == "paid" and s.payment and s.payment > 0:
                booked[s.id] = s.payment
            booked |= {UUID(case): s.adjustments[case] for case in s.adjustments_paid}
        assert paid_out == sum(booked.values())
        received = {i: m.amount for i, m in self.bank.paid.items()}
        assert {i: received[i] for i in booked} == booked
        for unbooked in set(received) - set(booked):
            assert any(
                s.id == unbooked and s.status == "paying" or unbooked in dict(s.adjustments_due)
                for s in self.all_settlements()
            )

    @invariant()
    def reconciled_settlements_add_up(self) -> None:
        matched: Counter[tuple[str, str]] = Counter()
        cases = self.all_cases()
        for s in self.all_settlements():
            if not s.is_reconciled:
                continue
            assert s.invariant_holds
            open_theirs = sum(
                c.theirs_figure for c in cases if c.settlement_id == s.id and c.is_open
            )
            assert s.open_theirs == open_theirs
            assert (
                s.agreed + s.open_theirs + s.withheld
                == s.statement_lines + s.carried_in - s.carried_out
            )
            for row in self.results(s):
                if row[4] == "matched":
                    matched[(row[0], row[1])] += 1
        assert all(n == 1 for n in matched.values()), matched.most_common(3)

    @invariant()
    def no_order_is_paid_twice(self) -> None:
        """An (order, kind) is paid at most once: agreed on one day, or paid by the
        resolution of one case (a case that pays nothing does not count)."""
        paid: Counter[tuple[str, str]] = Counter()
        for s in self.all_settlements():
            if s.is_reconciled:
                for row in self.results(s):
                    if row[5] == "agreed":
                        paid[(row[0], row[1])] += 1
        for c in self.all_cases():
            if c.status == "resolved" and c.resolution["pay"]:
                paid[(c.order_no, c.line_kind)] += 1
        assert all(n == 1 for n in paid.values()), paid.most_common(3)


MoneyLoop.TestCase.settings = settings(
    max_examples=int(os.environ.get("MONEY_LOOP_EXAMPLES", 50)),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMoneyLoop = MoneyLoop.TestCase
