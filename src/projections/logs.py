"""Reading an application's log directly, page by page, decoded, with its hash chain.

Each page is its own short query: a reader that kept one transaction open over a long log
would stop PostgreSQL from pruning the rows that a rebuild or a verify is updating meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import StoredEvent, Tracking
from psycopg.sql import SQL, Identifier

PAGE = 2000


@dataclass(frozen=True)
class Row:
    """One position of a log: the stored event (None if deleted) and its link (None if absent)."""

    notification_id: int
    event: StoredEvent | None
    link: bytes | None


def read_chained(conn: Any, application_name: str, after: int = 0) -> Iterator[Row]:
    """Every stored event and every chain link, matched by position, in log order."""
    events = Identifier(f"{application_name}_events")
    chain = Identifier(f"{application_name}_events_chain")
    last = (
        conn.execute(
            SQL(
                "SELECT greatest((SELECT max(notification_id) FROM {e}), "
                "(SELECT max(notification_id) FROM {c}))"
            ).format(e=events, c=chain)
        ).fetchone()[0]
        or 0
    )
    page = SQL(
        "SELECT coalesce(e.notification_id, c.notification_id), e.originator_id, "
        "e.originator_version, e.topic, e.state, c.hash "
        "FROM (SELECT * FROM {e} WHERE notification_id > %(lo)s AND notification_id <= %(hi)s) e "
        "FULL OUTER JOIN "
        "(SELECT * FROM {c} WHERE notification_id > %(lo)s AND notification_id <= %(hi)s) c "
        "ON e.notification_id = c.notification_id ORDER BY 1"
    ).format(e=events, c=chain)
    low = after
    while low < last:
        high = low + PAGE
        for notification_id, originator_id, version, topic, state, link in conn.execute(
            page, {"lo": low, "hi": high}
        ).fetchall():
            event = None
            if originator_id is not None:
                event = StoredEvent(originator_id, version, topic, bytes(state))
            yield Row(notification_id, event, bytes(link) if link is not None else None)
        low = high


def read_events(
    conn: Any, application_name: str, after: int, upto: int | None = None
) -> Iterator[tuple[int, StoredEvent]]:
    """Stored events after a position (and up to one), in log order."""
    page = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {e} "
        "WHERE notification_id > %(after)s AND (%(upto)s::bigint IS NULL OR "
        "notification_id <= %(upto)s) ORDER BY notification_id LIMIT %(page)s"
    ).format(e=Identifier(f"{application_name}_events"))
    while True:
        rows = conn.execute(page, {"after": after, "upto": upto, "page": PAGE}).fetchall()
        for notification_id, originator_id, version, topic, state in rows:
            yield notification_id, StoredEvent(originator_id, version, topic, bytes(state))
        if len(rows) < PAGE:
            return
        after = rows[-1][0]


def decoded(
    mapper: Any, application_name: str, rows: Iterator[tuple[int, StoredEvent]]
) -> Iterator[tuple[Any, Tracking]]:
    for notification_id, stored in rows:
        yield mapper.to_domain_event(stored), Tracking(application_name, notification_id)
