"""Merchant settlement: what the operator owes a merchant for a period, paid out once.

A settlement per (merchant, period) collects the statement lines that built
`merchant:<id>:payable` and were not settled yet: each consumption adds the merchant's part,
each refund takes it away again. The period is a day in the merchant's own time zone
(`YYYY-MM-DD`, the day its tills run on), closed once that day has ended there; a settlement
takes every unsettled line recorded before its cut-off, so a line committed just after an
earlier settlement collected (or a refund of a consumption settled earlier) is never lost: the
next settlement takes it. A period whose lines sum below zero pays nothing and carries the
negative amount to the merchant's next settlement (a payout is never negative).

The amount to pay is paid out of `merchant:<id>:payable` through the payout port, one payout
per currency keyed by `payout_id(settlement, currency)`, so asking again pays once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.domain import Aggregate, event

from ledger import accounts
from ledger.cards.consumptions import Consumption, ConsumptionRefund
from ledger.errors import DomainError, PeriodNotClosed, StateConflict
from ledger.money import Money
from ledger.postings import Holds, Postings

LineKind = Literal["consumption", "refund"]

MAX_LINES = 20_000
"""A settlement collects at most this many lines (oldest first); the rest go to the next."""


class InvalidPeriod(DomainError):
    """A period that is not a day written YYYY-MM-DD."""

    code = "invalid_period"


def settlement_id(merchant_id: UUID, period: date) -> UUID:
    """The same (merchant, period) is always the same settlement."""
    return uuid5(merchant_id, f"merchant-settlement:{period.isoformat()}")


def book_id(merchant_id: UUID) -> UUID:
    return uuid5(merchant_id, "merchant-settlement-book")


def payout_id(settlement: UUID, currency: str) -> UUID:
    """One payout per currency of a settlement; the same id on every retry."""
    return uuid5(settlement, f"payout:{currency}")


def parse_period(text: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidPeriod(f"period {text!r} is not a day YYYY-MM-DD") from None


def period_end(period: date, zone: ZoneInfo) -> datetime:
    """The instant the day ends in the merchant's time zone, in UTC."""
    return datetime.combine(period + timedelta(days=1), time(0), zone).astimezone(UTC)


