"""Idempotency-Key: a repeated request gets the first response, scoped to the principal.

A key's first request inserts an in-flight row; the row then holds the response. The row is
claimed as the request arrives, in one statement with the spending of a signed request's
nonce; a request refused before its command runs (its body, its channel) gives the claim up
before its answer is sent, so that the key is free again as it was. Commands
derive their aggregate ids from the key (`command_id`), so even a request whose process died
before storing its response cannot record twice: rerunning it finds what it recorded.
Responses that show a secret (key secrets, redemption codes) are stored sealed: encrypted
under a key derived from LEDGER_SECRET_KEY, so the database never holds them in clear.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import Request
from fastapi.responses import JSONResponse

from adapters.database import RELAXED_COMMIT
from api.auth import has_credentials, identified, page_principal
from api.container import services_of
from api.principals import SPEND_NONCE, Principal, nonce_reused
from api.problems import PROBLEM_JSON, STATUS_BY_CODE, Problem, domain_problem, is_transient
from ledger.errors import DomainError

NAMESPACE = uuid.UUID("6f1c63e4-8a43-4c7a-9d7e-2b4f0a7f3b1e")
ABANDONED_AFTER_SECONDS = 60
MAX_KEY_LENGTH = 255

Outcome = tuple[int, dict[str, Any]]
CLAIM = (
    "INSERT INTO idempotency_keys (principal, key, request_hash, state) "
    "SELECT %s, %s, %s, 'in_flight' FROM " + RELAXED_COMMIT + " "
    "ON CONFLICT DO NOTHING RETURNING 1"
)
SPEND_NONCE_AND_CLAIM = (
    "WITH nonce AS (" + SPEND_NONCE + "), claim AS ("
    "INSERT INTO idempotency_keys (principal, key, request_hash, state) "
    "SELECT %s, %s, %s, 'in_flight' WHERE EXISTS (SELECT FROM nonce) "
    "ON CONFLICT DO NOTHING RETURNING 1) "
    "SELECT EXISTS (SELECT FROM nonce), EXISTS (SELECT FROM claim) FROM " + RELAXED_COMMIT
)
"""The nonce spent and the key claimed in one statement; no claim with a nonce used before.

