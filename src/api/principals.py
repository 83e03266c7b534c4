"""Who a caller is, and the checks that say so: the principal, the signing keys' ids, and
the authenticator (bearer tokens, signed requests, nonces spent once). No request plumbing:
`api.auth` turns a request into a principal with these, `api.container` holds the
authenticator."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from fastapi import Request

from adapters.signing import key_secret, sign_request, valid_nonce, valid_timestamp
from adapters.tokens import token_hash
from api.problems import Problem
from ledger.errors import NotFound

Role = Literal["operator", "finance", "channel", "merchant", "member", "web"]


@dataclass(frozen=True)
class Principal:
    """The caller. `subject` is the channel, merchant or member acting, when there is one;
    `party` its aggregate as read to check a signed request's key (so that the request reads
    it once)."""

    role: Role
    id: str
    subject: UUID | None = None
    party: Any = field(default=None, compare=False, repr=False)
    unspent_nonce: tuple[str, str] | None = field(default=None, compare=False, repr=False)
    """(key id, nonce) of a signed request whose nonce its Idempotency-Key's claim spends, in
    the same statement (api/idempotency.py); None once spent, or for other callers."""

    @property
    def scope(self) -> str:
        """Idempotency keys and rate limits are scoped to this."""
        return f"{self.role}:{self.id}"

    @property
    def channel_id(self) -> UUID | None:
        return self.subject if self.role == "channel" else None


KeyCheck = Callable[[UUID, str], Any]
"""The party with this id if it currently holds the key id (its aggregate, or True), else
None or False (also when unknown)."""


def key_id_for(prefix: str, party_id: UUID) -> str:
    return f"{prefix}{party_id.hex}"


def party_of_key(key_id: str) -> tuple[str, UUID] | None:
    """Key ids are `<2 letters>_<32 hex of the party's id>`, e.g. `ck_…` for channels."""
    prefix, hex_id = key_id[:3], key_id[3:]
    if len(key_id) != 35 or not prefix.endswith("_"):
        return None
    try:
        return prefix, UUID(hex=hex_id)
    except ValueError:
        return None


sign = sign_request


class Authenticator:
    def __init__(self, pool: Any, master_secret: bytes, window_seconds: int) -> None:
        self.pool = pool
        self.master_secret = master_secret
        self.window = window_seconds
        self.key_kinds: dict[str, tuple[Role, KeyCheck]] = {}

    def accept_keys(self, prefix: str, role: Role, check: KeyCheck) -> None:
        """Let parties of one kind sign requests with keys `<prefix><their id hex>`."""
        self.key_kinds[prefix] = (role, check)

    def bearer(self, token: str) -> Principal:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT id, role, subject FROM api_tokens WHERE token_hash = %s",
                (token_hash(token),),
            ).fetchone()
        if row is None:
            raise Problem("unauthorized", "the bearer token is not valid")
        token_id, role, subject = row
        return Principal(
            role=role, id=subject or token_id, subject=UUID(subject) if subject else None
        )

    def signed(self, request: Request, body: bytes, *, spend_nonce: bool = True) -> Principal:
        """The channel or merchant whose key signed the request. Its nonce is spent here,
        unless `spend_nonce` is False: then the caller must spend it (`unspent_nonce`) before
        anything else reads or records anything for the request."""
        key_id = request.headers.get("X-Key-Id", "")
        timestamp = request.headers.get("X-Timestamp", "")
        nonce = request.headers.get("X-Nonce", "")
        signature = request.headers.get("X-Signature", "").lower()
        party = party_of_key(key_id)
        if party is None or not valid_timestamp(timestamp) or len(signature) != 64:
            raise Problem(
                "signature_invalid",
                "X-Key-Id, X-Timestamp (unix seconds, at most 12 digits), X-Nonce and "
                "X-Signature are needed",
            )
        if not valid_nonce(nonce):
            raise Problem("signature_invalid", "X-Nonce must be 16-64 characters of A-Za-z0-9_-")
        if abs(time.time() - int(timestamp)) > self.window:
            raise Problem("signature_invalid", f"the timestamp is outside ±{self.window} s")
        prefix, party_id = party
        role, holds_key = self.key_kinds.get(prefix, ("channel", lambda _p, _k: False))
        try:
            holder = holds_key(party_id, key_id)
        except NotFound:
            holder = None
        if holder is None or holder is False:
            raise Problem("signature_invalid", "unknown key")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        secret = key_secret(self.master_secret, key_id)
        idempotency_key = request.headers.get("Idempotency-Key", "")
        expected = sign(secret, request.method, path, timestamp, nonce, idempotency_key, body)
        if not hmac.compare_digest(expected, signature):
            raise Problem("signature_invalid", "the signature does not match the request")
        unspent = None
        if spend_nonce:
            self._refuse_reuse(key_id, nonce)
        else:
            unspent = (key_id, nonce)
        party_read = None if isinstance(holder, bool) else holder
        return Principal(
            role=role, id=str(party_id), subject=party_id, party=party_read, unspent_nonce=unspent
        )

    def accept_nonce_once(self, key_id: str, nonce: str) -> None:
        """signature_invalid if `nonce` was already used with `key_id` within the window
        (for other signers than keys, e.g. a platform's callbacks under `platform:<id>`)."""
        self._refuse_reuse(key_id, nonce)

    def _refuse_reuse(self, key_id: str, nonce: str) -> None:
        """A (key, nonce) pair is accepted once; pairs older than twice the window, whose
        timestamps the window refuses anyway, are pruned now and then."""
        with self.pool.connection() as conn:
            inserted = conn.execute(SPEND_NONCE, (key_id, nonce)).fetchone()
            self.prune_now_and_then(conn)
        if inserted is None:
            raise nonce_reused()

    def prune_now_and_then(self, conn: Any) -> None:
        if secrets.randbelow(100) == 0:
            conn.execute(
                "DELETE FROM used_nonces WHERE seen_at < now() - make_interval(secs => %s)",
                (2 * self.window,),
            )


SPEND_NONCE = (
    "INSERT INTO used_nonces (key_id, nonce) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1"
)


def nonce_reused() -> Problem:
    return Problem("signature_invalid", "this nonce was already used with this key")
