"""The sandbox platform's settlement side: a statement per UTC day of the orders it credited
(from its own books) minus the refunds it accepted, and the settlement payments it receives.

A statement request names the period and the partner's price list for the platform's
products (``products``: product code, amount, currency); orders of other product codes are
not on it (one sandbox stands in for every demo platform). A period's statement is published
once the day has ended (at once when the request says ``close_now``: sandbox settlements of
the current day) and `statement_not_ready_seconds` after it was first asked for; then it is
frozen: asked again, the same lines. The statement knobs (`adapters.sandbox.faults`) make it
disagree with the ledger the ways real ones do: a line dropped, a line for an order the
partner never sent, an amount changed, a line moved past midnight to the next day's
statement. Payments are idempotent by payment id: the first one is recorded, a repeat
answers the same receipt, a repeat with another amount is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response

from adapters.platform_gateway import format_time
from adapters.sandbox.faults import Faults
from adapters.sandbox.platform import Order, Refused, SandboxPlatform
from adapters.settlement_statements import SETTLEMENT_PAYMENT_PATH, STATEMENT_PATH

MAX_PRODUCTS = 1_000
NOT_READY_RETRY_SECONDS = 60


@dataclass(frozen=True)
class Price:
    amount: int
    currency: str


@dataclass(frozen=True)
class StatementLine:
    order_no: str
    kind: str  # "charge" or "refund"
    product_code: str
    amount: int
    currency: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "order_no": self.order_no,
            "kind": self.kind,
            "amount": self.amount,
            "currency": self.currency,
            "at": format_time(self.at),
        }


@dataclass(frozen=True)
class AcceptedRefund:
    """A refund the platform accepted: the order's bill is reversed on the day of `at`."""

    order_no: str
    at: datetime


@dataclass(frozen=True)
class Payment:
    payment_id: str
    reference: str
    amount: int
    currency: str
    received_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "reference": self.reference,
            "amount": self.amount,
            "currency": self.currency,
            "received_at": format_time(self.received_at),
        }


class Books(Protocol):
    """What the statements read from the platform's books (`SandboxPlatform`)."""

    @property
    def faults(self) -> Faults: ...

    def credits(self, account: str | None = None) -> list[Order]: ...


@dataclass
class _State:
    first_asked: dict[tuple[date, frozenset[str]], datetime] = field(default_factory=dict)
    published: dict[tuple[date, frozenset[str]], dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)


