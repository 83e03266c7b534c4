"""The settlement saga's decisions: pure functions of lines, keys and state.

Matching. Lines are matched by (order number, kind): the same key on both sides is
`matched` when the amounts agree and `amount_differs` otherwise; a key on one side only is
`ours_only` or `theirs_only`. A key twice on one side matches once; the extra line is a
difference of its own (a platform billing one order twice is a case, never paid twice).

Timing differences (SPEC 3.4). Settlement D takes our lines of D plus the lines carried from
D-1's settlement, and the platform's statement of D plus their lines carried from D-1. After
matching:

* an `ours_only` line of D is carried to D+1 (the platform may bill it on its next statement);
* a `theirs_only` line of D whose key is on our side in D+1 is carried to D+1;
* a carried line still unmatched in D+1 opens a case (it stayed unmatched across both days);
* every other difference (`amount_differs`, any other `theirs_only`) opens a case.

Nothing is carried into a settlement that has already reconciled: when D+1 reconciled before
D, D's differences open cases at once. D+1 waits for D (if D exists) to reconcile first.

Amounts (signed minor units: a refund line subtracts). `owed`: our lines of D; `statement`:
the platform's total of D; `agreed`: what will be paid (matched lines plus resolutions that
pay); `withheld`: what resolved cases decided not to pay of the platform's figure. The
invariant, checked on every reconciliation and resolution:

    agreed + open cases (at the platform's figure) + withheld
        = statement lines of D + their lines carried in - their lines carried out

(with every case accepted at the platform's figure, `withheld` is 0: the brief's form).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from ledger.settlement.ports import Line, LineKind

Match = Literal["matched", "amount_differs", "ours_only", "theirs_only"]
Disposition = Literal["agreed", "case", "carried"]
Outcome = Literal["accept_theirs", "keep_ours", "request_refund", "write_off"]
OUTCOMES: tuple[str, ...] = ("accept_theirs", "keep_ours", "request_refund", "write_off")
CASE_KINDS: tuple[str, ...] = ("ours_only", "theirs_only", "amount_differs", "late_success")

STATEMENT_RETRY = timedelta(seconds=60)
PREVIOUS_WAIT = timedelta(seconds=10)
PAYMENT_RETRY = timedelta(seconds=30)
CATCH_UP_WAIT = timedelta(seconds=5)
MAX_RETRY = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class Carried:
    """A line carried in from the previous settlement, with the side it is on."""

    side: Literal["ours", "theirs"]
    line: Line


@dataclass(frozen=True, slots=True)
class Result:
    """One matched key: both sides' lines (either may be missing), the match and what
    follows from it."""

    order_no: str
    kind: LineKind
    ours: Line | None
    theirs: Line | None
    match: Match
    disposition: Disposition

    @property
    def ours_signed(self) -> int:
        return self.ours.signed if self.ours else 0

    @property
    def theirs_signed(self) -> int:
        return self.theirs.signed if self.theirs else 0


@dataclass
class Reconciliation:
    """Every result of one settlement's matching, the lines carried out, and its sums."""

    results: list[Result] = field(default_factory=list)
    carried_out: list[Carried] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {
            m: 0 for m in ("matched", "amount_differs", "ours_only", "theirs_only")
        }
    )
    agreed: int = 0
    open_theirs: int = 0
    cases: int = 0
    theirs_carried_in: int = 0
    theirs_carried_out: int = 0

    @property
    def case_results(self) -> list[Result]:
        return [r for r in self.results if r.disposition == "case"]


def reconcile(
    ours: Iterable[Line],
    theirs: Iterable[Line],
    carried_in: Iterable[Carried] = (),
    ours_next_keys: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    *,
    may_carry: bool = True,
) -> Reconciliation:
    """Match our lines against the platform's (see the module's rule). `ours_next_keys`: the
    keys on our side in D+1; `may_carry`: False when D+1 has already reconciled."""
    carried_keys: dict[str, set[tuple[str, str]]] = {"ours": set(), "theirs": set()}
    ours_all: list[Line] = list(ours)
    theirs_all: list[Line] = list(theirs)
    out = Reconciliation()
    for carried in carried_in:
        carried_keys[carried.side].add(carried.line.key)
        (ours_all if carried.side == "ours" else theirs_all).append(carried.line)
        if carried.side == "theirs":
            out.theirs_carried_in += carried.line.signed
    waiting: dict[tuple[str, str], list[Line]] = defaultdict(list)
    for line in theirs_all:
        waiting[line.key].append(line)
    for line in ours_all:
        candidates = waiting.get(line.key)
        if candidates:
            _add(out, pair(line, candidates.pop(0)))
        elif may_carry and line.key not in carried_keys["ours"]:
            _carry(out, "ours", line)
        else:
            _add(out, Result(line.order_no, line.kind, line, None, "ours_only", "case"))
    for lines in waiting.values():
        for line in lines:
            carry = may_carry and line.key not in carried_keys["theirs"]
            if carry and line.key in ours_next_keys:
                _carry(out, "theirs", line)
            else:
                _add(out, Result(line.order_no, line.kind, None, line, "theirs_only", "case"))
    return out


