"""Schema migrations of the read models and bookkeeping tables, applied with yoyo."""

from __future__ import annotations

import sys
from collections.abc import Callable
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


def apply_migrations(database_url: str, create_stores: Callable[[str], None]) -> int:
    """Apply every migration not yet applied, then `create_stores` (the event store and
    tracking tables), under yoyo's lock so that processes starting together take turns;
    return how many migrations were applied."""
    backend = get_backend(yoyo_url(database_url))
    migrations = read_migrations(str(migrations_dir()))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
        create_stores(database_url)
    return len(pending)
