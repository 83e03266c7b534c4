"""The sandbox platform's statements and settlement payments, on its own books: a day's
credited orders at the partner's prices minus its accepted refunds, published once the day
has ended (at once with close_now), frozen once published, and each statement knob making
it disagree in exactly the way it says."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from adapters.sandbox.faults import Faults, FaultsUpdate
from adapters.sandbox.platform import Refused, SandboxPlatform
from adapters.sandbox.statements import AcceptedRefund, Statements

DAY = date(2026, 11, 30)
GOLD, SILVER, OTHER = "gold-month", "silver-month", "another-platforms-plan"
PRICES = [
    {"product_code": GOLD, "amount": 1500, "currency": "CNY"},
    {"product_code": SILVER, "amount": 900, "currency": "CNY"},
]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Platform:
    """The sandbox's books and statements under one clock, with a refund desk."""

    def __init__(self) -> None:
        self.clock = Clock(datetime(2026, 11, 30, 9, tzinfo=UTC))
        self.books = SandboxPlatform("secret", "partner", clock=self.clock)
        self.refunds: list[AcceptedRefund] = []
        self.statements = Statements(self.books, lambda: self.refunds, clock=self.clock)

    def credit(self, order_no: str, product: str, at: datetime, account: str = "138") -> None:
        self.clock.now = at
        order, _ = self.books.recharge(
            {"order_no": order_no, "account": account, "product_code": product, "duration_days": 30}
        )
        assert order.order_no == order_no

    def set(self, **faults: Any) -> None:
        self.books.set_faults(FaultsUpdate(**faults))

    def ask(
        self,
        day: date = DAY,
        *,
        close_now: bool = False,
        at: datetime | None = None,
        products: list[dict[str, Any]] = PRICES,
    ) -> dict[str, Any]:
        self.clock.now = at or datetime(2026, 12, 1, 1, tzinfo=UTC)
        payload: dict[str, Any] = {"period": day.isoformat(), "products": products}
        if close_now:
            payload["close_now"] = True
        return self.statements.statement(payload)


def at(hh: int, mm: int = 0, ss: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=UTC)


def lines(answer: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(line["order_no"], line["kind"], line["amount"]) for line in answer["lines"]]


@pytest.fixture
def platform() -> Platform:
    return Platform()


def test_a_statement_bills_the_days_credited_orders_of_the_listed_products(
    platform: Platform,
) -> None:
    platform.credit("o1", GOLD, at(10))
    platform.credit("o2", SILVER, at(23, 59, 59))
    platform.credit("o3", OTHER, at(11))  # another platform's product
    platform.credit("o4", GOLD, at(0, 0, 1, day=DAY + timedelta(days=1)))
    platform.set(fail_accounts=["blocked"])
    platform.credit("o5", GOLD, at(12), account="blocked")  # failed: never billed

    answer = platform.ask(at=at(1, day=DAY + timedelta(days=1)))

    assert answer["status"] == "published"
    assert lines(answer) == [("o1", "charge", 1500), ("o2", "charge", 900)]
    assert answer["total"] == {"amount": 2400, "currency": "CNY"}
    assert answer["lines"][1]["at"] == "2026-11-30T23:59:59Z"


def test_an_accepted_refund_reverses_the_order_on_the_day_it_was_accepted(
    platform: Platform,
) -> None:
    platform.credit("o1", GOLD, at(10))
    platform.credit("o2", SILVER, at(11))
    platform.refunds.append(AcceptedRefund("o1", at(8, day=DAY + timedelta(days=1))))

    first_day = platform.ask(DAY, at=at(9, day=DAY + timedelta(days=2)))
    second_day = platform.ask(DAY + timedelta(days=1), at=at(9, day=DAY + timedelta(days=2)))

    assert lines(first_day) == [("o1", "charge", 1500), ("o2", "charge", 900)]
    assert lines(second_day) == [("o1", "refund", 1500)]
    assert second_day["total"]["amount"] == -1500


def test_a_day_is_not_ready_before_it_ends_unless_closed_now(platform: Platform) -> None:
    platform.credit("o1", GOLD, at(10))

    early = platform.ask(at=at(22))
    closed_now = platform.ask(at=at(22, 1), close_now=True)

    assert early["status"] == "not_ready" and 0 < early["retry_after"] <= 60
    assert closed_now["status"] == "published"
    assert lines(closed_now) == [("o1", "charge", 1500)]


