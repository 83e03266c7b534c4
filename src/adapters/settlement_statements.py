"""A platform's statements and the settlement payments, over its partner API: the
`PlatformStatements` and `SettlementPayments` ports of `ledger.settlement.ports`.

The protocol is the recharge gateway's (`adapters.platform_gateway`): a signed JSON POST
carrying ``partner_id``, ``timestamp`` and ``nonce``, answered with a signed body that echoes
the request's nonce as ``request_nonce``.

* ``POST {base}/partner/v1/statement`` ``{period: "YYYY-MM-DD", products: [{product_code,
  amount, currency}], close_now?}``: the partner's price list names the platform's products
  (the platform bills their orders at those prices). Answered ``{status: "published", period,
  lines: [{order_no, kind, amount, currency, at}], total: {amount, currency}}`` or ``{status:
  "not_ready", retry_after}``. ``close_now`` (sandbox only) asks for a day that has not ended.
* ``POST {base}/partner/v1/settlement-payment`` ``{payment_id, amount, currency}``: one payment
  per payment id (the settlement's id); a repeat answers the first receipt ``{status:
  "received", payment_id, reference, amount, currency}``, a repeat with another amount is
  refused 409 ``payment_conflict``.

Only a correctly signed 200 answer to this very request is believed; anything else raises
`Unavailable` (or `StatementNotReady`, `StateConflict` where the platform said so), so the
settlement retries and never takes a guess for a statement or a payment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from adapters.outbound import AddressNotAllowed, OutboundAddresses, checked_transport
from adapters.platform_gateway import (
    CONNECT_TIMEOUT_SECONDS,
    encode_body,
    new_nonce,
    parse_time,
    signature_valid,
    signed_headers,
)
from ledger.errors import DomainError, StateConflict, Unavailable
from ledger.money import Money
from ledger.settlement.ports import Line, SettlementPaymentReceipt, Statement, StatementNotReady

if TYPE_CHECKING:
    from adapters.settings import Settings

STATEMENT_PATH = "/partner/v1/statement"
SETTLEMENT_PAYMENT_PATH = "/partner/v1/settlement-payment"
READ_TIMEOUT_SECONDS = 30.0
MAX_STATEMENT_BYTES = 256 * 1024 * 1024
MAX_LINES = 1_000_000


@dataclass(frozen=True)
class PlatformTerms:
    """Where a platform's partner API is and what its products cost (product code: the
    product's id, as the recharge gateway sends it)."""

    gateway_url: str
    prices: dict[str, Money]


class _Untrusted(Exception):
    pass


