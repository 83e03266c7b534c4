"""A view writes a run of events in few statements (one per table and kind of change, not
one per row): the rows a long run leaves are the rows its events leave one at a time, for
every view, with recharges requested, scheduled and ended in one save as the saga starter
and the worker save them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from ledger.recharges.application import Recharges
from ledger.recharges.decisions import StepResult
from ledger.recharges.saga import Recharge
from projections.catalog import VIEWS
from projections.rebuild import rebuild
from tests.integration.test_rebuild import Golden, app_env, golden, ledger_url, rows_of

pytestmark = pytest.mark.integration

__all__ = ["golden", "ledger_url"]


def save_recharges(url: str, golden: Golden, count: int) -> None:
    """Recharges saved four at a time, every third one credited in the same save: one
    recharge's Requested, StepScheduled and Succeeded in one run, beside others'."""
    h, now = golden.history, datetime.now(UTC)
    recharges = Recharges(env=app_env(url))
    try:
        together: list[Any] = []
        for n in range(count):
            recharge = Recharge.request(
                uuid4(),
                uuid4(),
                h.subs[n % 2],
                h.product,
                f"1390000{n:04d}",
                None,
                now,
                now + timedelta(hours=1),
            )
            if n % 3 == 0:
                assert recharge.step is not None
                result = StepResult("succeeded", None, f"PO{n}", now, now + timedelta(days=30))
                recharge.record(recharge.step.id, result, now)
            together.append(recharge)
            if len(together) == 4:
                recharges.save(*together)
                together = []
        recharges.save(*together)
    finally:
        recharges.close()


def test_every_view_leaves_the_same_rows_from_a_long_run_as_event_by_event(
    ledger_url: str, golden: Golden
) -> None:
    save_recharges(ledger_url, golden, 30)
    env = app_env(ledger_url)
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        for spec in VIEWS:
            rebuild(spec, ledger_url, env, batch=1)
            one_by_one = rows_of(conn, spec)
            rebuild(spec, ledger_url, env, batch=1000)
            in_runs = rows_of(conn, spec)
            assert in_runs == one_by_one, spec.name
        recharges = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), "
            "count(*) FILTER (WHERE step_id IS NOT NULL) FROM recharges"
        ).fetchone()
    assert recharges is not None and recharges[0] >= 10 and recharges[1] >= 20, recharges
