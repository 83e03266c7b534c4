"""Running a command against fresh state until it saves without a conflict.

Two processes that change one aggregate at once both try to append its next version; the
event store lets one in and raises IntegrityError for the other, which then decides again on
fresh state. Threads of one process take a striped lock first, so conflicts are mostly between
processes and retries stay few.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

T = TypeVar("T")

MAX_ATTEMPTS = 60
STRIPES = 512


class ConflictPersisted(RuntimeError):
    """A command lost the race for its aggregates more times than the limit allows."""

    code = "conflict"


class CommandRunner:
    """Runs each command under the striped locks of the aggregates it names, so two commands
    of one process never decide on one aggregate at once (two aggregates may share a stripe:
    their commands then wait for each other, saves included)."""

    def __init__(self, stripes: int = STRIPES) -> None:
        self._stripes = [threading.Lock() for _ in range(stripes)]

    def run(self, decide_and_save: Callable[[], T], *aggregate_ids: UUID) -> T:
        count = len(self._stripes)
        stripes = sorted({hash(aggregate_id) % count for aggregate_id in aggregate_ids})
        for attempt in range(MAX_ATTEMPTS):
            with ExitStack() as held:
                for stripe in stripes:
                    held.enter_context(self._stripes[stripe])
                try:
                    return decide_and_save()
                except IntegrityError:
                    pass
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise ConflictPersisted(f"gave up after {MAX_ATTEMPTS} conflicting attempts")
