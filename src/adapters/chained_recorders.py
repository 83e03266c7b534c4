"""PostgreSQL recorders that extend the hash chain in the same transaction as the events.

The recorder already holds the events table's EXCLUSIVE lock while it inserts, so the last
link read here is the last link there is: the chain has no forks and no gaps.
Selected by APPLICATION_RECORDER_TOPIC / PROCESS_RECORDER_TOPIC in the applications' env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresProcessRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.chain import GENESIS, link


def chain_table(events_table_name: str) -> str:
    return f"{events_table_name}_chain"


class HashChained(PostgresApplicationRecorder):
    """An application recorder that links every event it inserts into the log's hash chain."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table = Identifier(self.datastore.schema), Identifier(chain_table(self.events_table_name))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} ("
                "notification_id bigint PRIMARY KEY, hash bytea NOT NULL)"
            ).format(*table)
        )
        self._last_link = SQL(
            "SELECT hash FROM {}.{} ORDER BY notification_id DESC LIMIT 1"
        ).format(*table)
        self._insert_links = SQL(
            "INSERT INTO {}.{} (notification_id, hash) VALUES (%s, %s)"
        ).format(*table)

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        assert ids is not None and len(ids) == len(stored_events)
        curs.execute(self._last_link)
        row = curs.fetchone()
        previous = bytes(row["hash"]) if row else GENESIS
        links = []
        for notification_id, event in zip(ids, stored_events, strict=True):
            previous = link(
                previous,
                notification_id,
                event.originator_id,
                event.originator_version,
                event.topic,
                event.state,
            )
            links.append((notification_id, previous))
        curs.executemany(self._insert_links, links)
        return ids


class ChainedApplicationRecorder(HashChained):
    pass


class ChainedProcessRecorder(HashChained, PostgresProcessRecorder):
    pass
