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


def events_after(conn: Any, application_name: str, after: int = 0) -> int:
    """How many events a log holds past a position: not the head minus the position, since
    positions have gaps (a transaction that rolled back used its numbers)."""
    query = SQL("SELECT count(*) FROM {t} WHERE notification_id > %s").format(
        t=Identifier(f"{application_name}_events")
    )
    return int(conn.execute(query, (after,)).fetchone()[0])


def position(conn: Any, tracking_name: str, application_name: str) -> int:
    query = SQL("SELECT notification_id FROM {t} WHERE application_name = %s").format(
        t=Identifier(f"{tracking_name}_tracking")
    )
    try:
        with conn.transaction():
            row = conn.execute(query, (application_name,)).fetchone()
    except Exception:  # noqa: BLE001 - a tracking table not yet created is position 0
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def live_version(conn: Any, view_name: str) -> int:
    row = conn.execute(
        "SELECT live_version FROM projection_versions WHERE name = %s", (view_name,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no view named {view_name!r}")
    return int(row[0])


def live_tracking_name(conn: Any, view_name: str) -> str:
    return f"{view_name}_v{live_version(conn, view_name)}"


def wait_until_caught_up(
    pool: Any,
    application_names: list[str],
    *,
    view_name: str | None = None,
    tracking_name: str | None = None,
    timeout: float = 3.0,
) -> bool:
    """Block until a view (its live version) or a process has applied every event logged
    before the call; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    with pool.connection() as conn:
        targets = {name: head(conn, name) for name in application_names}
        delay = 0.002
        while True:
            tracked = tracking_name or live_tracking_name(conn, view_name or "")
            if all(position(conn, tracked, n) >= h for n, h in targets.items()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
