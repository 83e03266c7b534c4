"""Settlements on the real PostgreSQL: the saga's events, chunks and cases in the
`settlements` log, moved along by the sweeper over the settlements view, resumed by a new
process after a crash between the payment and its record (paid once), two advancing at once
(one set of chunks, one payment), and `ledger verify` clean over the new log and view."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from adapters.database import open_pool
from api.runtime.settlements import SettlementSweeper
from ledger import accounts
from ledger.distribution.application import Distribution
from ledger.money import Money
from ledger.settlement.application import Settlements
from ledger.settlement.saga import settlement_id
from ledger.settlement.steps import SettlementSteps
from projections.catalog import view
from projections.logs import decoded, read_events
from projections.rebuild import open_view, rebuild
from projections.settlements import SettlementsReader, SettlementsView
from projections.verify import verify
from tests.integration.test_rebuild import app_env
from tests.settlement_fakes import (
    DAY,
    Clock,
    FakeLedgerSide,
    FakePayments,
    FakeStatements,
    PaymentCrashed,
    at,
    line,
)

pytestmark = pytest.mark.integration

NEXT = DAY + timedelta(days=1)


@dataclass
class Office:
    url: str
    env: dict[str, str]
    distribution: Distribution
    settlements: Settlements
    platform: Any
    ours: FakeLedgerSide
    statements: FakeStatements
    payments: FakePayments
    clock: Clock
    pool: Any

    def steps(self, settlements: Settlements | None = None) -> SettlementSteps:
        return SettlementSteps(
            settlements or self.settlements,
            self.distribution,
            self.ours,
            self.statements,
            self.payments,
            self.clock,
        )


@pytest.fixture
def office(database_url: str) -> Iterator[Office]:
    env = app_env(database_url)
    distribution, settlements = Distribution(env=env), Settlements(env=env)
    platform = uuid4()
    distribution.register_platform(platform, "iQiyi", "http://127.0.0.1:1")
    pool = open_pool(database_url, 2, "settlements-test")
    pool.open()
    try:
        yield Office(
            database_url,
            env,
            distribution,
            settlements,
            platform,
            FakeLedgerSide(),
            FakeStatements(),
            FakePayments(),
            Clock(at(DAY + timedelta(days=3))),
            pool,
        )
    finally:
        pool.close()
        distribution.close()
        settlements.close()


class LiveView:
    """The live settlements view, fed from the log as its runner would."""

    def __init__(self, office: Office) -> None:
        self.office = office
        self.view = open_view(SettlementsView.at_version(1), office.env)

    def catch_up(self) -> None:
        application = self.office.settlements
        after = self.view.max_tracking_id(application.name) or 0
        with psycopg.connect(self.office.url, autocommit=True) as conn:
            stored = read_events(conn, application.name, after)
            events = list(decoded(application.mapper, application.name, stored))
        self.view.record(events)

    def close(self) -> None:
        self.view.datastore.close()


@pytest.fixture
def live(office: Office) -> Iterator[LiveView]:
    live = LiveView(office)
    try:
        yield live
    finally:
        live.close()


def statuses(office: Office) -> dict[Any, str]:
    with psycopg.connect(office.url) as conn:
        return dict(conn.execute("SELECT id, status FROM settlements").fetchall())


def test_the_sweeper_settles_a_day_of_2500_orders_with_cases_and_verify_is_clean(
    office: Office, live: LiveView
) -> None:
    ours = [line(f"O{n:05d}", 1500) for n in range(2500)]
    theirs = [*ours[:2497], line("O02497", 1600), line("X00001", 900)]  # one differs, one extra
    office.ours.add(DAY, *ours)
    office.statements.publish(DAY, *theirs)
    steps = office.steps()
    sweeper = SettlementSweeper(steps, office.pool)

    settlement = steps.open(office.platform, DAY)
    live.catch_up()
    assert sweeper.sweep() == 1
    live.catch_up()

    settlement = office.settlements.settlement(settlement.id)
    assert settlement.status == "awaiting_approval"
    assert (settlement.ours_chunks, settlement.theirs_chunks, settlement.result_chunks) == (3, 3, 3)
    assert settlement.counts == {
        "matched": 2497,
        "amount_differs": 1,
        "ours_only": 2,
        "theirs_only": 1,
    }
    assert statuses(office) == {settlement.id: "awaiting_approval"}
    reader = SettlementsReader(office.pool)
    assert reader.due() == []  # nothing to do until an operator acts
    cases = [office.settlements.case(i) for i in reader.case_listing("open", None, None, 10)]
    assert sorted((c.kind, c.order_no) for c in cases) == [
        ("amount_differs", "O02497"),
        ("theirs_only", "X00001"),
    ]
    page = office.settlements.results(settlement, 999, 3)
    assert [row[0] for _, row in page] == ["O00999", "O01000", "O01001"]

    for case in cases:
        office.settlements.resolve_case(case.id, "accept_theirs", "checked", "op", office.clock())
    live.catch_up()
    assert reader.due() == [settlement.id]
    sweeper.sweep()
    live.catch_up()

    settlement = office.settlements.settlement(settlement.id)
    assert (settlement.status, settlement.paid) == ("paid", 2497 * 1500 + 1600 + 900)
    assert office.payments.paid == {settlement.id: Money(settlement.paid)}
    assert statuses(office) == {settlement.id: "paid"}
    assert reader.case_listing("open", None, None, 10) == []

    rebuild(view("balances"), office.url, office.env)
    with psycopg.connect(office.url) as conn:
        rows = dict(conn.execute("SELECT account, posted FROM balances").fetchall())
        trial = conn.execute("SELECT sum(posted) FROM balances").fetchone()[0]
    assert trial == 0
    assert rows[accounts.external_platform_settlements("CNY")] == settlement.paid
    assert rows[accounts.operator_settlement_differences("CNY")] == -(100 + 900)
    assert verify(office.url, office.env).ok


def test_a_new_process_after_a_crash_between_payment_and_record_pays_once(
    office: Office,
) -> None:
    office.ours.add(DAY, line("A", 2000))
    office.statements.publish(DAY, line("A", 2000))
    office.payments.crash_after_paying = True
    with pytest.raises(PaymentCrashed):
        office.steps().advance(office.steps().open(office.platform, DAY).id)

    restarted = Settlements(env=office.env)  # another process: nothing cached
    try:
        settlement = office.steps(restarted).advance(settlement_id(office.platform, DAY))
    finally:
        restarted.close()

    assert settlement.status == "paid"
    assert office.payments.calls == 2
    assert office.payments.paid == {settlement.id: Money(2000)}


def test_two_processes_advancing_one_settlement_at_once_record_each_step_once(
    office: Office,
) -> None:
    office.ours.add(DAY, *[line(f"O{n}", 100) for n in range(1500)])
    office.statements.publish(DAY, *[line(f"O{n}", 100) for n in range(1500)])
    opened = office.steps().open(office.platform, DAY)
    others = [Settlements(env=office.env) for _ in range(2)]
    errors: list[BaseException] = []

    def advance(settlements: Settlements) -> None:
        try:
            office.steps(settlements).advance(opened.id)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=advance, args=(s,)) for s in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for settlements in others:
        settlements.close()

    assert errors == []
    settlement = office.settlements.settlement(opened.id)
    assert (settlement.status, settlement.paid) == ("paid", 150_000)
    assert list(office.payments.paid.values()) == [Money(150_000)]
    with psycopg.connect(office.url) as conn:
        topics = conn.execute(
            "SELECT topic, count(*) FROM settlements_events GROUP BY topic"
        ).fetchall()
    counted = {topic.rsplit(".", 1)[-1]: n for topic, n in topics}
    assert counted["OursCollected"] == counted["Reconciled"] == counted["Paid"] == 1
    assert counted["Recorded"] == 2 + 2 + 2  # ours, theirs, results: two chunks each
