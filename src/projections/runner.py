"""Keeps each view up to date: one active runner per view and application, by advisory lock.

Every process may start runners; only the one holding a feed's advisory lock runs it, the
others wait as standby and take over when the holder's connection goes away. A watchdog
restarts a runner whose position stalls behind the head of its log (a lost NOTIFY), and a
view runner follows its view's live version, moving on when a rebuild switches versions; the
watchdogs of a process read where they all stand in one statement, about once a second.

A runner that is behind applies the events already read in runs (at most `RUN_LIMIT`), each
run in one transaction with one tracking record: a view's rows, or a process's new events,
commit together with the position of the run's last event. A run that fails is applied again
one event at a time, which finds the failing event and keeps each one's handling (a view's
dead letters; a process stops at it). The views of a process following one log commit their
runs together, a round per transaction (`projections.rounds`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import psycopg
from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import (
    InfrastructureFactory,
    ListenNotifySubscription,
    ShutDown,
    Tracking,
)
from eventsourcing.postgres import PostgresFactory, PostgresTrackingRecorder
from eventsourcing.projection import EventSourcedProjection, Projection
from eventsourcing.utils import Environment
from psycopg import sql
from psycopg.conninfo import make_conninfo

from projections.base import TRANSIENT, ViewProjection
from projections.positions import Standing, Watched, live_version, standings_now
from projections.reader import LogReader
from projections.rounds import CommitRounds

log = logging.getLogger(__name__)

STALL_SECONDS = 15.0
WATCH_SECONDS = 1.0
"""How old an answer to the watchdogs may be: one read a second for all of a process's."""
RUN_LIMIT = 256
"""Events a runner applies in one transaction at most (those already read, never waited for)."""


class Feed(Protocol):
    """Something that follows one application's log from a tracked position."""

    @property
    def name(self) -> str: ...

    @property
    def application_name(self) -> str: ...

    @property
    def tracking_name(self) -> str: ...

    def open(self, shared: Shared) -> Any:
        """A runner to enter (a context manager with run_forever)."""


def lock_key(feed: Feed) -> int:
    return zlib.crc32(feed.name.encode())


@dataclass(frozen=True)
class ViewFeed:
    """One view (at one version) fed by one application's log."""

    application_class: type[Any]
    projection_class: type[Projection[Any]]
    view_class: type[PostgresTrackingRecorder]

    @property
    def name(self) -> str:
        return f"{self.projection_class.name}<-{self.application_class.name}"

    @property
    def application_name(self) -> str:
        return str(self.application_class.name)

    @property
    def tracking_name(self) -> str:
        return str(self.projection_class.name)

    def open(self, shared: Shared) -> Any:
        view = self.view_class(
            datastore=shared.datastore(), tracking_table_name=f"{self.tracking_name}_tracking"
        )
        application = shared.application(self.application_class)
        return SharedRunner(application, self.projection_class(view), view, shared)


@dataclass(frozen=True)
class ProcessFeed:
    """An event-sourced process (a saga starter) following another application's log:
    the events it records and its tracking are one transaction."""

    application_class: type[Any]
    process_class: type[EventSourcedProjection[Any]]

    @property
    def name(self) -> str:
        return f"{self.process_class.name}<-{self.application_class.name}"

    @property
    def application_name(self) -> str:
        return str(self.application_class.name)

    @property
    def tracking_name(self) -> str:
        return str(self.process_class.name)

    def open(self, shared: Shared) -> Any:
        process = shared.process(self.process_class)
        try:
            application = shared.application(self.application_class)
            return SharedRunner(application, process, process.recorder, shared, owned=process)
        except BaseException:
            process.close()
            raise


class Pacer:
    """Which channels to wake when, waking each at most once every `pace` seconds."""

    def __init__(self, pace: float) -> None:
        self.pace = pace
        self._woken: dict[str, float] = {}
        self._pending: dict[str, float] = {}

    def arrived(self, channel: str, now: float) -> bool:
        """A notification on `channel`: whether to wake it now (else it is gathered)."""
        if channel in self._pending:
            return False
        due = self._woken.get(channel, float("-inf")) + self.pace
        if due <= now:
            self._woken[channel] = now
            return True
        self._pending[channel] = due
        return False

    def due(self, now: float) -> list[str]:
        """The gathered channels whose wake-up is due by `now`, taken."""
        ready = [channel for channel, due in self._pending.items() if due <= now]
        for channel in ready:
            del self._pending[channel]
            self._woken[channel] = now
        return ready

    def until_next(self, now: float, longest: float) -> float:
        """How long to wait for notifications before a gathered wake-up falls due."""
        if not self._pending:
            return longest
        return max(0.0, min(longest, min(self._pending.values()) - now))


