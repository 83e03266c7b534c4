"""PostgreSQL: connection settings for eventsourcing, pools for views, embedded default."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from psycopg_pool import ConnectionPool

EVENT_STORE_ENV_DEFAULTS = {
    "PERSISTENCE_MODULE": "eventsourcing.postgres",
    "CREATE_TABLE": "n",
    "POSTGRES_POOL_SIZE": "4",
    "POSTGRES_MAX_OVERFLOW": "8",
    "POSTGRES_CONNECT_TIMEOUT": "10",
    "POSTGRES_LOCK_TIMEOUT": "10",
    "POSTGRES_PRE_PING": "y",
    "AGGREGATE_CACHE_MAXSIZE": "10000",
    "APPLICATION_RECORDER_TOPIC": "adapters.chained_recorders:ChainedApplicationRecorder",
    "PROCESS_RECORDER_TOPIC": "adapters.chained_recorders:ChainedProcessRecorder",
}


def event_store_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The eventsourcing environment for a PostgreSQL URL (a socket folder works as host)."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    env = dict(EVENT_STORE_ENV_DEFAULTS)
    env.update(
        POSTGRES_DBNAME=unquote(parts.path.lstrip("/")) or "postgres",
        POSTGRES_HOST=host,
        POSTGRES_PORT=str(parts.port or query.get("port", ["5432"])[0]),
        POSTGRES_USER=unquote(parts.username or "postgres"),
        POSTGRES_PASSWORD=unquote(parts.password or ""),
    )
    env.update(overrides)
    return env


def application_env(settings: Any, database_url: str, **overrides: str) -> dict[str, str]:
    """The environment every application of the ledger is constructed with."""
    env = event_store_env(database_url)
    env.update(
        CODE_HASH_KEY=settings.ledger_code_hash_key,
        RECHARGE_DEADLINE_SECONDS=str(settings.ledger_recharge_deadline_seconds),
        CARDS_SHARE_DEPTH=str(settings.ledger_share_depth),
    )
    env.update(overrides)
    return env


def open_pool(database_url: str, size: int = 8, name: str = "ledger") -> ConnectionPool:
    pool = ConnectionPool(
        database_url,
        min_size=1,
        max_size=size,
        name=name,
        kwargs={"autocommit": True},
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool
