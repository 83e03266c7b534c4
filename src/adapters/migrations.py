"""Schema migrations of the read models and bookkeeping tables, applied with yoyo."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
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
    from projections.catalog import APPLICATIONS, VIEWS
    from projections.positions import live_version

    env = event_store_env(database_url, CREATE_TABLE="y", POSTGRES_POOL_SIZE="1")
    for application_class in APPLICATIONS:
        application_class(env=env).close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        trackers = [spec.view_class.tracking_name(live_version(conn, spec.name)) for spec in VIEWS]
    for name in [*trackers, "dispatcher"]:
        factory = InfrastructureFactory.construct(env=Environment(name, env))
        factory.tracking_recorder(PostgresTrackingRecorder)
        factory.close()
