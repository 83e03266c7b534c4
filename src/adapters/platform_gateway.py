"""The video platform's partner API, as the recharge saga sees it: an implementation of the
`PlatformGateway` port that answers the saga's `StepResult`.

The protocol (modelled on real partner APIs such as Alipay's, WeChat Pay's or Tencent's):

* ``POST {base}/partner/v1/recharge`` with the JSON body ``{partner_id, order_no, account,
  product_code, duration_days, timestamp, nonce}``; ``POST {base}/partner/v1/order-status`` with
  ``{partner_id, order_no, timestamp, nonce}``. ``order_no`` is the merchant's order number and the
  platform's idempotency key: a repeated recharge with the same number credits nothing more and
  answers the first result.
* Refunds: ``POST {base}/partner/v1/refund`` with ``{partner_id, order_no, refund_no, amount?,
  timestamp, nonce}`` and ``POST {base}/partner/v1/refund-status`` with ``{partner_id,
  refund_no, timestamp, nonce}``; ``refund_no`` is our refund number and the platform's
  idempotency key for refunds. A 200 answer is ``{order_no, refund_no, request_nonce, status,
  reason}`` with status ``pending`` (in review), ``accepted``, ``rejected`` or ``not_found``.
* Every request carries ``X-Partner-Id``, ``X-Timestamp`` (Unix seconds), ``X-Nonce`` and
  ``X-Signature`` = hex HMAC-SHA256(secret, f"{timestamp}\\n{nonce}\\n{sha256_hex(body)}"), over the
  exact body bytes sent. Timestamp and nonce in the headers equal those in the body.
* The platform signs every answer the same way (its own ``X-Timestamp``, ``X-Nonce``,
  ``X-Signature`` over the answer's body bytes, same shared secret). A 200 answer's body is
  ``{order_no, request_nonce, status, reason, platform_order_id, membership_starts_at,
  membership_ends_at}`` with status ``success``, ``failed``, ``processing`` or ``not_found`` and
  times in ISO 8601 UTC; ``request_nonce`` echoes the nonce of the request it answers, so an old
  signed answer cannot be replayed as the answer to a new request.

Only a correctly signed 200 answer that belongs to this very request is believed. Anything else,
a timeout, a refused connection, a 5xx or 4xx, a malformed or badly signed body, is ``unknown``:
the adapter never guesses whether the platform credited the account. A base URL that resolves to
an internal address is refused at the connection (`adapters.outbound`), unless allowed: nothing
is sent, and the outcome is ``unknown`` too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from adapters.outbound import AddressNotAllowed, OutboundAddresses, checked_transport
from adapters.signing import valid_timestamp
from ledger.recharges.decisions import Cause, StepResult
from ledger.recharges.refunds import RefundAnswer

if TYPE_CHECKING:
    from adapters.settings import Settings

RECHARGE_PATH = "/partner/v1/recharge"
ORDER_STATUS_PATH = "/partner/v1/order-status"
REFUND_PATH = "/partner/v1/refund"
REFUND_STATUS_PATH = "/partner/v1/refund-status"
REFUND_STATUSES = ("pending", "accepted", "rejected", "not_found")
CONNECT_TIMEOUT_SECONDS = 2.0
DEFAULT_READ_TIMEOUT_SECONDS = 5.0
MAX_REPLY_BYTES = 65_536


# --- signing, shared by the adapter and the sandbox platform ---------------------------------


def signing_string(timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(
        secret.encode(), signing_string(timestamp, nonce, body), hashlib.sha256
    ).hexdigest()


def signature_valid(secret: str, timestamp: str, nonce: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, nonce, body), signature.lower())


def partner_signature_problem(
    headers: Any, body: bytes, secret: str, partner_id: str, window_seconds: int
) -> tuple[str, str] | None:
    """(code, why) if `headers` do not sign `body` for `partner_id` with `secret` within
    ±`window_seconds`, else None. Checks the partner id, the headers' form, the window and the
    HMAC; a nonce's single use is the receiver's to check. Used by the sandbox platform on our
    requests and by the ledger on the platform's callbacks."""
    claimed = headers.get("X-Partner-Id", "")
    timestamp = headers.get("X-Timestamp", "")
    nonce = headers.get("X-Nonce", "")
    signature = headers.get("X-Signature", "")
    if claimed != partner_id:
        return "unknown_partner", "X-Partner-Id is not a known partner"
    if not valid_timestamp(timestamp) or not 8 <= len(nonce) <= 64 or len(signature) != 64:
        return "signature_invalid", "X-Timestamp, X-Nonce and X-Signature needed"
    if abs(time.time() - int(timestamp)) > window_seconds:
        return "signature_invalid", "the timestamp is outside the window"
    if not signature_valid(secret, timestamp, nonce, body, signature):
        return "signature_invalid", "the signature does not match the request"
    return None


