"""Statements and settlement payments through the partner API of the sandbox platform run as
a real process (`ledger sandbox-platform`, statement knobs given as flags), signed both ways:
what the platform credited comes back as a checked `Statement`, a day not published yet is
`StatementNotReady`, a platform that cannot be trusted is `Unavailable`, and a settlement
is paid once however often it is asked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import httpx
import pytest

from adapters.outbound import OutboundAddresses
from adapters.platform_gateway import HttpPlatformGateway
from adapters.settlement_statements import (
    HttpPlatformStatements,
    HttpSettlementPayments,
    PartnerClient,
    PlatformTerms,
)
from ledger.errors import StateConflict, Unavailable
from ledger.money import Money
from ledger.settlement.ports import StatementNotReady
from tests.integration.test_sandbox_platform import free_port, set_faults
from tests.recharge_support import start_platform

pytestmark = pytest.mark.integration

SECRET = "settlement-platform-secret"
PARTNER = "settlement-partner"
PLATFORM = uuid4()
GOLD, SILVER = str(uuid4()), str(uuid4())
DROPPED_AT_START = "order-dropped-at-start"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    env = {"LEDGER_PLATFORM_SECRET": SECRET, "LEDGER_PLATFORM_PARTNER_ID": PARTNER}
    flags = ["--statement-drop-order", DROPPED_AT_START, "--statement-amount-delta", "250"]
    platform = start_platform(env, *flags)
    try:
        yield platform.url
    finally:
        platform.stop()


@pytest.fixture
def sandbox(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5) as client:
        assert client.post("/sandbox/reset").status_code == 200
        yield client


@pytest.fixture
def gateway(base_url: str) -> Iterator[HttpPlatformGateway]:
    with HttpPlatformGateway(base_url, PARTNER, SECRET, timeout=2) as gateway:
        yield gateway


@pytest.fixture
def client() -> Iterator[PartnerClient]:
    client = PartnerClient(PARTNER, SECRET, timeout=5, addresses=OutboundAddresses(True))
    try:
        yield client
    finally:
        client.close()


def terms_at(base_url: str) -> PlatformTerms:
    return PlatformTerms(base_url, {GOLD: Money(1500), SILVER: Money(900)})


@pytest.fixture
def statements(base_url: str, client: PartnerClient) -> HttpPlatformStatements:
    def terms(platform_id: UUID) -> PlatformTerms:
        assert platform_id == PLATFORM
        return terms_at(base_url)

    return HttpPlatformStatements(client, terms, close_now=True)


@pytest.fixture
def payments(base_url: str, client: PartnerClient) -> HttpSettlementPayments:
    return HttpSettlementPayments(client, lambda platform_id: base_url)


def today() -> datetime:
    return datetime.now(UTC)


def test_the_platforms_statement_of_today_closed_now_is_what_it_credited(
    sandbox: httpx.Client, gateway: HttpPlatformGateway, statements: HttpPlatformStatements
) -> None:
    assert gateway.recharge("st-1", "13800000001", GOLD, 30).outcome == "succeeded"
    assert gateway.recharge("st-2", "13800000002", SILVER, 30).outcome == "succeeded"
    assert gateway.recharge("st-3", "13800000003", "not-this-platforms", 30).outcome == "succeeded"
    assert gateway.recharge(DROPPED_AT_START, "13800000004", GOLD, 30).outcome == "succeeded"

    statement = statements.statement(PLATFORM, today().date())

    assert [(line.order_no, line.kind, line.amount) for line in statement.lines] == [
        ("st-1", "charge", Money(1500)),
        ("st-2", "charge", Money(900)),
    ]
    assert statement.total == Money(2400)
    assert (statement.platform_id, statement.period) == (PLATFORM, today().date())
    assert all(line.at.date() == today().date() for line in statement.lines)
    assert statements.statement(PLATFORM, today().date()) == statement  # frozen


def test_knobs_set_at_run_time_change_the_statement(
    sandbox: httpx.Client, gateway: HttpPlatformGateway, statements: HttpPlatformStatements
) -> None:
    for n in range(1, 5):
        assert gateway.recharge(f"kn-{n}", f"1390000000{n}", GOLD, 30).outcome == "succeeded"
    set_faults(
        sandbox,
        statement_drop_orders=["kn-1"],
        statement_extra_lines=1,
        statement_amount_orders=["kn-2"],
        statement_next_day_orders=["kn-3"],
    )

    statement = statements.statement(PLATFORM, today().date())
    tomorrow = statements.statement(PLATFORM, today().date() + timedelta(days=1))

    extra = f"sandbox-extra-{today().date().isoformat()}-1"
    first_listed = terms_at("").prices[min(GOLD, SILVER)].amount  # an extra line's price
    assert sorted((line.order_no, line.amount.amount) for line in statement.lines) == [
        ("kn-2", 1750),
        ("kn-4", 1500),
        (extra, first_listed),  # delta 250: a flag at start
    ]
    assert [line.order_no for line in tomorrow.lines if line.order_no.startswith("kn-")] == ["kn-3"]


def test_a_statement_not_published_yet_is_not_ready(
    sandbox: httpx.Client, base_url: str, client: PartnerClient
) -> None:
    set_faults(sandbox, statement_not_ready_seconds=30)
    closing = HttpPlatformStatements(client, lambda _: terms_at(base_url), close_now=True)
    waiting = HttpPlatformStatements(client, lambda _: terms_at(base_url))

    with pytest.raises(StatementNotReady) as not_ready:
        closing.statement(PLATFORM, today().date())
    with pytest.raises(StatementNotReady) as not_ended:
        waiting.statement(PLATFORM, today().date() + timedelta(days=1))

    assert 0 < not_ready.value.retry_after_seconds <= 31
    assert not_ended.value.retry_after_seconds > 0


def test_a_platform_that_cannot_be_trusted_is_unavailable(
    sandbox: httpx.Client, base_url: str, statements: HttpPlatformStatements
) -> None:
    set_faults(sandbox, error_rate=1)
    with pytest.raises(Unavailable):
        statements.statement(PLATFORM, today().date())
    set_faults(sandbox, error_rate=0)

    impostor = PartnerClient(PARTNER, "another-secret", addresses=OutboundAddresses(True))
    try:
        with pytest.raises(Unavailable):
            HttpPlatformStatements(impostor, lambda _: terms_at(base_url)).statement(
                PLATFORM, today().date()
            )
    finally:
        impostor.close()
    nowhere = PlatformTerms(f"http://127.0.0.1:{free_port()}", {GOLD: Money(1500)})
    client = PartnerClient(PARTNER, SECRET, timeout=1, addresses=OutboundAddresses(True))
    try:
        with pytest.raises(Unavailable):
            HttpPlatformStatements(client, lambda _: nowhere).statement(PLATFORM, today().date())
    finally:
        client.close()


def test_an_internal_address_is_refused_unless_allowed(base_url: str) -> None:
    guarded = PartnerClient(PARTNER, SECRET, addresses=OutboundAddresses(False))
    try:
        with pytest.raises(Unavailable, match="outbound address refused"):
            HttpPlatformStatements(guarded, lambda _: terms_at(base_url)).statement(
                PLATFORM, today().date()
            )
    finally:
        guarded.close()


def test_a_settlement_is_paid_once_however_often_it_is_asked(
    sandbox: httpx.Client, payments: HttpSettlementPayments
) -> None:
    settlement = uuid4()

    first = payments.pay(settlement, PLATFORM, Money(2400))
    again = payments.pay(settlement, PLATFORM, Money(2400))
    with pytest.raises(StateConflict):
        payments.pay(settlement, PLATFORM, Money(2500))

    assert again == first and first.amount == Money(2400) and first.reference
    received = sandbox.get("/sandbox/payments").json()["payments"]
    assert [(p["payment_id"], p["amount"]) for p in received] == [(str(settlement), 2400)]


def test_a_payment_the_platform_did_not_answer_is_unavailable(
    sandbox: httpx.Client, payments: HttpSettlementPayments
) -> None:
    set_faults(sandbox, error_rate=1)
    with pytest.raises(Unavailable):
        payments.pay(uuid4(), PLATFORM, Money(100))
    assert sandbox.get("/sandbox/payments").json()["payments"] == []


def test_an_accepted_refund_reverses_the_order_on_the_statement(
    sandbox: httpx.Client, gateway: HttpPlatformGateway, statements: HttpPlatformStatements
) -> None:
    set_faults(sandbox, refund_review_ms=0, refund_callbacks=False)
    assert gateway.recharge("rf-1", "13800000009", GOLD, 30).outcome == "succeeded"
    assert gateway.recharge("rf-2", "13800000010", SILVER, 30).outcome == "succeeded"
    assert gateway.refund("rf-1", "refund-of-rf-1").outcome == "accepted"

    statement = statements.statement(PLATFORM, today().date())

    assert [(line.order_no, line.kind, line.signed) for line in statement.lines] == [
        ("rf-1", "charge", 1500),
        ("rf-1", "refund", -1500),
        ("rf-2", "charge", 900),
    ]
    assert statement.total == Money(900)
