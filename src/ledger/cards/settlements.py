"""Merchant settlements: the use cases that open, collect and pay a merchant's period.

They run on the cards application (its event log, its payouts port), so a settlement's
postings and holds are in the same log as the consumptions that built the payable. Which
lines are still unsettled comes from a read model of the cards log (the `StatementLines`
port), asked only while the merchant's settlement book is part of the save: two collections
for one merchant cannot both take a line.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol
from uuid import UUID

from ledger.cards.application import NO_PAYOUTS, Cards, needed
from ledger.cards.merchant_settlement import (
    MAX_LINES,
    MerchantSettlement,
    MerchantSettlementBook,
    StatementLine,
    book_id,
    cutoff_of,
    parse_period,
    settlement_id,
)
from ledger.cards.ports import PayoutResult
from ledger.errors import NotFound

log = logging.getLogger(__name__)

NO_STATEMENTS = "no merchant statements are readable here"


class StatementLines(Protocol):
    def unsettled(self, merchant_id: UUID, before: datetime, limit: int) -> list[StatementLine]:
        """The merchant's lines recorded before `before` that no settlement has collected,
        oldest first, read after catching up with the cards log (Unavailable if it cannot)."""
        ...


class MerchantSettlements:
    """Open a settlement for a merchant's closed day, collect its lines, pay what is due.
    Without statement lines (a tool that only reads) collecting is refused as unavailable."""

    def __init__(self, cards: Cards, lines: StatementLines | None = None) -> None:
        self.cards = cards
        self.lines = lines

    def open(self, merchant_id: UUID, period: str, close_now: bool = False) -> MerchantSettlement:
        """The settlement of (merchant, period), opened once and taken as far as it goes now;
        asking again answers the same settlement (and moves it on if it was left behind)."""
        needed(self.cards.payouts, NO_PAYOUTS)  # refused before anything is recorded
        merchant = self.cards.merchant(merchant_id)
        day = parse_period(period)
        wanted = settlement_id(merchant.id, day)
        if wanted not in self.cards.repository:
            cutoff = cutoff_of(day, merchant.zone, self.cards.clock(), close_now)
            opened = MerchantSettlement(
                id=wanted,
                merchant_id=merchant.id,
                period=day.isoformat(),
                timezone=merchant.timezone,
                cutoff=cutoff,
            )
            self.cards._create(opened)
        return self.advance(wanted)

    def advance(self, wanted: UUID) -> MerchantSettlement:
        """Collect if still collecting, then pay what is unpaid (the sweeper's retry)."""
        settlement = self.settlement(wanted)
        if settlement.status == "collecting":
            settlement = self.collect(wanted)
        if settlement.status == "paying":
            settlement = self.pay(settlement)
        return settlement

    def collect(self, wanted: UUID) -> MerchantSettlement:
        merchant_id = self.settlement(wanted).merchant_id

        def decide() -> MerchantSettlement:
            settlement = self.settlement(wanted)
            if settlement.status != "collecting":
                return settlement
            book = self.book(merchant_id)
            reader = needed(self.lines, NO_STATEMENTS)
            lines = reader.unsettled(merchant_id, settlement.cutoff, MAX_LINES)
            settlement.collect(lines, book.carry)
            book.record(settlement)
            self.cards.save(settlement, book)
            return settlement

        return self.cards.commands.run(decide, wanted, book_id(merchant_id))

    def pay(self, settlement: MerchantSettlement) -> MerchantSettlement:
        """Ask each unpaid payout, with its own id every time: a payout made by a process that
        died before recording it is answered the same, not made again."""
        payouts = needed(self.cards.payouts, NO_PAYOUTS)
        for payout, amount in settlement.unpaid():
            try:
                result = payouts.pay_out(payout, settlement.merchant_id, amount)
            except Exception:  # noqa: BLE001 - any lost answer leaves it paying, retried later
                log.warning("settlement %s: payout %s unanswered", settlement.id, payout)
                continue
            settlement = self.record_payout(settlement.id, amount.currency, result)
        return settlement

    def record_payout(
        self, wanted: UUID, currency: str, result: PayoutResult
    ) -> MerchantSettlement:
        def decide() -> MerchantSettlement:
            settlement = self.settlement(wanted)
            if result.paid:
                settlement.payout_paid(currency, result.reference)
            else:
                settlement.payout_failed(currency, result.reason)
            if settlement.pending_events:
                self.cards.save(settlement)
            return settlement

        return self.cards.commands.run(decide, wanted)

    # queries

    def settlement(self, wanted: UUID) -> MerchantSettlement:
        found: MerchantSettlement = self.cards._get(
            wanted, MerchantSettlement, "merchant settlement"
        )
        return found

    def settlement_of(self, merchant_id: UUID, wanted: UUID) -> MerchantSettlement:
        """A settlement as its merchant may see it: another merchant's does not exist."""
        settlement = self.settlement(wanted)
        if settlement.merchant_id != merchant_id:
            raise NotFound(f"merchant settlement {wanted} not found")
        return settlement

    def book(self, merchant_id: UUID) -> MerchantSettlementBook:
        if book_id(merchant_id) not in self.cards.repository:
            return MerchantSettlementBook.open(merchant_id)
        found: MerchantSettlementBook = self.cards._get(
            book_id(merchant_id), MerchantSettlementBook, "settlement book"
        )
        return found
