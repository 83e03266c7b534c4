"""The hash chain extended by the database within the save: every link is `ledger.chain.link`
byte for byte, a chain begun by links computed in Python continues, concurrent saves keep one
chain, and a save is one statement that Python never holds a transaction open around."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import Environment
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from adapters.database import application_env, event_store_env
from adapters.settings import Settings
from ledger.chain import GENESIS, link
from ledger.distribution.application import Distribution
from ledger.money import Money
from projections.logs import read_chained
from projections.verify import verify

pytestmark = pytest.mark.integration

KEY = "chain-test-code-key"


def app(url: str, **overrides: str) -> Distribution:
    return Distribution(env=event_store_env(url, CODE_HASH_KEY=KEY, **overrides))


def checked_chain(url: str, application: str = "distribution") -> int:
    """Every position holds an event and its link, each link `chain.link` of the one before;
    how many there are."""
    previous, count = GENESIS, 0
    with psycopg.connect(url, autocommit=True) as conn:
        for row in read_chained(conn, application):
            assert row.event is not None and row.link is not None, row.notification_id
            event = row.event
            expected = link(
                previous, row.notification_id, event.originator_id,
                event.originator_version, event.topic, event.state,
            )  # fmt: skip
            assert row.link == expected, f"link {row.notification_id} differs"
            previous, count = row.link, count + 1
    return count


def catalogue(distribution: Distribution) -> uuid.UUID:
    platform, product, channel = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    distribution.register_platform(platform, "优酷 Youku ÿ", "https://gw.example")
    distribution.register_product(product, platform, "VIP 月卡", 30, Money(3000), Money(2000))
    distribution.register_channel(channel, "North")
    distribution.deposit(uuid.uuid4(), channel, Money(2000 * 40))
    distribution.purchase_stock(uuid.uuid4(), channel, product, 40)
    distribution.issue_codes(uuid.uuid4(), channel, product, 30)  # 32 events in one save
    return channel


def test_every_link_computed_in_the_database_is_chain_link(database_url: str) -> None:
    distribution = app(database_url)
    try:
        catalogue(distribution)
    finally:
        distribution.close()
    assert checked_chain(database_url) >= 37


class PythonLinked(PostgresApplicationRecorder):
    """The recorder as it was before the function: the last link read and each new one
    computed in Python, under the table lock."""

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        assert ids is not None
        chain = Identifier(f"{self.events_table_name}_chain")
        curs.execute(SQL("SELECT hash FROM {} ORDER BY notification_id DESC LIMIT 1").format(chain))
        row = curs.fetchone()
        previous = bytes(row["hash"]) if row else GENESIS
        links = []
        for notification_id, event in zip(ids, stored_events, strict=True):
            previous = link(
                previous, notification_id, event.originator_id, event.originator_version,
                event.topic, event.state,
            )  # fmt: skip
            links.append((notification_id, previous))
        curs.executemany(
            SQL("INSERT INTO {} (notification_id, hash) VALUES (%s, %s)").format(chain), links
        )
        return ids


def test_ledger_verify_checks_the_links_made_by_the_database(database_url: str) -> None:
    """`ledger verify` over logs the database linked (no runner ran: the views are empty on
    both sides, so what is compared is the chain of every event); and a forged link is named."""
    distribution = app(database_url)
    try:
        catalogue(distribution)
    finally:
        distribution.close()
    env = application_env(Settings(), database_url, CODE_HASH_KEY=KEY, POSTGRES_POOL_SIZE="1")
    report = verify(database_url, env)
    assert report.ok, str(report.divergence)
    assert report.events["distribution"] == checked_chain(database_url) >= 37
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE distribution_events_chain SET hash = sha256(hash) "
            "WHERE notification_id = (SELECT max(notification_id) FROM distribution_events_chain)"
        )
    forged = verify(database_url, env)
    assert forged.divergence is not None and "does not match" in forged.divergence.detail


def test_a_chain_begun_in_python_continues_in_the_database(database_url: str) -> None:
    before = app(
        database_url,
        APPLICATION_RECORDER_TOPIC=f"{__name__}:PythonLinked",
    )
    try:
        catalogue(before)
    finally:
        before.close()
    written_before = checked_chain(database_url)
    after = app(database_url)
    try:
        catalogue(after)
    finally:
        after.close()
    assert checked_chain(database_url) == 2 * written_before


def test_concurrent_saves_from_many_applications_keep_one_chain(database_url: str) -> None:
    apps = [app(database_url, POSTGRES_MAX_OVERFLOW="2") for _ in range(6)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(apps))

    def register(distribution: Distribution) -> None:
        try:
            barrier.wait()
            for n in range(15):
                distribution.register_channel(uuid.uuid4(), f"Shop {n}")
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    threads = [threading.Thread(target=register, args=(a,)) for a in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for distribution in apps:
        distribution.close()
    assert not errors
    assert checked_chain(database_url) == 6 * 15


def test_a_save_is_one_statement_and_no_transaction_opened_by_python(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    distribution = app(database_url)
    try:
        distribution.register_platform(uuid.uuid4(), "warm-up", "https://gw.example")
        sent: list[str] = []
        execute, command = psycopg.Cursor.execute, psycopg.Connection._exec_command

        def counted_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(query.as_string(self) if hasattr(query, "as_string") else str(query))
            return execute(self, query, *args, **kwargs)

        def counted_command(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(str(query))
            return command(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
        monkeypatch.setattr(psycopg.Connection, "_exec_command", counted_command)
        distribution.register_platform(uuid.uuid4(), "Youku", "https://gw.example")
        monkeypatch.undo()
        assert len(sent) == 1, sent
        assert "distribution_events_append" in sent[0]
    finally:
        distribution.close()
    assert checked_chain(database_url) == 2


def test_the_process_recorder_records_its_tracking_in_the_same_statement(
    database_url: str,
) -> None:
    env = event_store_env(database_url)
    factory = InfrastructureFactory.construct(env=Environment("recharges", env))
    recorder: Any = factory.process_recorder()
    try:

        def event(version: int) -> StoredEvent:
            return StoredEvent(uuid.uuid4(), version, "tests:Happened", b'{"n": 1}')

        assert recorder.insert_events([], tracking=Tracking("distribution", 5)) is None
        assert recorder.max_tracking_id("distribution") == 5
        ids = recorder.insert_events([event(1), event(1)], tracking=Tracking("distribution", 7))
        assert len(ids) == 2 and ids[1] == ids[0] + 1
        with pytest.raises(IntegrityError):  # a position already passed: nothing recorded
            recorder.insert_events([event(1)], tracking=Tracking("distribution", 7))
        assert recorder.max_tracking_id("distribution") == 7
        assert recorder.insert_events([event(1)], tracking=Tracking("distribution", 8))
    finally:
        factory.close()
    assert checked_chain(database_url, "recharges") == 3


def test_reads_answer_what_eventsourcings_recorder_answers_for_every_form(
    database_url: str,
) -> None:
    """The recorder composes each form of select_events once and reads tuples; for every
    combination of gt, lte, desc and limit it answers eventsourcing's own select_events, and
    states saved through the binary-dumped array come back byte for byte."""
    distribution = app(database_url)
    try:
        catalogue(distribution)
        recorder: Any = distribution.recorder
        originator = uuid.uuid4()
        states = [bytes(range(256)), b"", b"\\x00'\"{}(),\\\\", "优酷 ÿ".encode()]
        recorder.insert_events(
            [StoredEvent(originator, v + 1, "tests:Odd", s) for v, s in enumerate(states)]
        )
        assert [e.state for e in recorder.select_events(originator)] == states
        theirs = PostgresApplicationRecorder.select_events.__wrapped__  # type: ignore[attr-defined]
        for gt in (None, 1):
            for lte in (None, 3):
                for desc in (False, True):
                    for limit in (None, 2):
                        kwargs = {"gt": gt, "lte": lte, "desc": desc, "limit": limit}
                        ours = recorder.select_events(originator, **kwargs)
                        assert ours == theirs(recorder, originator, **kwargs), kwargs
                        assert ours, kwargs
    finally:
        distribution.close()