class Notifier:
    """One LISTEN connection per process for the logs of every runner it runs.

    Each subscription registers the event it waits on for its application's channel; a NOTIFY
    on that channel sets them all. Without a subscription (a standby process) it holds no
    connection. When its connection breaks, or is made again, every subscription is woken to
    read what it may have missed (or to meet the error itself).

    A channel is woken at most once every `pace` seconds: the first NOTIFY after a quiet spell
    wakes at once, those within `pace` of the last wake-up are gathered into one wake-up when
    it is over. Under a steady load each round then carries the events of `pace` seconds
    instead of one save's: a round's fixed cost (the log read, the transactions, the tracking
    rows, the saves of the processes) is paid fewer times, and nothing waits longer than
    `pace`."""

    def __init__(
        self,
        database_url: str,
        prepare: Callable[[Any], Any] | None = None,
        *,
        pace: float = 0.0,
    ) -> None:
        self.database_url = database_url
        self.prepare = prepare
        self.pace = pace
        self.wakes = 0
        """Wake-ups sent for notifications, in all (those gathered count once)."""
        self._watchers: dict[str, set[threading.Event]] = {}
        self._mutex = threading.Lock()
        self._wanted = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0

    def watch(self, channel: str, event: threading.Event) -> None:
        with self._mutex:
            self._watchers.setdefault(channel, set()).add(event)
            self._wanted.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
                self._thread.start()

    def unwatch(self, channel: str, event: threading.Event) -> None:
        with self._mutex:
            self._watchers.get(channel, set()).discard(event)
            if not self._watchers.get(channel):
                self._watchers.pop(channel, None)
            if not self._watchers:
                self._wanted.clear()

    def _wake(self, channel: str | None = None) -> None:
        with self._mutex:
            groups = [self._watchers.get(channel, set())] if channel else self._watchers.values()
            events = [event for group in groups for event in group]
        for event in events:
            event.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wanted.wait(0.5)
            if not self._wanted.is_set():
                continue
            try:
                self._listen()
            except psycopg.Error as error:
                log.warning("LISTEN connection lost (%s); listening again", type(error).__name__)
                self._wake()
                self._closed.wait(1.0)

    def _listen(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=3) as conn:
            self.connections += 1
            listening: set[str] = set()
            pacer = Pacer(self.pace)
            while not self._closed.is_set() and self._wanted.is_set():
                with self._mutex:
                    wanted = set(self._watchers)
                for channel in sorted(wanted - listening):
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    listening.add(channel)
                    self._wake(channel)
                for channel in sorted(listening - wanted):
                    conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
                    listening.discard(channel)
                for channel in pacer.due(time.monotonic()):
                    self._notified(channel)
                wait = pacer.until_next(time.monotonic(), 0.2)
                for notify in conn.notifies(timeout=wait, stop_after=1):
                    if pacer.arrived(notify.channel, time.monotonic()):
                        self._notified(notify.channel)
            for channel in pacer.due(float("inf")):  # nothing gathered is dropped
                self._notified(channel)

    def _notified(self, channel: str) -> None:
        self.wakes += 1
        self._wake(channel)

    def close(self) -> None:
        self._closed.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class ListenedSubscription(ListenNotifySubscription[Any]):
    """eventsourcing's LISTEN/NOTIFY subscription, woken and fed by its log's `LogReader` (one
    a log per process, woken by the process's `Notifier`) instead of holding a LISTEN
    connection and reading the log by itself."""

    def __init__(self, reader: LogReader, gt: int | None, topics: Any = ()) -> None:
        self._reader = reader  # before the pull thread eventsourcing starts in __init__
        super().__init__(recorder=reader.recorder, gt=gt, topics=topics)
        reader.subscribe(self, self._has_been_notified)

    def cursor(self) -> int:
        return self._last_notification_id or 0

    def stop(self) -> None:
        super().stop()
        self._reader.unsubscribe(self)

    def _pull(self) -> None:
        """Queue what the reader has after this subscription's cursor (its topics only), and
        move the cursor over everything scanned, so the subscriptions of a log keep together."""
        while not self._has_been_stopped:
            self._has_been_notified.clear()
            read = self._reader.read(self.cursor(), self._topics)
            if read.notifications:
                try:
                    self._notifications_queue.put(read.notifications)
                except ShutDown:
                    break
            self._last_notification_id = read.scanned_to
            if not read.more:
                break

    def has_read_ahead(self) -> bool:
        """Whether the next notification is already read (next() returns without waiting)."""
        return self._notifications_index < len(self._notifications) or (
            not self._notifications_queue.empty()
        )


