"""Two days settled on the real PostgreSQL: the ledger's side from the settled orders view,
the platform's side from the sandbox platform's statements (its books, its knobs, its answer
read back by the partner client's parser), the settlements application and its steps.

The platform drops one order of day D, bills one for more, puts an order we credited at
23:59:59 on D+1's statement and adds an order we never sent to each day. What must hold:
the late order is a timing difference carried from D and matched on D+1 (no case); the
dropped order, carried from D, is still unmatched on D+1 and opens its case then; every
other difference is one case of its day; each day is paid once, what was agreed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from adapters.sandbox.faults import FaultsUpdate
from adapters.sandbox.platform import SandboxPlatform
from adapters.sandbox.statements import AcceptedRefund, Statements
from adapters.settlement_statements import read_statement
from ledger.money import Money
from ledger.settlement.application import Settlements
from ledger.settlement.ports import SettlementPaymentReceipt, Statement, StatementNotReady
from ledger.settlement.steps import SettlementSteps
from projections.logs import decoded, read_events
from projections.settled_orders import SettledOrders
from tests.integration.test_settled_orders import (
    DAY,
    Clock,
    Ledger,
    LiveView,
    at,
    clock,
    ledger,
    live,
    settled,
)

pytestmark = pytest.mark.integration

__all__ = ["clock", "ledger", "live", "settled"]  # fixtures
NEXT = DAY + timedelta(days=1)
DELTA = 500


class PlatformDesk:
    """The sandbox platform's statements and payments, asked the way the partner API is."""

    def __init__(self, books: SandboxPlatform, clock: Clock, prices: dict[str, Money]) -> None:
        self.books = books
        self.refunds: list[AcceptedRefund] = []
        self.desk = Statements(books, lambda: self.refunds, clock=clock)
        self.prices = prices

    def statement(self, platform_id: UUID, period: date) -> Statement:
        products = [
            {"product_code": code, "amount": price.amount, "currency": price.currency}
            for code, price in self.prices.items()
        ]
        answer = self.desk.statement({"period": period.isoformat(), "products": products})
        if answer["status"] == "not_ready":
            raise StatementNotReady(answer["retry_after"])
        return read_statement(platform_id, period, answer)

    def pay(self, payment_id: UUID, platform_id: UUID, amount: Money) -> SettlementPaymentReceipt:
        payment = self.desk.pay(
            {"payment_id": str(payment_id), "amount": amount.amount, "currency": amount.currency}
        )
        return SettlementPaymentReceipt(payment.reference, Money(payment.amount, payment.currency))


@pytest.fixture
def settlements(ledger: Ledger) -> Iterator[Settlements]:
    app = Settlements(env=ledger.env)
    try:
        yield app
    finally:
        app.close()


def credit(ledger: Ledger, books: SandboxPlatform, product: UUID, moment: datetime) -> str:
    """Credited by the platform and recorded by the ledger at `moment`."""
    order_no = str(ledger.credited(product, moment).id)
    ledger.clock.now = moment
    books.recharge(
        {"order_no": order_no, "account": "13800138000", "product_code": str(product),
         "duration_days": 30}
    )  # fmt: skip
    return order_no


def opened_cases(url: str, settlements: Settlements) -> list[tuple[UUID, str, str]]:
    """(settlement, kind, order_no) of every case opened, from the settlements log."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = read_events(conn, settlements.name, 0)
        events = [event for event, _ in decoded(settlements.mapper, settlements.name, rows)]
    return [
        (e.settlement_id, e.kind, e.order_no)
        for e in events
        if type(e).__qualname__ == "Case.Opened"
    ]


def settle(steps: SettlementSteps, settlements: Settlements, platform: UUID, day: date) -> Any:
    settlement = steps.open(platform, day)
    for _ in range(10):
        settlement = steps.advance(settlement.id)
        if settlement.status == "awaiting_approval":
            settlements.approve(settlement.id, "operator")
        if settlement.status == "paid":
            return settlement
    pytest.fail(f"{day} not paid: {settlement.status} waiting for {settlement.waiting_for}")


def test_a_late_order_is_carried_to_the_next_day_and_a_dropped_one_opens_its_case_there(
    ledger: Ledger, live: LiveView, settled: SettledOrders, settlements: Settlements
) -> None:
    books = SandboxPlatform("secret", "partner", clock=ledger.clock)
    platform = PlatformDesk(books, ledger.clock, {str(ledger.gold): Money(1500)})
    dropped = credit(ledger, books, ledger.gold, at(DAY, 9))
    billed_more = credit(ledger, books, ledger.gold, at(DAY, 10))
    kept = credit(ledger, books, ledger.gold, at(DAY, 11))
    late = credit(ledger, books, ledger.gold, at(DAY, 23, 59, 59))
    next_day = credit(ledger, books, ledger.gold, at(NEXT, 10))
    books.set_faults(
        FaultsUpdate(
            statement_drop_orders=[dropped],
            statement_amount_orders=[billed_more],
            statement_amount_delta=DELTA,
            statement_next_day_orders=[late],
            statement_extra_lines=1,
        )
    )
    live.apply(ledger.distribution)
    live.apply(ledger.recharges)
    ledger.clock.now = at(NEXT + timedelta(days=2), 9)
    steps = SettlementSteps(
        settlements, ledger.distribution, settled, platform, platform, clock=ledger.clock
    )

    first = settle(steps, settlements, ledger.platform, DAY)
    second = settle(steps, settlements, ledger.platform, NEXT)

    cases = sorted(opened_cases(ledger.url, settlements), key=str)
    assert cases == sorted(
        [
            (first.id, "amount_differs", billed_more),
            (first.id, "theirs_only", f"sandbox-extra-{DAY.isoformat()}-1"),
            (second.id, "ours_only", dropped),
            (second.id, "theirs_only", f"sandbox-extra-{NEXT.isoformat()}-1"),
        ],
        key=str,
    )
    assert (first.carried_out_count, second.carried_in_count) == (2, 2)  # dropped and late
    assert first.counts == {"matched": 1, "amount_differs": 1, "ours_only": 2, "theirs_only": 1}
    assert second.counts["matched"] == 2  # the late order (carried in) and the next day's
    assert (first.agreed, second.agreed) == (1500, 3000)  # kept; late and next_day
    paid = {p.payment_id: p.amount for p in platform.desk.payments()}
    assert paid == {str(first.id): 1500, str(second.id): 3000}
    assert {kept, late, next_day}.isdisjoint({c[2] for c in cases})
