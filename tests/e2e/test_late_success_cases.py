"""A late success becomes a case: the sandbox platform fails a recharge, then credits it
after all and calls back twice; the recharge saga records one discrepancy, and the runtime's
dispatcher opens exactly one `late_success` case for it in the operators' queue, which an
operator resolves (moving no money: the platform bills the order, if at all, on a
statement)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_cards_api import assert_problem
from tests.e2e.test_platform_callbacks_e2e import (
    Setup,
    answered,
    final,
    knobs,
    new_account,
    place,
    platform,
    server,
    setup,
    shop_with_a_code,
)

pytestmark = pytest.mark.e2e

__all__ = ["knobs", "platform", "server", "setup"]  # the callbacks module's fixtures


def late_success_cases(setup: Setup, order_no: str) -> list[dict]:
    reply = setup.api.finance.get("/v1/cases?kind=late_success&limit=100")
    assert reply.status_code == 200, reply.text
    return [c for c in reply.json()["items"] if c["order_no"] == order_no]


def test_a_late_success_opens_one_case_that_an_operator_resolves(knobs: Setup) -> None:
    setup = knobs
    account = new_account()
    setup.platform.faults(
        late_success_accounts=[account], late_success_after_ms=1500, callback_duplicates=1
    )
    channel, code = shop_with_a_code(setup)
    recharge_id = place(setup, channel, code, account)
    assert final(channel, recharge_id)["status"] == "failed"
    answered(setup, recharge_id, 4)  # 2 failed callbacks, then 2 successes

    deadline = time.monotonic() + 30
    while not (cases := late_success_cases(setup, recharge_id)) and time.monotonic() < deadline:
        time.sleep(0.3)
    (case,) = cases
    assert (case["kind"], case["status"], case["platform_id"]) == (
        "late_success",
        "open",
        setup.platform_id,
    )
    assert case["settlement_id"] is None and case["ours"] is None and case["theirs"] is None

    path = f"/v1/cases/{case['id']}/resolution"
    reply = setup.api.operator.post(path, {"outcome": "write_off", "note": "sold twice"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["resolution"]["pay"] == {"amount": 0, "currency": "CNY"}
    assert_problem(setup.api.operator.post(path, {"outcome": "write_off"}), 409, "state_conflict")
    assert [c["status"] for c in late_success_cases(setup, recharge_id)] == ["resolved"]
