"""Refunds on the real PostgreSQL event store: two processes' instances asking different
refunds of one recharge at once record exactly one; the settlement of an accepted refund run
by two instances at once returns the unit once; breakage and unit returns balance."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from adapters.database import event_store_env, open_pool
from ledger.distribution.application import Distribution
from ledger.errors import DomainError
from ledger.postings import Postings
from ledger.recharges.application import Recharges
from ledger.recharges.refunds import RefundAlreadyRequested
from ledger.recharges.steps import RechargeSteps
from tests.unit.test_recharge_refunds import RefundDesk, RefundingPlatform
from tests.unit.test_recharge_steps import FakeQueue, FakeWebhooks

pytestmark = pytest.mark.integration


def applications(database_url: str) -> tuple[Distribution, Recharges]:
    """One process's applications over the test database (small pools: a shared server)."""
    env = event_store_env(database_url, POSTGRES_POOL_SIZE="2", POSTGRES_MAX_OVERFLOW="2")
    return Distribution(env={**env, "CODE_HASH_KEY": "k"}), Recharges(env=env)


@pytest.fixture
def desks(database_url: str) -> Iterator[Callable[[], RefundDesk]]:
    """Desks whose applications write to the test database; closed afterwards."""
    made: list[Any] = []

    def make() -> RefundDesk:
        distribution, recharges = applications(database_url)
        made.extend([distribution, recharges])
        return RefundDesk(distribution=distribution, recharges=recharges)

    yield make
    for app in made:
        app.close()


def twin(desk: RefundDesk, database_url: str) -> tuple[Distribution, Recharges, RechargeSteps]:
    """Another process's applications over the same database."""
    distribution, recharges = applications(database_url)
    steps = RechargeSteps(
        recharges, distribution, RefundingPlatform(), FakeQueue(), FakeWebhooks(), desk.clock
    )
    return distribution, recharges, steps


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except DomainError as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def topics(app: Any, originator: UUID) -> list[str]:
    """The names of an aggregate's stored events, from the log."""
    return [
        n.topic.rsplit(".", 1)[-1]
        for n in app.recorder.select_notifications(1, limit=10_000)
        if n.originator_id == originator
    ]


def test_two_refund_requests_at_once_record_exactly_one(desks, database_url: str) -> None:
    desk = desks()
    recharge_id = desk.succeeded()
    distribution, recharges, _ = twin(desk, database_url)
    try:
        first, second = uuid4(), uuid4()
        results = at_once(
            lambda: desk.recharges.request_refund(recharge_id, first, "a", "op", desk.clock()),
            lambda: recharges.request_refund(recharge_id, second, "b", "op", desk.clock()),
        )
        refused = [r for r in results if isinstance(r, DomainError)]
        assert len(refused) == 1 and isinstance(refused[0], RefundAlreadyRequested), results
        names = topics(desk.recharges, recharge_id)
        assert names.count("RefundRequested") == 1
        assert len(desk.recharge(recharge_id).refunds) == 1
    finally:
        distribution.close()
        recharges.close()


def test_an_accepted_refund_settled_by_two_processes_at_once_returns_one_unit(
    desks, database_url: str
) -> None:
    desk = desks()
    recharge_id = desk.succeeded()
    on_hand = desk.on_hand()
    refund_id = uuid4()
    desk.recharges.request_refund(recharge_id, refund_id, "why", "op", desk.clock())
    desk.platform.refund_answer = desk.platform.status_answer  # accepted at once
    desk.steps.run_step(recharge_id, "refund-1-refund")
    assert desk.recharge(recharge_id).status == "refunded"
    distribution, recharges, steps = twin(desk, database_url)
    try:
        results = at_once(
            lambda: desk.steps.settle_refund(recharge_id, refund_id),
            lambda: steps.settle_refund(recharge_id, refund_id),
        )
        assert not [r for r in results if isinstance(r, Exception)], results
        assert results[0]["event_id"] == results[1]["event_id"]
        code_id = desk.code_of(recharge_id).id
        returned = [
            n
            for n in desk.distribution.recorder.select_notifications(1, limit=10_000)
            if n.originator_id == code_id and n.topic.endswith("Code.UnitReturned")
        ]
        assert len(returned) == 1
        assert distribution.channel(desk.shop).stock_of(desk.product) == on_hand + 1
        # every stored movement balances, per asset, over the whole log
        totals: dict[str, int] = defaultdict(int)
        for notification in desk.distribution.recorder.select_notifications(1, limit=10_000):
            event = desk.distribution.mapper.to_domain_event(notification)
            postings = getattr(event, "postings", None)
            if isinstance(postings, Postings):
                for leg in postings:
                    totals[leg.asset] += leg.amount
        assert totals and all(total == 0 for total in totals.values()), totals
    finally:
        distribution.close()
        recharges.close()


def test_refunds_and_breakage_verify_and_balance_in_the_views(desks, database_url: str) -> None:
    """After an accepted refund (the unit back on hand) and a sold code's expiry (its cost
    from the platform's payable to the operator's breakage income), the runners' views agree
    with a full replay (`ledger verify`) and the trial balance is zero."""
    from projections.balances import BalancesReader
    from projections.verify import verify
    from tests.integration.test_rebuild import app_env, project

    desk = desks()
    recharge_id = desk.succeeded()
    refund_id = uuid4()
    desk.recharges.request_refund(recharge_id, refund_id, "why", "op", desk.clock())
    desk.platform.refund_answer = desk.platform.status_answer
    desk.steps.run_step(recharge_id, "refund-1-refund")
    desk.steps.settle_refund(recharge_id, refund_id)
    product = desk.distribution.product(desk.product)
    expires = desk.clock() + timedelta(days=1)
    _, (typed,) = desk.distribution.issue_codes(
        uuid4(), desk.shop, desk.product, 1, expires_at=expires
    )
    desk.distribution.expire_code(desk.distribution.find_code(typed).id, expires)

    project(database_url)
    report = verify(database_url, app_env(database_url))
    assert report.ok, str(report.divergence)
    assert report.rows_compared.get("recharges", 0) >= 1
    pool = open_pool(database_url, 2, name="test")
    try:
        balances = BalancesReader(pool)
        assert balances.of_account("operator:breakage:CNY") == {"CNY": (2000, 0)}
        payable = balances.of_account(f"platform:{product.platform_id}:payable")
        assert payable == {"CNY": (2 * 2000 - 2000, 0)}  # two units bought, one expired sold
        unit = f"unit:{desk.product}"
        # the refunded unit came back on hand (and went into the expiring code's batch)
        consumed = balances.of_account(f"channel:{desk.shop}:consumed:{desk.product}")
        assert consumed == {unit: (0, 0)}
        breakage = balances.of_account(f"channel:{desk.shop}:breakage:{desk.product}")
        assert breakage == {unit: (1, 0)}
        totals: dict[str, int] = defaultdict(int)
        for (_, asset), (posted, _) in balances.of_accounts_under("").items():
            totals[asset] += posted
        assert totals and all(total == 0 for total in totals.values()), totals
    finally:
        pool.close()
