"""The views of one process that follow one log commit their runs together: one transaction
for every view's run of a round instead of one per view.

The runners stay as they are, each with its own thread, cursor and run; each view writes its
own rows and its own tracking row, so a view's position is its own (blue/green rebuilds,
`ledger verify`). The first runner to hand in a run leads the round: it waits, at most
`WINDOW`, for the other views whose run is on its way (read by the log's reader past their
cursor, or read ahead), then writes every run handed in, in view order, in one transaction.

If that transaction fails, nothing of it stays and each runner applies its own run by itself,
exactly as a view alone does (a run, then its events one at a time, dead-lettering only the
failing one), so one view's failure neither holds the others back nor changes what is
dead-lettered. A round of one run is applied by itself, too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from eventsourcing.persistence import Tracking

from projections.base import TRANSIENT, ViewProjection, track_all

log = logging.getLogger(__name__)

WINDOW = 0.02
"""How long a round's leader waits at most for the runs on their way."""
POLL = 0.001
"""How often it looks again for runs on their way (a run handed in wakes it at once)."""


class Member(Protocol):
    """A view's runner taking part in the rounds."""

    def expecting(self) -> bool:
        """Whether a run of this runner's is on its way."""


@dataclass(eq=False)
class Handed:
    """One runner's run, handed in for the next round, and what became of it."""

    member: Member
    projection: ViewProjection
    run: Sequence[tuple[Any, Tracking]]
    done: bool = False
    committed: bool = False
    error: BaseException | None = None


@dataclass(eq=False)
class CommitRounds:
    """The commit rounds of the view runners of one process that follow one log."""

    window: float = WINDOW
    shared_commits: int = 0
    """Transactions that committed the runs of several views."""
    _members: set[Member] = field(default_factory=set)
    _handed: list[Handed] = field(default_factory=list)
    _leading: bool = False
    _turn: threading.Condition = field(default_factory=threading.Condition)

    def join(self, member: Member) -> None:
        with self._turn:
            self._members.add(member)

    def leave(self, member: Member) -> None:
        with self._turn:
            self._members.discard(member)
            self._turn.notify_all()

    def apply(self, member: Member, projection: ViewProjection, run: Sequence[Any]) -> None:
        """Apply a view's run: in a round with the other views' runs, or by itself."""
        handed = Handed(member, projection, run)
        with self._turn:
            self._handed.append(handed)
            self._turn.notify_all()
            while self._leading and not handed.done:
                self._turn.wait()
            leads = not handed.done
            self._leading = self._leading or leads
        if leads:
            try:
                self._lead()
            finally:
                with self._turn:
                    self._leading = False
                    self._turn.notify_all()
        if handed.error is not None:
            raise handed.error
        if not handed.committed:
            projection.process_run(run)

    def _lead(self) -> None:
        deadline = time.monotonic() + self.window
        with self._turn:
            while (left := deadline - time.monotonic()) > 0 and self._on_their_way():
                self._turn.wait(min(POLL, left))
            handed, self._handed = self._handed, []
        try:
            if len(handed) > 1 and len({h.projection.view.datastore for h in handed}) == 1:
                self._commit(handed)
        finally:
            with self._turn:
                for each in handed:
                    each.done = True
                self._turn.notify_all()

    def _on_their_way(self) -> bool:
        """Whether another member's run is on its way (it has not handed one in yet)."""
        waiting = {h.member for h in self._handed}
        return any(m not in waiting and m.expecting() for m in self._members)

    def _commit(self, handed: list[Handed]) -> None:
        """Every run in one transaction, each view's rows and its tracking; if it fails, each
        is left to apply its run by itself (a lost connection: each meets it by itself)."""
        ordered = sorted(handed, key=lambda h: h.projection.view.view_name)
        try:
            with ordered[0].projection.view.datastore.transaction(commit=True) as curs:
                deferred = [
                    statement
                    for each in ordered
                    for statement in each.projection.view.apply_leading(curs, each.run)
                ]
                tracked = [(each.projection.view, each.run[-1][1]) for each in ordered]
                track_all(curs, tracked, deferred)
        except TRANSIENT as error:
            if rolled_back(error):
                log.info("a round of %d views was rolled back; each applies its run", len(handed))
            else:
                for each in handed:
                    each.error = error
        except Exception:
            log.info("a round of %d views failed; each applies its run", len(handed))
        else:
            self.shared_commits += 1
            for each in handed:
                each.committed = True


def rolled_back(error: BaseException) -> bool:
    """A deadlock or a serialization failure: the server rolled the transaction back, the
    connection is fine (eventsourcing raises its own error from psycopg's)."""
    errors = psycopg.errors
    rollback = (errors.TransactionRollback, errors.DeadlockDetected, errors.SerializationFailure)
    return isinstance(error, rollback) or isinstance(error.__cause__, rollback)