def cutoff_of(period: date, zone: ZoneInfo, now: datetime, close_now: bool = False) -> datetime:
    """Where a settlement of the period stops taking lines. A day not over yet is refused,
    unless `close_now` (sandbox mode) settles today as if it had ended now."""
    try:
        end = period_end(period, zone)
    except OverflowError:  # the last day of the calendar never ends
        raise PeriodNotClosed(f"{period.isoformat()} has not ended yet") from None
    if end <= now:
        return end
    if close_now and now.astimezone(zone).date() == period:
        return now
    raise PeriodNotClosed(f"{period.isoformat()} has not ended yet in {zone.key}")


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One movement of a merchant's payable: `amount` is positive for a consumption, negative
    for a refund (the merchant's part given back)."""

    id: UUID
    merchant_id: UUID
    kind: LineKind
    consumption_id: UUID
    amount: Money
    at: datetime

    def to_row(self) -> list[Any]:
        return [
            str(self.id),
            self.kind,
            str(self.consumption_id),
            self.amount.currency,
            self.amount.amount,
            self.at.isoformat(),
        ]

    @classmethod
    def from_row(cls, merchant_id: UUID, row: list[Any]) -> StatementLine:
        line_id, kind, consumption_id, currency, amount, at = row
        return cls(
            UUID(line_id),
            merchant_id,
            kind,
            UUID(consumption_id),
            Money(int(amount), currency),
            datetime.fromisoformat(at),
        )


CONSUMPTION_RECORDED: Any = Consumption.Recorded  # type: ignore[attr-defined]
REFUND_RECORDED: Any = ConsumptionRefund.Recorded  # type: ignore[attr-defined]


def statement_line(event: Any) -> StatementLine | None:
    """The line a cards event adds to its merchant's statement: what its postings moved into
    `merchant:<id>:payable` (a consumption's merchant part, or a refund's reversal of it)."""
    if isinstance(event, CONSUMPTION_RECORDED):
        kind: LineKind = "consumption"
        consumption_id = event.originator_id
    elif isinstance(event, REFUND_RECORDED):
        kind = "refund"
        consumption_id = event.consumption_id
    else:
        return None
    payable = accounts.merchant_payable(event.merchant_id)
    legs = [leg for leg in event.postings if leg.account == payable]
    currency = (legs or list(event.postings))[0].asset  # a movement has at least two legs
    return StatementLine(
        id=event.originator_id,
        merchant_id=event.merchant_id,
        kind=kind,
        consumption_id=consumption_id,
        amount=Money(sum(leg.amount for leg in legs), currency),
        at=event.timestamp,
    )


def totals_of(lines: Iterable[StatementLine], carried_in: dict[str, int]) -> dict[str, Total]:
    """Per currency: consumptions, refunds, what was carried in, and what is due."""
    sums: dict[str, list[int]] = {c: [0, 0] for c in carried_in}
    for line in lines:
        pair = sums.setdefault(line.amount.currency, [0, 0])
        pair[0 if line.kind == "consumption" else 1] += line.amount.amount
    return {
        currency: Total(currency, consumptions, refunds, carried_in.get(currency, 0))
        for currency, (consumptions, refunds) in sorted(sums.items())
    }


@dataclass(frozen=True, slots=True)
class Total:
    """One currency of a settlement. `amount` may be negative (refunds of lines settled
    earlier): then nothing is paid and it is carried forward."""

    currency: str
    consumptions: int
    refunds: int
    carried_in: int

    @property
    def amount(self) -> int:
        return self.consumptions + self.refunds + self.carried_in

    @property
    def to_pay(self) -> int:
        return max(self.amount, 0)

    @property
    def carried_forward(self) -> int:
        return min(self.amount, 0)


class MerchantSettlement(Aggregate):
    """A merchant's period: `collecting` (opened, its lines not taken yet) -> `paying` (lines
    and amounts fixed, the payable held, payouts asked) -> `paid`. A payout that fails or
    whose answer is lost leaves it `paying`; it is asked again with the same payout id."""

    @event("Opened")
    def __init__(
        self, id: UUID, merchant_id: UUID, period: str, timezone: str, cutoff: datetime
    ) -> None:
        self.merchant_id = merchant_id
        self.period = period
        self.timezone = timezone
        self.cutoff = cutoff
        self.status = "collecting"
        self.line_rows: list[list[Any]] = []
        self.carried_in: dict[str, int] = {}
        self.payouts: dict[str, dict[str, Any]] = {}

    @property
    def lines(self) -> list[StatementLine]:
        return [StatementLine.from_row(self.merchant_id, row) for row in self.line_rows]

    @property
    def totals(self) -> dict[str, Total]:
        return totals_of(self.lines, self.carried_in)

    @property
    def payable(self) -> str:
        return accounts.merchant_payable(self.merchant_id)

    def collect(self, lines: list[StatementLine], carried_in: dict[str, int]) -> None:
        if self.status != "collecting":
            raise StateConflict(f"settlement {self.id} is already {self.status}")
        if any(line.merchant_id != self.merchant_id for line in lines):
            raise AssertionError("a settlement collects its own merchant's lines only")
        totals = totals_of(lines, carried_in)
        due = [(c, t.to_pay) for c, t in totals.items() if t.to_pay > 0]
        holds = Holds(tuple(leg for c, n in due for leg in Holds.place(self.payable, c, n)))
        self._collected(
            [line.to_row() for line in lines],
            {c: n for c, n in carried_in.items() if n},
            {c: {"amount": n, "status": "pending", "reference": "", "failure": ""} for c, n in due},
            holds,
        )

    @event("Collected")
    def _collected(
        self,
        lines: list[list[Any]],
        carried_in: dict[str, int],
        payouts: dict[str, dict[str, Any]],
        holds: Holds,
    ) -> None:
        self.line_rows = lines
        self.carried_in = dict(carried_in)
        self.payouts = {c: dict(p) for c, p in payouts.items()}
        self.status = "paying" if self.payouts else "paid"

    def unpaid(self) -> list[tuple[UUID, Money]]:
        """(payout id, amount) of each payout still to be made."""
        return [
            (payout_id(self.id, c), Money(p["amount"], c))
            for c, p in sorted(self.payouts.items())
            if p["status"] != "paid"
        ]

    def payout_paid(self, currency: str, reference: str) -> None:
        payout = self.payouts[currency]
        if payout["status"] == "paid":
            return
        amount = payout["amount"]
        postings = Postings.of(
            (self.payable, accounts.external_payouts(currency), currency, amount)
        )
        self._payout_paid(
            currency, reference, postings, Holds.release(self.payable, currency, amount)
        )

    @event("PayoutPaid")
    def _payout_paid(self, currency: str, reference: str, postings: Postings, holds: Holds) -> None:
        self.payouts[currency] = {
            **self.payouts[currency],
            "status": "paid",
            "reference": reference,
        }
        if all(p["status"] == "paid" for p in self.payouts.values()):
            self.status = "paid"

    def payout_failed(self, currency: str, reason: str) -> None:
        """Kept for the statement; the settlement stays `paying` and is asked again."""
        payout = self.payouts[currency]
        if payout["status"] == "paid" or payout["failure"] == reason:
            return
        self._payout_failed(currency, reason)

    @event("PayoutFailed")
    def _payout_failed(self, currency: str, reason: str) -> None:
        self.payouts[currency] = {**self.payouts[currency], "status": "failed", "failure": reason}


class MerchantSettlementBook(Aggregate):
    """Per merchant: the settlements collected in order and the negative amount carried to
    the next. Every collection saves it, so two settlements of one merchant never take the
    same lines at once: the second decides again after the first."""

    @event("Opened")
    def __init__(self, id: UUID, merchant_id: UUID) -> None:
        self.merchant_id = merchant_id
        self.carry: dict[str, int] = {}
        self.collected = 0

    @classmethod
    def open(cls, merchant_id: UUID) -> MerchantSettlementBook:
        return cls(id=book_id(merchant_id), merchant_id=merchant_id)

    def record(self, settlement: MerchantSettlement) -> None:
        carry = {c: t.carried_forward for c, t in settlement.totals.items() if t.carried_forward}
        self._recorded(settlement.id, carry)

    @event("SettlementCollected")
    def _recorded(self, settlement_id: UUID, carry: dict[str, int]) -> None:
        self.carry = dict(carry)
        self.collected += 1
