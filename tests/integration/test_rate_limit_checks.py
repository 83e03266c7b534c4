"""A request's rate limits and lock-out in one statement (migrations/0019): the checks are made
in turn, the first refused stops the rest (a narrower limit's refusal never counts towards a
wider one), a counting check only reads, and every decision is the one the checks made one by
one would take."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from adapters.database import open_pool
from adapters.rate_limits import RateLimiter
from ledger.recharges.ports import Check, Limit

pytestmark = pytest.mark.integration

HOUR = 3600


@pytest.fixture
def limiter(database_url: str) -> Iterator[RateLimiter]:
    pool = open_pool(database_url, size=4, name="rate-limit-checks")
    try:
        yield RateLimiter(pool)
    finally:
        pool.close()


def hits(url: str, scope: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(hits), 0) FROM rate_counters WHERE scope = %s", (scope,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_first_refusal_stops_the_checks_after_it(
    database_url: str, limiter: RateLimiter
) -> None:
    checks = [
        Check("narrow", Limit(5, HOUR)),
        Check("tight", Limit(1, HOUR)),
        Check("ceiling", Limit(100, HOUR)),
    ]
    assert limiter.check_all(checks) is None
    refused = limiter.check_all(checks)
    assert refused is not None and refused[0] == 1 and refused[1] >= 1
    assert (hits(database_url, "narrow"), hits(database_url, "tight")) == (2, 2)
    assert hits(database_url, "ceiling") == 1, "the refused request never reached the ceiling"


def test_limits_past_the_range_of_an_integer_are_limits(limiter: RateLimiter) -> None:
    """A limit raised out of the way (the benchmarks' 10**9 a minute, five times that for an
    account's ceiling) is checked, not refused by the database."""
    checks = [Check("raised", Limit(10**9, 60)), Check("ceiling", Limit(5 * 10**9, 60))]
    assert limiter.check_all(checks) is None


def test_a_counting_check_reads_only_and_refuses_at_the_limit(
    database_url: str, limiter: RateLimiter
) -> None:
    lockout = Check("wrong-codes:203.0.113.7", Limit(2, 900), hit=False)
    after = Check("after-the-lockout", Limit(100, HOUR))
    assert limiter.check_all([lockout, after]) is None
    limiter.hit("wrong-codes:203.0.113.7", Limit(2, 900))
    limiter.hit("wrong-codes:203.0.113.7", Limit(2, 900))
    refused = limiter.check_all([lockout, after])
    assert refused is not None and refused[0] == 0
    assert hits(database_url, "wrong-codes:203.0.113.7") == 2, "a count adds nothing"
    assert hits(database_url, "after-the-lockout") == 1
    assert limiter.count("wrong-codes:203.0.113.7", Limit(2, 900))[0] == 2


def test_every_decision_is_the_one_the_checks_made_one_by_one_take(
    limiter: RateLimiter,
) -> None:
    """A model: the same random requests against scopes of their own, checked with `hit` and
    `count` one at a time in the placement's order, give the same refusals and the same waits.
    The clock is held still: a wait is counted from the instant of the call, and two calls a
    moment apart may straddle a second."""
    instant = time.time()
    limiter.clock = lambda: instant
    chance = random.Random(11)
    for _ in range(60):
        limits = [Limit(chance.randint(1, 4), HOUR) for _ in range(3)]
        counting = chance.random() < 0.3
        one_call = [Check(f"all:{n}", limit) for n, limit in enumerate(limits)]
        one_by_one = [Check(f"each:{n}", limit) for n, limit in enumerate(limits)]
        if counting:
            one_call.insert(0, Check("all:count", Limit(3, HOUR), hit=False))
            one_by_one.insert(0, Check("each:count", Limit(3, HOUR), hit=False))
            if chance.random() < 0.5:
                limiter.hit("all:count", Limit(3, HOUR))
                limiter.hit("each:count", Limit(3, HOUR))
        assert limiter.check_all(one_call) == sequential(limiter, one_by_one)


def sequential(limiter: RateLimiter, checks: list[Check]) -> tuple[int, int] | None:
    for index, check in enumerate(checks):
        if check.hit:
            wait = limiter.hit(check.scope, check.limit)
            if wait is not None:
                return index, wait
        else:
            estimated, wait = limiter.count(check.scope, check.limit)
            if estimated >= check.limit.hits:
                return index, wait
    return None


def test_concurrent_requests_never_pass_more_than_the_limit(
    database_url: str, limiter: RateLimiter
) -> None:
    passed: list[Any] = []
    barrier = threading.Barrier(8)

    def request() -> None:
        barrier.wait()
        for _ in range(5):
            if limiter.check_all([Check("shared", Limit(12, HOUR))]) is None:
                passed.append(1)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(passed) == 12
    assert hits(database_url, "shared") == 40