def test_a_published_statement_is_frozen(platform: Platform) -> None:
    platform.credit("o1", GOLD, at(10))
    first = platform.ask(close_now=True, at=at(12))
    platform.credit("o2", GOLD, at(13))

    again = platform.ask(at=at(1, day=DAY + timedelta(days=1)))

    assert again == first
    assert lines(again) == [("o1", "charge", 1500)]


def test_not_ready_seconds_count_from_the_first_request(platform: Platform) -> None:
    platform.set(statement_not_ready_seconds=120)
    platform.credit("o1", GOLD, at(10))
    first_asked = at(3, day=DAY + timedelta(days=1))

    assert platform.ask(at=first_asked)["status"] == "not_ready"
    assert platform.ask(at=first_asked + timedelta(seconds=119))["status"] == "not_ready"
    assert platform.ask(at=first_asked + timedelta(seconds=120))["status"] == "published"


def test_each_statement_knob_changes_the_orders_it_names_and_no_other(
    platform: Platform,
) -> None:
    for n in range(1, 6):
        platform.credit(f"o{n}", GOLD, at(9 + n))
    platform.set(
        statement_drop_orders=["o1"],
        statement_extra_lines=1,
        statement_amount_orders=["o2"],
        statement_amount_delta=-300,
        statement_next_day_orders=["o3"],
    )

    today = platform.ask(at=at(9, day=DAY + timedelta(days=2)))
    next_day = platform.ask(DAY + timedelta(days=1), at=at(9, day=DAY + timedelta(days=2)))

    extra = "sandbox-extra-2026-11-30-1"
    assert lines(today) == [
        ("o2", "charge", 1200),
        ("o4", "charge", 1500),
        ("o5", "charge", 1500),
        (extra, "charge", 1500),
    ]
    assert today["total"]["amount"] == 1200 + 1500 + 1500 + 1500
    assert [line for line in lines(next_day) if line[0] == "o3"] == [("o3", "charge", 1500)]
    moved = next(line for line in next_day["lines"] if line["order_no"] == "o3")
    assert moved["at"] == "2026-12-01T00:00:01Z"


def test_knobs_given_at_start_hold_until_reset() -> None:
    books = SandboxPlatform(
        "secret", "partner", Faults(statement_drop_orders=("o1",), statement_extra_lines=2)
    )
    books.set_faults(FaultsUpdate(statement_extra_lines=0))

    assert books.faults.statement_drop_orders == ("o1",)
    assert books.faults.statement_extra_lines == 0
    assert books.reset().statement_extra_lines == 2
    assert books.faults.as_json()["statement_drop_orders"] == ["o1"]
    assert replace(books.faults, statement_amount_delta=5).statement_amount_delta == 5


@pytest.mark.parametrize(
    "payload",
    [
        {"period": "2026-13-01", "products": PRICES},
        {"period": "30/11/2026", "products": PRICES},
        {"period": DAY.isoformat(), "products": []},
        {"period": DAY.isoformat()},
        {
            "period": DAY.isoformat(),
            "products": [{"product_code": GOLD, "amount": 0, "currency": "CNY"}],
        },
        {
            "period": DAY.isoformat(),
            "products": [{"product_code": GOLD, "amount": 1.5, "currency": "CNY"}],
        },
    ],
)
def test_a_malformed_statement_request_is_refused(
    platform: Platform, payload: dict[str, Any]
) -> None:
    with pytest.raises(Refused) as refused:
        platform.statements.statement(payload)
    assert refused.value.status_code == 400


def test_a_payment_is_recorded_once_per_payment_id(platform: Platform) -> None:
    payment = {"payment_id": "s-1", "amount": 2400, "currency": "CNY"}

    first = platform.statements.pay(payment)
    again = platform.statements.pay(dict(payment))
    with pytest.raises(Refused) as conflict:
        platform.statements.pay(payment | {"amount": 2500})
    other = platform.statements.pay({"payment_id": "s-2", "amount": 0, "currency": "CNY"})

    assert again == first
    assert conflict.value.code == "payment_conflict" and conflict.value.status_code == 409
    assert [p.payment_id for p in platform.statements.payments()] == ["s-1", "s-2"]
    assert other.reference != first.reference