class PartnerClient:
    """Signed calls to platforms' partner APIs, one pooled ``httpx.Client`` for all."""

    def __init__(
        self,
        partner_id: str,
        secret: str,
        *,
        timeout: float = READ_TIMEOUT_SECONDS,
        addresses: OutboundAddresses | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.partner_id = partner_id
        self._secret = secret
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_SECONDS),
            limits=limits,
            transport=transport or checked_transport(addresses, limits),
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PartnerClient:
        return cls(
            settings.ledger_platform_partner_id,
            settings.ledger_platform_secret,
            addresses=OutboundAddresses(settings.outbound_allow_private),
        )

    def close(self) -> None:
        self._client.close()

    def call(self, base_url: str, path: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, the signed answer) of one request; `Unavailable` when nothing
        trustworthy came back."""
        timestamp = str(int(time.time()))
        nonce = new_nonce()
        body = encode_body(
            {"partner_id": self.partner_id, **fields, "timestamp": int(timestamp), "nonce": nonce}
        )
        headers = signed_headers(self._secret, self.partner_id, timestamp, nonce, body)
        url = base_url.rstrip("/") + path
        try:
            reply = self._client.post(url, content=body, headers=headers)
        except AddressNotAllowed as error:
            raise Unavailable(f"outbound address refused ({error.detail})") from error
        except httpx.HTTPError as error:
            raise Unavailable(f"the platform did not answer ({type(error).__name__})") from error
        try:
            return reply.status_code, self._read(reply, nonce)
        except _Untrusted as error:
            raise Unavailable(f"the platform's answer cannot be trusted: {error}") from error

    def _read(self, reply: httpx.Response, nonce: str) -> dict[str, Any]:
        body = reply.content
        if len(body) > MAX_STATEMENT_BYTES:
            raise _Untrusted("reply too large")
        timestamp = reply.headers.get("X-Timestamp", "")
        reply_nonce = reply.headers.get("X-Nonce", "")
        signature = reply.headers.get("X-Signature", "")
        if not (timestamp and reply_nonce and signature):
            raise _Untrusted(f"http {reply.status_code}, unsigned")
        if not signature_valid(self._secret, timestamp, reply_nonce, body, signature):
            raise _Untrusted("bad signature")
        try:
            answer = json.loads(body)
        except ValueError as error:
            raise _Untrusted("not JSON") from error
        if not isinstance(answer, dict):
            raise _Untrusted("not a JSON object")
        if reply.status_code == 200 and answer.get("request_nonce") != nonce:
            raise _Untrusted("it answers another request")
        return answer


class HttpPlatformStatements:
    """`PlatformStatements` over the partner API; `terms` says where a platform is and what
    its products cost. `close_now`: ask for days that have not ended (sandbox mode)."""

    def __init__(
        self,
        client: PartnerClient,
        terms: Callable[[UUID], PlatformTerms],
        *,
        close_now: bool = False,
    ) -> None:
        self._client = client
        self._terms = terms
        self._close_now = close_now

    def statement(self, platform_id: UUID, period: date) -> Statement:
        terms = self._terms(platform_id)
        if not terms.prices:
            return Statement(platform_id, period, (), Money(0))
        products = [
            {"product_code": code, "amount": price.amount, "currency": price.currency}
            for code, price in sorted(terms.prices.items())
        ]
        fields: dict[str, Any] = {"period": period.isoformat(), "products": products}
        if self._close_now:
            fields["close_now"] = True
        status, answer = self._client.call(terms.gateway_url, STATEMENT_PATH, fields)
        if status != 200:
            raise Unavailable(f"the platform refused the statement request: http {status}")
        if answer.get("status") == "not_ready":
            retry_after = answer.get("retry_after")
            seconds = retry_after if isinstance(retry_after, int) and retry_after > 0 else 60
            raise StatementNotReady(min(seconds, 3600))
        try:
            return read_statement(platform_id, period, answer)
        except (ValueError, TypeError, KeyError, DomainError) as error:
            raise Unavailable(f"the platform's statement is malformed: {error}") from error


def read_statement(platform_id: UUID, period: date, answer: dict[str, Any]) -> Statement:
    """A published statement's answer, checked: its period, its lines' shape, no line twice,
    and the total it asks for equal to the sum of its lines."""
    if answer.get("status") != "published" or answer.get("period") != period.isoformat():
        raise ValueError("not the published statement of the period asked for")
    raw_lines = answer["lines"]
    if not isinstance(raw_lines, list) or len(raw_lines) > MAX_LINES:
        raise ValueError("lines must be a list")
    lines = tuple(read_line(raw) for raw in raw_lines)
    if len({line.key for line in lines}) != len(lines):
        raise ValueError("a line appears twice")
    total = money(answer["total"])
    if sum(line.signed for line in lines) != total.amount:
        raise ValueError("the total is not the sum of the lines")
    if any(line.amount.currency != total.currency for line in lines):
        raise ValueError("lines in another currency than the total")
    return Statement(platform_id, period, lines, total)


def read_line(raw: Any) -> Line:
    if not isinstance(raw, dict):
        raise ValueError("a line is an object")
    order_no, kind = raw["order_no"], raw["kind"]
    if not isinstance(order_no, str) or not 1 <= len(order_no) <= 64:
        raise ValueError("order_no must be a string of 1 to 64 chars")
    if kind not in ("charge", "refund"):
        raise ValueError(f"unknown line kind {kind!r}")
    amount = money(raw).require_positive()
    return Line(order_no, kind, amount, parse_time(raw["at"]))


def money(raw: Any) -> Money:
    if not isinstance(raw, dict):
        raise ValueError("money is an object")
    amount, currency = raw["amount"], raw["currency"]
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ValueError("an amount is an integer in minor units")
    return Money(amount, currency)


class HttpSettlementPayments:
    """`SettlementPayments` over the partner API; `gateway_url` says where a platform is."""

    def __init__(self, client: PartnerClient, gateway_url: Callable[[UUID], str]) -> None:
        self._client = client
        self._gateway_url = gateway_url

    def pay(self, payment_id: UUID, platform_id: UUID, amount: Money) -> SettlementPaymentReceipt:
        fields = {
            "payment_id": str(payment_id),
            "amount": amount.amount,
            "currency": amount.currency,
        }
        base = self._gateway_url(platform_id)
        status, answer = self._client.call(base, SETTLEMENT_PAYMENT_PATH, fields)
        if status == 409 and answer.get("code") == "payment_conflict":
            raise StateConflict(f"payment {payment_id} was made for another amount")
        if status != 200:
            raise Unavailable(f"the platform refused the payment: http {status}")
        try:
            paid = money(answer)
            reference = answer["reference"]
            if answer.get("payment_id") != str(payment_id) or not isinstance(reference, str):
                raise ValueError("the receipt is for another payment")
        except (ValueError, TypeError, KeyError, DomainError) as error:
            raise Unavailable(f"the platform's receipt is malformed: {error}") from error
        if paid != amount:
            raise StateConflict(f"payment {payment_id} was received as {paid}, not {amount}")
        return SettlementPaymentReceipt(reference, paid)
