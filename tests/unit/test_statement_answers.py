"""A platform's published statement is believed only whole: the period asked for, lines of a
known kind with positive amounts, no (order, kind) twice, one currency, and a total that is
the sum of its lines; anything else is refused before a settlement sees it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4

import pytest

from adapters.settlement_statements import read_statement
from ledger.errors import DomainError
from ledger.money import Money

DAY = date(2026, 11, 30)
PLATFORM = uuid4()


def answer(**changes: Any) -> dict[str, Any]:
    published: dict[str, Any] = {
        "status": "published",
        "period": "2026-11-30",
        "lines": [
            {"order_no": "o1", "kind": "charge", "amount": 1500, "currency": "CNY",
             "at": "2026-11-30T10:00:00Z"},
            {"order_no": "o1", "kind": "refund", "amount": 1500, "currency": "CNY",
             "at": "2026-11-30T12:00:00Z"},
            {"order_no": "o2", "kind": "charge", "amount": 900, "currency": "CNY",
             "at": "2026-11-30T23:59:59Z"},
        ],
        "total": {"amount": 900, "currency": "CNY"},
    }  # fmt: skip
    return published | changes


def test_a_whole_statement_is_read_with_signed_lines() -> None:
    statement = read_statement(PLATFORM, DAY, answer())

    assert [(line.key, line.signed) for line in statement.lines] == [
        (("o1", "charge"), 1500), (("o1", "refund"), -1500), (("o2", "charge"), 900),
    ]  # fmt: skip
    assert statement.total == Money(900)
    assert statement.lines[2].at == datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)


def line(**changes: Any) -> dict[str, Any]:
    return answer()["lines"][2] | changes


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"period": "2026-11-29"}, "another day"),
        ({"status": "not_ready"}, "not published"),
        ({"total": {"amount": 901, "currency": "CNY"}}, "total is not the sum"),
        ({"lines": answer()["lines"] + [line()]}, "a line twice"),
        ({"lines": [line(kind="bonus")], "total": {"amount": 900, "currency": "CNY"}}, "kind"),
        ({"lines": [line(amount=-900)], "total": {"amount": -900, "currency": "CNY"}}, "sign"),
        ({"lines": [line(amount=9.5)], "total": {"amount": 9, "currency": "CNY"}}, "float"),
        ({"lines": [line(currency="USD")], "total": {"amount": 900, "currency": "CNY"}}, "mix"),
        ({"lines": [line(at="2026-11-30 10:00")], "total": answer()["total"]}, "naive time"),
        ({"lines": [line(order_no="")], "total": answer()["total"]}, "empty order number"),
        ({"lines": "o1,o2"}, "lines not a list"),
    ],
)
def test_a_statement_that_does_not_add_up_is_refused(changes: dict[str, Any], why: str) -> None:
    with pytest.raises((ValueError, TypeError, KeyError, DomainError)):  # all: Unavailable
        read_statement(PLATFORM, DAY, answer(**changes))
