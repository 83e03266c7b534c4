"""The settlement saga's decisions as pure functions: matching, carrying across days, the
invariant, what each case outcome pays and moves, and which step is next."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ledger.settlement.decisions import (
    MAX_RETRY,
    Carried,
    balances,
    next_step,
    period_closed,
    reconcile,
    resolution,
    retry_after,
)
from tests.settlement_fakes import DAY, line

NEXT = DAY + timedelta(days=1)


def matches(outcome):
    return {(r.order_no, r.kind): (r.match, r.disposition) for r in outcome.results}


def test_the_same_key_and_amount_on_both_sides_is_matched_and_agreed():
    outcome = reconcile([line("A", 2000)], [line("A", 2000)])

    assert matches(outcome) == {("A", "charge"): ("matched", "agreed")}
    assert outcome.agreed == 2000
    assert outcome.cases == 0


def test_the_same_key_with_another_amount_opens_an_amount_differs_case():
    outcome = reconcile([line("A", 2000)], [line("A", 2100)])

    assert matches(outcome) == {("A", "charge"): ("amount_differs", "case")}
    assert (outcome.agreed, outcome.open_theirs, outcome.cases) == (0, 2100, 1)


def test_a_charge_and_a_refund_of_one_order_are_two_keys():
    ours = [line("A", 2000), line("A", 2000, kind="refund")]
    outcome = reconcile(ours, [line("A", 2000)])

    assert matches(outcome) == {
        ("A", "charge"): ("matched", "agreed"),
        ("A", "refund"): ("ours_only", "carried"),
    }


def test_our_line_missing_from_their_statement_is_carried_to_the_next_day():
    outcome = reconcile([line("A", 2000)], [])

    assert matches(outcome) == {("A", "charge"): ("ours_only", "carried")}
    assert outcome.carried_out == [Carried("ours", line("A", 2000))]
    assert outcome.cases == 0


def test_our_carried_line_still_unbilled_the_next_day_opens_a_case():
    carried = [Carried("ours", line("A", 2000))]
    outcome = reconcile([], [], carried)

    assert matches(outcome) == {("A", "charge"): ("ours_only", "case")}
    assert outcome.carried_out == []


def test_their_line_that_is_on_our_side_the_next_day_is_carried():
    outcome = reconcile([], [line("A", 2000)], ours_next_keys={("A", "charge")})

    assert matches(outcome) == {("A", "charge"): ("theirs_only", "carried")}
    assert outcome.theirs_carried_out == 2000


def test_their_line_on_neither_of_our_days_opens_a_case():
    outcome = reconcile([], [line("A", 2000)])

    assert matches(outcome) == {("A", "charge"): ("theirs_only", "case")}
    assert outcome.open_theirs == 2000


def test_a_carried_line_matches_the_other_side_of_the_next_day():
    late = Carried("ours", line("A", 2000))
    outcome = reconcile([], [line("A", 2000, NEXT)], [late])

    assert matches(outcome) == {("A", "charge"): ("matched", "agreed")}
    assert outcome.agreed == 2000


def test_their_carried_line_still_unmatched_opens_a_case_and_is_not_carried_again():
    carried = [Carried("theirs", line("A", 2000))]
    outcome = reconcile([], [], carried, ours_next_keys={("A", "charge")})

    assert matches(outcome) == {("A", "charge"): ("theirs_only", "case")}
    assert outcome.theirs_carried_in == 2000


def test_nothing_is_carried_into_a_day_that_has_already_reconciled():
    outcome = reconcile(
        [line("A", 2000)], [line("B", 100)], ours_next_keys={("B", "charge")}, may_carry=False
    )

    assert matches(outcome) == {
        ("A", "charge"): ("ours_only", "case"),
        ("B", "charge"): ("theirs_only", "case"),
    }


def test_an_order_billed_twice_is_matched_once_and_the_second_line_is_a_case():
    outcome = reconcile([line("A", 2000)], [line("A", 2000), line("A", 2000)])

    assert [(r.match, r.disposition) for r in outcome.results] == [
        ("matched", "agreed"),
        ("theirs_only", "case"),
    ]
    assert outcome.agreed == 2000


def test_refunds_subtract_from_what_is_agreed():
    refund = line("A", 2000, kind="refund")
    outcome = reconcile([line("B", 3000), refund], [line("B", 3000), refund])

    assert outcome.agreed == 1000


def test_agreed_plus_open_cases_is_the_statement_minus_what_is_carried_out():
    ours = [line("A", 100), line("B", 200), line("C", 300)]
    theirs = [line("A", 100), line("B", 250), line("D", 400), line("E", 500)]
    outcome = reconcile(ours, theirs, ours_next_keys={("E", "charge")})

    statement = sum(x.signed for x in theirs)
    assert outcome.agreed + outcome.open_theirs == statement - outcome.theirs_carried_out
    assert balances(outcome.agreed, outcome.open_theirs, 0, statement, 0, 500)
    assert not balances(outcome.agreed, outcome.open_theirs, 0, statement, 0, 0)


@pytest.mark.parametrize(
    ("outcome", "ours", "theirs", "pay", "to_payable"),
    [
        ("accept_theirs", 2000, 2100, 2100, 100),  # the extra 1.00 from the differences
        ("accept_theirs", 2000, 1900, 1900, -100),  # the unbilled 1.00 released
        ("accept_theirs", 0, 2000, 2000, 2000),  # theirs only: all of it from the differences
        ("accept_theirs", 2000, 0, 0, -2000),  # ours only: the accrual released
        ("keep_ours", 2000, 2100, 2000, 0),
        ("keep_ours", 0, 2000, 0, 0),
        ("request_refund", 2000, 2100, 2000, 0),
        ("request_refund", 0, 2000, 0, 0),
        ("write_off", 2000, 0, 0, -2000),
        ("write_off", 2000, 2100, 2000, 0),
        ("write_off", 2000, 1900, 1900, -100),
    ],
)
def test_each_outcome_pays_and_moves_what_its_rule_says(outcome, ours, theirs, pay, to_payable):
    decided = resolution(outcome, ours, theirs)

    assert (decided.pay, decided.to_payable) == (pay, to_payable)


def test_an_unknown_outcome_is_refused():
    with pytest.raises(ValueError):
        resolution("pay_double", 1, 1)


@pytest.mark.parametrize(
    ("status", "step"),
    [
        ("collecting", "collect"),
        ("awaiting_statement", "fetch_statement"),
        ("reconciling", "reconcile"),
        ("awaiting_approval", "none"),
        ("paying", "pay"),
        ("paid", "none"),
    ],
)
def test_the_next_step_follows_the_status(status, step):
    now = datetime(2026, 12, 2, tzinfo=UTC)

    assert next_step(status, None, now, False) == step
    assert next_step(status, now + timedelta(seconds=1), now, False) == "none"


def test_a_paid_settlement_with_adjustments_due_pays_them():
    assert next_step("paid", None, datetime(2026, 12, 2, tzinfo=UTC), True) == "pay_adjustments"


def test_a_day_is_closed_once_the_next_utc_day_has_begun():
    day = date(2026, 12, 1)

    assert not period_closed(day, datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC))
    assert period_closed(day, datetime(2026, 12, 2, tzinfo=UTC))
    assert not period_closed(date(2026, 12, 5), datetime(2026, 12, 2, tzinfo=UTC))


def test_retries_wait_longer_each_time_up_to_a_limit():
    base = timedelta(seconds=10)

    assert [retry_after(n, base).seconds for n in (1, 2, 3)] == [10, 20, 40]
    assert retry_after(50, base) == MAX_RETRY
