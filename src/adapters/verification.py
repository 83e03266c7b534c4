"""Verification codes sent to the recharge account: 6 digits, 5 minutes, 5 tries,
at most 3 sends per account in 10 minutes. Stored only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from uuid import UUID

from adapters.rate_limits import RateLimiter
from ledger.errors import DomainError, RateLimited, VerificationFailed, VerificationLocked
from ledger.recharges.ports import Limit, SmsSender

VALID_SECONDS = 300
MAX_TRIES = 5
SENDS = Limit(hits=3, window_seconds=600)


class PostgresVerificationCodes:
    """The VerificationCodes port: codes kept as keyed hashes in PostgreSQL, sent by SMS."""

    def __init__(self, pool: Any, key: bytes, sms: SmsSender, limiter: RateLimiter) -> None:
        self.pool = pool
        self.key = key
        self.sms = sms
        self.limiter = limiter

    def send(self, channel_id: UUID, channel_name: str, account: str) -> None:
        wait = self.limiter.hit(f"sms:{account}", SENDS)
        if wait is not None:
            raise RateLimited("at most 3 codes are sent to an account in 10 minutes", wait)
        code = f"{secrets.randbelow(10**6):06d}"
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO verification_codes (channel_id, account, code_hash, expires_at) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
                (channel_id, account, self._hash(channel_id, account, code), VALID_SECONDS),
            )
        self.sms.send(account, f"[{channel_name}] Your verification code is {code}.", code)

    def check(self, channel_id: UUID, account: str, code: str) -> None:
        """Raise unless `code` is the latest unexpired, unused code with tries left. A wrong
        try is counted in a transaction that commits before the refusal is raised."""
        refusal = self._try(channel_id, account, code)
        if refusal is not None:
            raise refusal

    def _try(self, channel_id: UUID, account: str, code: str) -> DomainError | None:
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT sent_at, code_hash, attempts FROM verification_codes "
                "WHERE channel_id = %s AND account = %s AND used_at IS NULL "
                "AND expires_at > now() ORDER BY sent_at DESC LIMIT 1 FOR UPDATE",
                (channel_id, account),
            ).fetchone()
            if row is None:
                return VerificationFailed("no valid verification code: ask for a new one")
            sent_at, stored, attempts = row
            if attempts >= MAX_TRIES:
                return VerificationLocked("too many wrong tries: ask for a new code")
            if hmac.compare_digest(bytes(stored), self._hash(channel_id, account, code)):
                return None
            conn.execute(
                "UPDATE verification_codes SET attempts = attempts + 1 "
                "WHERE channel_id = %s AND account = %s AND sent_at = %s",
                (channel_id, account, sent_at),
            )
        left = MAX_TRIES - attempts - 1
        if left == 0:
            return VerificationLocked("too many wrong tries: ask for a new code")
        return VerificationFailed(f"the verification code is wrong ({left} tries left)")

    def use(self, channel_id: UUID, account: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE verification_codes SET used_at = now() WHERE channel_id = %s "
                "AND account = %s AND used_at IS NULL",
                (channel_id, account),
            )

    def _hash(self, channel_id: UUID, account: str, code: str) -> bytes:
        message = f"{channel_id}\n{account}\n{code}".encode()
        return hmac.new(self.key, message, hashlib.sha256).digest()
