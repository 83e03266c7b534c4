"""The audit log on PostgreSQL: lines written masked, filtered, paged newest first, pruned by
age only, exported as CSV; the table refuses updates and early deletes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from adapters.audit_log import AuditFilter, AuditLine, AuditLog, mask_account
from adapters.database import open_pool

pytestmark = pytest.mark.integration


@pytest.fixture
def audit_log(database_url: str) -> Iterator[AuditLog]:
    pool = open_pool(database_url, size=2)
    try:
        yield AuditLog(pool)
    finally:
        pool.close()


def refusal(code: str = "code_invalid", **fields: Any) -> AuditLine:
    line = AuditLine(
        kind="recharge_refused",
        code=code,
        principal="web:10.0.0.1",
        account="13812348000",
        address="10.0.0.1",
        request_id=uuid4().hex,
        method="POST",
        path="/v1/recharges",
        detail="the code is not valid",
    )
    return replace(line, **fields)


def test_accounts_are_masked_on_every_length() -> None:
    assert mask_account("13812348000") == "138****8000"
    assert mask_account("12345678") == "123****5678"
    assert mask_account("abcde") == "a***e"
    assert mask_account("ab") == "**"


def test_a_written_line_reads_back_with_its_account_masked(audit_log: AuditLog) -> None:
    channel_id = uuid4()
    line = refusal(channel_id=channel_id)
    audit_log.write(line)

    (entry,), cursor = audit_log.page(AuditFilter())

    assert cursor is None
    assert entry.account == "138****8000"
    assert (entry.kind, entry.code, entry.channel_id) == (
        "recharge_refused",
        "code_invalid",
        channel_id,
    )
    assert (entry.request_id, entry.method, entry.path) == (
        line.request_id,
        "POST",
        "/v1/recharges",
    )
    assert entry.principal == "web:10.0.0.1" and entry.address == "10.0.0.1"
    assert datetime.now(UTC) - entry.at < timedelta(minutes=1)


def test_filters_by_kind_channel_code_and_time(audit_log: AuditLog) -> None:
    mine, other = uuid4(), uuid4()
    old = datetime.now(UTC) - timedelta(days=3)
    audit_log.write(refusal("code_invalid", channel_id=mine))
    audit_log.write(refusal("code_expired", channel_id=mine))
    audit_log.write(refusal("code_invalid", channel_id=other))
    audit_log.write(refusal("signature_invalid", kind="signature_invalid"), at=old)

    def codes(where: AuditFilter) -> list[str | None]:
        return [entry.code for entry in audit_log.page(where)[0]]

    assert codes(AuditFilter(channel_id=mine)) == ["code_expired", "code_invalid"]
    assert codes(AuditFilter(code="code_invalid")) == ["code_invalid", "code_invalid"]
    assert codes(AuditFilter(kind="signature_invalid")) == ["signature_invalid"]
    assert codes(AuditFilter(until=old + timedelta(seconds=1))) == ["signature_invalid"]
    assert len(codes(AuditFilter(since=old + timedelta(seconds=1)))) == 3
    assert codes(AuditFilter(kind="lockout")) == []


def test_pages_run_newest_first_without_gaps_or_repeats(audit_log: AuditLog) -> None:
    written = [refusal(request_id=f"r{i}") for i in range(7)]
    for line in written:
        audit_log.write(line)

    seen: list[str | None] = []
    cursor: int | None = None
    pages = 0
    while True:
        entries, cursor = audit_log.page(AuditFilter(), limit=3, after=cursor)
        seen += [entry.request_id for entry in entries]
        pages += 1
        if cursor is None:
            break

    assert pages == 3
    assert seen == [f"r{i}" for i in reversed(range(7))]


def test_the_pruner_deletes_only_lines_past_the_retention(audit_log: AuditLog) -> None:
    now = datetime.now(UTC)
    audit_log.write(refusal(request_id="ancient"), at=now - timedelta(days=91))
    audit_log.write(refusal(request_id="recent"), at=now - timedelta(days=89))
    audit_log.write(refusal(request_id="today"))

    assert audit_log.prune(retention_days=90) == 1
    remaining = {entry.request_id for entry in audit_log.page(AuditFilter())[0]}
    assert remaining == {"recent", "today"}


def test_the_table_refuses_updates_and_deletes_of_recent_lines(
    audit_log: AuditLog, database_url: str
) -> None:
    audit_log.write(refusal())
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE audit_log SET code = 'forged'")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM audit_log")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("TRUNCATE audit_log")
        assert conn.execute("SELECT code FROM audit_log").fetchall() == [("code_invalid",)]


def test_export_writes_a_header_and_the_matching_lines_oldest_first(audit_log: AuditLog) -> None:
    audit_log.write(refusal("code_invalid", request_id="first"))
    audit_log.write(refusal("rate_limited", request_id="second", kind="lockout"))
    audit_log.write(refusal("code_expired", request_id="third"))
    out = io.StringIO()

    count = audit_log.export_csv(out, AuditFilter(kind="recharge_refused"))

    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert count == 2
    assert [row["request_id"] for row in rows] == ["first", "third"]
    assert {row["account"] for row in rows} == {"138****8000"}
    assert "13812348000" not in out.getvalue()


def test_request_borne_text_is_bounded_and_freed_of_nul(audit_log: AuditLog) -> None:
    audit_log.write(
        refusal(path="/v1/channels/\x00", request_id="r" * 5000, account="138\x0012348000")
    )

    (entry,), _ = audit_log.page(AuditFilter())

    assert entry.path == "/v1/channels/"
    assert entry.request_id == "r" * 300
    assert entry.account is not None and "\x00" not in entry.account
