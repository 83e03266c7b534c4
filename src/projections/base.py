"""Views: read models whose rows and tracking are written in one transaction, versioned so
that a rebuild can fill the next version beside the live one.

A view's tables are `<table>_v<version>`; readers go through a SQL view named `<table>` that
points at the live version, so switching versions is one transaction. A continuous run writes
the events it has read (one, or a run when behind) per transaction and puts an event that
fails into the dead letters (and moves on); a rebuild writes many events per transaction and
stops at the first error.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg
from eventsourcing import persistence
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection
from psycopg import Cursor
from psycopg.sql import SQL, Composed, Identifier


class View(PostgresTrackingRecorder):
    """Subclasses name the view and its tables and say how one event changes the rows."""

    view_name: ClassVar[str] = ""
    tables: ClassVar[tuple[str, ...]] = ()
    keys: ClassVar[dict[str, str]] = {}
    """Per table, the columns that identify a row, for verification reports."""
    version: ClassVar[int] = 1

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        """Write what one event changes (nothing, for events the view ignores)."""
        raise NotImplementedError

    def apply_all(self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]) -> None:
        """Write what a run of events changes; views whose rows many events touch write
        the sum at once."""
        for event, tracking in events:
            self.apply(curs, event, tracking)

    def apply_leading(
        self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]
    ) -> list[Deferred]:
        """What `apply_all` writes but the statements returned: they may ride in one
        statement with a round's tracking rows (`track_all`)."""
        self.apply_all(curs, events)
        return []

    def table(self, base: str) -> Identifier:
        return Identifier(versioned(base, self.version))

    def sql(self, statement: str, **tables: str) -> Composed:
        """`statement` with `{name}` placeholders bound to this version's tables."""
        return SQL(statement).format(**{k: self.table(v) for k, v in tables.items()})

    def record(self, events: Sequence[tuple[Any, Tracking]]) -> None:
        """Apply events and track the last of them, all in one transaction."""
        if not events:
            return
        with self.datastore.transaction(commit=True) as curs:
            self.write(curs, events)

    def write(self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]) -> None:
        """Apply events and track the last of them in the caller's transaction."""
        self.apply_all(curs, events)
        self._insert_tracking(curs, events[-1][1])

    def dead_letter(self, event: Any, tracking: Tracking, error: BaseException) -> None:
        """Keep the failing event and the exception, and move past it."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO dead_letters (view, version, application, notification_id, "
                "topic, originator_id, error) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    self.view_name,
                    self.version,
                    tracking.application_name,
                    tracking.notification_id,
                    type(event).__qualname__,
                    str(getattr(event, "originator_id", "")),
                    "".join(traceback.format_exception_only(type(error), error)).strip(),
                ),
            )
            self._insert_tracking(curs, tracking)

    def is_live(self) -> bool:
        with self.datastore.transaction(commit=False) as curs:
            row = curs.execute(
                "SELECT live_version FROM projection_versions WHERE name = %s",
                (self.view_name,),
            ).fetchone()
        return row is not None and row["live_version"] == self.version

    @classmethod
    def at_version(cls, version: int) -> type[View]:
        return type(f"{cls.__name__}V{version}", (cls,), {"version": version})

    @classmethod
    def tracking_name(cls, version: int) -> str:
        return versioned(cls.view_name, version)


Deferred = tuple[Composed, list[Any]]
"""A data-modifying statement a view defers to its tracking (a CTE of `track_all`'s)."""


def track_all(
    curs: Cursor[Any], tracked: Sequence[tuple[View, Tracking]], deferred: Sequence[Deferred] = ()
) -> None:
    """Several views' tracking rows (and statements they deferred) in one statement, each
    tracking row written as eventsourcing writes a single-row tracking (`_insert_tracking`):
    refused unless it moves the position forward."""
    if len(tracked) < 2 or not all(v.datastore.single_row_tracking for v, _ in tracked):
        for statement, values in deferred:
            curs.execute(statement, values)
        for view, tracking in tracked:
            view._insert_tracking(curs, tracking)
        return
    moves: list[Composed] = []
    counts: list[Composed] = []
    params: list[Any] = []
    for n, (statement, values) in enumerate(deferred):
        moves.append(SQL("{} AS ({})").format(Identifier(f"d{n}"), statement))
        params += values
    for n, (view, tracking) in enumerate(tracked):
        name = Identifier(f"t{n}")
        table = SQL("{}.{}").format(
            Identifier(view.datastore.schema), Identifier(view.tracking_table_name)
        )
        moves.append(
            SQL(
                "{name} AS (INSERT INTO {table} AS t VALUES (%s, %s) ON CONFLICT "
                "(application_name) DO UPDATE SET notification_id = EXCLUDED.notification_id "
                "WHERE t.notification_id < EXCLUDED.notification_id RETURNING 1)"
            ).format(name=name, table=table)
        )
        counts.append(SQL("(SELECT count(*) FROM {name}) AS {name}").format(name=name))
        params += [tracking.application_name, tracking.notification_id]
    query = SQL("WITH {} SELECT {}").format(SQL(", ").join(moves), SQL(", ").join(counts))
    row = curs.execute(query, params).fetchone()
    assert row is not None
    moved = list(row.values()) if isinstance(row, dict) else list(row)
    refused = [t for (_, t), count in zip(tracked, moved, strict=True) if count != 1]
    if refused:
        raise persistence.IntegrityError(f"Failed to record tracking for {refused}")


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the parameters of one statement that unnests them all
    (`SELECT * FROM unnest(%s::uuid[], %s::text[], ...)`) instead of one per row."""
    return [list(column) for column in zip(*rows, strict=True)] or [[] for _ in range(width)]


def versioned(base: str, version: int) -> str:
    return f"{base}_v{version}"


TRANSIENT = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    persistence.OperationalError,
    persistence.InterfaceError,
)
"""Failures of the connection rather than of the event: the runner restarts and retries."""


class ViewProjection(Projection[View]):
    """The continuous run of a view: an event that fails is dead-lettered while the view is
    live. A lost connection is not the event's fault: it stops the runner, which restarts
    from the last tracked event. A view no longer live stops too: it is being replaced."""

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        try:
            self.view.record([(domain_event, tracking)])
        except TRANSIENT:
            raise
        except Exception as error:
            if not self.view.is_live():
                raise
            self.view.dead_letter(domain_event, tracking, error)

    def process_run(self, run: Sequence[tuple[Any, Tracking]]) -> None:
        """A run of events, rows and tracking in one transaction; if it fails (not for a lost
        connection) nothing of it stays, and each event is applied on its own, so that only
        the failing one goes to the dead letters."""
        if len(run) == 1:
            self.process_event(*run[0])
            return
        try:
            self.view.record(run)
        except TRANSIENT:
            raise
        except Exception:
            for event, tracking in run:
                self.process_event(event, tracking)


def projection_for(view_class: type[View], version: int) -> type[ViewProjection]:
    name = versioned(view_class.view_name, version)
    return type(f"{view_class.__name__}ProjectionV{version}", (ViewProjection,), {"name": name})
