"""Which of an acceptance's commits wait for the disk, counted in the server's own WAL flushes
(pg_stat_wal.wal_sync) on a PostgreSQL cluster of the test's own with fsync on: the key's claim
(with or without a nonce), the rate limits' checks, the look at the live verification codes and
their use commit without waiting (`adapters.database.RELAXED_COMMIT`); the first answer's record,
a claim given up and a single rate-limit hit (the lock-out's count) each wait for their flush.
The relaxed ones are made durable by the synchronous commit that follows them in the same
request before its answer (PostgreSQL flushes its log in order)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from adapters.rate_limits import RateLimiter
from adapters.verification import LIVE_CODES_LOOKED_AT, USE
from api.idempotency import ABANDON, CLAIM, FINISH, SPEND_NONCE_AND_CLAIM
from ledger.recharges.ports import Check, Limit
from tests.e2e.private_postgres import PrivateCluster, private_cluster

pytestmark = pytest.mark.integration

TIMES = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster(fsync="on", synchronous_commit="on") as started:
        yield started


@pytest.fixture(scope="module")
def conn(cluster: PrivateCluster) -> Iterator[psycopg.Connection[Any]]:
    from api.runtime.schema import apply_migrations

    url = cluster.create_database("ledger")
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as connection:
        assert connection.execute("SHOW fsync").fetchone() == ("on",)
        yield connection


class OneConnection:
    """A pool of the one connection whose flushes are counted."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        yield self.conn


def flushes(conn: psycopg.Connection[Any], run: Callable[[int], object]) -> int:
    """The WAL flushes this connection's backend made while `run(i)` ran TIMES times."""

    def counted() -> int:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
        assert row is not None
        return int(row[0])

    counted()
    before = counted()
    for i in range(TIMES):
        run(i)
    conn.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(0.05)
    return counted() - before


def fresh() -> str:
    return uuid.uuid4().hex


def a_live_code(conn: psycopg.Connection[Any], channel: uuid.UUID, account: str) -> None:
    conn.execute(
        "INSERT INTO verification_codes (channel_id, account, code_hash, nonce, expires_at) "
        "VALUES (%s, %s, %s, %s, now() + interval '5 minutes')",
        (channel, account, os.urandom(32), os.urandom(16)),
    )


def test_a_synchronous_statement_is_seen_flushing_each_time(conn: psycopg.Connection[Any]) -> None:
    """The yardstick: a claim given up and a recorded answer each wait for their flush."""
    principal = f"channel:{fresh()}"
    keys = [fresh() for _ in range(TIMES)]
    for key in keys:
        conn.execute(CLAIM, (principal, key, b"hash"))
    finished = flushes(
        conn, lambda i: conn.execute(FINISH, (201, b"{}", False, principal, keys[i]))
    )
    assert finished >= TIMES * 0.9, finished
    for key in keys:
        conn.execute(CLAIM, (principal, key + "-b", b"hash"))
    abandoned = flushes(conn, lambda i: conn.execute(ABANDON, (principal, keys[i] + "-b")))
    assert abandoned >= TIMES * 0.9, abandoned


def test_an_acceptance_s_claim_checks_and_use_do_not_wait_for_the_disk(
    conn: psycopg.Connection[Any],
) -> None:
    principal = f"channel:{fresh()}"
    claimed = flushes(conn, lambda i: conn.execute(CLAIM, (principal, fresh(), b"h")))
    spent = flushes(
        conn,
        lambda i: conn.execute(
            SPEND_NONCE_AND_CLAIM, ("key-id", fresh(), principal, fresh(), b"h")
        ).fetchone(),
    )
    limiter = RateLimiter(OneConnection(conn))
    per_minute = Limit(10_000, 60)
    checked = flushes(
        conn,
        lambda i: limiter.check_all(
            [Check(f"wrong-codes:{i}", Limit(10, 900), hit=False),
             Check(f"recharge-account:{i}", per_minute), Check("recharge-channel:c", per_minute)]
        ),
    )  # fmt: skip
    channel, account = uuid.uuid4(), f"1390000{fresh()[:4]}"
    for _ in range(3):
        a_live_code(conn, channel, account)
    looked = flushes(
        conn,
        lambda i: conn.execute(LIVE_CODES_LOOKED_AT, ("sender", channel, account)).fetchall(),
    )
    used = flushes(
        conn,
        lambda i: (
            a_live_code(conn, channel, account),
            conn.execute(USE, {"channel": channel, "account": account, "sender": f"s{i}"}),
        ),
    )
    # a_live_code's own INSERT is synchronous: the use adds nothing to its one flush each
    hit = flushes(conn, lambda i: limiter.hit(f"wrong-codes:{fresh()}", Limit(10, 900)))
    counted = {"claim": claimed, "nonce and claim": spent, "rate limits": checked,
               "live codes looked at": looked, "use (after a synchronous insert)": used - TIMES,
               "a single hit (synchronous)": hit}  # fmt: skip
    # the WAL writer flushes relaxed commits now and then (every 200 ms): a few, not one each
    assert claimed < TIMES / 4, counted
    assert spent < TIMES / 4, counted
    assert checked < TIMES / 4, counted
    assert looked < TIMES / 4, counted
    assert used - TIMES < TIMES / 4, counted
    assert hit >= TIMES * 0.9, counted


def test_a_relaxed_commit_is_visible_at_once_and_made_durable_by_the_next_synchronous_one(
    cluster: PrivateCluster, conn: psycopg.Connection[Any]
) -> None:
    """Visible to every other session as soon as it returns; a synchronous commit after it
    flushes the log past it, so a crash then (immediate shutdown: no checkpoint, no flush of
    its own) keeps it."""
    principal, key = f"channel:{fresh()}", fresh()
    conn.execute(CLAIM, (principal, key, b"h"))
    with psycopg.connect(cluster.url("ledger"), autocommit=True) as other:
        seen = other.execute(
            "SELECT state FROM idempotency_keys WHERE principal = %s AND key = %s",
            (principal, key),
        ).fetchone()
        assert seen == ("in_flight",)
    # a later request's answer recorded: a synchronous commit that writes (one that changed
    # nothing writes no commit record and flushes nothing)
    later = fresh()
    conn.execute(CLAIM, (principal, later, b"h"))
    conn.execute(FINISH, (201, b"{}", False, principal, later))
    cluster.stop("immediate")
    cluster.start()
    with psycopg.connect(cluster.url("ledger"), autocommit=True) as after:
        kept = after.execute(
            "SELECT state FROM idempotency_keys WHERE principal = %s AND key = %s",
            (principal, key),
        ).fetchone()
        answered = after.execute(
            "SELECT state FROM idempotency_keys WHERE principal = %s AND key = %s",
            (principal, later),
        ).fetchone()
    assert kept == ("in_flight",)
    assert answered == ("done",)
