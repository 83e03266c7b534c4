"""The clear codes of inactive batches, sealed at rest until their one export for printing.

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
