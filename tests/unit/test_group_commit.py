"""The group committer alone, over a fake insert: batching, bounds, and what a failed batch
gives each of its commands."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent

from ledger.group_commit import GroupCommitter


def event(aggregate: str, version: int) -> StoredEvent:
    return StoredEvent(originator_id=aggregate, originator_version=version, topic="t", state=b"")


class FakeStore:
    """A unique (aggregate, version) store; the first insert waits for `open` when `gated`.
    `refuse` raises that error on every insert holding more than one command's events."""

    def __init__(self, gated: bool = False, refuse: Exception | None = None) -> None:
        self.rows: dict[tuple[str, int], int] = {}
        self.inserts: list[int] = []
        self.concurrent = 0
        self.most_concurrent = 0
        self.open = threading.Event()
        self.gated = gated
        self.refuse = refuse
        self.mutex = threading.Lock()

    def __call__(self, events: Sequence[StoredEvent]) -> Sequence[int]:
        with self.mutex:
            self.inserts.append(len(events))
            first = len(self.inserts) == 1
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            if first and self.gated:
                assert self.open.wait(10)
            time.sleep(0.001)
            with self.mutex:
                if self.refuse is not None and len(events) > 1:
                    raise self.refuse
                keys = [(str(e.originator_id), e.originator_version) for e in events]
                if any(k in self.rows for k in keys) or len(set(keys)) < len(keys):
                    raise IntegrityError("duplicate key")  # names no key: like the POPO store
                ids = []
                for key in keys:
                    self.rows[key] = len(self.rows) + 1
                    ids.append(self.rows[key])
                return ids
        finally:
            with self.mutex:
                self.concurrent -= 1


def commit_in_thread(committer: GroupCommitter, events: list[StoredEvent]) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["ids"] = committer.commit(events)
        except Exception as error:  # noqa: BLE001 - the outcome under test
            outcome["error"] = error

    outcome["thread"] = threading.Thread(target=run)
    outcome["thread"].start()
    return outcome


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_a_command_alone_is_saved_at_once_without_waiting_for_company() -> None:
    store = FakeStore()
    committer = GroupCommitter(store)
    started = time.monotonic()
    assert committer.commit([event("a", 1), event("b", 1)]) == [1, 2]
    assert time.monotonic() - started < 0.5
    assert store.inserts == [2]


def test_many_threads_never_insert_at_once_and_every_command_gets_its_own_ids() -> None:
    store = FakeStore()
    committer = GroupCommitter(store)
    outcomes = [
        commit_in_thread(committer, [event(f"t{t}", v) for v in range(3 * n + 1, 3 * n + 4)])
        for t in range(16)
        for n in range(20)
    ]
    for outcome in outcomes:
        outcome["thread"].join(10)
    assert store.most_concurrent == 1
    assert all("error" not in o for o in outcomes)
    ids = [i for o in outcomes for i in o["ids"]]
    assert sorted(ids) == list(range(1, 16 * 20 * 3 + 1))
    assert committer.stats.commands == 320 and committer.stats.batches < 320


def test_a_batch_is_bounded_in_commands_and_events() -> None:
    store = FakeStore(gated=True)
    committer = GroupCommitter(store, max_commands=3, max_events=5)
    leader = commit_in_thread(committer, [event("leader", 1)])
    wait_until(lambda: store.inserts)
    rest = [commit_in_thread(committer, [event(f"c{n}", 1), event(f"c{n}", 2)]) for n in range(7)]
    wait_until(lambda: committer.waiting == 7)
    store.open.set()
    for outcome in [leader, *rest]:
        outcome["thread"].join(10)
    # 2 events a command: at most 2 fit in 5 events, though 3 commands would be allowed
    assert store.inserts == [1, 4, 4, 4, 2]


def test_a_conflict_the_store_does_not_name_saves_each_command_alone() -> None:
    store = FakeStore(gated=True)
    store.rows[("taken", 1)] = 0
    committer = GroupCommitter(store)
    leader = commit_in_thread(committer, [event("leader", 1)])
    wait_until(lambda: store.inserts)
    good = [commit_in_thread(committer, [event(f"g{n}", 1)]) for n in range(3)]
    wait_until(lambda: committer.waiting == 3)
    loser = commit_in_thread(committer, [event("x", 1), event("taken", 1)])
    wait_until(lambda: committer.waiting == 4)
    store.open.set()
    for outcome in [leader, *good, loser]:
        outcome["thread"].join(10)
    assert isinstance(loser["error"], IntegrityError)
    assert all("ids" in o for o in good)
    assert ("x", 1) not in store.rows  # one command's events: all or none
    assert store.inserts == [1, 5, 1, 1, 1, 2]
    assert (committer.stats.conflicts, committer.stats.saved_alone) == (1, 4)


def test_a_lost_connection_fails_every_command_of_its_batch_with_its_own_error() -> None:
    store = FakeStore(gated=True, refuse=OperationalError("server closed the connection"))
    committer = GroupCommitter(store)
    leader = commit_in_thread(committer, [event("leader", 1)])
    wait_until(lambda: store.inserts)
    rest = [commit_in_thread(committer, [event(f"c{n}", 1)]) for n in range(3)]
    wait_until(lambda: committer.waiting == 3)
    store.open.set()
    for outcome in [leader, *rest]:
        outcome["thread"].join(10)
    errors = [o["error"] for o in rest]
    assert all(isinstance(e, OperationalError) for e in errors)
    assert len({id(e) for e in errors}) == 3
    assert store.inserts == [1, 3]  # not tried again one by one


def test_an_empty_queue_after_a_failure_leaves_the_committer_usable() -> None:
    store = FakeStore()
    committer = GroupCommitter(store)
    with pytest.raises(IntegrityError):
        committer.commit([event("a", 1), event("a", 1)])
    assert committer.commit([event("a", 1)]) == [1]


def test_an_application_dropped_without_close_is_freed_at_once_with_its_committer() -> None:
    """The committer holds the recorder, not the application: no reference cycle keeps an
    application someone forgot to close (and its pool's connections) alive until a GC pass."""
    import gc
    import weakref

    from ledger.distribution.application import Distribution

    app = Distribution(env={"CODE_HASH_KEY": "unit-test-code-key"})
    assert app.committer is not None
    dropped = weakref.ref(app)
    gc.disable()
    try:
        del app
        assert dropped() is None
    finally:
        gc.enable()
