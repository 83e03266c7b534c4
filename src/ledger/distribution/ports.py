"""What the distribution application calls out through: the vault of a batch's clear codes."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID


class IssuedCodes(Protocol):
    """A batch's clear codes, kept sealed from before the batch is saved until its answer is
    stored, so that a retry whose first answer was lost (the process died between the save and
    the answer) shows the very codes that hold the batch's units."""

    def keep(self, batch_id: UUID, channel_id: UUID, codes: list[str]) -> None:
        """Seal one attempt's codes; an attempt never replaces another's."""
        ...

    def recall(self, batch_id: UUID, channel_id: UUID) -> list[list[str]]:
        """Every attempt's codes kept for this batch, opened."""
        ...

    def forget(self, batch_id: UUID) -> None:
        """Drop the batch's kept codes (its answer is stored, or it was never saved)."""
        ...
