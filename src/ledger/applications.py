"""What every application of the ledger shares: the ledger's value objects in its events, a
command runner, typed lookups that answer NotFound for an unknown id or another kind, the
three ways a command records: once by id, create, change, and group commit of its saves."""

from __future__ import annotations

import threading
from collections.abc import Callable
from copy import deepcopy
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Notification, Recording

from ledger.commands import CommandRunner
from ledger.errors import DomainError, NotFound
from ledger.group_commit import GroupCommitter
from ledger.transcodings import register_ledger_transcodings

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)

GROUP_COMMIT = "LEDGER_GROUP_COMMIT"
"""`off` saves every command alone (to compare); on by default."""
OFF = ("off", "false", "0", "n", "no")


def read_first(read: T | None, get: Callable[[UUID], T]) -> Callable[[UUID], T]:
    """A command's getter that answers `read` (the aggregate as the caller just read it, its
    own copy) the first time it is asked for that aggregate, so that a command reads each
    aggregate once, and reads afresh after that: a save on a stale `read` conflicts (its
    version is taken), and the command decides again on what it reads then."""
    first = [read] if read is not None else []

    def get_first(aggregate_id: UUID) -> T:
        if first and getattr(first[0], "id", None) == aggregate_id:
            return first.pop()
        return get(aggregate_id)

    return get_first


