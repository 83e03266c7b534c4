"""Shared fixtures: every test that needs PostgreSQL gets a database of its own."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

ADMIN_URL = os.environ.get("LEDGER_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _url_for(dbname: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@contextlib.contextmanager
def migrated_database() -> Iterator[str]:
    """A fresh, migrated database, dropped afterwards."""
    from api.runtime.schema import apply_migrations

    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _url_for(name)
    apply_migrations(url)
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh, migrated database, dropped afterwards."""
    with migrated_database() as url:
        yield url
