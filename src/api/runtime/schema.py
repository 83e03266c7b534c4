"""The whole schema of a database: the SQL migrations, then every table eventsourcing keeps
(each application's events, each live view's and the dispatcher's tracking)."""

from __future__ import annotations

import sys

import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.utils import Environment

from adapters import migrations
from adapters.database import event_store_env, wait_for_database
from projections.catalog import APPLICATIONS, VIEWS
from projections.positions import live_version

STARTUP_RETRY_SECONDS = 30.0
"""How long a starting process retries a database that refuses it (starting, restarting, or
full: "too many clients") before it gives up."""


def apply_migrations(database_url: str) -> int:
    """Migrate and create every store; how many migrations were applied. A database that
    refuses connections is retried for up to `STARTUP_RETRY_SECONDS`, saying so on stderr."""
    wait_for_database(database_url, STARTUP_RETRY_SECONDS, say=say)
    return migrations.apply_migrations(database_url, create_stores)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def create_stores(database_url: str) -> None:
    """eventsourcing creates its own tables; doing it here, once and in turn, keeps the
    processes that start together from racing each other's DDL."""
    env = event_store_env(database_url, CREATE_TABLE="y", POSTGRES_POOL_SIZE="1")
    for application_class in APPLICATIONS:
        application_class(env=env).close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        trackers = [spec.view_class.tracking_name(live_version(conn, spec.name)) for spec in VIEWS]
    for name in [*trackers, "dispatcher"]:
        factory = InfrastructureFactory.construct(env=Environment(name, env))
        factory.tracking_recorder(PostgresTrackingRecorder)
        factory.close()