def mutate_each(aggregate: Any, events: Any) -> Any:
    """eventsourcing's project_aggregate without its per-event isinstance check against a
    runtime Protocol (typing's slow path; with the save's, 8 checks a stock purchase): every
    event the ledger stores is an aggregate event, so each mutates."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class Reads:
    """One aggregate's reads of its new events: how many began and ended, and what the last
    one that succeeded found (a cached aggregate is replaced, never changed: a copy taken of
    it outside any lock is whole)."""

    __slots__ = ("changed", "began", "ended", "found", "found_by", "reading", "users")

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.began = self.ended = self.found_by = self.users = 0
        self.reading = False
        self.found: Any = None


class LedgerRepository(Repository[UUID]):
    """The repository, projecting with `mutate_each` unless asked otherwise, and bringing a
    cached aggregate up to date once for every thread that asks for it at once.

    eventsourcing's fast-forward reads an aggregate's new events under a lock of the
    aggregate's, one thread after another, a round trip each: every API request read its
    channel so, and every worker thread the platform it calls. Here a thread that asks while
    a read is under way waits for the next read, which begins after it asked, and takes what
    that read found: so it sees every event recorded before it asked, as before, and however
    many threads ask at once, there are at most two reads."""

    _reads: dict[UUID, Reads]
    _reads_lock: threading.Lock

    @classmethod
    def made_of(cls, repository: Repository[UUID]) -> LedgerRepository:
        """eventsourcing's repository, built from the application's environment, as one of
        these."""
        repository.__class__ = cls
        assert isinstance(repository, cls)
        repository._reads, repository._reads_lock = {}, threading.Lock()
        return repository

    def get(self, aggregate_id: UUID, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", mutate_each)
        shared = (
            self.cache
            and self.fastforward
            and kwargs.get("version") is None
            and not (kwargs.get("fastforward_skipping") or self.fastforward_skipping)
        )
        if not shared:
            return super().get(aggregate_id, **kwargs)
        aggregate = self._read_once_for_all(aggregate_id, kwargs["projector_func"])
        if kwargs.get("deepcopy_from_cache", True) and self.deepcopy_from_cache:
            aggregate = deepcopy(aggregate)
        return aggregate

    def _read_once_for_all(self, aggregate_id: UUID, projector: Any) -> Any:
        with self._reads_lock:
            reads = self._reads.get(aggregate_id)
            if reads is None:
                reads = self._reads[aggregate_id] = Reads()
            reads.users += 1
        try:
            while True:
                with reads.changed:
                    needed = reads.began + 1  # the first read to begin after this thread asked
                    while reads.ended < needed and reads.reading:
                        reads.changed.wait()
                    if reads.ended >= needed:
                        if reads.found_by >= needed:
                            return reads.found
                        continue  # that read failed: this thread reads for itself
                    reads.began += 1
                    reads.reading = True
                    number = reads.began
                found = None
                try:
                    found = self._fast_forwarded(aggregate_id, projector)
                    return found
                finally:
                    with reads.changed:
                        reads.reading = False
                        reads.ended = number
                        if found is not None:
                            reads.found, reads.found_by = found, number
                        reads.changed.notify_all()
        finally:
            with self._reads_lock:
                reads.users -= 1
                if not reads.users:
                    del self._reads[aggregate_id]

    def _fast_forwarded(self, aggregate_id: UUID, projector: Any) -> Any:
        """The cached aggregate with the events recorded after it: a new object in the cache
        if there were any (the cached one is left as it was), read from its events if it was
        not cached."""
        assert self.cache is not None
        try:
            cached = self.cache.get(aggregate_id)
        except KeyError:
            aggregate = self._reconstruct_aggregate(aggregate_id, None, projector)
            self.cache.put(aggregate_id, aggregate)
            return aggregate
        new_events = list(self.event_store.get(originator_id=aggregate_id, gt=cached.version))
        if not new_events:
            return cached
        aggregate = projector(deepcopy(cached), new_events)
        if aggregate is None:
            raise AggregateNotFoundError(aggregate_id)
        self.cache.put(aggregate_id, aggregate)
        return aggregate


class LedgerApplication(Application[UUID]):
    """The base of every application of the ledger (an EventSourcedProjection too).

    Saves of concurrent commands (threads of one process) are committed together when they
    arrive together (ledger.group_commit), unless LEDGER_GROUP_COMMIT is off or the class
    sets `group_commit = False`."""

    group_commit: bool = True

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.commands = CommandRunner()
        self.committer: GroupCommitter | None = None
        if self.group_commit and self.env.get(GROUP_COMMIT, "on").lower() not in OFF:
            # insert_events looked up at each save (a wrapper set on the recorder later is used);
            # the recorder, not the application, is held: no cycle keeps an unclosed
            # application (and its connections) alive past its last reference
            recorder = self.recorder
            self.committer = GroupCommitter(lambda events: recorder.insert_events(events))

    def construct_repository(self) -> Repository[UUID]:
        return LedgerRepository.made_of(super().construct_repository())

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_ledger_transcodings(transcoder)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Application.save, through the group committer: the events of these aggregates are
        stored together, in the batch of whatever other commands are saving now."""
        if self.committer is None or kwargs:
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        # ProcessingEvent.collect_events, without its isinstance checks against runtime
        # Protocols: a command saves aggregates (and, rarely, a bare event)
        for obj in objs:
            if obj is None:
                continue
            if isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        events = processing_event.events
        if not events:
            return super().save()
        stored = [self.mapper.to_stored_event(event) for event in events]
        ids = self.committer.commit(stored)
        recordings = [
            Recording(
                event,
                Notification(
                    id=notification_id,
                    originator_id=s.originator_id,
                    originator_version=s.originator_version,
                    topic=s.topic,
                    state=s.state,
                ),
            )
            for event, s, notification_id in zip(events, stored, ids or [], strict=False)
        ]
        if self.repository.cache and not self.repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                self.repository.cache.put(aggregate_id, aggregate)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)
        return recordings

    def _get(self, aggregate_id: UUID, kind: type[Any] | tuple[type[Any], ...], what: str) -> Any:
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate

    def _record_once(
        self,
        command_id: UUID,
        decide: Callable[[], T],
        replay: Callable[[], T],
        *aggregate_ids: UUID | None,
    ) -> T:
        """Run a command whose decision records a new aggregate under `command_id`, once: a
        repeated command id returns what the first run recorded (`replay`).

        The first run is the common case, so the event store's uniqueness of the id is what
        detects a repeat: only a save that conflicts, or a refusal, asks whether the id was
        recorded already. A conflict on another aggregate is decided again on fresh state.
        """

        def decide_unless_recorded() -> T:
            try:
                return decide()
            except (IntegrityError, DomainError):
                if command_id in self.repository:
                    return replay()
                raise

        ids = [i for i in (command_id, *aggregate_ids) if i is not None]
        return self.commands.run(decide_unless_recorded, *ids)

    def _create(self, aggregate: A, *more: Aggregate) -> A:
        """Save new aggregates; if the first one's id was already taken (the same command
        again), return what was recorded under it."""
        kind = type(aggregate)
        try:
            self.save(aggregate, *more)
        except IntegrityError:
            found: A = self._get(aggregate.id, kind, kind.__name__.lower())
            return found
        return aggregate

    def _change(
        self, aggregate_id: UUID, get: Callable[[UUID], A], change: Callable[[A], Any]
    ) -> A:
        """Get an aggregate, change it, and save it if the change recorded anything."""

        def decide() -> A:
            aggregate = get(aggregate_id)
            change(aggregate)
            if aggregate.pending_events:
                self.save(aggregate)
            return aggregate

        return self.commands.run(decide, aggregate_id)
