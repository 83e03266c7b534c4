"""Where every view and process stands: version, position, head, lag, state, dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from projections.catalog import PROCESSES, VIEWS
from projections.positions import head, live_version, position
from projections.rebuild import lock_held
from projections.runner import lock_key


@dataclass(frozen=True)
class Standing:
    name: str
    application: str
    version: int | None
    position: int
    head: int
    lag: int
    status: str
    dead_letters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def standings(conn: Any, extra: Sequence[Any] = ()) -> list[Standing]:
    """`extra`: further feeds to report (the outbox dispatcher lives outside projections)."""
    rows = []
    for spec in VIEWS:
        version = live_version(conn, spec.name)
        dead = dead_letters(conn, spec.name, version)
        for application in spec.applications:
            feed = spec.feed(application, version)
            rows.append(standing(conn, spec.name, feed, version, dead))
    for feed in [*PROCESSES, *extra]:
        rows.append(standing(conn, feed.tracking_name, feed, None, 0))
    return rows


def standing(conn: Any, name: str, feed: Any, version: int | None, dead: int) -> Standing:
    at = position(conn, feed.tracking_name, feed.application_name)
    top = head(conn, feed.application_name)
    state = "running" if lock_held(conn, lock_key(feed)) else "stopped"
    return Standing(name, feed.application_name, version, at, top, max(0, top - at), state, dead)


def dead_letters(conn: Any, view: str, version: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM dead_letters WHERE view = %s AND version = %s", (view, version)
    ).fetchone()
    return int(row[0])