def pair(ours: Line, theirs: Line) -> Result:
    """The same key on both sides: matched when the amounts agree."""
    if ours.amount == theirs.amount:
        return Result(ours.order_no, ours.kind, ours, theirs, "matched", "agreed")
    return Result(ours.order_no, ours.kind, ours, theirs, "amount_differs", "case")


def _add(out: Reconciliation, result: Result) -> None:
    out.results.append(result)
    out.counts[result.match] += 1
    if result.disposition == "agreed":
        out.agreed += result.theirs_signed
    else:
        out.cases += 1
        out.open_theirs += result.theirs_signed


def _carry(out: Reconciliation, side: Literal["ours", "theirs"], line: Line) -> None:
    match: Match = "ours_only" if side == "ours" else "theirs_only"
    ours, theirs = (line, None) if side == "ours" else (None, line)
    out.results.append(Result(line.order_no, line.kind, ours, theirs, match, "carried"))
    out.counts[match] += 1
    out.carried_out.append(Carried(side, line))
    if side == "theirs":
        out.theirs_carried_out += line.signed


def balances(
    agreed: int,
    open_theirs: int,
    withheld: int,
    statement_lines: int,
    carried_in: int,
    carried_out: int,
) -> bool:
    """The settlement's invariant (see the module docstring)."""
    return agreed + open_theirs + withheld == statement_lines + carried_in - carried_out


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a case's outcome pays the platform and how the accrual moves.

    `pay`: added to the settlement's agreed amount (signed). `to_payable`: moved into the
    platform's payable from the operator's settlement differences (negative: out of the
    payable into the differences), so that the payment, which draws the payable down by
    what is paid, never pays more than was accrued without saying where it came from."""

    pay: int
    to_payable: int


def resolution(outcome: str, ours: int, theirs: int) -> Resolution:
    """Per outcome, with `ours` and `theirs` the signed figures of the case's line (0 on the
    side it is missing from):

    * `accept_theirs`: the platform's figure is paid; the difference from what we accrued
      (theirs - ours) comes from the operator's settlement differences (or goes there when
      the platform bills less: the accrual it will never bill is released);
    * `keep_ours`: our figure is paid; the accrual stands as it is, nothing moves;
    * `request_refund`: only what both sides agree on is paid (the smaller figure) and the
      platform is asked to take back the rest; nothing moves until it answers;
    * `write_off`: the smaller figure is paid and what we accrued beyond it is released to
      the operator's settlement differences (the platform's extra is not paid).
    """
    if outcome == "accept_theirs":
        return Resolution(theirs, theirs - ours)
    if outcome == "keep_ours":
        return Resolution(ours, 0)
    if outcome == "request_refund":
        return Resolution(min(ours, theirs), 0)
    if outcome == "write_off":
        pay = min(ours, theirs)
        return Resolution(pay, pay - ours)
    raise ValueError(f"unknown outcome {outcome!r}")


Step = Literal["collect", "fetch_statement", "reconcile", "pay", "pay_adjustments", "none"]


def next_step(status: str, due_at: datetime | None, now: datetime, adjustments_due: bool) -> Step:
    """What `advance` runs for a settlement in `status` (nothing before its due time)."""
    if due_at is not None and now < due_at:
        return "none"
    if status == "collecting":
        return "collect"
    if status == "awaiting_statement":
        return "fetch_statement"
    if status == "reconciling":
        return "reconcile"
    if status == "paying":
        return "pay"
    if status == "paid" and adjustments_due:
        return "pay_adjustments"
    return "none"


def retry_after(tries: int, base: timedelta) -> timedelta:
    """A wait that doubles with each try in a row, capped."""
    return min(base * 2 ** min(max(tries - 1, 0), 20), MAX_RETRY)


def period_closed(period: date, now: datetime) -> bool:
    """A period is a UTC day; it is closed once the next day has begun."""
    return period < now.astimezone(UTC).date()
