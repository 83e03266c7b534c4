"""Keeps each view up to date: one active runner per view and application, by advisory lock.

Every process may start runners; only the one holding a feed's advisory lock runs it, the
others wait as standby and take over when the holder's connection goes away. A watchdog
restarts a runner whose position stalls behind the head of its log (a lost NOTIFY), and a
view runner follows its view's live version, moving on when a rebuild switches versions.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import (
    EventSourcedProjection,
    EventSourcedProjectionRunner,
    Projection,
    ProjectionRunner,
)

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

    def open(self, env: dict[str, str]) -> Any:
        """A started eventsourcing runner (a context manager with run_forever)."""


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

    def open(self, env: dict[str, str]) -> Any:
        return ProjectionRunner(
            application_class=self.application_class,
            projection_class=self.projection_class,
            view_class=self.view_class,
            env=env,
        )


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

    def open(self, env: dict[str, str]) -> Any:
        return EventSourcedProjectionRunner(
            application_class=self.application_class,
            projection_class=self.process_class,
            env=env,
        )


class VersionedFeed(Protocol):
    """A view's feed from one application, at whichever version is live."""

    @property
    def name(self) -> str: ...

    @property
    def view_name(self) -> str: ...

    def at(self, version: int) -> Feed: ...


class SupervisedRunner(threading.Thread):
    def __init__(self, source: Feed | VersionedFeed, database_url: str, env: dict[str, str]):
        super().__init__(name=f"runner-{source.name}", daemon=True)
        self.source = source
        self.database_url = database_url
        self.env = env
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
        if hasattr(self.source, "at"):
            version = live_version(conn, self.source.view_name)
            return self.source.at(version), version
        return self.source, None  # type: ignore[return-value]

    def _run_while_holding_lock(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self.stopping.is_set():
                feed, version = self._feed(conn)
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(feed),)).fetchone()
                if row and row[0]:
                    break
                self.stopping.wait(1.0)
            else:
                return
            try:
                self.active.set()
                with feed.open(self.env) as runner:
                    self._watch(conn, runner, feed, version)
            finally:
                self.active.clear()
                conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(feed),))

    def _watch(self, conn: Any, runner: Any, feed: Feed, version: int | None) -> None:
        """Run until stopped, until the live version changes, or until the position stalls."""
        last_position, since = -1, time.monotonic()
        while not self.stopping.is_set():
            runner.run_forever(timeout=1.0)
            if version is not None and live_version(conn, self.source.view_name) != version:  # type: ignore[union-attr]
                log.info("%s: version %s is no longer live; moving on", feed.name, version)
                return
            now_position = position(conn, feed.tracking_name, feed.application_name)
            if now_position != last_position:
                last_position, since = now_position, time.monotonic()
            elif (
                time.monotonic() - since > STALL_SECONDS
                and head(conn, feed.application_name) > now_position
            ):
                log.warning("%s stalled at %s behind the head; restarting", feed.name, now_position)
                self.restarts += 1
                return
