"""The OpenAPI document as a generated client reads it, /docs without internet, and schemathesis.

One `ledger serve` in sandbox mode. The document is checked by openapi-spec-validator and for
what clients need to authenticate; /docs is opened in Debian's chromium with every request it
makes recorded; schemathesis calls every operation as the principal the operation names (a
bearer token, or a channel's or merchant's key signing each request) and no answer is a 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode

from tests.e2e.conftest import Server, free_port, sandbox_serving
from tests.e2e.test_recharge_page import CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

SIGNED = {"signedKeyId", "signedTimestamp", "signedNonce", "signedSignature"}
PROBLEM_STATUSES = {"400", "401", "403", "404", "409", "413", "415", "422", "429", "503"}
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    """Overrides conftest's server: sandbox mode, the sandbox platform on a free port."""
    platform_port = free_port()
    with sandbox_serving(database_url, platform_port, "openapi") as started:
        yield started


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    reply = httpx.get(f"{server.base_url}/openapi.json", timeout=30)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


# the document


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_the_document_declares_bearer_tokens_and_signed_requests(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    headers = {schemes[name]["name"] for name in SIGNED if schemes[name]["in"] == "header"}
    assert headers == {"X-Key-Id", "X-Timestamp", "X-Nonce", "X-Signature"}
    assert "IDEMPOTENCY_KEY" in schemes["signedSignature"]["description"]
    signed_together = {
        frozenset(requirement)
        for _, _, operation in operations(document)
        for requirement in operation.get("security", [])
        if set(requirement) & SIGNED
    }
    assert signed_together == {frozenset(SIGNED)}, "the four headers sign together or not at all"


def test_who_may_call_each_operation_is_declared(document: dict[str, Any]) -> None:
    security = {
        (method, path): [sorted(req) for req in operation.get("security", [])]
        for method, path, operation in operations(document)
    }
    assert security[("post", "/v1/platforms")] == [["bearer"]]
    assert security[("post", "/v1/stock-purchases")] == [sorted(SIGNED)]
    assert security[("get", "/v1/channels/{channel_id}/funds")] == [["bearer"], sorted(SIGNED)]
    assert security[("post", "/v1/recharges")] == [["bearer"], sorted(SIGNED), []]
    assert security[("get", "/health")] == []


def test_every_post_needs_an_idempotency_key(document: dict[str, Any]) -> None:
    posts = [(path, op) for method, path, op in operations(document) if method == "post"]
    assert len(posts) > 20
    for path, operation in posts:
        if path == "/v1/platform-callbacks/{platform_id}":
            # the platform's callbacks are idempotent by (platform, order number, status)
            assert all(p["name"] != "Idempotency-Key" for p in operation["parameters"])
            continue
        keys = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert keys and keys[0]["in"] == "header" and keys[0]["required"], path
        assert "idempotency_key_missing" in operation["responses"]["400"]["x-problem-codes"], path


def test_refusals_are_problem_details_with_their_codes(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code", "request_id"}
    assert "errors" in problem["properties"]
    seen: set[str] = set()
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert set(response["content"]) == {"application/problem+json"}, (method, path)
                assert response["x-problem-codes"], (method, path, status)
                seen.add(status)
        if operation.get("security"):
            assert "unauthorized" in operation["responses"]["401"]["x-problem-codes"], path
    assert seen >= PROBLEM_STATUSES
    recharge = document["paths"]["/v1/recharges"]["post"]["responses"]
    assert "code_malformed" in recharge["422"]["x-problem-codes"]
    assert recharge["415"]["x-problem-codes"] == ["unsupported_media_type"], "JSON in UTF-8 only"
    assert "rate_limited" in recharge["429"]["x-problem-codes"]
    assert "Retry-After" in recharge["429"]["headers"]


# /docs in a browser with no internet


@pytest.mark.browser
def test_docs_render_every_operation_from_this_server_only(
    server: Server, document: dict[str, Any]
) -> None:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not on PATH: .ci/run installs it (apt-get chromium)")
    from playwright.sync_api import expect, sync_playwright

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{server.base_url}/docs")
            blocks = page.locator(".opblock")
            expect(blocks.first).to_be_visible(timeout=TIMEOUT_MS)
            expect(blocks).to_have_count(len(list(operations(document))), timeout=TIMEOUT_MS)
            expect(page.get_by_text("/v1/stock-purchases", exact=True)).to_be_visible()
            expect(page.locator(".btn.authorize")).to_be_visible()
        finally:
            browser.close()
    assert any(url.endswith("/openapi.json") for url in requested)
    assert any("swagger-ui-bundle.js" in url for url in requested)
    elsewhere = [url for url in requested if urlsplit(url).hostname != "127.0.0.1"]
    assert elsewhere == [], "the docs page must work without internet"


# schemathesis over every operation


class SignedRequest(requests.auth.AuthBase):
    """Signs a request as API.md says, after requests has fixed its body and query."""

    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id = key_id
        self.secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        timestamp = str(int(time.time()))
        nonce = secrets.token_urlsafe(24)
        message = "\n".join(
            [
                str(request.method).upper(),
                signed_path(str(request.path_url)),
                timestamp,
                nonce,
                request.headers.get("Idempotency-Key", ""),
                hashlib.sha256(raw).hexdigest(),
            ]
        )
        signature = hmac.new(self.secret.encode(), message.encode(), hashlib.sha256).hexdigest()
        request.headers.pop("Authorization", None)
        request.headers.update(
            {
                "X-Key-Id": self.key_id,
                "X-Timestamp": timestamp,
                "X-Nonce": nonce,
                "X-Signature": signature,
            }
        )
        return request


def signed_path(path_url: str) -> str:
    """The server signs the percent-decoded path and the query as sent."""
    path, mark, query = path_url.partition("?")
    return unquote(path) + mark + query


class Principals:
    """A session per principal: operator, finance and member tokens, channel and merchant keys."""

    PREFERENCE = ("channel", "merchant", "member", "operator", "finance")

    def __init__(self, base_url: str, tokens: dict[str, str]) -> None:
        self.base_url = base_url
        self.sessions: dict[str, requests.Session] = {}
        for role in ("operator", "finance"):
            self.sessions[role] = self.bearer(tokens[role])
        channel = self.create("/v1/channels", {"name": "Schemathesis channel"})
        merchant = self.create("/v1/merchants", {"name": "Fuzz", "timezone": "Asia/Shanghai"})
        member = self.create("/v1/members", {"name": "Fuzz", "phone": "13900000000"})
        self.sessions["channel"] = self.signed(channel["key_id"], channel["key_secret"])
        self.sessions["merchant"] = self.signed(merchant["key_id"], merchant["key_secret"])
        self.sessions["member"] = self.bearer(member["token"])
        funds = self.sessions["channel"].get(f"{base_url}/v1/channels/{channel['id']}/funds")
        assert funds.status_code == 200, f"the signer must be accepted: {funds.text}"

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.sessions["operator"].post(
            f"{self.base_url}{path}", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        assert reply.status_code == 201, reply.text
        return dict(reply.json())

    def bearer(self, token: str) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        return session

    def signed(self, key_id: str, secret: str) -> requests.Session:
        session = requests.Session()
        session.auth = SignedRequest(key_id, secret)
        return session

    def session_for(self, operation: dict[str, Any]) -> requests.Session:
        """The principal the operation names; a channel where a channel or a page may call."""
        callers = set(operation.get("x-callers", ()))
        security = [set(requirement) for requirement in operation.get("security", [])]
        if not callers and (SIGNED in security or set() in security):
            callers = {"channel"}
        for role in self.PREFERENCE:
            if role in callers:
                return self.sessions[role]
        return self.sessions["operator"]


@pytest.fixture(scope="module")
def principals(server: Server, tokens: dict[str, str]) -> Principals:
    return Principals(server.base_url, tokens)


EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 4}
"""Per operation: a bounded run (about 700 requests, under a minute here), derandomized."""


def test_no_operation_answers_a_server_error(server: Server, principals: Principals) -> None:
    api = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    called: set[str] = set()
    server_errors: list[str] = []
    statuses: list[tuple[str, int]] = []
    for found in api.get_all_operations():
        operation = found.ok()
        session = principals.session_for(operation.definition.raw)
        for mode, examples in EXAMPLES.items():
            for case, response in fuzz(operation, mode, examples, session):
                called.add(case.operation.label)
                statuses.append((case.operation.label, response.status_code))
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.operation.label} -> {response.status_code}: "
                        f"{response.text[:300]}\n  reproduce: {case.as_curl_command()}"
                    )
    documented = {f"{m.upper()} {p}" for m, p, _ in operations(api.raw_schema)}
    assert called == documented, "every operation was called"
    assert server_errors == [], "\n".join(server_errors)
    print(sorted(Counter(statuses).items()))


def fuzz(
    operation: Any, mode: GenerationMode, examples: int, session: requests.Session
) -> list[tuple[Any, requests.Response]]:
    """Cases Hypothesis generates for the operation, each sent once, with the answers."""
    answered: list[tuple[Any, requests.Response]] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        answered.append((case, case.call(session=session, timeout=30)))

    try:
        call()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # nothing in the operation can be made invalid (no parameters, no body)
    return answered
