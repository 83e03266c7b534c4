"""The platform gateway adapter against a fake platform behind httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from adapters.platform_gateway import (
    ORDER_STATUS_PATH,
    RECHARGE_PATH,
    HttpPlatformGateway,
    HttpPlatformGateways,
    encode_body,
    sign,
    signature_valid,
    signing_string,
)
from ledger.recharges.decisions import StepResult
from ledger.recharges.ports import PlatformGateway

SECRET = "platform-test-secret"
PARTNER = "partner-under-test"
STARTS = "2026-01-01T00:00:00Z"
ENDS = "2026-01-31T00:00:00Z"

Handler = Callable[[httpx.Request], httpx.Response]


def signed_reply(
    body: bytes, status_code: int = 200, secret: str = SECRET, nonce: str = "replynonce0001"
) -> httpx.Response:
    timestamp = "1767225600"
    return httpx.Response(
        status_code,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Timestamp": timestamp,
            "X-Nonce": nonce,
            "X-Signature": sign(secret, timestamp, nonce, body),
        },
    )


def answer_to(request: httpx.Request, status: str, **fields: Any) -> dict[str, Any]:
    sent = json.loads(request.content)
    answer: dict[str, Any] = {
        "order_no": sent["order_no"],
        "request_nonce": sent["nonce"],
        "status": status,
        "reason": None,
        "platform_order_id": None,
        "membership_starts_at": None,
        "membership_ends_at": None,
    }
    if status == "success":
        answer |= {
            "platform_order_id": "PO1",
            "membership_starts_at": STARTS,
            "membership_ends_at": ENDS,
        }
    return answer | fields


def platform(status: str, **fields: Any) -> Handler:
    """A platform that answers every request with `status`, correctly signed."""

    def handle(request: httpx.Request) -> httpx.Response:
        return signed_reply(encode_body(answer_to(request, status, **fields)))

    return handle


def gateway(handler: Handler, **kwargs: Any) -> HttpPlatformGateway:
    return HttpPlatformGateway(
        "https://platform.test/", PARTNER, SECRET, transport=httpx.MockTransport(handler), **kwargs
    )


def recharge(handler: Handler) -> StepResult:
    with gateway(handler) as g:
        return g.recharge("rch_1", "13800000000", "vip-month", 30)


def status_of(handler: Handler) -> StepResult:
    with gateway(handler) as g:
        return g.order_status("rch_1")


def test_it_is_a_platform_gateway() -> None:
    g: PlatformGateway = gateway(platform("success"))
    assert isinstance(g, HttpPlatformGateway)


def test_requests_are_signed_json_with_the_order_number() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return platform("success")(request)

    with gateway(handle) as g:
        g.recharge("rch_1", "13800000000", "vip-month", 30)
        g.order_status("rch_1")

    recharge_request, status_request = seen
    assert recharge_request.method == "POST"
    assert recharge_request.url == "https://platform.test" + RECHARGE_PATH
    assert status_request.url == "https://platform.test" + ORDER_STATUS_PATH
    for request in seen:
        headers = request.headers
        body = json.loads(request.content)
        assert headers["X-Partner-Id"] == PARTNER == body["partner_id"]
        assert headers["X-Timestamp"] == str(body["timestamp"])
        assert headers["X-Nonce"] == body["nonce"]
        assert signature_valid(
            SECRET, headers["X-Timestamp"], headers["X-Nonce"], request.content,
            headers["X-Signature"],
        )  # fmt: skip
        assert not signature_valid(
            "another-secret", headers["X-Timestamp"], headers["X-Nonce"], request.content,
            headers["X-Signature"],
        )  # fmt: skip
    assert json.loads(recharge_request.content) | {"timestamp": 0, "nonce": ""} == {
        "partner_id": PARTNER,
        "order_no": "rch_1",
        "account": "13800000000",
        "product_code": "vip-month",
        "duration_days": 30,
        "timestamp": 0,
        "nonce": "",
    }
    assert set(json.loads(status_request.content)) == {
        "partner_id",
        "order_no",
        "timestamp",
        "nonce",
    }
    assert seen[0].headers["X-Nonce"] != seen[1].headers["X-Nonce"]


def test_the_signature_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(
        b"k", f"17\nn1\n{hashlib.sha256(body).hexdigest()}".encode(), hashlib.sha256
    ).hexdigest()
    assert (
        signing_string("17", "n1", body) == f"17\nn1\n{hashlib.sha256(body).hexdigest()}".encode()
    )
    assert sign("k", "17", "n1", body) == expected


def test_success_is_succeeded_with_the_membership_period() -> None:
    result = recharge(platform("success"))
    assert result == StepResult(
        outcome="succeeded",
        reason=None,
        platform_order_id="PO1",
        starts_at=datetime(2026, 1, 1, tzinfo=UTC),
        ends_at=datetime(2026, 1, 31, tzinfo=UTC),
    )
    assert status_of(platform("success")).outcome == "succeeded"


def test_times_with_another_offset_come_back_in_utc() -> None:
    result = recharge(platform("success", membership_starts_at="2026-01-01T08:00:00+08:00"))
    assert result.starts_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert result.starts_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_failed_is_failed_with_the_reason() -> None:
    result = recharge(platform("failed", reason="account_blocked"))
    assert (result.outcome, result.reason) == ("failed", "account_blocked")
    assert status_of(platform("failed", reason="account_blocked")).outcome == "failed"
    assert recharge(platform("failed")).reason  # a failure always carries some reason


def test_processing_is_unknown() -> None:
    assert recharge(platform("processing")).outcome == "unknown"
    assert status_of(platform("processing")).outcome == "unknown"
    assert status_of(platform("processing")).cause == "processing"


def test_not_found_only_from_order_status() -> None:
    assert status_of(platform("not_found")).outcome == "not_found"
    assert recharge(platform("not_found")).outcome == "unknown"


@pytest.mark.parametrize("status_code", [500, 502, 503, 504, 400, 401, 404, 409, 429, 302])
def test_any_other_http_status_is_unknown(status_code: int) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        # even a correctly signed "success" body does not count outside a 200
        body = encode_body(answer_to(request, "success"))
        return signed_reply(body, status_code=status_code)

    result = recharge(handle)
    assert result.outcome == "unknown"
    assert result.reason == f"http {status_code}"
    assert result.cause == ("server_error" if status_code >= 500 else "refused")
    assert status_of(handle).outcome == "unknown"


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.PoolTimeout("pool timed out"),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("server disconnected without a response"),
        httpx.ReadError("connection reset by peer"),
    ],
)
def test_transport_failures_are_unknown(error: httpx.HTTPError) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise error

    assert recharge(handle).outcome == "unknown"
    assert status_of(handle).outcome == "unknown"
    timed_out = isinstance(error, httpx.TimeoutException)
    assert recharge(handle).cause == ("timeout" if timed_out else "transport")


def test_timeouts_are_bounded() -> None:
    with gateway(platform("success")) as default, gateway(platform("success"), timeout=1.5) as g:
        assert default._client.timeout.connect == 2.0
        assert default._client.timeout.read == 5.0
        assert g._client.timeout.connect == 2.0
        assert g._client.timeout.read == 1.5


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"",
        b'{"status": "success"}',
    ],
)
def test_malformed_signed_replies_are_unknown(body: bytes) -> None:
    assert recharge(lambda _request: signed_reply(body)).outcome == "unknown"


@pytest.mark.parametrize(
    "fields",
    [
        {"platform_order_id": None},
        {"membership_starts_at": None},
        {"membership_ends_at": "next month"},
        {"membership_ends_at": "2026-01-31T00:00:00"},  # no offset
        {"membership_ends_at": STARTS},  # ends when it starts
        {"reason": 42},
    ],
)
def test_success_answers_with_bad_fields_are_unknown(fields: dict[str, Any]) -> None:
    assert recharge(platform("success", **fields)).outcome == "unknown"


@pytest.mark.parametrize("status", ["credited", "SUCCESS", None, 1])
def test_an_unknown_status_is_unknown(status: Any) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        answer = answer_to(request, "success") | {"status": status}
        return signed_reply(encode_body(answer))

    assert recharge(handle).outcome == "unknown"


def test_an_unsigned_reply_is_unknown() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=encode_body(answer_to(request, "success")))

    result = recharge(handle)
    assert (result.outcome, result.reason) == ("unknown", "unsigned reply")


def test_a_tampered_reply_is_unknown() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        honest = signed_reply(encode_body(answer_to(request, "failed", reason="account_blocked")))
        forged = encode_body(answer_to(request, "success"))
        return httpx.Response(200, content=forged, headers=honest.headers)

    result = recharge(handle)
    assert (result.outcome, result.reason) == ("unknown", "bad signature on the reply")


def test_a_reply_signed_with_another_secret_is_unknown() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return signed_reply(encode_body(answer_to(request, "success")), secret="wrong")

    assert recharge(handle).outcome == "unknown"
    assert status_of(handle).outcome == "unknown"


def test_a_reply_with_a_mangled_signature_header_is_unknown() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        reply = signed_reply(encode_body(answer_to(request, "success")))
        headers = dict(reply.headers)
        headers["x-signature"] = "zz" + headers["x-signature"][2:]
        return httpx.Response(200, content=reply.content, headers=headers)

    assert recharge(handle).outcome == "unknown"


def test_a_signed_reply_to_another_order_is_unknown() -> None:
    assert recharge(platform("success", order_no="rch_2")).outcome == "unknown"


def test_a_replayed_reply_to_an_earlier_request_is_unknown() -> None:
    """A genuine signed answer captured earlier does not answer a new request."""
    captured: list[httpx.Response] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if not captured:
            captured.append(platform("not_found")(request))
        return httpx.Response(200, content=captured[0].content, headers=captured[0].headers)

    with gateway(handle) as g:
        assert g.order_status("rch_1").outcome == "not_found"
        assert g.order_status("rch_1").outcome == "unknown"


def test_the_gateway_can_be_built_from_settings() -> None:
    from adapters.settings import Settings

    settings = Settings(ledger_platform_partner_id="p-1", ledger_platform_secret="s-1")
    with HttpPlatformGateway.from_settings("https://platform.test", settings, timeout=3) as g:
        assert g.partner_id == "p-1"
        assert g._client.timeout.read == 3


def test_each_platform_gets_one_gateway_kept_for_every_step() -> None:
    from adapters.settings import Settings

    settings = Settings(
        ledger_platform_partner_id="p-1",
        ledger_platform_secret="s-1",
        ledger_gateway_timeout_seconds=3,
    )
    gateways = HttpPlatformGateways(settings)
    try:
        first = gateways.gateway_for("https://one.test")
        assert gateways.gateway_for("https://one.test") is first
        assert gateways.gateway_for("https://two.test") is not first
        assert first._client.timeout.read == 3
    finally:
        gateways.close()


# --- the partner signature check, shared by the sandbox and the ledger's callback route ------


def test_the_partner_signature_check_accepts_only_a_fresh_exact_signature() -> None:
    import time

    from adapters.platform_gateway import partner_signature_problem, signed_headers

    body = b'{"order_no":"o1","status":"success"}'
    now = str(int(time.time()))
    good = signed_headers("s3cret", "partner", now, "n" * 16, body)
    assert partner_signature_problem(good, body, "s3cret", "partner", 300) is None
    refusals = [
        (good, body + b" ", "s3cret", "partner"),  # another body
        (good, body, "other", "partner"),  # another secret
        (good | {"X-Partner-Id": "someone"}, body, "s3cret", "partner"),
        (good | {"X-Nonce": "short"}, body, "s3cret", "partner"),
        (good | {"X-Timestamp": "¹²³"}, body, "s3cret", "partner"),
        (signed_headers("s3cret", "partner", str(int(now) - 301), "n" * 16, body), body,
         "s3cret", "partner"),
    ]
    codes = [partner_signature_problem(h, b, s, p, 300) for h, b, s, p in refusals]
    assert [c[0] if c else None for c in codes] == [
        "signature_invalid", "signature_invalid", "unknown_partner", "signature_invalid",
        "signature_invalid", "signature_invalid",
    ]
