"""What moves settlements along without anyone asking: a sweeper that advances every
settlement with a step due (from the settlements view), every few seconds.

Each step is durable and `advance` is idempotent, so a process killed mid-step leaves the
settlement where its last save put it, and the next sweep (of this process or any other)
resumes it; two sweepers at once conflict on the save and one of them decides again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ledger.settlement.steps import SettlementSteps
from projections.settlements import SettlementsReader

log = logging.getLogger(__name__)


class SettlementSweeper(threading.Thread):
    """Advances due settlements; a settlement that fails is logged and tried next sweep."""

    def __init__(self, steps: SettlementSteps, pool: Any, every: float = 5.0) -> None:
        super().__init__(name="settlement-sweeper", daemon=True)
        self.steps = steps
        self.reader = SettlementsReader(pool)
        self.every = every
        self.sweeps = 0
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                self.sweep()
            except Exception:
                log.exception("settlement sweep failed; trying again in %s s", self.every)

    def sweep(self) -> int:
        """Advance every due settlement once; returns how many were advanced."""
        self.sweeps += 1
        advanced = 0
        for settlement_id in self.reader.due():
            if self.stopping.is_set():
                break
            try:
                self.steps.advance(settlement_id)
                advanced += 1
            except Exception:
                log.exception("settlement %s: step failed; next sweep", settlement_id)
        return advanced
