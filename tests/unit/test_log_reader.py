"""The shared reader of a log (projections.reader.LogReader) over a recorder in memory: when a
batch it read may be handed out again, and when it must read again."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from projections import reader as reader_module
from projections.reader import LogReader


@dataclass(frozen=True)
class Note:
    id: int
    topic: str


class Log:
    """A recorder's notification log: `select_notifications` as eventsourcing's, counted."""

    channel_name = "log"

    def __init__(self) -> None:
        self.notes: list[Note] = []
        self.selects: list[int] = []

    def append(self, *topics: str) -> None:
        for topic in topics:
            self.notes.append(Note(len(self.notes) + 1, topic))

    def select_notifications(self, start: int, limit: int, inclusive_of_start: bool) -> list[Note]:
        assert not inclusive_of_start
        self.selects.append(start)
        return [n for n in self.notes if n.id > start][:limit]


class Notifier:
    def __init__(self) -> None:
        self.watching: dict[str, threading.Event] = {}

    def watch(self, channel: str, event: threading.Event) -> None:
        self.watching[channel] = event

    def unwatch(self, channel: str, event: threading.Event) -> None:
        assert self.watching.pop(channel) is event

    def notify(self, channel: str = "log") -> None:
        self.watching[channel].set()


class Sub:
    def __init__(self, at: int) -> None:
        self.at = at
        self.wake = threading.Event()

    def cursor(self) -> int:
        return self.at

    def pull(self, reader: LogReader, topics: tuple[str, ...] = ()) -> list[int]:
        got: list[int] = []
        while True:
            read = reader.read(self.at, topics)
            got += [n.id for n in read.notifications]
            self.at = read.scanned_to
            if not read.more:
                return got


def make(*subs: Sub) -> tuple[Log, Notifier, LogReader]:
    log, notifier = Log(), Notifier()
    reader = LogReader(log, notifier)
    for sub in subs:
        reader.subscribe(sub, sub.wake)
    return log, notifier, reader


def test_subscribers_woken_by_one_notification_share_one_read() -> None:
    a, b = Sub(0), Sub(0)
    log, notifier, reader = make(a, b)
    log.append("x", "y", "x")
    notifier.notify()
    assert a.wake.is_set() and b.wake.is_set()
    assert a.pull(reader) == [1, 2, 3]
    assert b.pull(reader, topics=("x",)) == [1, 3]
    assert b.at == 3  # moved over what its topics skip, to stay with the others
    assert log.selects == [0]


def test_a_batch_is_not_trusted_after_a_newer_notification() -> None:
    a, b = Sub(0), Sub(0)
    log, notifier, reader = make(a, b)
    log.append("x")
    notifier.notify()
    assert a.pull(reader) == [1]
    log.append("x")  # recorded and notified before b asks: b must not be handed the old batch
    notifier.notify()
    assert b.pull(reader) == [1, 2]
    assert a.pull(reader) == [2]
    assert len(log.selects) == 2


def test_a_new_subscriber_reads_afresh_what_came_while_no_one_listened() -> None:
    a = Sub(0)
    log, notifier, reader = make(a)
    assert a.pull(reader) == []
    reader.unsubscribe(a)
    assert "log" not in notifier.watching
    log.append("x")  # its notification is lost: nobody watches
    b = Sub(0)
    reader.subscribe(b, b.wake)
    assert b.wake.is_set()
    assert b.pull(reader) == [1]


def test_a_subscriber_near_behind_is_read_for_with_the_one_asking() -> None:
    behind, ahead = Sub(2), Sub(4)
    log, notifier, reader = make(behind, ahead)
    log.append("x", "x", "x", "x", "x")
    notifier.notify()
    assert ahead.pull(reader) == [5]
    assert behind.pull(reader) == [3, 4, 5]
    assert log.selects == [2]


def test_one_far_behind_pages_by_itself_up_to_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reader_module, "SELECT_LIMIT", 3)
    monkeypatch.setattr(reader_module, "NEAR", 3)
    monkeypatch.setattr(reader_module, "WINDOW", 6)
    far, head = Sub(0), Sub(10)
    log, notifier, reader = make(far, head)
    log.append(*["x"] * 12)
    notifier.notify()
    assert head.pull(reader) == [11, 12]
    assert log.selects == [10]  # not from 0: the one far behind does not hold it back
    assert far.pull(reader) == list(range(1, 13))
    # it pages by itself while behind the window, then is served from it
    assert log.selects == [10, 0, 3, 6, 9]


def test_a_slow_subscriber_costs_no_second_read_of_what_the_window_holds() -> None:
    slow, fast = Sub(0), Sub(0)
    log, notifier, reader = make(slow, fast)
    for n in range(1, 6):
        log.append("x")
        notifier.notify()
        assert fast.pull(reader) == [n]  # the slow one's cursor stays at 0 meanwhile
    assert slow.pull(reader) == [1, 2, 3, 4, 5]
    # each row was fetched once: every read began past the window's newest row
    assert log.selects == [0, 1, 2, 3, 4]


def test_the_window_keeps_the_newest_rows_and_one_behind_it_reads_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reader_module, "WINDOW", 4)
    slow, fast = Sub(0), Sub(0)
    log, notifier, reader = make(slow, fast)
    for n in range(1, 8):
        log.append("x")
        notifier.notify()
        assert fast.pull(reader) == [n]
    assert log.selects == [0, 1, 2, 3, 4, 5, 6]
    assert slow.pull(reader) == [1, 2, 3, 4, 5, 6, 7]
    assert log.selects == [0, 1, 2, 3, 4, 5, 6, 0]  # rows 1-3 left the window: read again
