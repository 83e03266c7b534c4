"""Scratch databases on the benchmark's server, and what that server is."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql


def url_for(admin_url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{dbname}"))


def create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url_for(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def server_facts(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:

        def show(setting: str) -> str:
            row = conn.execute(f"SHOW {setting}").fetchone()  # type: ignore[arg-type]
            return str(row[0]) if row else "?"

        version, sync, fsync = show("server_version"), show("synchronous_commit"), show("fsync")
    return f"PostgreSQL {version}, fsync={fsync}, synchronous_commit={sync}"


def pgbench_args(url: str) -> tuple[list[str], dict[str, str]]:
    """pgbench's connection options for a URL, and its environment (the password)."""
    parts = urlsplit(url)
    args = [
        "-h", parts.hostname or "127.0.0.1",
        "-p", str(parts.port or 5432),
        "-U", unquote(parts.username or "postgres"),
    ]  # fmt: skip
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    return args, env
