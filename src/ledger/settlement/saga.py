"""The settlement saga per (platform, period) as an event-sourced process manager: every
step, wait and payment is an event on the Settlement; its lines live in chunks beside it.

status: collecting → awaiting_statement → reconciling → awaiting_approval (open cases) |
paying → paid; a failed payment stays `paying` and is tried again with the same payment id
(the settlement's id), so a platform is paid once however often the step runs.

Payment postings draw the platform's accrued payable down by what is paid, into
`external:platform_settlements:<currency>`. What is paid is fixed when the payment is first
requested: a case resolved after that (the operator approved while cases were open) is paid
separately, as an adjustment with the case's id as its payment id. A negative amount (the
platform owes us: more refunds than charges) is never paid; it is kept as `credit`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import accounts
from ledger.errors import StateConflict
from ledger.postings import Postings
from ledger.settlement.decisions import Reconciliation, balances

SETTLEMENT_NAMESPACE = uuid.UUID("9e3c6f2a-4b71-4d58-8a0e-2f6b1c9d7e35")
RECONCILED = frozenset({"awaiting_approval", "paying", "paid"})


def settlement_id(platform_id: UUID, period: date) -> UUID:
    """The same (platform, period) is the same settlement."""
    return uuid.uuid5(SETTLEMENT_NAMESPACE, f"{platform_id}:{period.isoformat()}")


class Settlement(Aggregate):
    """One platform's settlement of one UTC day (see the module docstring)."""

    @event("Opened")
    def __init__(self, id: UUID, platform_id: UUID, period: date, opened_at: datetime) -> None:
        self.platform_id = platform_id
        self.period = period
        self.opened_at = opened_at
        self.status = "collecting"
        self.due_at: datetime | None = None
        self.tries = 0
        self.waiting_for: str | None = None
        self.currency = "CNY"
        self.owed = 0
        self.ours_count = 0
        self.ours_chunks = 0
        self.statement: int | None = None
        self.statement_lines = 0
        self.theirs_count = 0
        self.theirs_chunks = 0
        self.counts: dict[str, int] = {}
        self.results = 0
        self.result_chunks = 0
        self.carried_chunks = 0
        self.carried_in = 0
        self.carried_out = 0
        self.carried_in_count = 0
        self.carried_out_count = 0
        self.next_took_carry = False
        self.agreed = 0
        self.open_cases = 0
        self.open_theirs = 0
        self.withheld = 0
        self.cases = 0
        self.statement_consistent = True
        self.approved_by: str | None = None
        self.payment: int | None = None
        self.paid = 0
        self.credit = 0
        self.reference: str | None = None
        self.adjustments: dict[str, int] = {}
        self.adjustments_paid: dict[str, str] = {}

    @classmethod
    def open(cls, platform_id: UUID, period: date, now: datetime) -> Settlement:
        return cls(
            id=settlement_id(platform_id, period),
            platform_id=platform_id,
            period=period,
            opened_at=now,
        )

    @property
    def is_reconciled(self) -> bool:
        return self.status in RECONCILED

    @property
    def adjustments_due(self) -> list[tuple[UUID, int]]:
        return [
            (UUID(case), amount)
            for case, amount in self.adjustments.items()
            if case not in self.adjustments_paid
        ]

    @property
    def invariant_holds(self) -> bool:
        if not self.is_reconciled:
            return True
        return balances(
            self.agreed,
            self.open_theirs,
            self.withheld,
            self.statement_lines,
            self.carried_in,
            self.carried_out,
        )

    # steps

    def defer(self, reason: str, until: datetime) -> None:
        """A step could not run yet (the statement is not out, the read model is behind,
        the previous day has not reconciled, the payment failed): run it again `until`."""
        self._deferred(reason, until)

    def collect(self, count: int, total: int, chunks: int, currency: str) -> None:
        self._require("collecting")
        self._ours_collected(count, total, chunks, currency)

    def take_statement(self, count: int, total: int, lines_total: int, chunks: int) -> None:
        self._require("awaiting_statement")
        self._statement_fetched(count, total, lines_total, chunks)

    def reconcile(
        self,
        outcome: Reconciliation,
        carried_in_count: int,
        result_chunks: int,
        carried_chunks: int,
    ) -> None:
        self._require("reconciling")
        self._reconciled(
            dict(outcome.counts),
            len(outcome.results),
            outcome.agreed,
            outcome.open_theirs,
            outcome.cases,
            outcome.theirs_carried_in,
            outcome.theirs_carried_out,
            carried_in_count,
            len(outcome.carried_out),
            result_chunks,
            carried_chunks,
        )
        assert self.invariant_holds, "agreed + open cases + withheld = statement ± carried"

    def take_carry_from_previous(self, previous_id: UUID, count: int) -> None:
        """The previous day reconciled and carries `count` lines into this one (recorded in
        the same save, so a day reconciling at the same moment conflicts and decides again)."""
        if self.is_reconciled:
            raise StateConflict("a reconciled settlement takes no carried lines")
        self._previous_reconciled(previous_id, count)

    def case_resolved(self, case_id: UUID, pay: int, theirs: int) -> None:
        self._case_resolved(case_id, pay, theirs)
        assert self.invariant_holds, "agreed + open cases + withheld = statement ± carried"

    def approve(self, by: str) -> None:
        if self.status != "awaiting_approval":
            raise StateConflict(
                f"only a settlement awaiting approval is approved; this one is {self.status}"
            )
        self._approved(by)

    def request_payment(self) -> int:
        """Fix what is paid (on the first request) and return it."""
        self._require("paying")
        if self.payment is None:
            self._payment_requested(self.agreed)
        assert self.payment is not None
        return self.payment

    def record_payment(self, reference: str | None, amount: int) -> None:
        self._require("paying")
        self._paid(reference, amount, self._payment_postings(amount))

    def record_adjustment(self, case_id: UUID, reference: str, amount: int) -> None:
        if str(case_id) in self.adjustments_paid:
            return
        self._adjustment_paid(case_id, reference, amount, self._payment_postings(amount))

    def _require(self, status: str) -> None:
        if self.status != status:
            raise StateConflict(f"settlement {self.id} is {self.status}, not {status}")

    def _payment_postings(self, amount: int) -> Postings | None:
        if amount <= 0:
            return None
        return Postings.of(
            (
                accounts.platform_payable(self.platform_id),
                accounts.external_platform_settlements(self.currency),
                self.currency,
                amount,
            )
        )

    # events

    @event("Deferred")
    def _deferred(self, reason: str, until: datetime) -> None:
        self.due_at = until
        self.tries += 1
        self.waiting_for = reason

    def _step_done(self, status: str) -> None:
        self.status = status
        self.due_at = None
        self.tries = 0
        self.waiting_for = None

    @event("OursCollected")
    def _ours_collected(self, count: int, total: int, chunks: int, currency: str) -> None:
        self.ours_count = count
        self.owed = total
        self.ours_chunks = chunks
        self.currency = currency
        self._step_done("awaiting_statement")

    @event("StatementFetched")
    def _statement_fetched(self, count: int, total: int, lines_total: int, chunks: int) -> None:
        self.theirs_count = count
        self.statement = total
        self.statement_lines = lines_total
        self.theirs_chunks = chunks
        self.statement_consistent = total == lines_total
        self._step_done("reconciling")

    @event("PreviousReconciled")
    def _previous_reconciled(self, previous_id: UUID, count: int) -> None:
        self.carried_in_count = count

    @event("Reconciled")
    def _reconciled(
        self,
        counts: dict[str, int],
        results: int,
        agreed: int,
        open_theirs: int,
        cases: int,
        carried_in: int,
        carried_out: int,
        carried_in_count: int,
        carried_out_count: int,
        result_chunks: int,
        carried_chunks: int,
    ) -> None:
        self.counts = counts
        self.results = results
        self.agreed = agreed
        self.open_theirs = open_theirs
        self.cases = cases
        self.open_cases = cases
        self.carried_in = carried_in
        self.carried_out = carried_out
        self.carried_in_count = carried_in_count
        self.carried_out_count = carried_out_count
        self.result_chunks = result_chunks
        self.carried_chunks = carried_chunks
        # a statement whose total is not the sum of its lines is never paid unseen
        clear = cases == 0 and self.statement_consistent
        self._step_done("paying" if clear else "awaiting_approval")

    @event("CaseResolved")
    def _case_resolved(self, case_id: UUID, pay: int, theirs: int) -> None:
        self.open_cases -= 1
        self.open_theirs -= theirs
        self.withheld += theirs - pay
        self.agreed += pay
        if self.payment is not None and pay != 0:
            if pay > 0:
                self.adjustments[str(case_id)] = pay
            else:
                self.credit -= pay
        if (
            self.status == "awaiting_approval"
            and self.open_cases == 0
            and self.statement_consistent
        ):
            self.status = "paying"

    @event("Approved")
    def _approved(self, by: str) -> None:
        self.approved_by = by
        self.status = "paying"

    @event("PaymentRequested")
    def _payment_requested(self, amount: int) -> None:
        self.payment = amount

    @event("Paid")
    def _paid(self, reference: str | None, amount: int, postings: Postings | None) -> None:
        self.postings = postings
        self.reference = reference
        self.paid += max(amount, 0)
        self.credit += max(-amount, 0)
        self._step_done("paid")

    @event("AdjustmentPaid")
    def _adjustment_paid(
        self, case_id: UUID, reference: str, amount: int, postings: Postings | None
    ) -> None:
        self.postings = postings
        self.adjustments_paid[str(case_id)] = reference
        self.paid += amount
