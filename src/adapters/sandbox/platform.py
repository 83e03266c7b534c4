"""The sandbox video platform's books: it verifies every partner request's signature (partner
id, timestamp window, single-use nonce, HMAC), keeps its own record of what it credited (in
memory), credits at most once per order number however often it is asked, answers
order-status queries and signs every answer. Refunds of credited orders are taken once per
refund number (every request counted, so a test can assert "asked once"), reviewed for
`refund_review_ms` and then accepted or rejected (`refund_rejection_rate`), and the outcome
called back when `refund_callbacks` is on."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Response

from adapters.platform_gateway import (
    encode_body,
    format_time,
    new_nonce,
    partner_signature_problem,
    sign,
)
from adapters.sandbox.callbacks import CallbackSender
from adapters.sandbox.faults import Faults, FaultsUpdate

SIGNATURE_WINDOW_SECONDS = 300
FAILED_ACCOUNT_REASON = "account_not_eligible: this account cannot receive memberships"
LATE_SUCCESS_REASON = "system_busy: the order could not be completed"


@dataclass(frozen=True)
class Order:
    order_no: str
    account: str
    product_code: str
    duration_days: int
    status: str  # "success" or "failed"
    reason: str | None
    platform_order_id: str
    received_at: datetime
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    def answer(self, request_nonce: str) -> dict[str, Any]:
        return {
            "order_no": self.order_no,
            "request_nonce": request_nonce,
            "status": self.status,
            "reason": self.reason,
            "platform_order_id": self.platform_order_id,
            "account": self.account,
            "product_code": self.product_code,
            "duration_days": self.duration_days,
            "membership_starts_at": format_time(self.starts_at) if self.starts_at else None,
            "membership_ends_at": format_time(self.ends_at) if self.ends_at else None,
        }

    def callback_json(self) -> dict[str, Any]:
        """The body of the order's callback (API.md: platform callbacks)."""
        return {
            "order_no": self.order_no,
            "status": self.status,
            "platform_order_id": self.platform_order_id,
            "starts_at": format_time(self.starts_at) if self.starts_at else None,
            "ends_at": format_time(self.ends_at) if self.ends_at else None,
            "reason": self.reason,
        }

    def credit_json(self) -> dict[str, Any]:
        assert self.starts_at is not None and self.ends_at is not None
        return {
            "order_no": self.order_no,
            "account": self.account,
            "product_code": self.product_code,
            "duration_days": self.duration_days,
            "platform_order_id": self.platform_order_id,
            "credited_at": format_time(self.received_at),
            "period": {
                "starts_at": format_time(self.starts_at),
                "ends_at": format_time(self.ends_at),
            },
        }


REFUND_REJECTED_REASON = "refund_rejected: the membership was already used"
NOT_CREDITED_REASON = "order_not_refundable: no credited order with this order_no"


@dataclass(frozen=True)
class Refund:
    refund_no: str
    order_no: str
    amount: int | None
    requested_at: datetime
    decided_at: datetime
    outcome: str  # what the review will decide: "accepted" or "rejected"
    requests: int = 1
    rejection: str = REFUND_REJECTED_REASON

    def status(self, now: datetime) -> str:
        return self.outcome if now >= self.decided_at else "pending"

    def reason(self, now: datetime) -> str | None:
        return self.rejection if self.status(now) == "rejected" else None

    def answer(self, now: datetime, request_nonce: str) -> dict[str, Any]:
        return {
            "order_no": self.order_no,
            "refund_no": self.refund_no,
            "request_nonce": request_nonce,
            "status": self.status(now),
            "reason": self.reason(now),
        }

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "refund_no": self.refund_no,
            "order_no": self.order_no,
            "amount": self.amount,
            "status": self.status(now),
            "reason": self.reason(now),
            "requested_at": format_time(self.requested_at),
            "requests": self.requests,
        }


class Refused(Exception):
    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


@dataclass
class _State:
    faults: Faults
    orders: dict[str, Order] = field(default_factory=dict)
    credits: list[Order] = field(default_factory=list)
    refunds: dict[str, Refund] = field(default_factory=dict)
    period_ends: dict[tuple[str, str], datetime] = field(default_factory=dict)
    nonces: dict[str, float] = field(default_factory=dict)
    sequence: int = 0