class Statements:
    """Statements and payments of the sandbox platform; every method is thread-safe."""

    def __init__(
        self,
        books: Books,
        refunds: Callable[[], Iterable[AcceptedRefund]] = tuple,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`refunds`: the refunds the platform accepted so far (its refund desk's record)."""
        self._books = books
        self._refunds = refunds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    # --- statements -----------------------------------------------------------------------

    def statement(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer to a statement request: published (lines and total) or not ready."""
        period = _period(payload)
        prices = _prices(payload)
        close_now = payload.get("close_now") is True
        key = (period, frozenset(prices))
        now = self._clock()
        faults = self._books.faults
        with self._lock:
            if key in self._state.published:
                return self._state.published[key]
            first = self._state.first_asked.setdefault(key, now)
        end = datetime.combine(period + timedelta(days=1), time(), UTC)
        ready_at = first + timedelta(seconds=faults.statement_not_ready_seconds)
        if not close_now and now < end:
            ready_at = max(ready_at, end)
        if now < ready_at:
            wait = min(int((ready_at - now).total_seconds()) + 1, NOT_READY_RETRY_SECONDS)
            return {"period": period.isoformat(), "status": "not_ready", "retry_after": wait}
        lines = self._lines(period, prices, faults)
        answer = published(period, lines)
        with self._lock:
            return self._state.published.setdefault(key, answer)

    def _lines(self, period: date, prices: dict[str, Price], faults: Faults) -> list[StatementLine]:
        orders = {o.order_no: o for o in self._books.credits() if o.product_code in prices}
        lines = [
            StatementLine(o.order_no, "charge", o.product_code, 0, "", o.received_at)
            for o in orders.values()
        ]
        lines += [
            StatementLine(r.order_no, "refund", orders[r.order_no].product_code, 0, "", r.at)
            for r in self._refunds()
            if r.order_no in orders
        ]
        priced = [
            _priced(line, prices[line.product_code], faults)
            for line in lines
            if line.order_no not in faults.statement_drop_orders
        ]
        on_day = [
            line
            for line in (_timed(line, faults) for line in priced)
            if line.at.astimezone(UTC).date() == period
        ]
        return sorted(on_day + _extra_lines(period, prices, faults), key=lambda x: x.order_no)

    # --- payments -------------------------------------------------------------------------

    def pay(self, payload: dict[str, Any]) -> Payment:
        payment_id = payload.get("payment_id")
        if not isinstance(payment_id, str) or not 1 <= len(payment_id) <= 64:
            raise Refused(400, "bad_request", "payment_id must be a string of 1 to 64 chars")
        amount, currency = _money(payload)
        if amount < 0:
            raise Refused(400, "bad_request", "amount must not be negative")
        with self._lock:
            known = self._state.payments.get(payment_id)
            if known is not None:
                if (known.amount, known.currency) != (amount, currency):
                    raise Refused(409, "payment_conflict", "payment_id was used for another amount")
                return known
            reference = f"SP{len(self._state.payments) + 1:010d}"
            payment = Payment(payment_id, reference, amount, currency, self._clock())
            self._state.payments[payment_id] = payment
            return payment

    def payments(self) -> list[Payment]:
        with self._lock:
            return list(self._state.payments.values())


PartnerCall = Callable[
    [Request, Callable[[dict[str, Any], str], Awaitable[Response]]], Awaitable[Response]
]


def add_statement_routes(
    app: FastAPI,
    platform: SandboxPlatform,
    partner_call: PartnerCall,
) -> Statements:
    """The statement and payment endpoints of the partner API (through `partner_call`: the
    knobs every partner request meets, then the signature check), and ``GET
    /sandbox/payments`` listing the payments received, so a test can assert "paid once"."""

    def refunds() -> list[AcceptedRefund]:
        return [AcceptedRefund(order_no, at) for order_no, at in platform.accepted_refunds()]

    statements = Statements(platform, refunds)

    async def do_statement(payload: dict[str, Any], request_nonce: str) -> Response:
        answer = statements.statement(payload)
        return platform.signed_response(200, answer | {"request_nonce": request_nonce})

    async def do_payment(payload: dict[str, Any], request_nonce: str) -> Response:
        receipt = statements.pay(payload).as_json()
        answer = receipt | {"status": "received", "request_nonce": request_nonce}
        return platform.signed_response(200, answer)

    @app.post(STATEMENT_PATH)
    async def statement(request: Request) -> Response:
        return await partner_call(request, do_statement)

    @app.post(SETTLEMENT_PAYMENT_PATH)
    async def payment(request: Request) -> Response:
        return await partner_call(request, do_payment)

    @app.get("/sandbox/payments")
    async def get_payments() -> dict[str, Any]:
        return {"payments": [p.as_json() for p in statements.payments()]}

    return statements


def published(period: date, lines: list[StatementLine]) -> dict[str, Any]:
    currencies = {line.currency for line in lines}
    currency = currencies.pop() if len(currencies) == 1 else "CNY"
    total = sum(line.amount if line.kind == "charge" else -line.amount for line in lines)
    return {
        "period": period.isoformat(),
        "status": "published",
        "lines": [line.as_json() for line in lines],
        "total": {"amount": total, "currency": currency},
    }


def _priced(line: StatementLine, price: Price, faults: Faults) -> StatementLine:
    amount = price.amount
    if line.order_no in faults.statement_amount_orders:
        amount = max(1, amount + faults.statement_amount_delta)
    return StatementLine(
        line.order_no, line.kind, line.product_code, amount, price.currency, line.at
    )


def _timed(line: StatementLine, faults: Faults) -> StatementLine:
    """A line of an order named by `statement_next_day_orders` is booked just past the
    midnight after it happened: on the next day's statement."""
    if line.order_no not in faults.statement_next_day_orders:
        return line
    day = line.at.astimezone(UTC).date()
    moved = datetime.combine(day + timedelta(days=1), time(0, 0, 1), UTC)
    return StatementLine(
        line.order_no, line.kind, line.product_code, line.amount, line.currency, moved
    )


def _extra_lines(period: date, prices: dict[str, Price], faults: Faults) -> list[StatementLine]:
    """Orders the partner never sent, billed at the first listed product's price."""
    if not faults.statement_extra_lines or not prices:
        return []
    code = min(prices)
    price = prices[code]
    noon = datetime.combine(period, time(12), UTC)
    return [
        StatementLine(
            f"sandbox-extra-{period.isoformat()}-{n}",
            "charge",
            code,
            price.amount,
            price.currency,
            noon,
        )
        for n in range(1, faults.statement_extra_lines + 1)
    ]


def _period(payload: dict[str, Any]) -> date:
    text = payload.get("period")
    try:
        if not isinstance(text, str) or len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError as error:
        raise Refused(400, "bad_request", "period must be a date YYYY-MM-DD") from error


def _prices(payload: dict[str, Any]) -> dict[str, Price]:
    products = payload.get("products")
    if not isinstance(products, list) or not 1 <= len(products) <= MAX_PRODUCTS:
        raise Refused(400, "bad_request", f"products must list 1 to {MAX_PRODUCTS} prices")
    prices: dict[str, Price] = {}
    for product in products:
        if not isinstance(product, dict):
            raise Refused(400, "bad_request", "each product is an object")
        code = product.get("product_code")
        if not isinstance(code, str) or not 1 <= len(code) <= 64:
            raise Refused(400, "bad_request", "product_code must be a string of 1 to 64 chars")
        amount, currency = _money(product)
        if amount <= 0:
            raise Refused(400, "bad_request", "a product's amount must be positive")
        prices[code] = Price(amount, currency)
    return prices


def _money(payload: dict[str, Any]) -> tuple[int, str]:
    amount, currency = payload.get("amount"), payload.get("currency")
    if not isinstance(amount, int) or isinstance(amount, bool) or abs(amount) > 10**13:
        raise Refused(400, "bad_request", "amount must be an integer in minor units")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
        raise Refused(400, "bad_request", "currency must be three capital letters")
    return amount, currency