class EventStream:
    """An application's domain events after a position, with their tracking."""

    def __init__(self, application: Any, reader: LogReader, gt: int | None, topics: Any) -> None:
        self.name = application.name
        self.mapper = application.mapper
        self.subscription = ListenedSubscription(reader, gt, topics)

    def __enter__(self) -> EventStream:
        self.subscription.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.subscription.__exit__(*exc)

    def stop(self) -> None:
        self.subscription.stop()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> tuple[Any, Tracking]:
        notification = next(self.subscription)
        return self.mapper.to_domain_event(notification), Tracking(self.name, notification.id)

    def next_run(self, limit: int) -> list[tuple[Any, Tracking]]:
        """The next event (waiting for it), and those after it already read, up to `limit`;
        empty once the stream has stopped."""
        run: list[tuple[Any, Tracking]] = []
        try:
            run.append(next(self))
            while len(run) < limit and self.subscription.has_read_ahead():
                run.append(next(self))
        except StopIteration:
            pass
        return run


class Shared:
    """What the runners of one process share: an instance of each application they follow
    (the process's own, when given), one pool for all views, and one LISTEN connection.

    `pools` gives eventsourcing's pool settings for "views" (the views' datastore) and
    "processes" (each saga starter); `prepare` is applied to every application and datastore
    made here before it is used (the process's outage handling)."""

    def __init__(
        self,
        env: dict[str, str],
        database_url: str | None = None,
        *,
        applications: Mapping[type[Any], Any] | None = None,
        pools: Mapping[str, Mapping[str, str]] | None = None,
        prepare: Callable[[Any], Any] | None = None,
        pace: float = 0.0,
    ) -> None:
        self.env = env
        self.pools = pools or {}
        self.prepare = prepare or (lambda made: made)
        self._given = dict(applications or {})
        self._applications: dict[type[Any], Any] = {}
        self._datastore: Any = None
        self._readers: dict[str, LogReader] = {}
        self._rounds: dict[str, CommitRounds] = {}
        self._mutex = threading.Lock()
        url = database_url or _url_of(env)
        self.notifier = Notifier(url, pace=pace)

    def reader(self, application: Any) -> LogReader:
        """The one reader of this application's log in this process."""
        with self._mutex:
            if application.name not in self._readers:
                self._readers[application.name] = LogReader(application.recorder, self.notifier)
            return self._readers[application.name]

    def rounds(self, application: Any) -> CommitRounds:
        """The commit rounds of the views following this application's log here."""
        with self._mutex:
            return self._rounds.setdefault(application.name, CommitRounds())

    def application(self, application_class: type[Any]) -> Any:
        with self._mutex:
            if application_class in self._given:
                return self._given[application_class]
            if application_class not in self._applications:
                env = {**self.env, **self.pools.get("applications", {})}
                made = application_class(env=env)
                self._applications[application_class] = self.prepare(made)
            return self._applications[application_class]

    def process(self, process_class: type[EventSourcedProjection[Any]]) -> Any:
        """A new instance of an event-sourced process (closed with its runner)."""
        env = {**self.env, **self.pools.get("processes", {})}
        return self.prepare(process_class(env=env))

    def datastore(self) -> Any:
        with self._mutex:
            if self._datastore is None:
                env = {**self.env, **self.pools.get("views", {})}
                factory = InfrastructureFactory.construct(env=Environment("views", env))
                assert isinstance(factory, PostgresFactory)
                self._datastore = self.prepare(factory).datastore
            return self._datastore

    def close(self) -> None:
        self.notifier.close()
        with self._mutex:
            for application in self._applications.values():
                application.close()
            self._applications.clear()
            if self._datastore is not None:
                self._datastore.close()
                self._datastore = None


