"""The audit log over HTTP: refused recharges, wrong verification codes, a lock-out, a bad
signature and an operator's token use each become a line an operator reads in
GET /v1/audit-log with its code and request id; `ledger audit export` prints them as CSV; and
no code, verification code, token or secret is ever stored in clear."""

from __future__ import annotations

import csv
import io
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import (
    Api,
    Caller,
    Server,
    free_port,
    ledger_command,
    ledger_env,
    start_servers,
)

pytestmark = pytest.mark.e2e

LOCKOUT = 2
RETENTION_DAYS = 30


@pytest.fixture(scope="module")
def aged_lines(database_url: str) -> None:
    """Lines written before the server starts: one past the retention, one within it."""
    with psycopg.connect(database_url) as conn:
        for request_id, days in (("aged-past-retention", 31), ("aged-within-retention", 29)):
            conn.execute(
                "INSERT INTO audit_log (at, kind, code, request_id) "
                "VALUES (now() - make_interval(days => %s), 'refusal', 'not_found', %s)",
                (days, request_id),
            )


@pytest.fixture(scope="module")
def server(database_url: str, aged_lines: None) -> Iterator[Server]:
    env = {
        "LEDGER_AUDIT_RETENTION_DAYS": str(RETENTION_DAYS),
        "LEDGER_SANDBOX": "true",
        "LEDGER_SANDBOX_PLATFORM_PORT": str(free_port()),
        "LEDGER_LOCKOUT_WRONG_CODES": str(LOCKOUT),
        "LEDGER_POOL_SIZE": "4",
    }
    (only,) = start_servers(database_url, 1, [env])
    try:
        yield only
    finally:
        only.stop()


def new_account() -> str:
    return f"138{uuid.uuid4().int % 10**8:08d}"


def new_address() -> str:
    octets = uuid.uuid4().bytes
    return f"10.{octets[0]}.{octets[1]}.{octets[2] % 250 + 1}"


def malformed_code() -> str:
    from ledger.distribution.code_format import new_code

    code = new_code()
    return ("7" if code[0] != "7" else "8") + code[1:]


def unknown_code() -> str:
    from ledger.distribution.code_format import new_code

    return new_code()


class Desk:
    """The recharge page's two calls, from one end user's address, and the operator's reads."""

    def __init__(self, api: Api, channel_id: str) -> None:
        self.api = api
        self.channel_id = channel_id
        self.page = api.anonymous

    def send_code(self, account: str, address: str) -> None:
        reply = self.page.post(
            "/v1/verification-codes",
            {"account": account, "channel_id": self.channel_id},
            headers={"X-Forwarded-For": address},
        )
        assert reply.status_code == 202, reply.text

    def sms(self, account: str) -> str:
        reply = self.api.operator.get(f"/v1/sandbox/sms?account={account}")
        assert reply.status_code == 200, reply.text
        return str(reply.json()["code"])

    def recharge(
        self, account: str, code: str, verification_code: str, address: str
    ) -> dict[str, Any]:
        reply = self.page.post(
            "/v1/recharges",
            {
                "channel_id": self.channel_id,
                "account": account,
                "code": code,
                "verification_code": verification_code,
            },
            headers={"X-Forwarded-For": address, "X-Request-Id": uuid.uuid4().hex},
        )
        assert reply.status_code >= 400, reply.text
        assert reply.headers["content-type"].startswith("application/problem+json")
        return dict(reply.json())


def audit_lines(operator: Caller, query: str = "", at_least: int = 1) -> list[dict[str, Any]]:
    """The lines matching `query`, waited for: a refusal's line is written after its answer."""
    deadline = time.monotonic() + 10
    while True:
        reply = operator.get(f"/v1/audit-log?limit=100{query}")
        assert reply.status_code == 200, reply.text
        items = list(reply.json()["items"])
        if len(items) >= at_least or time.monotonic() > deadline:
            return items
        time.sleep(0.1)


