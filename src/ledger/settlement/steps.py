"""The settlement saga's work with the outside world: open a settlement, and advance it one
due step at a time (collect our side, fetch the statement, reconcile, pay).

`advance` may run twice at once or again after a crash at any point: each step decides on
the settlement's recorded state and records its outcome in one save with its chunks and
cases (a second run conflicts and decides again on fresh state); the payment's intent is
recorded before the payment, whose id is the settlement's id, so a platform is paid once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, timedelta
from functools import partial
from uuid import UUID

from ledger.clock import Clock, utc_now
from ledger.distribution.application import Distribution
from ledger.errors import PeriodNotClosed, Unavailable
from ledger.money import Money
from ledger.settlement import decisions
from ledger.settlement.application import Settlements
from ledger.settlement.cases import Case
from ledger.settlement.chunks import (
    carried_row,
    chunked,
    line_row,
    result_row,
    row_carried,
    row_line,
    rows_of,
)
from ledger.settlement.decisions import Carried, Reconciliation
from ledger.settlement.ports import (
    LedgerSide,
    Line,
    PlatformStatements,
    SettlementPayments,
    StatementNotReady,
)
from ledger.settlement.saga import Settlement, settlement_id

MAX_STEPS_PER_ADVANCE = 8


class SettlementSteps:
    """Open and advance settlements over the settlements application and the three ports."""

    def __init__(
        self,
        settlements: Settlements,
        distribution: Distribution,
        ledger_side: LedgerSide,
        statements: PlatformStatements,
        payments: SettlementPayments,
        clock: Clock = utc_now,
        *,
        sandbox: bool = False,
    ) -> None:
        self.settlements = settlements
        self.distribution = distribution
        self.ledger_side = ledger_side
        self.statements = statements
        self.payments = payments
        self.clock = clock
        self.sandbox = sandbox

    def open(self, platform_id: UUID, period: date, close_now: bool = False) -> Settlement:
        """The settlement of (platform, period), opened once: asked again, the same one."""
        self.distribution.platform(platform_id)
        now = self.clock()
        closing_today = close_now and self.sandbox and period == now.astimezone(UTC).date()
        if not decisions.period_closed(period, now) and not closing_today:
            raise PeriodNotClosed(f"{period.isoformat()} has not ended yet (UTC)")
        return self.settlements._create(Settlement.open(platform_id, period, now))

    def advance(self, settlement_id: UUID) -> Settlement:
        """Run every step that is due now, in order; nothing when none is."""
        settlement = self.settlements.settlement(settlement_id)
        for _ in range(MAX_STEPS_PER_ADVANCE):
            step = decisions.next_step(
                settlement.status, settlement.due_at, self.clock(), bool(settlement.adjustments_due)
            )
            if step == "none":
                break
            settlement = self.settlements.commands.run(
                partial(self._run, step, settlement_id), settlement_id
            )
        return settlement

    def _run(self, step: str, settlement_id: UUID) -> Settlement:
        settlement = self.settlements.settlement(settlement_id)
        now = self.clock()
        if (
            decisions.next_step(
                settlement.status, settlement.due_at, now, bool(settlement.adjustments_due)
            )
            != step
        ):
            return settlement  # another run took the step meanwhile
        if step == "collect":
            self._collect(settlement)
        elif step == "fetch_statement":
            self._fetch_statement(settlement)
        elif step == "reconcile":
            self._reconcile(settlement)
        elif step == "pay":
            self._pay(settlement)
        else:
            self._pay_adjustments(settlement)
        return settlement

    def _defer(self, settlement: Settlement, reason: str, wait: timedelta) -> None:
        settlement.defer(reason, self.clock() + wait)
        self.settlements.save(settlement)

    def _collect(self, settlement: Settlement) -> None:
        if not self.ledger_side.caught_up(settlement.platform_id, settlement.period):
            wait = decisions.retry_after(settlement.tries + 1, decisions.CATCH_UP_WAIT)
            self._defer(settlement, "ledger side catching up", wait)
            return
        lines = list(self.ledger_side.lines(settlement.platform_id, settlement.period))
        currency = currency_of(lines, settlement.currency)
        chunks = chunked(settlement.id, "ours", currency, [line_row(x) for x in lines])
        settlement.collect(len(lines), sum(x.signed for x in lines), len(chunks), currency)
        self.settlements.save(settlement, *chunks)

    def _fetch_statement(self, settlement: Settlement) -> None:
        try:
            statement = self.statements.statement(settlement.platform_id, settlement.period)
        except StatementNotReady as not_ready:
            base = timedelta(seconds=not_ready.retry_after_seconds)
            self._defer(settlement, "statement not ready", decisions.retry_after(1, base))
            return
        except Unavailable:
            wait = decisions.retry_after(settlement.tries + 1, decisions.STATEMENT_RETRY)
            self._defer(settlement, "platform unavailable", wait)
            return
        lines = list(statement.lines)
        rows = [line_row(x) for x in lines]
        chunks = chunked(settlement.id, "theirs", settlement.currency, rows)
        lines_total = sum(x.signed for x in lines)
        settlement.take_statement(len(lines), statement.total.amount, lines_total, len(chunks))
        self.settlements.save(settlement, *chunks)

    def _reconcile(self, settlement: Settlement) -> None:
        platform, period = settlement.platform_id, settlement.period
        previous = self.settlements.find_settlement(settlement_id(platform, period - timedelta(1)))
        if previous is not None and not previous.is_reconciled:
            self._defer(settlement, "previous day reconciling", decisions.PREVIOUS_WAIT)
            return
        following = self.settlements.find_settlement(settlement_id(platform, period + timedelta(1)))
        may_carry = following is None or not following.is_reconciled
        outcome = decisions.reconcile(
            self._lines(settlement, "ours"),
            self._lines(settlement, "theirs"),
            self._carried_from(previous),
            self._our_keys(platform, period + timedelta(1)),
            may_carry=may_carry,
        )
        currency = settlement.currency
        results = chunked(
            settlement.id, "results", currency, [result_row(r) for r in outcome.results]
        )
        carried = chunked(
            settlement.id, "carried", currency, [carried_row(c) for c in outcome.carried_out]
        )
        cases = self._cases(settlement, outcome)
        carried_in = previous.carried_out_count if previous is not None else 0
        settlement.reconcile(outcome, carried_in, len(results), len(carried))
        also: list[Settlement] = []
        if following is not None and may_carry:
            following.take_carry_from_previous(settlement.id, len(outcome.carried_out))
            also.append(following)
        self.settlements.save(settlement, *also, *results, *carried, *cases)

    def _pay(self, settlement: Settlement) -> None:
        if settlement.payment is None:
            settlement.request_payment()
            self.settlements.save(settlement)  # the intent first: a crash after it pays once
        amount = settlement.request_payment()
        if amount <= 0:
            settlement.record_payment(None, amount)
            self.settlements.save(settlement)
            return
        try:
            receipt = self.payments.pay(
                settlement.id, settlement.platform_id, Money(amount, settlement.currency)
            )
        except Unavailable:
            wait = decisions.retry_after(settlement.tries + 1, decisions.PAYMENT_RETRY)
            self._defer(settlement, "payment failed", wait)
            return
        settlement.record_payment(receipt.reference, receipt.amount.amount)
        self.settlements.save(settlement)

    def _pay_adjustments(self, settlement: Settlement) -> None:
        for case_id, amount in settlement.adjustments_due:
            try:
                receipt = self.payments.pay(
                    case_id, settlement.platform_id, Money(amount, settlement.currency)
                )
            except Unavailable:
                wait = decisions.retry_after(settlement.tries + 1, decisions.PAYMENT_RETRY)
                self._defer(settlement, "adjustment payment failed", wait)
                return
            settlement.record_adjustment(case_id, receipt.reference, receipt.amount.amount)
        self.settlements.save(settlement)

    def _lines(self, settlement: Settlement, part: str) -> Iterable[Line]:
        count = settlement.ours_chunks if part == "ours" else settlement.theirs_chunks
        chunks = self.settlements.chunks(
            settlement.id, "ours" if part == "ours" else "theirs", count
        )
        for currency, row in rows_of(list(chunks)):
            yield row_line(row, currency)

    def _carried_from(self, previous: Settlement | None) -> list[Carried]:
        if previous is None or not previous.carried_chunks:
            return []
        chunks = list(self.settlements.chunks(previous.id, "carried", previous.carried_chunks))
        return [row_carried(row, currency) for currency, row in rows_of(chunks)]

    def _our_keys(self, platform_id: UUID, period: date) -> set[tuple[str, str]]:
        return {line.key for line in self.ledger_side.lines(platform_id, period)}

    def _cases(self, settlement: Settlement, outcome: Reconciliation) -> list[Case]:
        seen: Counter[tuple[str, str]] = Counter()
        cases: list[Case] = []
        now = self.clock()
        for result in outcome.case_results:
            number = seen[(result.order_no, result.kind)]
            seen[(result.order_no, result.kind)] += 1
            cases.append(
                Case.of_difference(
                    settlement.id,
                    settlement.platform_id,
                    settlement.period,
                    result,
                    settlement.currency,
                    now,
                    number,
                )
            )
        return cases


def currency_of(lines: list[Line], default: str) -> str:
    return lines[0].amount.currency if lines else default
