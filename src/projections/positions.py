"""Where a view stands against the head of the log it follows."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.sql import SQL, Composable, Identifier, Literal


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


@dataclass(frozen=True)
class Watched:
    """What a runner's watchdog reads each round: its view's live version (for a view feed;
    `view_name` None for a process), its position and the head of its log."""

    view_name: str | None
    tracking_name: str
    application_name: str


Standing = tuple[int | None, int, int]
"""A watched feed's live version (None for a process), position and head."""


def standings_now(conn: Any, watched: Iterable[Watched]) -> dict[Watched, Standing]:
    """Where every watched feed stands, read in one statement; feed by feed (as `position`
    does, a tracking table not there is position 0) if a table is missing (a version
    dropped while its runner moves on). A view without a live version raises LookupError."""
    items = list(dict.fromkeys(watched))
    views = sorted({w.view_name for w in items if w.view_name is not None})
    logs = sorted({w.application_name for w in items})
    columns: list[Composable] = [
        SQL("(SELECT live_version FROM projection_versions WHERE name = {})").format(Literal(v))
        for v in views
    ]
    columns += [
        SQL("(SELECT coalesce(max(notification_id), 0) FROM {})").format(
            Identifier(f"{log}_events")
        )
        for log in logs
    ]
    columns += [
        SQL("(SELECT notification_id FROM {} WHERE application_name = {})").format(
            Identifier(f"{w.tracking_name}_tracking"), Literal(w.application_name)
        )
        for w in items
    ]
    if not columns:
        return {}
    try:
        row = conn.execute(SQL("SELECT ") + SQL(", ").join(columns)).fetchone()
    except psycopg.errors.UndefinedTable:
        return {w: standing_of(conn, w) for w in items}
    versions = dict(zip(views, row[: len(views)], strict=True))
    heads = dict(zip(logs, row[len(views) : len(views) + len(logs)], strict=True))
    positions = row[len(views) + len(logs) :]
    found = {}
    for w, at in zip(items, positions, strict=True):
        version = None
        if w.view_name is not None:
            version = versions[w.view_name]
            if version is None:
                raise LookupError(f"no view named {w.view_name!r}")
        found[w] = (version, int(at or 0), int(heads[w.application_name]))
    return found


def standing_of(conn: Any, watched: Watched) -> Standing:
    version = None if watched.view_name is None else live_version(conn, watched.view_name)
    at = position(conn, watched.tracking_name, watched.application_name)
    return version, at, head(conn, watched.application_name)


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
