"""Tamper evidence: each stored event is linked to its predecessor by a SHA-256 hash."""

from __future__ import annotations

import hashlib
import struct
from uuid import UUID

GENESIS = bytes(32)


def link(
    previous: bytes,
    notification_id: int,
    originator_id: UUID | str,
    originator_version: int,
    topic: str,
    state: bytes,
) -> bytes:
    """The hash of one stored event's content and its predecessor's hash."""
    digest = hashlib.sha256(previous)
    digest.update(struct.pack(">qq", notification_id, originator_version))
    digest.update(str(originator_id).encode() + b"\0" + topic.encode() + b"\0")
    digest.update(bytes(state))
    return digest.digest()