class SandboxPlatform:
    """The platform's books and switches; every method is thread-safe."""

    def __init__(
        self,
        secret: str,
        partner_id: str,
        faults: Faults | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.secret = secret
        self.partner_id = partner_id
        self._initial_faults = faults or Faults()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State(faults=self._initial_faults)
        self.callbacks = CallbackSender(
            secret, partner_id, lambda: self.faults, self._take_bad_signature
        )

    # --- switches and records -------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._state.faults

    def set_faults(self, update: FaultsUpdate) -> Faults:
        changes = update.model_dump(exclude_none=True)
        for listed in (
            "fail_accounts",
            "late_success_accounts",
            "statement_drop_orders",
            "statement_amount_orders",
            "statement_next_day_orders",
        ):
            if listed in changes:
                changes[listed] = tuple(changes[listed])
        if changes.get("callback_url") == "":
            changes["callback_url"] = None
        with self._lock:
            self._state.faults = replace(self._state.faults, **changes)
            return self._state.faults

    def reset(self) -> Faults:
        self.callbacks.reset()
        with self._lock:
            self._state = _State(faults=self._initial_faults)
            return self._state.faults

    def _take_bad_signature(self) -> bool:
        """Whether the next callback post is to be signed wrong (counts the knob down)."""
        with self._lock:
            left = self._state.faults.callback_bad_signatures
            if left <= 0:
                return False
            self._state.faults = replace(self._state.faults, callback_bad_signatures=left - 1)
            return True

    def credits(self, account: str | None = None) -> list[Order]:
        with self._lock:
            return [c for c in self._state.credits if account is None or c.account == account]

    def answers_unavailable(self) -> bool:
        return random.random() < self.faults.error_rate

    # --- the partner API ------------------------------------------------------------------

    def verify(self, headers: Any, body: bytes) -> dict[str, Any]:
        """The request's JSON payload, if it is signed by our partner, fresh and not replayed."""
        partner_id = headers.get("X-Partner-Id", "")
        timestamp = headers.get("X-Timestamp", "")
        nonce = headers.get("X-Nonce", "")
        problem = partner_signature_problem(
            headers, body, self.secret, self.partner_id, SIGNATURE_WINDOW_SECONDS
        )
        if problem is not None:
            raise Refused(401, *problem)
        now = time.time()
        try:
            payload = json.loads(body)
        except ValueError as error:
            raise Refused(400, "bad_request", "the body is not JSON") from error
        if not isinstance(payload, dict):
            raise Refused(400, "bad_request", "the body is not a JSON object")
        if (
            payload.get("partner_id") != partner_id
            or str(payload.get("timestamp")) != timestamp
            or payload.get("nonce") != nonce
        ):
            raise Refused(400, "bad_request", "partner_id, timestamp and nonce must match headers")
        with self._lock:
            nonces = self._state.nonces
            if nonce in nonces:
                raise Refused(401, "nonce_reused", "this nonce was already used")
            nonces[nonce] = now
            if len(nonces) > 10_000:
                horizon = now - 2 * SIGNATURE_WINDOW_SECONDS
                for old in [n for n, seen in nonces.items() if seen < horizon]:
                    del nonces[old]
        return payload

    def recharge(self, payload: dict[str, Any]) -> tuple[Order, bool]:
        """The order's record (the first one for a repeated order number) and whether to hang;
        a new order's outcome is called back as the knobs say."""
        order, hang, new = self._place(payload)
        if new:
            self.callbacks.order_final(order.callback_json())
            if order.reason == LATE_SUCCESS_REASON:
                delay = self.faults.late_success_after_ms / 1000
                self._credit_later(delay, order.order_no)
        return order, hang

    def _credit_later(self, seconds: float, order_no: str) -> None:
        timer = threading.Timer(seconds, self._credit_late, (order_no,))
        timer.daemon = True
        timer.start()

    def _credit_late(self, order_no: str) -> None:
        """A late-success order is credited after all, and called back as a success."""
        with self._lock:
            state = self._state
            order = state.orders.get(order_no)
            if order is None or order.status != "failed" or order.reason != LATE_SUCCESS_REASON:
                return  # reset since, or already done
            now = self._clock()
            key = (order.account, order.product_code)
            starts = max(now, state.period_ends.get(key, now))
            order = replace(
                order,
                status="success",
                reason=None,
                starts_at=starts,
                ends_at=starts + timedelta(days=order.duration_days),
            )
            state.orders[order_no] = order
            state.credits.append(order)
            state.period_ends[key] = order.ends_at  # type: ignore[assignment]
        self.callbacks.order_final(order.callback_json())

    def _place(self, payload: dict[str, Any]) -> tuple[Order, bool, bool]:
        order_no = _text(payload, "order_no", 64)
        account = _text(payload, "account", 128)
        product_code = _text(payload, "product_code", 64)
        days = payload.get("duration_days")
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 36_600:
            raise Refused(400, "bad_request", "duration_days must be an integer from 1 to 36600")
        with self._lock:
            state = self._state
            known = state.orders.get(order_no)
            if known is not None:
                if (known.account, known.product_code, known.duration_days) != (
                    account,
                    product_code,
                    days,
                ):
                    raise Refused(409, "order_no_conflict", "order_no was used for another order")
                return known, False, False
            state.sequence += 1
            platform_order_id = f"PO{state.sequence:010d}"
            now = self._clock()
            late = account in state.faults.late_success_accounts
            if late or account in state.faults.fail_accounts:
                order = Order(
                    order_no=order_no,
                    account=account,
                    product_code=product_code,
                    duration_days=days,
                    status="failed",
                    reason=LATE_SUCCESS_REASON if late else FAILED_ACCOUNT_REASON,
                    platform_order_id=platform_order_id,
                    received_at=now,
                )
                state.orders[order_no] = order
                return order, False, True
            starts = max(now, state.period_ends.get((account, product_code), now))
            ends = starts + timedelta(days=days)
            order = Order(
                order_no=order_no,
                account=account,
                product_code=product_code,
                duration_days=days,
                status="success",
                reason=None,
                platform_order_id=platform_order_id,
                received_at=now,
                starts_at=starts,
                ends_at=ends,
            )
            state.orders[order_no] = order
            state.credits.append(order)
            state.period_ends[(account, product_code)] = ends
            hang = state.faults.timeout_after_credit > 0
            if hang:
                state.faults = replace(
                    state.faults, timeout_after_credit=state.faults.timeout_after_credit - 1
                )
            return order, hang, True

    def order_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        order_no = _text(payload, "order_no", 64)
        with self._lock:
            order = self._state.orders.get(order_no)
        if order is None:
            return {"order_no": order_no, "status": "not_found", "reason": "no such order"}
        return order.answer("")

    def refund(self, payload: dict[str, Any], request_nonce: str) -> dict[str, Any]:
        """Take a refund of a credited order, once per refund number (a repeat is counted
        and answered the refund's status); a refund of an order never credited is rejected at
        once (a definite answer: asking again changes nothing); a refund number used for
        another order is refused (409)."""
        order_no = _text(payload, "order_no", 64)
        refund_no = _text(payload, "refund_no", 64)
        amount = payload.get("amount")
        if amount is not None and (
            not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0
        ):
            raise Refused(400, "bad_request", "amount must be a positive integer")
        with self._lock:
            state = self._state
            now = self._clock()
            known = state.refunds.get(refund_no)
            if known is not None:
                if known.order_no != order_no:
                    raise Refused(409, "refund_no_conflict", "refund_no was used for another order")
                known = replace(known, requests=known.requests + 1)
                state.refunds[refund_no] = known
                return known.answer(now, request_nonce)
            order = state.orders.get(order_no)
            if order is None or order.status != "success":
                refund = Refund(
                    refund_no, order_no, amount, now, now, "rejected", rejection=NOT_CREDITED_REASON
                )
                state.refunds[refund_no] = refund
                return refund.answer(now, request_nonce)
            faults = state.faults
            outcome = "rejected" if random.random() < faults.refund_rejection_rate else "accepted"
            review = timedelta(milliseconds=faults.refund_review_ms)
            refund = Refund(refund_no, order_no, amount, now, now + review, outcome)
            state.refunds[refund_no] = refund
        if faults.refund_callbacks:
            timer = threading.Timer(review.total_seconds(), self._refund_decided, (refund_no,))
            timer.daemon = True
            timer.start()
        return refund.answer(now, request_nonce)

    def _refund_decided(self, refund_no: str) -> None:
        with self._lock:
            refund = self._state.refunds.get(refund_no)
            now = self._clock()
        if refund is None or refund.status(now) == "pending":
            return  # reset since
        self.callbacks.order_final(
            {
                "order_no": refund.order_no,
                "status": refund.status(now),
                "refund_no": refund.refund_no,
                "reason": refund.reason(now),
            }
        )

    def refund_status(self, payload: dict[str, Any], request_nonce: str) -> dict[str, Any]:
        refund_no = _text(payload, "refund_no", 64)
        with self._lock:
            refund = self._state.refunds.get(refund_no)
            now = self._clock()
        if refund is None:
            return {
                "refund_no": refund_no,
                "request_nonce": request_nonce,
                "status": "not_found",
                "reason": "no such refund",
            }
        return refund.answer(now, request_nonce)

    def refunds(self, order_no: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            return [
                r.as_json(now)
                for r in self._state.refunds.values()
                if order_no is None or r.order_no == order_no
            ]

    def accepted_refunds(self) -> list[tuple[str, datetime]]:
        """(order number, when the review accepted it) of every refund accepted so far: the
        statements reverse those orders' bills on that day."""
        with self._lock:
            now = self._clock()
            return [
                (r.order_no, r.decided_at)
                for r in self._state.refunds.values()
                if r.status(now) == "accepted"
            ]

    # --- answers ------------------------------------------------------------------------

    def signed_response(self, status_code: int, payload: dict[str, Any]) -> Response:
        body = encode_body(payload)
        timestamp = str(int(time.time()))
        nonce = new_nonce()
        return Response(
            content=body,
            status_code=status_code,
            media_type="application/json",
            headers={
                "X-Partner-Id": self.partner_id,
                "X-Timestamp": timestamp,
                "X-Nonce": nonce,
                "X-Signature": sign(self.secret, timestamp, nonce, body),
            },
        )


def _text(payload: dict[str, Any], name: str, max_length: int) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= max_length:
        raise Refused(400, "bad_request", f"{name} must be a string of 1 to {max_length} chars")
    return value
