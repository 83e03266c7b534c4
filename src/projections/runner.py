"""Keeps each view up to date: one active runner per view and application, by advisory lock.

Every process may start runners; only the one holding a feed's advisory lock runs it, the
others wait as standby and take over when the holder's connection goes away. A watchdog
restarts a runner whose position stalls behind the head of its log (a lost NOTIFY), and a
view runner follows its view's live version, moving on when a rebuild switches versions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Protocol, cast

import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresFactory, PostgresTrackingRecorder
from eventsourcing.projection import (
    ApplicationSubscription,
    EventSourcedProjection,
    EventSourcedProjectionRunner,
    Projection,
)
from eventsourcing.utils import Environment

from projections.positions import head, live_version, position

log = logging.getLogger(__name__)

STALL_SECONDS = 15.0


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
        return SharedRunner(shared.application(self.application_class), self.projection_class(view))


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
        return EventSourcedProjectionRunner(
            application_class=self.application_class,
            projection_class=self.process_class,
            env=shared.env,
        )


class Shared:
    """What the runners of one process share: an instance of each application they follow
    and one connection pool for all views. Each subscription still holds its own LISTEN
    connection, so the applications' pools grow with the runners (`subscribers`)."""

    def __init__(self, env: dict[str, str], subscribers: int = 8) -> None:
        self.env = env
        self.subscribers = subscribers
        self._applications: dict[type[Any], Any] = {}
        self._datastore: Any = None
        self._mutex = threading.Lock()

    def application(self, application_class: type[Any]) -> Any:
        with self._mutex:
            if application_class not in self._applications:
                env = {**self.env, "POSTGRES_POOL_SIZE": "1"}
                env["POSTGRES_MAX_OVERFLOW"] = str(self.subscribers + 1)
                self._applications[application_class] = application_class(env=env)
            return self._applications[application_class]

    def datastore(self) -> Any:
        with self._mutex:
            if self._datastore is None:
                env = {**self.env, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "4"}
                factory = InfrastructureFactory.construct(env=Environment("views", env))
                assert isinstance(factory, PostgresFactory)
                self._datastore = factory.datastore
            return self._datastore

    def close(self) -> None:
        with self._mutex:
            for application in self._applications.values():
                application.close()
            self._applications.clear()
            if self._datastore is not None:
                self._datastore.close()
                self._datastore = None


class SharedRunner:
    """Runs one projection over its own subscription to a shared application instance."""

    def __init__(self, application: Any, projection: Any) -> None:
        self.projection = projection
        self.subscription = ApplicationSubscription(
            application,
            gt=projection.view.max_tracking_id(application.name),
            topics=projection.topics,
        )
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

    def _process(self) -> None:
        try:
            for event, tracking in self.subscription:
                self.projection.process_event(event, tracking)
        except BaseException as error:  # noqa: BLE001 - reported by run_forever
            self.error = error
        finally:
            self.finished.set()

    def run_forever(self, timeout: float) -> None:
        """Wait up to `timeout`; raise what stopped the processing, if it stopped."""
        if self.finished.wait(timeout):
            raise self.error or RuntimeError("the subscription ended")


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
        self._conn: Any = None
        self._mutex = threading.Lock()

    def run(self, query: Any) -> tuple[Any, int]:
        with self._mutex:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.database_url, autocommit=True)
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
        self.shared = shared or Shared(env)
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
        last_position, since = -1, time.monotonic()
        while not self.stopping.is_set():
            runner.run_forever(timeout=1.0)
            (live, at, top), now_epoch = self.session.run(
                lambda conn: (
                    self._live_version(conn) if version is not None else None,
                    position(conn, feed.tracking_name, feed.application_name),
                    head(conn, feed.application_name),
                )
            )
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
