"""Sending verification codes by SMS (the SmsSender port): the sandbox that keeps an outbox,
and the refusal outside sandbox mode until a provider is configured."""

from __future__ import annotations

from typing import Any

from ledger.errors import NotPermitted


class SandboxSms:
    """Keeps every message in a table, so tests and the sandbox endpoint can read it."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def send(self, account: str, message: str, code: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO sandbox_sms_outbox (account, message, code) VALUES (%s, %s, %s)",
                (account, message, code),
            )

    def last_code(self, account: str) -> str | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT code FROM sandbox_sms_outbox WHERE account = %s ORDER BY id DESC LIMIT 1",
                (account,),
            ).fetchone()
        return row[0] if row else None


class NoSmsProvider:
    """Outside sandbox mode until a provider is configured: sending is refused, plainly."""

    def send(self, account: str, message: str, code: str) -> None:
        raise NotPermitted("no SMS provider is configured (set LEDGER_SANDBOX=true to test)")