def new_nonce() -> str:
    return secrets.token_hex(16)


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def signed_headers(secret: str, partner_id: str, timestamp: str, nonce: str, body: bytes) -> dict:
    return {
        "Content-Type": "application/json",
        "X-Partner-Id": partner_id,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Signature": sign(secret, timestamp, nonce, body),
    }


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as the protocol writes times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("a time must be an ISO 8601 string")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a time must carry its offset")
    return moment.astimezone(UTC)


# --- the adapter ------------------------------------------------------------------------------


class _Untrusted(Exception):
    """The answer cannot be believed; the message becomes the ``unknown`` reason."""

    def __init__(self, reason: str, cause: Cause = "untrusted") -> None:
        super().__init__(reason)
        self.cause: Cause = cause


def _unknown(reason: str, cause: Cause) -> StepResult:
    return StepResult(outcome="unknown", reason=reason, cause=cause)


class HttpPlatformGateway:
    """The partner API over HTTP. One pooled, thread-safe ``httpx.Client`` per gateway."""

    def __init__(
        self,
        base_url: str,
        partner_id: str,
        secret: str,
        timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
        *,
        max_connections: int = 20,
        transport: httpx.BaseTransport | None = None,
        addresses: OutboundAddresses | None = None,
        exit_after_refund: bool = False,
    ) -> None:
        """`addresses`: the rule for outbound calls (internal addresses refused at the
        connection unless it allows them); None lets every address through.
        `exit_after_refund` (sandbox crash tests only): the process kills itself once a
        refund request was answered, before the answer can be recorded."""
        self.base_url = base_url.rstrip("/")
        self.exit_after_refund = exit_after_refund
        self.partner_id = partner_id
        self._secret = secret
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_SECONDS),
            limits=limits,
            transport=transport or checked_transport(addresses, limits),
            follow_redirects=False,
        )

    @classmethod
    def from_settings(
        cls, base_url: str, settings: Settings, timeout: float = DEFAULT_READ_TIMEOUT_SECONDS
    ) -> HttpPlatformGateway:
        return cls(
            base_url,
            settings.ledger_platform_partner_id,
            settings.ledger_platform_secret,
            timeout=timeout,
            addresses=OutboundAddresses(settings.outbound_allow_private),
            exit_after_refund=settings.sandbox and settings.ledger_sandbox_refund_exit,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpPlatformGateway:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def recharge(
        self, order_no: str, account: str, product_code: str, duration_days: int
    ) -> StepResult:
        result = self._call(
            RECHARGE_PATH,
            order_no,
            {"account": account, "product_code": product_code, "duration_days": duration_days},
        )
        if result.outcome == "not_found":  # the platform cannot not know an order just sent
            return _unknown("the platform answered not_found to a recharge", "untrusted")
        return result

    def order_status(self, order_no: str) -> StepResult:
        return self._call(ORDER_STATUS_PATH, order_no, {})

    def refund(self, order_no: str, refund_no: str, amount: int | None = None) -> RefundAnswer:
        fields: dict[str, Any] = {"order_no": order_no, "refund_no": refund_no}
        if amount is not None:
            fields["amount"] = amount
        answer = self._refund_call(REFUND_PATH, refund_no, fields)
        if self.exit_after_refund:  # crash tests: the answer is lost with the process
            os.kill(os.getpid(), signal.SIGKILL)
        if answer.outcome == "not_found":  # the platform cannot not know a refund just sent
            why = "the platform answered not_found to a refund"
            return RefundAnswer("unknown", why, "untrusted")
        return answer

    def refund_status(self, refund_no: str) -> RefundAnswer:
        return self._refund_call(REFUND_STATUS_PATH, refund_no, {"refund_no": refund_no})

    def _refund_call(self, path: str, refund_no: str, fields: dict[str, Any]) -> RefundAnswer:
        sent = self._send(path, fields)
        if isinstance(sent, StepResult):
            return RefundAnswer("unknown", sent.reason, sent.cause)
        reply, nonce = sent
        try:
            answer = self._verified(reply, nonce, "refund_no", refund_no)
        except _Untrusted as error:
            return RefundAnswer("unknown", str(error), error.cause)
        status, reason = answer.get("status"), answer.get("reason")
        if reason is not None and not isinstance(reason, str):
            return RefundAnswer("unknown", "malformed reason", "untrusted")
        if status not in REFUND_STATUSES:
            return RefundAnswer("unknown", f"unknown refund status {status!r}", "untrusted")
        return RefundAnswer(status, reason)

    def _call(self, path: str, order_no: str, fields: dict[str, Any]) -> StepResult:
        sent = self._send(path, {"order_no": order_no, **fields})
        if isinstance(sent, StepResult):
            return sent
        reply, nonce = sent
        try:
            return self._read(reply, order_no, nonce)
        except _Untrusted as error:
            return _unknown(str(error), error.cause)

    def _send(self, path: str, fields: dict[str, Any]) -> tuple[httpx.Response, str] | StepResult:
        """The signed request's reply and nonce, or an `unknown` result if none came."""
        timestamp = str(int(time.time()))
        nonce = new_nonce()
        body = encode_body(
            {"partner_id": self.partner_id, **fields, "timestamp": int(timestamp), "nonce": nonce}
        )
        headers = signed_headers(self._secret, self.partner_id, timestamp, nonce, body)
        try:
            return self._client.post(path, content=body, headers=headers), nonce
        except AddressNotAllowed as error:  # nothing was sent
            return _unknown(f"outbound address refused ({error.detail})", "transport")
        except httpx.TimeoutException as error:
            return _unknown(f"timeout ({type(error).__name__})", "timeout")
        except httpx.HTTPError as error:
            return _unknown(f"transport error ({type(error).__name__}: {error})", "transport")

    def _verified(
        self, reply: httpx.Response, nonce: str, key: str, expected: str
    ) -> dict[str, Any]:
        """The answer's JSON object if it is a signed 200 answering this very request."""
        if reply.status_code != 200:
            cause: Cause = "server_error" if reply.status_code >= 500 else "refused"
            raise _Untrusted(f"http {reply.status_code}", cause)
        body = reply.content
        if len(body) > MAX_REPLY_BYTES:
            raise _Untrusted("reply too large")
        timestamp = reply.headers.get("X-Timestamp", "")
        reply_nonce = reply.headers.get("X-Nonce", "")
        signature = reply.headers.get("X-Signature", "")
        if not (timestamp and reply_nonce and signature):
            raise _Untrusted("unsigned reply")
        if not signature_valid(self._secret, timestamp, reply_nonce, body, signature):
            raise _Untrusted("bad signature on the reply")
        try:
            answer = json.loads(body)
        except ValueError as error:
            raise _Untrusted("reply is not JSON") from error
        if not isinstance(answer, dict):
            raise _Untrusted("reply is not a JSON object")
        if answer.get(key) != expected or answer.get("request_nonce") != nonce:
            raise _Untrusted("reply answers another request")
        return answer

    def _read(self, reply: httpx.Response, order_no: str, nonce: str) -> StepResult:
        answer = self._verified(reply, nonce, "order_no", order_no)
        reason = answer.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _Untrusted("malformed reason")
        status = answer.get("status")
        if status == "processing":
            return StepResult(outcome="unknown", reason=reason or "processing", cause="processing")
        if status == "not_found":
            return StepResult(outcome="not_found", reason=reason)
        if status == "failed":
            return StepResult(
                outcome="failed",
                reason=reason or "failed without a reason",
                platform_order_id=_optional_str(answer.get("platform_order_id")),
            )
        if status == "success":
            platform_order_id = answer.get("platform_order_id")
            if not isinstance(platform_order_id, str) or not platform_order_id:
                raise _Untrusted("success without a platform order id")
            try:
                starts = parse_time(answer.get("membership_starts_at"))
                ends = parse_time(answer.get("membership_ends_at"))
            except ValueError as error:
                raise _Untrusted(f"malformed membership period ({error})") from error
            if ends <= starts:
                raise _Untrusted("membership period ends before it starts")
            return StepResult(
                outcome="succeeded",
                reason=reason,
                platform_order_id=platform_order_id,
                starts_at=starts,
                ends_at=ends,
            )
        raise _Untrusted(f"unknown status {status!r}")


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class HttpPlatformGateways:
    """One `HttpPlatformGateway` per platform base URL, made on first use and kept."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._gateways: dict[str, HttpPlatformGateway] = {}
        self._lock = threading.Lock()

    def gateway_for(self, base_url: str) -> HttpPlatformGateway:
        with self._lock:
            if base_url not in self._gateways:
                self._gateways[base_url] = HttpPlatformGateway.from_settings(
                    base_url, self._settings, timeout=self._settings.ledger_gateway_timeout_seconds
                )
            return self._gateways[base_url]

    def close(self) -> None:
        with self._lock:
            for gateway in self._gateways.values():
                gateway.close()
            self._gateways.clear()