A claim is committed without waiting for the disk (`RELAXED_COMMIT`): every way out of a claimed
request commits synchronously before its answer (`_finish`, `_abandon`), which makes the claim
durable too; a request answered from the stored first answer changed nothing but its nonce, and
a nonce lost in a crash lets that same request be answered once more from the same record."""

FINISH = (
    "UPDATE idempotency_keys SET state = 'done', status = %s, body = %s, "
    "sealed = %s, completed_at = now() WHERE principal = %s AND key = %s"
)
"""The first answer recorded: committed synchronously, before the answer is sent."""
ABANDON = "DELETE FROM idempotency_keys WHERE principal = %s AND key = %s AND state = 'in_flight'"
"""The claim given up (the command did not run, or failed transiently): synchronous too."""


class Seal:
    """AES-GCM under a key derived from the master secret, bound to the principal and key."""

    def __init__(self, master: bytes, context: bytes) -> None:
        self.aead = AESGCM(hashlib.sha256(b"idempotency-seal\n" + master).digest())
        self.context = context

    def close(self, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self.aead.encrypt(nonce, plain, self.context)

    def open(self, sealed: bytes) -> bytes:
        return self.aead.decrypt(sealed[:12], sealed[12:], self.context)


@dataclass
class IdempotentCall:
    pool: Any
    request: Request
    principal: Principal
    key: str
    request_hash: bytes
    claimed: bool = False
    """The in-flight row is this request's (claimed as it arrived, not yet finished)."""
    ran: bool = False

    @property
    def command_id(self) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, f"{self.principal.scope}\n{self.key}")

    def run(self, command: Callable[[uuid.UUID], Outcome], *, sealed: bool = False) -> JSONResponse:
        """Run once; a repeat gets the first answer. `sealed` for answers holding secrets."""
        try:
            return self._run(command, sealed=sealed)
        finally:
            # ran: no exception handler needs the call any more. The request holds the call
            # and the call the request; without this, every request's objects (about 60:
            # the request, its scope, the middlewares' closures, the channel read) were left
            # to the cyclic garbage collector, whose collections of them paused the process.
            self.request.state.idempotent_call = None

    def _run(self, command: Callable[[uuid.UUID], Outcome], *, sealed: bool) -> JSONResponse:
        self.ran = True
        stored = None if self.claimed else self._begin()
        if stored is not None:
            status, body, media_type = stored
            return JSONResponse(body, status_code=status, media_type=media_type)
        try:
            status, body = command(self.command_id)
        except DomainError as refusal:
            response = domain_problem(self.request, refusal)
            if is_transient(refusal):
                self._abandon()
            else:
                self._finish(response.status_code, bytes(response.body), sealed=False)
            return response
        except BaseException:
            self._abandon()
            raise
        self._finish(status, json.dumps(body).encode(), sealed=sealed)
        return JSONResponse(body, status_code=status)

    def claim(self) -> None:
        """Claim the key as the request arrives, spending a signed request's nonce in the same
        statement (signature_invalid if it was used before: nothing claimed). A key already
        claimed is looked at when the command would run (`_begin`)."""
        unspent = self.principal.unspent_nonce
        with self.pool.connection() as conn:
            if unspent is None:
                row = conn.execute(
                    CLAIM, (self.principal.scope, self.key, self.request_hash)
                ).fetchone()
                self.claimed = row is not None
                return
            spent, claimed = conn.execute(
                SPEND_NONCE_AND_CLAIM,
                (*unspent, self.principal.scope, self.key, self.request_hash),
            ).fetchone()
            services_of(self.request).authenticator.prune_now_and_then(conn)
        if not spent:  # audited as before: under the key it claimed, not as the party
            self.request.state.principal = None
            raise nonce_reused()
        self.claimed = bool(claimed)
        self.principal = replace(self.principal, unspent_nonce=None)
        self.request.state.principal = self.principal

    def give_up_unran(self) -> None:
        """The request was refused before its command ran: its claim goes, as if never made."""
        if self.claimed and not self.ran:
            self._abandon()

    def _begin(self) -> tuple[int, Any, str] | None:
        with self.pool.connection() as conn:
            claimed = conn.execute(
                CLAIM, (self.principal.scope, self.key, self.request_hash)
            ).fetchone()
            if claimed:
                return None
            row = conn.execute(
                "SELECT request_hash, state, status, body, sealed, "
                "started_at < now() - make_interval(secs => %s) "
                "FROM idempotency_keys WHERE principal = %s AND key = %s",
                (ABANDONED_AFTER_SECONDS, self.principal.scope, self.key),
            ).fetchone()
        if row is None:
            return self._begin()
        request_hash, state, status, body, sealed, abandoned = row
        if bytes(request_hash) != self.request_hash:
            raise Problem("idempotency_key_reused", "this key was used with another request")
        if state == "in_flight":
            if abandoned and self._take_over():
                return None
            raise Problem("request_in_flight", "the first request with this key is still running")
        stored = self._seal().open(bytes(body)) if sealed else bytes(body)
        decoded = json.loads(stored)
        is_problem = status >= 400 and isinstance(decoded, dict) and "code" in decoded
        return status, decoded, PROBLEM_JSON if is_problem else "application/json"

    def _take_over(self) -> bool:
        with self.pool.connection() as conn:
            return (
                conn.execute(
                    "UPDATE idempotency_keys SET started_at = now() "
                    "WHERE principal = %s AND key = %s AND state = 'in_flight' "
                    "AND started_at < now() - make_interval(secs => %s) RETURNING 1",
                    (self.principal.scope, self.key, ABANDONED_AFTER_SECONDS),
                ).fetchone()
                is not None
            )

    def _finish(self, status: int, body: bytes, *, sealed: bool) -> None:
        stored = self._seal().close(body) if sealed else body
        with self.pool.connection() as conn:
            conn.execute(FINISH, (status, stored, sealed, self.principal.scope, self.key))

    def _seal(self) -> Seal:
        master: bytes = services_of(self.request).settings.secret_bytes
        return Seal(master, f"{self.principal.scope}\n{self.key}".encode())

    def _abandon(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(ABANDON, (self.principal.scope, self.key))


def idempotent() -> IdempotentCall:
    """Declares a POST keyed (`call: IdempotentCall = Depends(idempotent)`): its caller is
    authenticated and its key checked and claimed before the body is even parsed. The route
    is served by `api.keyed_route.KeyedRoute`, which gives the endpoint the call (`arrive`);
    the declaration also tells the OpenAPI document who may call and that a key is needed."""
    raise TypeError(NOT_KEYED)


def idempotent_page() -> IdempotentCall:
    """The same, for calls the recharge web page may also make (an anonymous caller is the
    page)."""
    raise TypeError(NOT_KEYED)


NOT_KEYED = "a keyed POST's router needs route_class=KeyedRoute (api/keyed_route.py)"


def arrive(request: Request, body: bytes, digest: bytes) -> IdempotentCall:
    """Who calls (a signed request's nonce left for the claim to spend), then the key checked
    and claimed: a POST's arrival, on the worker thread that then runs its command. A request
    refused before its command runs gives the claim up before its answer is sent: every
    exception handler does (`api.problems.install`)."""
    if has_credentials(request):
        principal = identified(request, body, spend_nonce=False)
    else:
        principal = page_principal(request)
    key = request.headers.get("Idempotency-Key", "")
    refused_key = not key or len(key) > MAX_KEY_LENGTH or not key.isprintable()
    if refused_key and principal.unspent_nonce is not None:
        # a replayed nonce is refused first, as always
        services_of(request).authenticator.accept_nonce_once(*principal.unspent_nonce)
    if not key:
        raise Problem("idempotency_key_missing", "every POST needs an Idempotency-Key header")
    if refused_key:
        raise Problem(
            "validation_failed",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            status=STATUS_BY_CODE["idempotency_key_missing"],
        )
    call = IdempotentCall(services_of(request).pool, request, principal, key, digest)
    call.claim()
    return call
