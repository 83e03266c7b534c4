"""Keeps each view up to date: one active runner per view and application, by advisory lock.

Every API process may start runners; only the one that holds a view's advisory lock runs it,
the others wait as standby and take over when the holder's connection goes away.
"""

from __future__ import annotations

import logging
import threading
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

log = logging.getLogger(__name__)


class Feed(Protocol):
    """Something that follows one application's log from a tracked position."""

    @property
    def name(self) -> str: ...

    def open(self, env: dict[str, str]) -> Any:
        """A started eventsourcing runner (a context manager with run_forever)."""


def lock_key(feed: Feed) -> int:
    return zlib.crc32(feed.name.encode())


@dataclass(frozen=True)
class ViewFeed:
    """One view fed by one application's log."""

    application_class: type[Any]
    projection_class: type[Projection[Any]]
    view_class: type[PostgresTrackingRecorder]

    @property
    def name(self) -> str:
        return f"{self.projection_class.name}<-{self.application_class.name}"

    @property
    def lock_key(self) -> int:
        return lock_key(self)

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
    def lock_key(self) -> int:
        return lock_key(self)

    def open(self, env: dict[str, str]) -> Any:
        return EventSourcedProjectionRunner(
            application_class=self.application_class,
            projection_class=self.process_class,
            env=env,
        )


class SupervisedRunner(threading.Thread):
    def __init__(self, feed: Feed, database_url: str, env: dict[str, str]) -> None:
        super().__init__(name=f"runner-{feed.name}", daemon=True)
        self.feed = feed
        self.database_url = database_url
        self.env = env
        self.stopping = threading.Event()
        self.active = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._run_while_holding_lock()
            except Exception:
                log.exception("projection %s failed; restarting", self.feed.name)
                self.stopping.wait(2.0)

    def _run_while_holding_lock(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as lock_conn:
            while not self.stopping.is_set():
                row = lock_conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (lock_key(self.feed),)
                ).fetchone()
                if row and row[0]:
                    break
                self.stopping.wait(1.0)
            else:
                return
            self.active.set()
            try:
                with self.feed.open(self.env) as runner:
                    while not self.stopping.is_set():
                        runner.run_forever(timeout=1.0)
                        lock_conn.execute("SELECT 1")
            finally:
                self.active.clear()
