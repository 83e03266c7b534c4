"""Schema migrations of the read models and bookkeeping tables, applied with yoyo."""

from __future__ import annotations

import sys
from pathlib import Path

from yoyo import get_backend, read_migrations


def yoyo_url(database_url: str) -> str:
    scheme, rest = database_url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else database_url


def migrations_dir() -> Path:
    """`migrations/` of the source tree; an installed wheel carries it in share/."""
    source_tree = Path(__file__).resolve().parents[2] / "migrations"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "membership-ledger" / "migrations"


def apply_migrations(database_url: str) -> int:
    """Apply every migration not yet applied, then make sure every event store and tracking
    table exists; return how many migrations were applied."""
    backend = get_backend(yoyo_url(database_url))
    migrations = read_migrations(str(migrations_dir()))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
        create_stores(database_url)
    return len(pending)


def create_stores(database_url: str) -> None:
    """eventsourcing creates its own tables; doing it here, once and in turn, keeps the
    processes that start together from racing each other's DDL."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.postgres import PostgresTrackingRecorder
    from eventsourcing.utils import Environment

    from adapters.database import event_store_env
    from projections.catalog import FEEDS, TRACKERS

    env = event_store_env(database_url, CREATE_TABLE="y", POSTGRES_POOL_SIZE="1")
    applications = {feed.application_class for feed in FEEDS}
    applications |= {getattr(feed, "process_class", feed.application_class) for feed in FEEDS}
    for application_class in sorted(applications, key=lambda cls: cls.name):
        application_class(env=env).close()
    for name, view_class in TRACKERS:
        factory = InfrastructureFactory.construct(env=Environment(name, env))
        factory.tracking_recorder(view_class or PostgresTrackingRecorder)
        factory.close()
