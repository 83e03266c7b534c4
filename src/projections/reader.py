"""One reader per application log per process: the runners following a log share its reads.

Every runner of a process used to read its log after every notification of it, each with its
own SELECT. A `LogReader` is woken by the process's notifier instead of the runners: it counts
the notification (a new generation) and then wakes its subscribers. The reader keeps the last
notifications it read (a window of `WINDOW` rows, contiguous up to the newest read): a
subscriber asking after a wake-up is served from the window, and the log is read only past the
window's newest row, once per generation. So a slow subscriber (its cursor a few hundred rows
behind) costs no re-reading: before the window, each read after a notification began at the
slowest nearby cursor, and the projections process spent 29 % of its time fetching the same
rows again.

Rows become visible in the order of their ids (the recorder inserts under the table's
EXCLUSIVE lock, held until the commit), so what lies past the window's newest row is exactly
what a read now would add. Each subscriber still keeps its own cursor, its own queue and its
own topics (filtered here, in Python), applies in its own transaction only what is past its
own tracking position, and reads by itself when it is behind the window (a laggard never
holds the others back, nor they it). The window is read again past its end whenever a
notification arrived since, so nothing notified is missed."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

SELECT_LIMIT = 500
"""Notifications read at most at once (eventsourcing's own subscription reads as many)."""

WINDOW = 4 * SELECT_LIMIT
"""Notifications the reader keeps for its subscribers, the newest it read."""

NEAR = SELECT_LIMIT
"""How far behind a requester another subscriber's cursor may be for a new window to begin
there, so that it is served from the window too."""


class Cursor(Protocol):
    """A subscriber's position in the log: the last notification id it has been handed."""

    def cursor(self) -> int: ...


class Watching(Protocol):
    def watch(self, channel: str, event: threading.Event) -> None: ...

    def unwatch(self, channel: str, event: threading.Event) -> None: ...


@dataclass
class Window:
    """Every notification after `after` up to `last`, as read (ids ascending); `complete`
    when the read that reached `last` found the log's end, in `generation`."""

    after: int
    notifications: list[Any]
    generation: int
    complete: bool

    @property
    def last(self) -> int:
        return int(self.notifications[-1].id) if self.notifications else self.after

    def extend(self, read: Sequence[Any], generation: int, complete: bool) -> None:
        self.notifications.extend(read)
        self.generation = generation
        self.complete = complete
        if len(self.notifications) > WINDOW:
            dropped = len(self.notifications) - WINDOW
            self.after = int(self.notifications[dropped - 1].id)
            del self.notifications[:dropped]

    def after_id(self, after: int) -> Sequence[Any]:
        """The window's notifications past `after` (which it covers), at most SELECT_LIMIT."""
        first = bisect.bisect_right(self.notifications, after, key=lambda n: int(n.id))
        return self.notifications[first : first + SELECT_LIMIT]


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
        self.rows = 0
        """Notifications fetched from the database, in all."""
        self.highest = 0
        """The last notification id any read returned."""
        self._subscribers: dict[Cursor, threading.Event] = {}
        self._generation = 0
        self._window: Window | None = None
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
        return them: from the window, read on past its end if a notification arrived since
        it was, or by reading afresh for a subscriber behind it."""
        with self._reading:
            with self._mutex:
                generation = self._generation
                cursors = [subscriber.cursor() for subscriber in self._subscribers]
            window = self._window
            if window is not None and after < window.after:
                # behind the window: it reads by itself
                scanned = self._select(after)
                more = len(scanned) >= SELECT_LIMIT
            elif window is None or after > window.last:
                # no window yet, or one fallen behind this subscriber: a new window, from the
                # lowest cursor near it so that those subscribers are served from it too
                start = min([after, *(c for c in cursors if after - NEAR <= c < after)])
                read = self._select(start)
                window = self._window = Window(
                    start, list(read), generation, complete=len(read) < SELECT_LIMIT
                )
                scanned = window.after_id(after)
                more = len(scanned) >= SELECT_LIMIT or not window.complete
            else:
                partial = not window.complete and after >= window.last
                if generation != window.generation or partial:
                    fresh = self._select(window.last)
                    window.extend(fresh, generation, complete=len(fresh) < SELECT_LIMIT)
                scanned = window.after_id(after)
                more = len(scanned) >= SELECT_LIMIT or not window.complete
        wanted = set(topics)
        mine = [n for n in scanned if not wanted or n.topic in wanted]
        scanned_to = int(scanned[-1].id) if scanned else after
        return Read(mine, max(after, scanned_to), more=more)

    def _select(self, after: int) -> Sequence[Any]:
        notifications = self.recorder.select_notifications(
            start=after, limit=SELECT_LIMIT, inclusive_of_start=False
        )
        self.reads += 1
        self.rows += len(notifications)
        if notifications:
            self.highest = max(self.highest, int(notifications[-1].id))
        return notifications
