"""Rate limits shared by every API process: sliding-window counters in PostgreSQL.

Hits are counted per fixed window; the estimate for "the last window's length" adds the
previous window's count weighted by how much of it still overlaps. So a limit reached just
before a window boundary does not reset at the boundary, and a burst across it is not let
through twice.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ledger.recharges.ports import Limit


class RateLimiter:
    """The RateCounters port on PostgreSQL."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def hit(self, scope: str, limit: Limit) -> int | None:
        """Count one hit; the seconds to wait if that passes the limit, else None."""
        now = time.time()
        start = window_start(now, limit)
        with self.pool.connection() as conn:
            current = conn.execute(
                "INSERT INTO rate_counters (scope, window_start, hits) "
                "VALUES (%s, to_timestamp(%s), 1) ON CONFLICT (scope, window_start) "
                "DO UPDATE SET hits = rate_counters.hits + 1 RETURNING hits",
                (scope, start),
            ).fetchone()[0]
            previous = self._hits(conn, scope, start - limit.window_seconds)
        if estimate(current, previous, now, start, limit) <= limit.hits:
            return None
        return wait(current, previous, now, start, limit)

    def count(self, scope: str, limit: Limit) -> tuple[float, int]:
        """(estimated hits over the last window, seconds until under the limit), no hit."""
        now = time.time()
        start = window_start(now, limit)
        with self.pool.connection() as conn:
            current = self._hits(conn, scope, start)
            previous = self._hits(conn, scope, start - limit.window_seconds)
        return estimate(current, previous, now, start, limit), wait(
            current, previous, now, start, limit
        )

    def prune(self, older_than_seconds: int = 2 * 86_400) -> None:
        """Drop windows older than two days: a day-long window's estimate still reads the
        window before it."""
        with self.pool.connection() as conn:
            conn.execute(
                "DELETE FROM rate_counters WHERE window_start < now() - make_interval(secs => %s)",
                (older_than_seconds,),
            )

    @staticmethod
    def _hits(conn: Any, scope: str, start: int) -> int:
        row = conn.execute(
            "SELECT hits FROM rate_counters WHERE scope = %s AND window_start = to_timestamp(%s)",
            (scope, start),
        ).fetchone()
        return int(row[0]) if row else 0


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
