"""The connection budget measured where it is spent: real `ledger serve` processes on a
database of their own, counted in `pg_stat_activity` once they are idle.

An idle `ledger serve` with its runners holds under 12 connections, a standby (a second serve
whose runners wait for the advisory locks the first holds) under 5 more, and an API process
without runners under 5."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.e2e.conftest import ADMIN_URL, Server, start_servers

SERVE_AT_MOST = 11
STANDBY_AT_MOST = 4
API_ONLY_AT_MOST = 4
SETTLE_SECONDS = 60.0
"""Pools close a connection unused for 5 s, one at a time: start-up's connections are gone
well within this."""


def connections(database: str) -> int:
    for attempt in range(30):
        try:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
                ).fetchone()
                assert row is not None
                return int(row[0])
        except psycopg.OperationalError:  # the shared server crowded by other runs
            if attempt == 29:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def settled(database: str, at_most: int) -> int:
    """The count once it stays the same for 6 s (or the last seen, past the deadline)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    seen: list[int] = []
    while time.monotonic() < deadline:
        seen.append(connections(database))
        if len(seen) >= 6 and len(set(seen[-6:])) == 1 and seen[-1] <= at_most:
            break
        time.sleep(1)
    return seen[-1]


@pytest.fixture(scope="module")
def database(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


@pytest.fixture(scope="module")
def first(database_url: str) -> Iterator[Server]:
    (server,) = start_servers(database_url, 1)
    try:
        yield server
    finally:
        server.stop()


def test_an_idle_serve_its_standby_and_an_api_process_stay_within_the_budget(
    database_url: str, database: str, first: Server
) -> None:
    serve = settled(database, SERVE_AT_MOST)
    print(f"\nidle ledger serve with its runners: {serve} connections")
    assert serve <= SERVE_AT_MOST

    (standby,) = start_servers(database_url, 1)
    try:
        both = settled(database, serve + STANDBY_AT_MOST)
        print(f"with a standby serve: {both} connections (standby {both - serve})")
        assert both - serve <= STANDBY_AT_MOST
    finally:
        standby.stop()

    (api_only,) = start_servers(database_url, 1, [{"LEDGER_RUN_PROJECTIONS": "false"}])
    try:
        with_api = settled(database, serve + API_ONLY_AT_MOST)
        print(f"with an API process without runners: {with_api} (API {with_api - serve})")
        assert with_api - serve <= API_ONLY_AT_MOST
    finally:
        api_only.stop()
