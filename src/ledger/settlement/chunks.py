"""A settlement's lines, recorded in chunks: a period may hold 100,000 orders, so no single
event carries more than CHUNK_SIZE lines. Each chunk is an aggregate of one event whose id
follows from the settlement's id, the part (`ours`, `theirs`, `results`, `carried`) and its
number, so a reader finds every chunk without an index."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal, cast
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.money import Money
from ledger.settlement.decisions import Carried, Result
from ledger.settlement.ports import Line, LineKind

CHUNK_SIZE = 1000
Part = Literal["ours", "theirs", "results", "carried"]


def chunk_id(settlement_id: UUID, part: Part, number: int) -> UUID:
    return uuid.uuid5(settlement_id, f"{part}:{number}")


class LineChunk(Aggregate):
    """Up to CHUNK_SIZE rows of one part of a settlement, in one event."""

    @event("Recorded")
    def __init__(
        self, id: UUID, settlement_id: UUID, part: str, number: int, currency: str, rows: list[Any]
    ) -> None:
        self.settlement_id = settlement_id
        self.part = part
        self.number = number
        self.currency = currency
        self.rows = rows


def chunked(
    settlement_id: UUID, part: Part, currency: str, rows: Sequence[list[Any]]
) -> list[LineChunk]:
    return [
        LineChunk(
            id=chunk_id(settlement_id, part, n),
            settlement_id=settlement_id,
            part=part,
            number=n,
            currency=currency,
            rows=list(rows[start : start + CHUNK_SIZE]),
        )
        for n, start in enumerate(range(0, len(rows), CHUNK_SIZE))
    ]


def line_row(line: Line) -> list[Any]:
    return [line.order_no, line.kind, line.amount.amount, line.at.isoformat()]


def row_line(row: Sequence[Any], currency: str) -> Line:
    order_no, kind, amount, at = row
    return Line(str(order_no), cast(LineKind, kind), Money(int(amount), currency), _at(at))


def carried_row(carried: Carried) -> list[Any]:
    return [carried.side, *line_row(carried.line)]


def row_carried(row: Sequence[Any], currency: str) -> Carried:
    line = row_line(row[1:], currency)
    return Carried("ours", line) if row[0] == "ours" else Carried("theirs", line)


def result_row(result: Result) -> list[Any]:
    """[order_no, kind, ours, theirs, match, disposition]: amounts in minor units or None."""
    ours = result.ours.amount.amount if result.ours else None
    theirs = result.theirs.amount.amount if result.theirs else None
    return [result.order_no, result.kind, ours, theirs, result.match, result.disposition]


def rows_of(chunks: Sequence[LineChunk]) -> Iterator[tuple[str, list[Any]]]:
    for chunk in chunks:
        for row in chunk.rows:
            yield chunk.currency, row


def _at(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