def _url_of(env: Mapping[str, str]) -> str:
    """A libpq connection string from eventsourcing's settings."""
    return make_conninfo(
        dbname=env.get("POSTGRES_DBNAME", "postgres"),
        host=env.get("POSTGRES_HOST", "127.0.0.1"),
        port=env.get("POSTGRES_PORT", "5432"),
        user=env.get("POSTGRES_USER", "postgres"),
        password=env.get("POSTGRES_PASSWORD", ""),
    )


class SharedRunner:
    """Runs one projection (or event-sourced process) over its own subscription to a shared
    application instance, fed by the process's reader of that application's log."""

    def __init__(
        self,
        application: Any,
        projection: Any,
        tracking: Any,
        shared: Shared,
        owned: Any = None,
    ) -> None:
        self.projection = projection
        self.owned = owned
        self.reader = shared.reader(application)
        self.subscription = EventStream(
            application,
            self.reader,
            gt=tracking.max_tracking_id(application.name),
            topics=projection.topics,
        )
        self.rounds = shared.rounds(application) if isinstance(projection, ViewProjection) else None
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._process, daemon=True)

    def __enter__(self) -> SharedRunner:
        self.subscription.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.subscription.stop()
        self.thread.join(timeout=30)
        self.subscription.__exit__(*exc)
        if self.owned is not None:
            self.owned.close()

    def _process(self) -> None:
        if self.rounds is not None:
            self.rounds.join(self)
        try:
            while run := self.subscription.next_run(RUN_LIMIT):
                if self.rounds is not None:
                    self.rounds.apply(self, self.projection, run)
                else:
                    apply_run(self.projection, run)
        except BaseException as error:  # noqa: BLE001 - reported by run_forever
            self.error = error
        finally:
            if self.rounds is not None:
                self.rounds.leave(self)
            self.finished.set()

    def expecting(self) -> bool:
        """Whether a run is on its way: read ahead, or read by the log's reader past this
        runner's cursor (a round waits for it)."""
        subscription = self.subscription.subscription
        return subscription.has_read_ahead() or subscription.cursor() < self.reader.highest

    def run_forever(self, timeout: float) -> None:
        """Wait up to `timeout`; raise what stopped the processing, if it stopped."""
        if self.finished.wait(timeout):
            raise self.error or RuntimeError("the subscription ended")


def apply_run(projection: Any, run: list[tuple[Any, Tracking]]) -> None:
    """Apply a run of events in one transaction: by the projection's `process_run` (views,
    the dispatcher), as one processing event for an event-sourced process, one by one for
    anything else."""
    if hasattr(projection, "process_run"):
        projection.process_run(run)
    elif isinstance(projection, EventSourcedProjection) and len(run) > 1:
        process_run(projection, run)
    else:
        for event, tracking in run:
            projection.process_event(event, tracking)


def process_run(process: EventSourcedProjection[Any], run: list[tuple[Any, Tracking]]) -> None:
    """EventSourcedProjection.process_event for a run: the policy's new events for every event
    of the run, recorded with the tracking of the last in one transaction. If that fails
    (not for a lost connection), each event is processed on its own, as it would have been."""
    try:
        processing_event: ProcessingEvent[Any] = ProcessingEvent(tracking=run[-1][1])
        for event, _ in run:
            process.policy(event, processing_event)
        recordings = process._record(processing_event)
    except TRANSIENT:
        raise
    except Exception:
        log.info("%s: a run of %d failed; one event at a time", process.name, len(run))
        for event, tracking in run:
            process.process_event(event, tracking)
        return
    process._take_snapshots(processing_event)
    process.notify(processing_event.events)
    process._notify(recordings)


class VersionedFeed(Protocol):
    """A view's feed from one application, at whichever version is live."""

    @property
    def name(self) -> str: ...

    @property
    def view_name(self) -> str: ...

    def at(self, version: int) -> Feed: ...


