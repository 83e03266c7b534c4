"""In-memory fakes of the settlement ports and a desk that holds them, for the unit and
property tests of the settlement saga."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID, uuid4

from ledger.distribution.application import Distribution
from ledger.errors import Unavailable
from ledger.money import Money
from ledger.postings import Postings
from ledger.settlement.application import Settlements
from ledger.settlement.ports import (
    Line,
    LineKind,
    SettlementPaymentReceipt,
    Statement,
    StatementNotReady,
)
from ledger.settlement.saga import Settlement
from ledger.settlement.steps import SettlementSteps

DAY = date(2026, 11, 30)


def at(period: date, seconds: int = 3600) -> datetime:
    return datetime.combine(period, time(), UTC) + timedelta(seconds=seconds)


def line(order_no: str, amount: int, period: date = DAY, kind: LineKind = "charge") -> Line:
    return Line(order_no, kind, Money(amount), at(period))


class FakeLedgerSide:
    """Our credited orders and accepted refunds per day."""

    def __init__(self) -> None:
        self.days: dict[date, list[Line]] = {}
        self.behind = False

    def add(self, period: date, *lines: Line) -> None:
        self.days.setdefault(period, []).extend(lines)

    def lines(self, platform_id: UUID, period: date) -> Iterable[Line]:
        return list(self.days.get(period, []))

    def caught_up(self, platform_id: UUID, period: date) -> bool:
        return not self.behind


class FakeStatements:
    """The platform's statements per day: not ready until published."""

    def __init__(self) -> None:
        self.published: dict[date, list[Line]] = {}
        self.totals: dict[date, int] = {}
        self.asked = 0
        self.unavailable = False

    def publish(self, period: date, *lines: Line, total: int | None = None) -> None:
        self.published[period] = list(lines)
        if total is not None:
            self.totals[period] = total

    def statement(self, platform_id: UUID, period: date) -> Statement:
        self.asked += 1
        if self.unavailable:
            raise Unavailable("the platform does not answer")
        if period not in self.published:
            raise StatementNotReady(120)
        lines = tuple(self.published[period])
        total = self.totals.get(period, sum(x.signed for x in lines))
        return Statement(platform_id, period, lines, Money(total))


class PaymentCrashed(Exception):
    """The process died after the platform was paid, before the payment was recorded."""


class FakePayments:
    """Idempotent by payment id, like the real port; can fail, or crash after paying."""

    def __init__(self) -> None:
        self.paid: dict[UUID, Money] = {}
        self.calls = 0
        self.failing = False
        self.crash_after_paying = False

    def pay(self, payment_id: UUID, platform_id: UUID, amount: Money) -> SettlementPaymentReceipt:
        self.calls += 1
        if self.failing:
            raise Unavailable("the bank does not answer")
        self.paid.setdefault(payment_id, amount)
        if self.crash_after_paying:
            self.crash_after_paying = False
            raise PaymentCrashed()
        return SettlementPaymentReceipt(f"PAY-{payment_id}", self.paid[payment_id])


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class SettlementDesk:
    """A platform, the settlements application and its steps over the fakes."""

    def __init__(self, now: datetime | None = None) -> None:
        self.distribution = Distribution(env={"CODE_HASH_KEY": "k"})
        self.platform = uuid4()
        self.distribution.register_platform(self.platform, "iQiyi", "https://iqiyi.example")
        self.settlements = Settlements()
        self.ours = FakeLedgerSide()
        self.statements = FakeStatements()
        self.payments = FakePayments()
        self.clock = Clock(now or at(DAY + timedelta(days=3)))
        self.steps = SettlementSteps(
            self.settlements,
            self.distribution,
            self.ours,
            self.statements,
            self.payments,
            self.clock,
            sandbox=True,
        )

    def settle(self, period: date = DAY) -> Settlement:
        settlement = self.steps.open(self.platform, period)
        return self.steps.advance(settlement.id)

    def later(self, seconds: float = 3600) -> None:
        self.clock.advance(seconds)

    def cases(self, settlement: Settlement) -> list[object]:
        from ledger.settlement.cases import Case

        found = []
        for _, aggregate_id in self._all_ids():
            aggregate = self.settlements.repository.get(aggregate_id)
            if isinstance(aggregate, Case) and aggregate.settlement_id == settlement.id:
                found.append(aggregate)
        return found

    def _all_ids(self) -> list[tuple[int, UUID]]:
        seen: dict[UUID, int] = {}
        for notification in self.settlements.recorder.select_notifications(1, limit=1_000_000):
            seen.setdefault(notification.originator_id, notification.id)
        return [(n, i) for i, n in seen.items()]

    def postings(self) -> list[Postings]:
        """Every posting the settlements log recorded."""
        found = []
        for notification in self.settlements.recorder.select_notifications(1, limit=1_000_000):
            event = self.settlements.mapper.to_domain_event(notification)
            postings = getattr(event, "postings", None)
            if isinstance(postings, Postings):
                found.append(postings)
        return found
