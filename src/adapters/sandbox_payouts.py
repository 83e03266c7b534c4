"""The sandbox's payouts kept in PostgreSQL: a payout is made once per payout id, whichever
process asks, so a withdrawal retried after its process died is not paid twice. A switch
makes the process kill itself right after paying, before the answer is recorded (crash
tests of the sweeper's retry)."""

from __future__ import annotations

import os
import signal
from uuid import UUID

import psycopg

from ledger.cards.ports import PayoutResult
from ledger.money import Money


class PostgresSandboxPayouts:
    def __init__(self, database_url: str, exit_after_paying: bool = False) -> None:
        self.database_url = database_url
        self.exit_after_paying = exit_after_paying

    def pay_out(self, payout_id: UUID, payee_id: UUID, amount: Money) -> PayoutResult:
        reference = f"sandbox-payout-{payout_id.hex}"
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            made = conn.execute(
                "INSERT INTO sandbox_payouts (payout_id, payee_id, currency, amount, paid, "
                "reference) VALUES (%s, %s, %s, %s, true, %s) ON CONFLICT (payout_id) DO NOTHING "
                "RETURNING payout_id",
                (payout_id, payee_id, amount.currency, amount.amount, reference),
            ).fetchone()
            row = conn.execute(
                "SELECT paid, reference, reason FROM sandbox_payouts WHERE payout_id = %s",
                (payout_id,),
            ).fetchone()
        if made is not None and self.exit_after_paying:
            os.kill(os.getpid(), signal.SIGKILL)
        assert row is not None
        paid, known_reference, reason = row
        if paid:
            return PayoutResult(paid=True, reference=known_reference)
        return PayoutResult(paid=False, reason=reason or "the sandbox refused the payout")
