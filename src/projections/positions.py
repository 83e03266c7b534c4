"""Where a view stands against the head of the log it follows."""

from __future__ import annotations

import time
from typing import Any

from psycopg.sql import SQL, Identifier


def head(conn: Any, application_name: str) -> int:
    query = SQL("SELECT coalesce(max(notification_id), 0) FROM {t}").format(
        t=Identifier(f"{application_name}_events")
    )
    return int(conn.execute(query).fetchone()[0])


def position(conn: Any, view_name: str, application_name: str) -> int:
    query = SQL("SELECT notification_id FROM {t} WHERE application_name = %s").format(
        t=Identifier(f"{view_name}_tracking")
    )
    row = conn.execute(query, (application_name,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def wait_until_caught_up(
    pool: Any, view_name: str, application_names: list[str], timeout: float = 3.0
) -> bool:
    """Block until the view has applied every event logged before the call (bounded)."""
    deadline = time.monotonic() + timeout
    with pool.connection() as conn:
        targets = {name: head(conn, name) for name in application_names}
        delay = 0.002
        while True:
            if all(position(conn, view_name, n) >= h for n, h in targets.items()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
