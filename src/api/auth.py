"""Who is calling: bearer tokens for operator and finance, signed requests for channels."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.problems import Problem
from ledger.errors import NotFound

Role = Literal["operator", "finance", "channel"]


@dataclass(frozen=True)
class Principal:
    role: Role
    id: str
    channel_id: UUID | None = None

    @property
    def scope(self) -> str:
        """Idempotency keys and rate limits are scoped to this."""
        return f"{self.role}:{self.id}"


def new_token() -> str:
    return "lt_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def channel_key_secret(master: bytes, key_id: str) -> str:
    """Key secrets are derived from the master secret, so none is ever stored."""
    return "cs_" + hmac.new(master, f"channel-key:{key_id}".encode(), hashlib.sha256).hexdigest()


def webhook_secret(master: bytes, channel_id: UUID) -> str:
    return "whs_" + hmac.new(master, f"webhook:{channel_id}".encode(), hashlib.sha256).hexdigest()


def channel_id_of_key(key_id: str) -> UUID | None:
    if not key_id.startswith("ck_") or len(key_id) != 35:
        return None
    try:
        return UUID(hex=key_id[3:])
    except ValueError:
        return None


def signing_string(method: str, path_and_query: str, timestamp: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path_and_query}\n{timestamp}\n{digest}".encode()


def sign(secret: str, method: str, path_and_query: str, timestamp: str, body: bytes) -> str:
    message = signing_string(method, path_and_query, timestamp, body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class Authenticator:
    def __init__(self, pool, distribution, master_secret: bytes, window_seconds: int) -> None:  # type: ignore[no-untyped-def]
        self.pool = pool
        self.distribution = distribution
        self.master_secret = master_secret
        self.window = window_seconds

    def bearer(self, token: str) -> Principal:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT id, role FROM api_tokens WHERE token_hash = %s", (token_hash(token),)
            ).fetchone()
        if row is None:
            raise Problem("unauthorized", "the bearer token is not valid")
        return Principal(role=row[1], id=row[0])

    def signed(self, request: Request, body: bytes) -> Principal:
        key_id = request.headers.get("X-Key-Id", "")
        timestamp = request.headers.get("X-Timestamp", "")
        signature = request.headers.get("X-Signature", "").lower()
        channel_id = channel_id_of_key(key_id)
        if channel_id is None or not timestamp.isdigit() or len(signature) != 64:
            raise Problem("signature_invalid", "X-Key-Id, X-Timestamp and X-Signature are needed")
        if abs(time.time() - int(timestamp)) > self.window:
            raise Problem("signature_invalid", f"the timestamp is outside ±{self.window} s")
        try:
            channel = self.distribution.channel(channel_id)
        except NotFound:
            raise Problem("signature_invalid", "unknown key") from None
        if channel.key_id != key_id:
            raise Problem("signature_invalid", "unknown key")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        secret = channel_key_secret(self.master_secret, key_id)
        expected = sign(secret, request.method, path, timestamp, body)
        if not hmac.compare_digest(expected, signature):
            raise Problem("signature_invalid", "the signature does not match the request")
        self._refuse_reuse(signature)
        return Principal(role="channel", id=str(channel_id), channel_id=channel_id)

    def _refuse_reuse(self, signature: str) -> None:
        with self.pool.connection() as conn:
            inserted = conn.execute(
                "INSERT INTO used_signatures (signature) VALUES (%s) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (signature,),
            ).fetchone()
            if secrets.randbelow(100) == 0:
                conn.execute(
                    "DELETE FROM used_signatures WHERE seen_at < now() - make_interval(secs => %s)",
                    (2 * self.window,),
                )
        if inserted is None:
            raise Problem("signature_invalid", "this signature was already used")


async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller, from a bearer token or a signed request."""
    authenticator: Authenticator = request.app.state.authenticator
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return await run_in_threadpool(authenticator.bearer, authorization[7:].strip())
    if "X-Key-Id" in request.headers:
        body = await request.body()
        return await run_in_threadpool(authenticator.signed, request, body)
    raise Problem("unauthorized", "a bearer token or a signed request is needed")


def require(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise Problem("forbidden", f"this needs the role {' or '.join(roles)}")
