"""Verification: replay every event, check the hash chain, recompute every view beside the
stored one and compare them row by row. The report names the first divergence."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from eventsourcing.persistence import Tracking
from psycopg.sql import SQL, Identifier

from ledger.chain import GENESIS, link
from projections.base import View, versioned
from projections.catalog import APPLICATIONS, VIEWS
from projections.logs import Row, read_chained
from projections.positions import events_after, live_tracking_name, live_version, position
from projections.rebuild import create_version, drop_version, open_view


def scratch_version() -> int:
    """Recomputed views are built under a negative version of their own, so runs of verify
    at the same time keep apart and no rebuild takes it for a real version."""
    return -1 - secrets.randbelow(2**30)
BATCH = 1000


@dataclass(frozen=True)
class Divergence:
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


@dataclass
class Report:
    events: dict[str, int] = field(default_factory=dict)
    rows_compared: dict[str, int] = field(default_factory=dict)
    divergence: Divergence | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.divergence is None


def verify(
    database_url: str, env: dict[str, str], progress: Callable[[int, int], None] | None = None
) -> Report:
    started = time.monotonic()
    report = Report()
    run = scratch_version()
    with psycopg.connect(database_url, autocommit=True) as conn:
        positions = snapshot(conn, run)
        scratch = {spec.name: prepare_scratch(conn, spec, env, run) for spec in VIEWS}
        applications = [cls(env=env) for cls in APPLICATIONS]
        try:
            # counted, not taken from the heads: a log's positions have gaps
            total = sum(events_after(conn, a.name) for a in applications)
            done = 0
            for application in applications:

                def replayed(count: int, before: int = done) -> None:
                    if progress:
                        progress(before + count, max(before + count, total))

                divergence, count = replay(
                    database_url, application, scratch, positions, replayed
                )
                report.events[application.name] = count
                done += count
                if divergence:
                    report.divergence = divergence
                    return report
            if progress:
                progress(done, done)
            for spec in VIEWS:
                for base in spec.view_class.tables:
                    divergence, rows = compare(conn, spec.view_class, base, run)
                    report.rows_compared[base] = rows
                    if divergence:
                        report.divergence = divergence
                        return report
        finally:
            for application in applications:
                application.close()
            for spec in VIEWS:
                scratch[spec.name].datastore.close()
                drop_version(conn, spec.view_class, run)
                for base in spec.view_class.tables:
                    conn.execute(SQL("DROP TABLE IF EXISTS {}").format(snapshot_table(base, run)))
            report.seconds = time.monotonic() - started
    return report


def snapshot(conn: Any, run: int) -> dict[tuple[str, str], int]:
    """Copy every live view with the positions it stands at, as of one moment."""
    positions = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for spec in VIEWS:
            tracked = live_tracking_name(conn, spec.name)
            for application in spec.applications:
                positions[(spec.name, application.name)] = position(
                    conn, tracked, application.name
                )
            for base in spec.view_class.tables:
                conn.execute(
                    SQL("CREATE UNLOGGED TABLE {} AS SELECT * FROM {}").format(
                        snapshot_table(base, run), Identifier(base)
                    )
                )
    return positions


def snapshot_table(base: str, run: int) -> Identifier:
    return Identifier(f"verify_snapshot{run}_{base}")


def prepare_scratch(conn: Any, spec: Any, env: dict[str, str], run: int) -> View:
    create_version(conn, spec.view_class, live_version(conn, spec.name), run)
    return open_view(spec.view_class.at_version(run), env)


def replay(
    database_url: str, application: Any, scratch: dict[str, View],
    positions: dict[tuple[str, str], int], progress: Callable[[int], None] | None = None,
) -> tuple[Divergence | None, int]:
    """Check the chain of one log and apply its events to the recomputed views."""
    fed = [spec for spec in VIEWS if type(application) in spec.applications]
    batches: dict[str, list[tuple[Any, Tracking]]] = {spec.name: [] for spec in fed}
    previous, count = GENESIS, 0
    with psycopg.connect(database_url, autocommit=True) as reader:
        for row in read_chained(reader, application.name):
            divergence = check_link(application.name, row, previous)
            if divergence:
                return divergence, count
            assert row.event is not None and row.link is not None
            previous = row.link
            count += 1
            if progress and count % BATCH == 0:
                progress(count)
            try:
                event = application.mapper.to_domain_event(row.event)
            except Exception as error:
                return Divergence(
                    f"{application.name} event {row.notification_id}",
                    f"cannot be decoded: {error!r}",
                ), count
            for spec in fed:
                if row.notification_id <= positions[(spec.name, application.name)]:
                    batch = batches[spec.name]
                    batch.append((event, Tracking(application.name, row.notification_id)))
                    if len(batch) >= BATCH:
                        divergence = apply(scratch[spec.name], batch)
                        if divergence:
                            return divergence, count
        for spec in fed:
            divergence = apply(scratch[spec.name], batches[spec.name])
            if divergence:
                return divergence, count
    if progress:
        progress(count)
    return None, count


def check_link(application_name: str, row: Row, previous: bytes) -> Divergence | None:
    where = f"{application_name} event {row.notification_id}"
    if row.event is None:
        return Divergence(where, "was deleted: its link in the hash chain remains")
    if row.link is None:
        return Divergence(where, "is not in the hash chain: it was inserted afterwards")
    expected = link(
        previous, row.notification_id, row.event.originator_id,
        row.event.originator_version, row.event.topic, row.event.state,
    )
    if expected != row.link:
        return Divergence(
            where, "does not match its link in the hash chain: altered, or events reordered"
        )
    return None


def apply(view: View, batch: list[tuple[Any, Tracking]]) -> Divergence | None:
    try:
        view.record(batch)
    except Exception as error:
        first = batch[0][1]
        return Divergence(
            f"view {view.view_name}",
            f"replaying events from {first.application_name} {first.notification_id} "
            f"failed: {error!r}",
        )
    finally:
        batch.clear()
    return None


def compare(
    conn: Any, view_class: type[View], base: str, run: int
) -> tuple[Divergence | None, int]:
    """The first row (by key) that differs between the stored and the recomputed view."""
    stored, replayed = snapshot_table(base, run), Identifier(versioned(base, run))
    keys = SQL(view_class.keys.get(base, "1"))
    rows = conn.execute(SQL("SELECT count(*) FROM {}").format(stored)).fetchone()[0]
    query = SQL(
        "SELECT * FROM ((SELECT 'stored' AS side, * FROM {s} EXCEPT ALL "
        "SELECT 'stored', * FROM {r}) UNION ALL (SELECT 'recomputed', * FROM {r} EXCEPT ALL "
        "SELECT 'recomputed', * FROM {s})) d ORDER BY {k}, side DESC LIMIT 1"
    ).format(s=stored, r=replayed, k=keys)
    cursor = conn.execute(query)
    row = cursor.fetchone()
    if row is None:
        return None, rows
    columns = [c.name for c in cursor.description]
    values = dict(zip(columns, row, strict=True))
    side = values.pop("side")
    key_names = [k.strip() for k in view_class.keys.get(base, "").split(",") if k.strip()]
    key = ", ".join(f"{k}={values[k]}" for k in key_names) or str(values)
    what = "differs from what the events give" if side == "stored" else "is missing"
    return Divergence(f"view {base}", f"row ({key}) {what}: stored as {values}"
                      if side == "stored" else f"row ({key}) {what}; replay gives {values}"), rows
