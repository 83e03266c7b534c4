"""Bearer tokens: made at random, kept only as their SHA-256 hash in `api_tokens`."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any
from uuid import UUID


def new_token() -> str:
    return "lt_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class PostgresMemberTokens:
    """One token per member, `tok_<member id hex>`: issuing again replaces the earlier one."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def issue(self, member_id: UUID) -> str:
        token = new_token()
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO api_tokens (id, token_hash, role, subject) "
                "VALUES (%s, %s, 'member', %s) "
                "ON CONFLICT (id) DO UPDATE SET token_hash = EXCLUDED.token_hash",
                (f"tok_{member_id.hex}", token_hash(token), str(member_id)),
            )
        return token
