"""Platform settlements over HTTP against `ledger serve`: a settlement opened by the operator
is finished by the process's sweeper without anyone polling it, read by finance and the
operator; bad input (unknown platform, a day not over, a malformed period, close_now outside
sandbox mode, the wrong role, an unknown outcome, approving a paid settlement) is a problem
with a stable code and records nothing."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Api
from tests.e2e.test_cards_api import assert_problem

pytestmark = pytest.mark.e2e


def yesterday() -> str:
    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


def settlement_events(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM settlements_events").fetchone()
    assert row is not None
    return int(row[0])


def wait_for_status(api: Api, path: str, status: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        shown = api.finance.get(path)
        assert shown.status_code == 200, shown.text
        if shown.json()["status"] == status or time.monotonic() > deadline:
            return dict(shown.json())
        time.sleep(0.5)


def test_a_settlement_opened_by_the_operator_is_finished_by_the_sweeper(api: Api) -> None:
    platform = api.platform("Settled daily")
    body = {"platform_id": platform, "period": yesterday()}

    reply = api.operator.post("/v1/settlements", body)

    assert reply.status_code == 202, reply.text
    opened = reply.json()
    assert opened["status"] == "collecting"
    assert api.operator.post("/v1/settlements", body).json()["id"] == opened["id"]
    path = f"/v1/settlements/{opened['id']}"
    shown = wait_for_status(api, path, "paid")
    zero = {"amount": 0, "currency": "CNY"}
    assert (shown["status"], shown["platform_id"], shown["period"]) == (
        "paid",
        platform,
        yesterday(),
    )
    assert (shown["owed"], shown["statement"], shown["agreed"], shown["paid"]) == (zero,) * 4
    assert shown["counts"] == {"matched": 0, "amount_differs": 0, "ours_only": 0, "theirs_only": 0}
    assert api.operator.get(path).json() == shown
    listed = api.finance.get(f"/v1/settlements?platform_id={platform}")
    assert listed.status_code == 200, listed.text
    assert [item["id"] for item in listed.json()["items"]] == [opened["id"]]
    lines = api.finance.get(path + "/lines")
    assert lines.status_code == 200, lines.text
    assert lines.json() == {"items": [], "next_cursor": None}
    assert_problem(api.operator.post(path + "/approval"), 409, "state_conflict")


def test_bad_settlement_input_is_refused_with_a_stable_code_and_records_nothing(
    api: Api, database_url: str
) -> None:
    platform = api.platform("Refused")
    before = settlement_events(database_url)
    today = datetime.now(UTC).date().isoformat()
    unknown = str(uuid.uuid4())

    post = api.operator.post
    assert_problem(
        post("/v1/settlements", {"platform_id": unknown, "period": yesterday()}), 404, "not_found"
    )
    assert_problem(
        post("/v1/settlements", {"platform_id": platform, "period": today}),
        422,
        "period_not_closed",
    )
    for period in ("2026-13-01", "yesterday", "2026-1-1"):
        assert_problem(
            post("/v1/settlements", {"platform_id": platform, "period": period}),
            422,
            "validation_failed",
        )
    assert_problem(
        post("/v1/settlements", {"platform_id": platform, "period": today, "close_now": True}),
        422,
        "validation_failed",
    )
    assert_problem(
        api.finance.post("/v1/settlements", {"platform_id": platform, "period": yesterday()}),
        403,
        "forbidden",
    )
    assert_problem(api.finance.get(f"/v1/settlements/{unknown}"), 404, "not_found")
    assert_problem(api.finance.get(f"/v1/cases/{unknown}"), 404, "not_found")
    assert_problem(
        post(f"/v1/cases/{unknown}/resolution", {"outcome": "pay_twice", "note": ""}),
        422,
        "validation_failed",
    )
    assert_problem(
        post(f"/v1/cases/{unknown}/resolution", {"outcome": "write_off", "note": ""}),
        404,
        "not_found",
    )
    assert_problem(api.finance.get("/v1/cases?kind=lost"), 422, "validation_failed")
    listed = api.finance.get("/v1/cases?status=open")
    assert listed.status_code == 200, listed.text

    assert settlement_events(database_url) == before
