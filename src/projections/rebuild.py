"""Blue/green rebuild: fill the next version of a view beside the live one from the start of
the logs, switch readers to it in one transaction once caught up, then drop the old one.
The API keeps answering from the live version all along."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any

import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from projections.base import View, versioned
from projections.logs import decoded, read_events
from projections.positions import events_after, head, live_version
from projections.runner import lock_key

BATCH = 1000
Progress = Callable[[int, int], None]


class RebuildFailed(RuntimeError):
    """An event could not be applied; the live version is untouched."""


@dataclass
class Rebuilt:
    name: str
    old_version: int
    new_version: int
    events: int
    seconds: float


def rebuild(
    spec: Any, database_url: str, env: dict[str, str], progress: Progress | None = None,
    batch: int = BATCH,
) -> Rebuilt:
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn, exclusive(conn, spec.name):
        old = live_version(conn, spec.name)
        new = next_version(conn, spec)
        create_version(conn, spec.view_class, old, new)
        feeds = [spec.feed(application, new) for application in spec.applications]
        for feed in feeds:
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(feed),))
        view = open_view(spec.view_class.at_version(new), env)
        applications = [application(env=env) for application in spec.applications]
        try:
            done = catch_up(database_url, view, applications, progress, batch)
            while not caught_up(conn, view, applications):
                done = catch_up(database_url, view, applications, progress, batch, done)
            if progress:
                progress(done, done)
            switch(conn, spec.view_class, new)
        except BaseException:
            drop_version(conn, spec.view_class, new)
            raise
        finally:
            for feed in feeds:
                conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(feed),))
            view.datastore.close()
            for application in applications:
                application.close()
        retire(conn, spec, old)
    return Rebuilt(spec.name, old, new, done, time.monotonic() - started)


def catch_up(
    database_url: str,
    view: View,
    applications: list[Any],
    progress: Progress | None,
    batch: int,
    done: int = 0,
) -> int:
    """Apply every event past the view's positions, `batch` events per transaction; the
    events applied so far (`done` before this round) are reported out of the events there are
    to apply, counted, not guessed from positions: a log's positions have gaps."""
    starts = {a.name: view.max_tracking_id(a.name) or 0 for a in applications}
    with psycopg.connect(database_url, autocommit=True) as conn:
        total = done + sum(events_after(conn, name, start) for name, start in starts.items())
    for application in applications:
        with psycopg.connect(database_url, autocommit=True) as reader:
            events = decoded(
                application.mapper,
                application.name,
                read_events(reader, application.name, starts[application.name]),
            )
            while chunk := list(islice(events, batch)):
                try:
                    view.record(chunk)
                except Exception as error:
                    raise RebuildFailed(first_failure(view, chunk, error)) from error
                done += len(chunk)
                if progress:
                    progress(done, max(total, done))
    return done


def first_failure(view: View, chunk: list[Any], error: Exception) -> str:
    """Name the event that fails, applying the chunk one event at a time."""
    for event, tracking in chunk:
        try:
            with view.datastore.transaction(commit=False) as curs:
                view.apply(curs, event, tracking)
        except Exception as single:
            return (
                f"{tracking.application_name} event {tracking.notification_id} "
                f"({type(event).__qualname__}) failed: {single!r}"
            )
    return f"a batch failed: {error!r}"


def caught_up(conn: Any, view: View, applications: list[Any]) -> bool:
    return all(
        (view.max_tracking_id(a.name) or 0) >= head(conn, a.name) for a in applications
    )


def open_view(view_class: type[View], env: dict[str, str]) -> View:
    name = view_class.tracking_name(view_class.version)
    settings = {**env, "CREATE_TABLE": "y", "POSTGRES_POOL_SIZE": "1"}
    factory = InfrastructureFactory.construct(env=Environment(name, settings))
    view = factory.tracking_recorder(view_class)
    assert isinstance(view, View)
    return view


def next_version(conn: Any, spec: Any) -> int:
    base = spec.view_class.tables[0]
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename ~ %s",
        (f"^{base}_v[0-9]+$",),
    ).fetchall()
    versions = [int(name.rsplit("_v", 1)[1]) for (name,) in rows]
    return max([live_version(conn, spec.name), *versions]) + 1


def create_version(conn: Any, view_class: type[View], like: int, version: int) -> None:
    drop_version(conn, view_class, version)
    for base in view_class.tables:
        conn.execute(
            SQL("CREATE TABLE {new} (LIKE {old} INCLUDING ALL)").format(
                new=Identifier(versioned(base, version)), old=Identifier(versioned(base, like))
            )
        )


def drop_version(conn: Any, view_class: type[View], version: int) -> None:
    names = [versioned(base, version) for base in view_class.tables]
    for name in [*names, tracking(view_class, version)]:
        conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(name)))


def tracking(view_class: type[View], version: int) -> str:
    return f"{view_class.tracking_name(version)}_tracking"


def switch(conn: Any, view_class: type[View], version: int) -> None:
    """Readers move to `version` in one transaction."""
    with conn.transaction():
        conn.execute(
            "UPDATE projection_versions SET live_version = %s WHERE name = %s",
            (version, view_class.view_name),
        )
        for base in view_class.tables:
            conn.execute(
                SQL("CREATE OR REPLACE VIEW {name} AS SELECT * FROM {table}").format(
                    name=Identifier(base), table=Identifier(versioned(base, version))
                )
            )


def retire(conn: Any, spec: Any, version: int, patience: float = 15.0) -> None:
    """Drop the old version once its runners have moved on (they notice within a second)."""
    keys = [lock_key(spec.feed(application, version)) for application in spec.applications]
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline and any(lock_held(conn, key) for key in keys):
        time.sleep(0.2)
    drop_version(conn, spec.view_class, version)


def lock_held(conn: Any, key: int) -> bool:
    """Whether a session of this database holds the advisory lock (pg_locks spans them all)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) AND classid = 0 "
        "AND objid = %s::bigint::oid AND objsubid = 1 AND granted",
        (key,),
    ).fetchone()
    return bool(row and row[0])


class RebuildRunning(RebuildFailed):
    """Another rebuild of the same view is under way."""


@contextmanager
def exclusive(conn: Any, name: str) -> Iterator[None]:
    """One rebuild of a view at a time, across processes."""
    key = zlib.crc32(f"rebuild:{name}".encode())
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
        raise RebuildRunning(f"a rebuild of {name} is already running")
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
