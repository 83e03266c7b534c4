"""What a refused request's audit line says: its kind from the code and the path, the caller's
channel and the end user's address from the body, and nothing secret from the body."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

from starlette.requests import Request

from api.audit import line_for, redacted, refusal_kind


def request(path: str, body: dict[str, Any] | None = None, **headers: str) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("192.0.2.7", 5000),
        "path_params": {},
    }
    made = Request(scope)
    if body is not None:
        made._body = json.dumps(body).encode()
    return made


def test_the_kind_follows_the_code_then_the_path() -> None:
    assert refusal_kind(request("/v1/recharges"), "code_invalid") == "recharge_refused"
    assert refusal_kind(request("/v1/recharges"), "verification_failed") == "verification_failed"
    assert refusal_kind(request("/v1/recharges"), "verification_locked") == "lockout"
    assert refusal_kind(request("/v1/channels"), "signature_invalid") == "signature_invalid"
    assert refusal_kind(request("/v1/channels"), "insufficient_funds") == "refusal"
    assert refusal_kind(request("/v1/platform-callbacks/p1"), "signature_invalid") == (
        "callback_refused"
    )


def test_a_detail_never_repeats_a_code_or_verification_code_from_the_body() -> None:
    body = {"code": "AB12-CD34-EF56", "verification_code": "482913", "account": "13812348000"}
    detail = "code AB12-CD34-EF56 with 482913 refused"

    assert redacted(detail, body) == "code *** with *** refused"


def test_a_line_takes_channel_account_and_end_user_address_from_the_body() -> None:
    channel_id = uuid4()
    body = {
        "channel_id": str(channel_id),
        "account": "13812348000",
        "code": "AB12-CD34-EF56",
        "user": {"ip": "203.0.113.9"},
    }

    line = line_for(
        request("/v1/recharges", body), "req-1", "recharge_refused", "code_invalid", "x"
    )

    assert (line.channel_id, line.account, line.address) == (
        channel_id,
        "13812348000",
        "203.0.113.9",
    )
    assert (line.request_id, line.method, line.path) == ("req-1", "POST", "/v1/recharges")
    assert line.principal is None


def test_an_unsigned_caller_is_known_by_the_key_it_claimed_and_its_address() -> None:
    line = line_for(request("/v1/channels", X_Key_Id="ck_abc"), "r", "signature_invalid", None, "")

    assert line.principal == "key:ck_abc"
    assert line.address == "192.0.2.7"
    assert line.channel_id is None and line.account is None