def line_of(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    matching = [line for line in lines if line["request_id"] == request_id]
    assert len(matching) == 1, (request_id, lines)
    return matching[0]


@pytest.fixture(scope="module")
def run(api: Api) -> dict[str, Any]:
    """One run of refusals from one end user, remembered for the tests that read it back."""
    channel = api.top_channel("Audited")
    assert channel.id is not None
    desk = Desk(api, channel.id)
    account, address = new_account(), new_address()
    desk.send_code(account, address)
    verification = desk.sms(account)
    typed = [malformed_code(), unknown_code(), unknown_code()]
    wrong_verification = "0" * len(verification) if verification != "0" * 6 else "1" * 6
    problems = {
        "verification_failed": desk.recharge(account, typed[0], wrong_verification, address),
        "code_malformed": desk.recharge(account, typed[0], verification, address),
        "code_invalid": desk.recharge(account, typed[1], verification, address),
        "lockout": desk.recharge(account, typed[2], verification, address),
    }
    bad_signature = api.anonymous.request(
        "GET",
        f"/v1/channels/{channel.id}/funds",
        headers={
            "X-Key-Id": channel.key_id or "",
            "X-Timestamp": str(int(time.time())),
            "X-Nonce": uuid.uuid4().hex,
            "X-Signature": "0" * 64,
            "X-Request-Id": uuid.uuid4().hex,
        },
    )
    assert bad_signature.status_code == 401, bad_signature.text
    problems["signature_invalid"] = bad_signature.json()
    return {
        "channel": channel,
        "account": account,
        "address": address,
        "verification": verification,
        "typed": typed,
        "problems": problems,
    }


def test_each_refusal_is_a_line_with_its_code_and_request_id(api: Api, run: dict[str, Any]) -> None:
    problems = run["problems"]
    assert problems["verification_failed"]["code"] == "verification_failed"
    assert problems["code_malformed"]["code"] == "code_malformed"
    assert problems["code_invalid"]["code"] == "code_invalid"
    assert problems["lockout"]["code"] == "rate_limited"
    lines = audit_lines(api.operator, f"&channel_id={run['channel'].id}", at_least=4)

    expected = {
        "verification_failed": ("verification_failed", "verification_failed"),
        "code_malformed": ("recharge_refused", "code_malformed"),
        "code_invalid": ("recharge_refused", "code_invalid"),
        "lockout": ("lockout", "rate_limited"),
    }
    for name, (kind, code) in expected.items():
        line = line_of(lines, problems[name]["request_id"])
        assert (line["kind"], line["code"]) == (kind, code), line
        assert line["account"] == f"{run['account'][:3]}****{run['account'][-4:]}"
        assert line["address"] == run["address"]
        assert line["principal"] == f"web:{run['address']}"
        assert (line["method"], line["path"]) == ("POST", "/v1/recharges")
        assert line["at"]


def test_a_bad_signature_is_a_line_naming_the_key_it_claimed(api: Api, run: dict[str, Any]) -> None:
    problem = run["problems"]["signature_invalid"]
    lines = audit_lines(api.operator, "&kind=signature_invalid")

    line = line_of(lines, problem["request_id"])
    assert line["code"] == "signature_invalid"
    assert line["principal"] == f"key:{run['channel'].key_id}"
    assert line["channel_id"] == run["channel"].id
    assert line["path"] == f"/v1/channels/{run['channel'].id}/funds"


def test_an_operators_token_use_is_a_line_without_the_token(api: Api, run: dict[str, Any]) -> None:
    request_id = uuid.uuid4().hex
    reply = api.operator.get("/v1/projections", headers={"X-Request-Id": request_id})
    assert reply.status_code == 200, reply.text

    line = line_of(audit_lines(api.operator, "&kind=token_use"), request_id)
    assert line["principal"].startswith("operator:")
    assert (line["method"], line["path"], line["code"]) == ("GET", "/v1/projections", None)
    assert api.tokens["operator"] not in str(line)


def test_filters_narrow_by_code_and_time(api: Api, run: dict[str, Any]) -> None:
    lines = audit_lines(api.operator, "&code=code_invalid")
    assert lines and {line["code"] for line in lines} == {"code_invalid"}

    future = audit_lines(api.operator, "&from=2999-01-01T00:00:00Z", at_least=0)
    assert future == []


def test_pages_follow_the_cursor_without_repeats(api: Api, run: dict[str, Any]) -> None:
    first = api.operator.get("/v1/audit-log?limit=2")
    assert first.status_code == 200, first.text
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    second = api.operator.get(f"/v1/audit-log?limit=2&after={cursor}")
    assert second.status_code == 200, second.text

    ids = [line["id"] for line in first.json()["items"] + second.json()["items"]]
    assert len(ids) == len(set(ids)) == 4
    assert [int(i) for i in ids] == sorted((int(i) for i in ids), reverse=True)


def test_only_an_operator_reads_the_log(api: Api, run: dict[str, Any]) -> None:
    for caller in (api.finance, api.anonymous):
        reply = caller.get("/v1/audit-log")
        assert reply.status_code in (401, 403), reply.text
    reply = api.finance.get("/v1/audit-log")
    assert reply.status_code == 403 and reply.json()["code"] == "forbidden"


@pytest.mark.parametrize(
    "query",
    [
        "kind=guessing",
        "channel_id=not-a-uuid",
        "from=yesterday",
        "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "limit=0",
        "limit=101",
        "after=abc",
        "code=bad%00code",
        "code=" + "a" * 65,
    ],
)
def test_a_bad_filter_is_a_422_problem(api: Api, query: str) -> None:
    reply = api.operator.get(f"/v1/audit-log?{query}")
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["code"] == "validation_failed"


def test_no_code_verification_code_token_or_secret_is_stored_in_clear(
    api: Api, run: dict[str, Any], database_url: str
) -> None:
    audit_lines(api.operator, f"&channel_id={run['channel'].id}", at_least=5)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT * FROM audit_log").fetchall()
    stored = "\n".join(str(row) for row in rows)

    assert len(rows) >= 6
    secrets = [
        *run["typed"],
        run["verification"],
        run["account"],
        api.tokens["operator"],
        api.tokens["finance"],
        run["channel"].key_secret,
    ]
    for secret in secrets:
        assert secret not in stored, secret


def test_ledger_audit_export_prints_the_lines_as_csv(
    api: Api, run: dict[str, Any], database_url: str
) -> None:
    audit_lines(api.operator, "&kind=lockout")
    exported = subprocess.run(
        [ledger_command(), "audit", "export", "--kind", "lockout", "--from", "2020-01-01"],
        env=ledger_env(database_url),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr.decode()

    rows = list(csv.DictReader(io.StringIO(exported.stdout.decode())))
    assert rows and {row["kind"] for row in rows} == {"lockout"}
    lockout_id = run["problems"]["lockout"]["request_id"]
    assert [row["code"] for row in rows if row["request_id"] == lockout_id] == ["rate_limited"]
    assert run["account"] not in exported.stdout.decode()


def test_ledger_audit_export_refuses_an_unknown_kind(database_url: str) -> None:
    refused = subprocess.run(
        [ledger_command(), "audit", "export", "--kind", "guessing"],
        env=ledger_env(database_url),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert b"--kind" in refused.stderr


def test_the_sweeper_prunes_lines_past_the_configured_retention(
    server: Server, database_url: str
) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            aged = {
                row[0]
                for row in conn.execute(
                    "SELECT request_id FROM audit_log WHERE request_id LIKE 'aged-%'"
                ).fetchall()
            }
            if aged != {"aged-past-retention", "aged-within-retention"}:
                break
            assert time.monotonic() < deadline, "the sweeper pruned nothing"
            time.sleep(0.5)
    assert aged == {"aged-within-retention"}


def test_a_path_with_a_nul_is_answered_and_its_token_use_recorded(api: Api) -> None:
    request_id = uuid.uuid4().hex
    reply = api.operator.get("/v1/channels/%00", headers={"X-Request-Id": request_id})
    assert reply.status_code == 404, reply.text

    line = line_of(audit_lines(api.operator, "&kind=token_use"), request_id)
    assert line["path"] == "/v1/channels/"


def test_a_channel_servers_refusal_carries_its_end_users_address(api: Api) -> None:
    channel = api.top_channel("Audited server")
    account, end_user = new_account(), new_address()
    reply = channel.post(
        "/v1/recharges",
        {
            "account": account,
            "code": unknown_code(),
            "verification_code": "000000",
            "user": {"ip": end_user, "name": "viewer"},
        },
    )
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert problem["code"] == "verification_failed"

    line = line_of(audit_lines(api.operator, f"&channel_id={channel.id}"), problem["request_id"])
    assert (line["kind"], line["code"]) == ("verification_failed", "verification_failed")
    assert line["principal"] == f"channel:{channel.id}"
    assert line["address"] == end_user
    assert line["account"] == f"{account[:3]}****{account[-4:]}"
