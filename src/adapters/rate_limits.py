"""Rate limits shared by every API process: sliding-window counters in PostgreSQL.

Hits are counted per fixed window; the estimate for "the last window's length" adds the
previous window's count weighted by how much of it still overlaps. So a limit reached just
before a window boundary does not reset at the boundary, and a burst across it is not let
through twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from adapters.database import RELAXED_COMMIT
from ledger.recharges.ports import Check, Limit

HIT = (
    "WITH hit AS (INSERT INTO rate_counters AS r (scope, window_start, hits) "
    "VALUES (%(scope)s, to_timestamp(%(start)s), 1) ON CONFLICT (scope, window_start) "
    "DO UPDATE SET hits = r.hits + 1 RETURNING r.hits) "
    "SELECT hit.hits, coalesce((SELECT hits FROM rate_counters WHERE scope = %(scope)s "
    "AND window_start = to_timestamp(%(previous)s)), 0) FROM hit"
)
"""One hit counted and the window before read, in one statement."""
COUNT = (
    "SELECT coalesce(sum(hits) FILTER (WHERE window_start = to_timestamp(%(start)s)), 0), "
    "coalesce(sum(hits) FILTER (WHERE window_start = to_timestamp(%(previous)s)), 0) "
    "FROM rate_counters WHERE scope = %(scope)s "
    "AND window_start IN (to_timestamp(%(start)s), to_timestamp(%(previous)s))"
)
CHECKS = (
    "SELECT hits_now, hits_before FROM " + RELAXED_COMMIT + ", rate_limit_checks("
    "%b::text[], %b::boolean[], %b::bigint[], %b::integer[], %b::bigint[], %s)"
)
"""Every check of a request in one statement (migrations/0019_rate_limit_checks.sql), committed
without waiting for the disk (`RELAXED_COMMIT`): the channel's counter is one row every
request updates, and each held it through a flush. The request commits synchronously before it
is answered (its idempotency record), which makes the hits durable; a crash before loses them
with the request."""


class RateLimiter:
    """The RateCounters port on PostgreSQL."""

    def __init__(self, pool: Any, clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.clock = clock
        """Seconds since the epoch; a test that compares two ways of deciding holds it still."""

    def hit(self, scope: str, limit: Limit) -> int | None:
        """Count one hit; the seconds to wait if that passes the limit, else None."""
        now = self.clock()
        start = window_start(now, limit)
        with self.pool.connection() as conn:
            current, previous = conn.execute(
                HIT, {"scope": scope, "start": start, "previous": start - limit.window_seconds}
            ).fetchone()
        if estimate(current, previous, now, start, limit) <= limit.hits:
            return None
        return wait(current, previous, now, start, limit)

    def count(self, scope: str, limit: Limit) -> tuple[float, int]:
        """(estimated hits over the last window, seconds until under the limit), no hit."""
        now = self.clock()
        start = window_start(now, limit)
        with self.pool.connection() as conn:
            current, previous = conn.execute(
                COUNT, {"scope": scope, "start": start, "previous": start - limit.window_seconds}
            ).fetchone()
        current, previous = int(current), int(previous)
        return estimate(current, previous, now, start, limit), wait(
            current, previous, now, start, limit
        )

    def check_all(self, checks: Sequence[Check]) -> tuple[int, int] | None:
        """Make the checks in turn in one statement, stopping at the first refused: (its
        index, the seconds to wait), or None when every one passed."""
        if not checks:
            return None
        now = self.clock()
        starts = [window_start(now, check.limit) for check in checks]
        with self.pool.connection() as conn:
            rows = conn.execute(
                CHECKS,
                (
                    [check.scope for check in checks],
                    [check.hit for check in checks],
                    starts,
                    [check.limit.window_seconds for check in checks],
                    [check.limit.hits for check in checks],
                    now,
                ),
            ).fetchall()
        for index, (current, previous) in enumerate(rows):
            check, start = checks[index], starts[index]
            if refused(check, estimate(current, previous, now, start, check.limit)):
                return index, wait(current, previous, now, start, check.limit)
        if len(rows) < len(checks):  # the database stopped here: never the case, same sums
            index = max(len(rows) - 1, 0)
            return index, 1
        return None

    def prune(self, older_than_seconds: int = 2 * 86_400) -> None:
        """Drop windows older than two days: a day-long window's estimate still reads the
        window before it."""
        with self.pool.connection() as conn:
            conn.execute(
                "DELETE FROM rate_counters WHERE window_start < now() - make_interval(secs => %s)",
                (older_than_seconds,),
            )


def refused(check: Check, estimated: float) -> bool:
    """A hit is refused past the limit; a count (the lock-out) once it reaches it."""
    return estimated > check.limit.hits if check.hit else estimated >= check.limit.hits


def window_start(now: float, limit: Limit) -> int:
    seconds = int(now)
    return seconds - seconds % limit.window_seconds


def estimate(current: int, previous: int, now: float, start: int, limit: Limit) -> float:
    overlap = 1 - (now - start) / limit.window_seconds
    return current + previous * overlap


def wait(current: int, previous: int, now: float, start: int, limit: Limit) -> int:
    """Seconds until one more hit would be within the limit again."""
    window = limit.window_seconds
    room = limit.hits - 1
    if current <= room:
        if previous == 0:
            return 1
        needed = 1 - (room - current) / previous
        return max(1, math.ceil((needed - (now - start) / window) * window))
    needed_next = 1 - room / current if current else 0
    return max(1, math.ceil(start + window - now + needed_next * window))
