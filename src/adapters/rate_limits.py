"""Fixed-window counters in PostgreSQL, shared by every API process."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limit:
    hits: int
    window_seconds: int


class RateLimiter:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def hit(self, scope: str, limit: Limit) -> int | None:
        """Count one hit; the seconds to wait if the window is already full, else None."""
        start = self._window_start(limit)
        with self.pool.connection() as conn:
            hits = conn.execute(
                "INSERT INTO rate_counters (scope, window_start, hits) "
                "VALUES (%s, to_timestamp(%s), 1) ON CONFLICT (scope, window_start) "
                "DO UPDATE SET hits = rate_counters.hits + 1 RETURNING hits",
                (scope, start),
            ).fetchone()[0]
        return None if hits <= limit.hits else self._retry_after(start, limit)

    def count(self, scope: str, limit: Limit) -> tuple[int, int]:
        """(hits in the current window, seconds until it ends), without counting."""
        start = self._window_start(limit)
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT hits FROM rate_counters "
                "WHERE scope = %s AND window_start = to_timestamp(%s)",
                (scope, start),
            ).fetchone()
        return (row[0] if row else 0), self._retry_after(start, limit)

    def prune(self, older_than_seconds: int = 86_400) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "DELETE FROM rate_counters WHERE window_start < now() - make_interval(secs => %s)",
                (older_than_seconds,),
            )

    @staticmethod
    def _window_start(limit: Limit) -> int:
        now = int(time.time())
        return now - now % limit.window_seconds

    @staticmethod
    def _retry_after(start: int, limit: Limit) -> int:
        return max(1, math.ceil(start + limit.window_seconds - time.time()))
