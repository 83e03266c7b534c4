"""Clear codes sealed at rest: an inactive batch's until its one export for printing, and
every new batch's from before its save until its answer is stored (`SealedIssuedCodes`).

Codes are stored only as keyed hashes; an inactive batch's codes are also kept here, sealed
with AES-GCM under a key derived from LEDGER_SECRET_KEY and bound to the batch and its
channel, so that the channel can export them once. The export takes the row's lock, writes
the audit line, then drops the sealed codes and marks the row exported in the same
transaction: a second export, from any process, finds nothing to give.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any
from uuid import UUID

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.errors import NotFound, StateConflict


class SealedBatchCodes:
    def __init__(self, pool: Any, master: bytes) -> None:
        self.pool = pool
        self.aead = AESGCM(hmac.new(master, b"batch-codes-seal", hashlib.sha256).digest())

    def keep(self, batch_id: UUID, channel_id: UUID, codes: list[str]) -> None:
        """Seal a new inactive batch's codes (again for the same batch: kept as first sealed)."""
        nonce = os.urandom(12)
        sealed = nonce + self.aead.encrypt(
            nonce, "\n".join(codes).encode(), context(batch_id, channel_id)
        )
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO sealed_batch_codes (batch_id, channel_id, sealed) VALUES (%s, %s, %s) "
                "ON CONFLICT (batch_id) DO NOTHING",
                (batch_id, channel_id, sealed),
            )

    def export(self, batch_id: UUID, channel_id: UUID, audit: Callable[[int], None]) -> list[str]:
        """The codes, once; `audit(count)` records the export before it is committed."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT channel_id, sealed, exported_at FROM sealed_batch_codes "
                "WHERE batch_id = %s FOR UPDATE",
                (batch_id,),
            ).fetchone()
            if row is None or row[0] != channel_id:
                raise NotFound(f"no inactive code batch {batch_id} of this channel to export")
            if row[2] is not None or row[1] is None:
                raise StateConflict(f"code batch {batch_id} was exported already")
            sealed = bytes(row[1])
            plain = self.aead.decrypt(sealed[:12], sealed[12:], context(batch_id, channel_id))
            codes = plain.decode().split("\n")
            audit(len(codes))
            conn.execute(
                "UPDATE sealed_batch_codes SET sealed = NULL, exported_at = now() "
                "WHERE batch_id = %s",
                (batch_id,),
            )
        return codes


def context(batch_id: UUID, channel_id: UUID) -> bytes:
    return f"batch:{batch_id}\nchannel:{channel_id}".encode()


class SealedIssuedCodes:
    """The IssuedCodes vault: each attempt's clear codes sealed (AES-GCM, a key of its own
    derived from LEDGER_SECRET_KEY, bound to batch and channel) in `issued_batch_codes` before
    the batch is saved, dropped once its answer is stored. A connection per call: batches are
    few, and the processes that issue them keep no idle connection for it."""

    def __init__(self, database_url: str, master: bytes) -> None:
        self.database_url = database_url
        self.aead = AESGCM(hmac.new(master, b"issued-batch-codes-seal", hashlib.sha256).digest())

    def keep(self, batch_id: UUID, channel_id: UUID, codes: list[str]) -> None:
        nonce = os.urandom(12)
        sealed = nonce + self.aead.encrypt(
            nonce, "\n".join(codes).encode(), context(batch_id, channel_id)
        )
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO issued_batch_codes (batch_id, channel_id, sealed) VALUES (%s, %s, %s)",
                (batch_id, channel_id, sealed),
            )

    def recall(self, batch_id: UUID, channel_id: UUID) -> list[list[str]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT sealed FROM issued_batch_codes WHERE batch_id = %s AND channel_id = %s "
                "ORDER BY id",
                (batch_id, channel_id),
            ).fetchall()
        opened = []
        for (sealed,) in rows:
            sealed = bytes(sealed)
            plain = self.aead.decrypt(sealed[:12], sealed[12:], context(batch_id, channel_id))
            opened.append(plain.decode().split("\n"))
        return opened

    def forget(self, batch_id: UUID) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM issued_batch_codes WHERE batch_id = %s", (batch_id,))
