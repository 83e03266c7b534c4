"""What every application of the ledger shares: the ledger's value objects in its events, a
command runner, and typed lookups that answer NotFound for an unknown id or another kind."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from ledger.commands import CommandRunner
from ledger.errors import NotFound
from ledger.transcodings import register_ledger_transcodings


class LedgerApplication:
    """Mixed into an eventsourcing Application (or EventSourcedProjection)."""

    repository: Any

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)  # type: ignore[call-arg]
        self.commands = CommandRunner()

    def register_transcodings(self, transcoder: Any) -> None:
        super().register_transcodings(transcoder)  # type: ignore[misc]
        register_ledger_transcodings(transcoder)

    def _get(self, aggregate_id: UUID, kind: type[Any] | tuple[type[Any], ...], what: str) -> Any:
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate
