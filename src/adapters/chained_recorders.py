"""PostgreSQL recorders that extend the hash chain in the same transaction as the events.

A save is one statement: `SELECT * FROM <events table>_append(...)`, a PL/pgSQL function that
takes the events table's EXCLUSIVE lock (as eventsourcing's recorder does, so readers never
skip a late commit), notifies the log's listeners, inserts the events, computes each one's
link in notification_id order and inserts the links. On the pool's autocommit connection that
statement is its own transaction: the server commits it before it answers, so the lock is
held for the database's work and the commit alone, never across a round trip to Python or a
wait for the GIL. The link is byte for byte `ledger.chain.link`, which `ledger verify`
recomputes; chains written before the function existed continue unchanged.

The function is created with the chain table by the recorder's create statements (run by
`create_stores` after every migration, under yoyo's lock), not by a migration: the events
table and the composite type it takes are eventsourcing's, created there too.
Selected by APPLICATION_RECORDER_TOPIC / PROCESS_RECORDER_TOPIC in the applications' env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresProcessRecorder,
    PostgresTrackingRecorder,
)
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal


def chain_table(events_table_name: str) -> str:
    return f"{events_table_name}_chain"


def append_function(events_table_name: str) -> str:
    return f"{events_table_name}_append"


APPEND_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.{function}(
    new_events {schema}.{event_type}[],
    lock_timeout text,
    tracking_table text DEFAULT NULL,
    tracking_application text DEFAULT NULL,
    tracking_id bigint DEFAULT NULL
) RETURNS SETOF bigint LANGUAGE plpgsql AS $append$
DECLARE
    previous bytea;
    ids bigint[];
    contents bytea[];
    links bytea[] := '{{}}';
    tracked int;
BEGIN
    IF tracking_table IS NOT NULL THEN
        -- eventsourcing's single-row tracking: a position already passed is a conflict
        EXECUTE format(
            'INSERT INTO %I.%I VALUES ($1, $2) ON CONFLICT (application_name) DO UPDATE '
            'SET notification_id = $2 WHERE %I.%I.notification_id < $2',
            {schema_text}, tracking_table, {schema_text}, tracking_table
        ) USING tracking_application, tracking_id;
        GET DIAGNOSTICS tracked = ROW_COUNT;
        IF tracked = 0 THEN
            RAISE unique_violation USING MESSAGE = format(
                'Failed to record tracking for %s %s', tracking_application, tracking_id);
        END IF;
    END IF;
    IF coalesce(cardinality(new_events), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', lock_timeout, true);
    LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE;
    NOTIFY {channel};
    SELECT hash INTO previous FROM {schema}.{chain} ORDER BY notification_id DESC LIMIT 1;
    previous := coalesce(previous, {genesis});
    WITH inserted AS (
        INSERT INTO {schema}.{events} (originator_id, originator_version, topic, state)
        SELECT originator_id, originator_version, topic, state FROM unnest(new_events)
        RETURNING notification_id, originator_id, originator_version, topic, state
    )
    SELECT array_agg(notification_id ORDER BY notification_id),
           array_agg(
               int8send(notification_id) || int8send(originator_version)
               || convert_to(originator_id::text, 'UTF8') || '\\x00'::bytea
               || convert_to(topic, 'UTF8') || '\\x00'::bytea || state
               ORDER BY notification_id)
      INTO ids, contents FROM inserted;
    FOR i IN 1 .. cardinality(ids) LOOP
        previous := sha256(previous || contents[i]);
        links[i] := previous;
    END LOOP;
    INSERT INTO {schema}.{chain} (notification_id, hash) SELECT * FROM unnest(ids, links);
    RETURN QUERY SELECT unnest(ids);
END
$append$
"""
"""The link of each event: sha256(previous link || notification_id and originator_version as
big-endian int8 || originator_id as text || NUL || topic || NUL || state), as `chain.link`."""


class HashChained(PostgresApplicationRecorder):
    """An application recorder that links every event it inserts into the log's hash chain."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = Identifier(self.datastore.schema)
        chain = Identifier(chain_table(self.events_table_name))
        function = Identifier(append_function(self.events_table_name))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} ("
                "notification_id bigint PRIMARY KEY, hash bytea NOT NULL)"
            ).format(schema, chain)
        )
        self.sql_create_statements.append(
            SQL(APPEND_FUNCTION).format(
                schema=schema,
                schema_text=Literal(self.datastore.schema),
                function=function,
                event_type=Identifier(self.stored_event_type_name),
                events=Identifier(self.events_table_name),
                chain=chain,
                channel=Identifier(self.channel_name),
                genesis=SQL("'\\x{}'::bytea").format(SQL("00" * 32)),
            )
        )
        self._append: Composed = SQL(
            "SELECT appended FROM {}.{}(%b, %s, %s, %s, %s) AS appended"
        ).format(schema, function)
        self._selects: dict[tuple[bool, bool, bool, bool], bytes] = {}

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """eventsourcing's select_events, with each form of the statement composed once (it
        composed it again at every read: a tenth of a cached aggregate's fast-forward)."""
        shape = (gt is not None, lte is not None, desc, limit is not None)
        params = [originator_id, *(p for p in (gt, lte, limit) if p is not None)]
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            statement = self._selects.get(shape)
            if statement is None:
                statement = self._selects[shape] = self._select_statement(*shape).as_bytes(conn)
            curs.execute(statement, params, prepare=True)
            return [
                StoredEvent(
                    originator_id=stored_id,
                    originator_version=version,
                    topic=topic,
                    state=bytes(state),
                )
                for stored_id, version, topic, state in curs.fetchall()
            ]

    def _select_statement(self, gt: bool, lte: bool, desc: bool, limit: bool) -> Composed:
        return SQL(
            "SELECT originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE originator_id = %s{}{} ORDER BY originator_version {}{}"
        ).format(
            Identifier(self.datastore.schema),
            Identifier(self.events_table_name),
            SQL(" AND originator_version > %s" if gt else ""),
            SQL(" AND originator_version <= %s" if lte else ""),
            SQL("DESC" if desc else "ASC"),
            SQL(" LIMIT %s" if limit else ""),
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert the events and their links, and record the tracking position if given,
        in one statement (one transaction, committed by the server)."""
        tracking = kwargs.get("tracking")
        if not stored_events and tracking is None:
            return None
        events = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        tracked: tuple[str | None, str | None, int | None] = (None, None, None)
        if tracking is not None:
            assert isinstance(self, PostgresTrackingRecorder)
            assert self.datastore.single_row_tracking, "only single-row tracking is chained"
            tracked = (
                self.tracking_table_name,
                tracking.application_name,
                tracking.notification_id,
            )
        lock_timeout = f"{int(self.datastore.lock_timeout)}s"
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            assert conn.autocommit  # the statement is its own transaction
            curs.execute(self._append, (events, lock_timeout, *tracked), prepare=True)
            ids = [row["appended"] for row in curs.fetchall()]
        if not stored_events:
            return None
        assert len(ids) == len(stored_events), (len(ids), len(stored_events))
        return ids


class ChainedApplicationRecorder(HashChained):
    pass


class ChainedProcessRecorder(HashChained, PostgresProcessRecorder):
    pass
