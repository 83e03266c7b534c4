"""One reader per application log per process: the runners following a log share its reads.

Every runner of a process used to read its log after every notification of it, each with its
own SELECT. A `LogReader` is woken by the process's notifier instead of the runners: it counts
the notification (a new generation) and then wakes its subscribers. The first subscriber to
ask after a wake-up reads (from the lowest cursor of the subscribers near it, so they are
covered too) and the others are handed the same batch while no newer notification arrived.

Each subscriber still keeps its own cursor, its own queue and its own topics (filtered here,
in Python), applies in its own transaction only what is past its own tracking position, and
reads by itself when it is far behind the others (a laggard never holds the others back, nor
they it). A batch is trusted only for the generation it was read in: a commit notified during
or after the read makes the next request read again, so nothing notified is missed."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

SELECT_LIMIT = 500
"""Notifications read at most at once (eventsourcing's own subscription reads as many)."""

NEAR = SELECT_LIMIT
"""How far behind a requester another subscriber's cursor may be to be read for with it."""


class Cursor(Protocol):
    """A subscriber's position in the log: the last notification id it has been handed."""

    def cursor(self) -> int: ...


class Watching(Protocol):
    def watch(self, channel: str, event: threading.Event) -> None: ...

    def unwatch(self, channel: str, event: threading.Event) -> None: ...


@dataclass(frozen=True)
class Batch:
    """What one read returned: the notifications after `after`, at most `SELECT_LIMIT`."""

    generation: int
    after: int
    notifications: Sequence[Any]

    @property
    def full(self) -> bool:
        return len(self.notifications) >= SELECT_LIMIT

    @property
    def last(self) -> int:
        return int(self.notifications[-1].id) if self.notifications else self.after

    def covers(self, after: int, generation: int) -> bool:
        """Whether this batch answers a read after `after` as a read now would."""
        if generation != self.generation or after < self.after:
            return False
        return after < self.last or not self.full


@dataclass(frozen=True)
class Read:
    """A subscriber's share of a read: its notifications after its cursor, the id it has now
    scanned to (whatever the topics), and whether more may follow at once."""

    notifications: Sequence[Any]
    scanned_to: int
    more: bool


class _Fanout(threading.Event):
    """The event the notifier sets for the log: a new generation, then every subscriber."""

    def __init__(self, reader: LogReader) -> None:
        super().__init__()
        self._reader = reader

    def set(self) -> None:
        self._reader._notified()


class LogReader:
    """Reads one application's log for every runner of the process that follows it."""

    def __init__(self, recorder: Any, notifier: Watching) -> None:
        self.recorder = recorder
        self.channel = str(recorder.channel_name)
        self.notifier = notifier
        self.reads = 0
        self.highest = 0
        """The last notification id any read returned."""
        self._subscribers: dict[Cursor, threading.Event] = {}
        self._generation = 0
        self._batch: Batch | None = None
        self._mutex = threading.Lock()  # the subscribers and the generation
        self._reading = threading.Lock()  # one read at a time; the others wait and share it
        self._fanout = _Fanout(self)

    def subscribe(self, subscriber: Cursor, wake: threading.Event) -> None:
        with self._mutex:
            first = not self._subscribers
            self._subscribers[subscriber] = wake
        if first:
            self.notifier.watch(self.channel, self._fanout)
        # What was recorded before the subscription began: read afresh, since a notification
        # may have been lost while the log had no subscriber here (or before the watch).
        self._notified()

    def unsubscribe(self, subscriber: Cursor) -> None:
        with self._mutex:
            self._subscribers.pop(subscriber, None)
            last = not self._subscribers
        if last:
            self.notifier.unwatch(self.channel, self._fanout)

    def _notified(self) -> None:
        with self._mutex:
            self._generation += 1
            wakes = list(self._subscribers.values())
        for wake in wakes:
            wake.set()

    def read(self, after: int, topics: Sequence[str] = ()) -> Read:
        """The notifications after `after` (of `topics`, all if none), as a read now would
        return them: from the shared batch when it covers them, else by reading again."""
        with self._reading:
            with self._mutex:
                generation = self._generation
                cursors = [subscriber.cursor() for subscriber in self._subscribers]
            batch = self._batch
            if batch is None or not batch.covers(after, generation):
                start = min([after, *(c for c in cursors if after - NEAR <= c < after)])
                notifications = self.recorder.select_notifications(
                    start=start, limit=SELECT_LIMIT, inclusive_of_start=False
                )
                self.reads += 1
                batch = self._batch = Batch(generation, start, notifications)
                self.highest = max(self.highest, batch.last)
        wanted = set(topics)
        mine = [
            n for n in batch.notifications if n.id > after and (not wanted or n.topic in wanted)
        ]
        return Read(mine, max(after, batch.last), more=batch.full)