class LockSession:
    """One connection per process holds the advisory locks of all its runners and answers
    their watchdogs' queries. If it breaks, every lock it held is gone: `epoch` changes and
    the runners that held one stop, then compete for the locks again."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.epoch = 0
        self.reads = 0
        self._conn: Any = None
        self._mutex = threading.Lock()
        self._watched: dict[Watched, int] = {}
        self._seen: tuple[float, int, dict[Watched, Standing]] = (0.0, 0, {})

    def run(self, query: Any) -> tuple[Any, int]:
        with self._mutex:
            return self._run(query)

    def _run(self, query: Any) -> tuple[Any, int]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=3)
            self.epoch += 1
        try:
            return query(self._conn), self.epoch
        except psycopg.OperationalError:
            self._conn.close()
            self._conn = None
            raise

    def try_lock(self, key: int) -> int | None:
        """The epoch the lock is held in, or None if another session holds it."""
        got, epoch = self.run(
            lambda conn: conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        )
        return epoch if got else None

    @contextlib.contextmanager
    def watching(self, watched: Watched) -> Iterator[None]:
        """While a runner runs, its feed is read with every other one of the process."""
        with self._mutex:
            self._watched[watched] = self._watched.get(watched, 0) + 1
        try:
            yield
        finally:
            with self._mutex:
                self._watched[watched] -= 1
                if not self._watched[watched]:
                    del self._watched[watched]

    def standing(self, watched: Watched) -> tuple[Standing, int]:
        """Where a watched feed stands, and the epoch: every watchdog of the process is
        answered from one read of all the feeds watched, made again once it is
        `WATCH_SECONDS` old (or of another epoch, or without the feed asked for)."""
        with self._mutex:
            at, epoch, found = self._seen
            fresh = time.monotonic() - at < WATCH_SECONDS and epoch == self.epoch
            if not fresh or watched not in found:
                at = time.monotonic()
                found, epoch = self._run(
                    lambda conn: standings_now(conn, [*self._watched, watched])
                )
                self._seen = (at, epoch, found)
                self.reads += 1
            return found[watched], epoch

    def unlock(self, key: int, epoch: int) -> None:
        with contextlib.suppress(psycopg.Error):
            if epoch == self.epoch:
                self.run(lambda conn: conn.execute("SELECT pg_advisory_unlock(%s)", (key,)))

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SupervisedRunner(threading.Thread):
    def __init__(
        self,
        source: Feed | VersionedFeed,
        database_url: str,
        env: dict[str, str],
        session: LockSession | None = None,
        shared: Shared | None = None,
    ):
        super().__init__(name=f"runner-{source.name}", daemon=True)
        self.source = source
        self.session = session or LockSession(database_url)
        self.shared = shared or Shared(env, database_url)
        self.stopping = threading.Event()
        self.active = threading.Event()
        self.restarts = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._run_while_holding_lock()
            except Exception:
                log.exception("runner %s failed; restarting", self.source.name)
                self.stopping.wait(2.0)

    def _feed(self, conn: Any) -> tuple[Feed, int | None]:
        version = self._live_version(conn)
        if version is None:
            return cast(Feed, self.source), None
        return cast(VersionedFeed, self.source).at(version), version

    def _live_version(self, conn: Any) -> int | None:
        """The version readers see, for a view's feed; None for a feed of one version."""
        if not hasattr(self.source, "at"):
            return None
        return live_version(conn, cast(VersionedFeed, self.source).view_name)

    def _run_while_holding_lock(self) -> None:
        while not self.stopping.is_set():
            (feed, version), _ = self.session.run(self._feed)
            epoch = self.session.try_lock(lock_key(feed))
            if epoch is not None:
                break
            self.stopping.wait(1.0)
        else:
            return
        try:
            self.active.set()
            with feed.open(self.shared) as runner:
                self._watch(runner, feed, version, epoch)
        finally:
            self.active.clear()
            self.session.unlock(lock_key(feed), epoch)

    def _watch(self, runner: Any, feed: Feed, version: int | None, epoch: int) -> None:
        """Run until stopped, the lock is lost, the live version changes, or it stalls."""
        view_name = cast(VersionedFeed, self.source).view_name if version is not None else None
        watched = Watched(view_name, feed.tracking_name, feed.application_name)
        last_position, since = -1, time.monotonic()
        with self.session.watching(watched):
            while not self.stopping.is_set():
                runner.run_forever(timeout=1.0)
                (live, at, top), now_epoch = self.session.standing(watched)
                if now_epoch != epoch:
                    log.warning("%s lost its lock with its connection; competing again", feed.name)
                    return
                if live != version:
                    log.info("%s: version %s is no longer live; moving on", feed.name, version)
                    return
                if at != last_position:
                    last_position, since = at, time.monotonic()
                elif top > at and time.monotonic() - since > STALL_SECONDS:
                    log.warning("%s stalled at %s behind the head; restarting", feed.name, at)
                    self.restarts += 1
                    return
