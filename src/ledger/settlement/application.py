"""The settlements application: settlement sagas, their line chunks and the case queue, in
an event log of their own. The steps that call out (collect, fetch, pay) are in `steps`;
what only records is here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import JSONTranscoder, Transcoding

from ledger.applications import LedgerApplication
from ledger.settlement.cases import Case, late_success_case_id
from ledger.settlement.chunks import CHUNK_SIZE, LineChunk, Part, chunk_id
from ledger.settlement.saga import Settlement


class DateAsIso(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class Settlements(LedgerApplication):
    """Settlements per (platform, period) and their cases."""

    name = "settlements"

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsIso())  # a settlement's period is a UTC day

    def approve(self, settlement_id: UUID, by: str) -> Settlement:
        """Pay the agreed amount while cases are open (`advance` pays it)."""
        return self._change(settlement_id, self.settlement, lambda s: s.approve(by))

    def resolve_case(self, case_id: UUID, outcome: str, note: str, by: str, now: datetime) -> Case:
        """An operator's resolution, recorded on the case and its settlement in one save,
        so reconciliation sees it at once (`advance` then pays when nothing is open)."""

        def decide() -> Case:
            case = self.case(case_id)
            decided = case.resolve(outcome, note, by, now)
            if case.settlement_id is None:
                self.save(case)
                return case
            settlement = self.settlement(case.settlement_id)
            settlement.case_resolved(case.id, decided.pay, case.theirs_figure)
            self.save(case, settlement)
            return case

        return self.commands.run(decide, case_id)

    def open_late_success(
        self,
        recharge_id: UUID,
        platform_id: UUID,
        detail: str,
        currency: str,
        now: datetime,
    ) -> Case:
        """A platform reported success for a recharge we had failed and released (its
        `Recharge.DiscrepancyFound`): a `late_success` case, once per recharge. Called by
        the runtime's dispatcher, which follows the recharges log."""
        case = Case(
            id=late_success_case_id(recharge_id),
            kind="late_success",
            platform_id=platform_id,
            settlement_id=None,
            period=None,
            order_no=str(recharge_id),
            line_kind="charge",
            ours=None,
            theirs=None,
            currency=currency,
            opened_at=now,
            detail=detail,
        )
        return self._create(case)

    # queries

    def settlement(self, settlement_id: UUID) -> Settlement:
        found: Settlement = self._get(settlement_id, Settlement, "settlement")
        return found

    def find_settlement(self, settlement_id: UUID) -> Settlement | None:
        if settlement_id not in self.repository:
            return None
        return self.settlement(settlement_id)

    def case(self, case_id: UUID) -> Case:
        found: Case = self._get(case_id, Case, "case")
        return found

    def chunks(self, settlement_id: UUID, part: Part, count: int) -> Iterator[LineChunk]:
        for number in range(count):
            chunk: LineChunk = self._get(chunk_id(settlement_id, part, number), LineChunk, "chunk")
            yield chunk

    def results(self, settlement: Settlement, offset: int, limit: int) -> list[tuple[str, Any]]:
        """A page of the settlement's matched lines as (currency, row), in matching order
        (every chunk but the last holds CHUNK_SIZE rows, so the page's chunk is known)."""
        rows: list[tuple[str, Any]] = []
        number = offset // CHUNK_SIZE
        start = offset % CHUNK_SIZE
        while len(rows) < limit and number < settlement.result_chunks:
            chunk = self._get(chunk_id(settlement.id, "results", number), LineChunk, "chunk")
            rows += [(chunk.currency, row) for row in chunk.rows[start:]]
            number, start = number + 1, 0
        return rows[:limit]
