"""Threads asking for one cached aggregate at once share a read of its new events
(ledger.applications.LedgerRepository): at most two reads however many ask, each thread sees
every event recorded before it asked, and the cached aggregate is replaced, never changed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from ledger.distribution.application import Distribution
from ledger.money import Money

THREADS = 12


class GatedReads:
    """The event store's reads of new events, counted; each waits at the gate while closed."""

    def __init__(self, distribution: Distribution) -> None:
        self.store = distribution.repository.event_store
        self.original = self.store.get
        self.gate = threading.Event()
        self.gate.set()
        self.began = threading.Event()
        self.count = 0
        self.store.get = self.read  # type: ignore[method-assign]

    def read(self, *args: Any, **kwargs: Any) -> Any:
        """Read, then hold what was read at the gate: what a slow round trip looks like."""
        self.count += 1
        found = list(self.original(*args, **kwargs))
        self.began.set()
        assert self.gate.wait(10), "a read was kept waiting"
        return found


@pytest.fixture
def shop() -> Iterator[tuple[Distribution, UUID]]:
    distribution = Distribution(env={"CODE_HASH_KEY": "k", "AGGREGATE_CACHE_MAXSIZE": "100"})
    channel_id = uuid4()
    distribution.register_channel(channel_id, "Pudong shop")
    distribution.channel(channel_id)  # cached
    yield distribution, channel_id
    distribution.close()


def asked_at_once(distribution: Distribution, channel_id: UUID, n: int) -> list[Any]:
    found: list[Any] = [None] * n

    def ask(i: int) -> None:
        found[i] = distribution.channel(channel_id)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    return [threads, found]


def waiting(distribution: Distribution, channel_id: UUID, threads: int) -> None:
    """Until `threads` threads asked for the channel."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reads = distribution.repository._reads.get(channel_id)  # type: ignore[attr-defined]
        if reads is not None and reads.users >= threads:
            return
        time.sleep(0.001)
    raise AssertionError(f"{threads} threads never asked at once")


def test_threads_asking_at_once_share_the_reads(shop: tuple[Distribution, UUID]) -> None:
    distribution, channel_id = shop
    distribution.deposit(uuid4(), channel_id, Money(500))
    reads = GatedReads(distribution)
    reads.gate.clear()
    threads, found = asked_at_once(distribution, channel_id, THREADS)
    waiting(distribution, channel_id, THREADS)
    reads.gate.set()
    for thread in threads:
        thread.join(10)

    assert reads.count <= 2, f"{reads.count} reads for {THREADS} threads asking at once"
    assert {channel.version for channel in found} == {distribution.channel(channel_id).version}
    assert len({id(channel) for channel in found}) == THREADS, "each thread has its own copy"


def test_a_thread_asking_while_a_read_is_under_way_sees_what_was_recorded_before_it_asked(
    shop: tuple[Distribution, UUID],
) -> None:
    distribution, channel_id = shop
    changed = distribution.channel(channel_id)
    reads = GatedReads(distribution)
    reads.gate.clear()
    [first], first_found = asked_at_once(distribution, channel_id, 1)
    assert reads.began.wait(5)  # the first read began before the change below was recorded
    changed.set_webhook("https://shop.example/hooks")
    distribution.save(changed)  # as another process would: no read of this repository's
    [second], second_found = asked_at_once(distribution, channel_id, 1)
    waiting(distribution, channel_id, 2)  # the second thread asked while the first read
    reads.gate.set()  # was under way
    first.join(10)
    second.join(10)

    assert second_found[0].version == changed.version
    assert second_found[0].webhook_url == "https://shop.example/hooks"
    assert reads.count == 2


def test_the_cached_aggregate_is_replaced_never_changed(shop: tuple[Distribution, UUID]) -> None:
    distribution, channel_id = shop
    cached = distribution.repository.cache.get(channel_id)  # type: ignore[union-attr]
    version = cached.version
    distribution.deposit(uuid4(), channel_id, Money(300))

    caught_up = distribution.channel(channel_id)

    assert caught_up.version == version + 1
    assert cached.version == version, "a copy being taken of it elsewhere stays whole"
    assert distribution.repository.cache.get(channel_id).version == version + 1  # type: ignore[union-attr]


def test_a_failed_read_is_not_shared(shop: tuple[Distribution, UUID]) -> None:
    distribution, channel_id = shop
    store = distribution.repository.event_store
    original = store.get
    failures = [RuntimeError("the database went away")]

    def read(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return original(*args, **kwargs)

    store.get = read  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="went away"):
        distribution.channel(channel_id)
    assert distribution.channel(channel_id).id == channel_id
    assert distribution.repository._reads == {}, "nothing kept once no thread asks"
