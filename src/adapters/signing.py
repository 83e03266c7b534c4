"""Request signatures (v2) shared by channel requests, merchant requests and webhooks:
lowercase hex HMAC-SHA256 of
`METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nIDEMPOTENCY_KEY\\nSHA256_HEX(BODY)`, the idempotency
key being the `Idempotency-Key` header or empty. The nonce is fresh for every request, so two
identical requests in one second sign differently, and the receiver accepts a (key, nonce)
pair once within its window."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
"""What a nonce may be: 16-64 characters of `[A-Za-z0-9_-]`."""

TIMESTAMP = re.compile(r"[0-9]{1,12}")
"""What a timestamp may be: unix seconds, 1-12 ASCII digits (`str.isdigit` also takes `¹²³`,
which `int` refuses, and an integer of thousands of digits no clock can compare)."""


def new_nonce() -> str:
    """A fresh nonce: 32 URL-safe characters from 24 random bytes."""
    return secrets.token_urlsafe(24)


def valid_nonce(nonce: str) -> bool:
    return NONCE.fullmatch(nonce) is not None


def valid_timestamp(timestamp: str) -> bool:
    return TIMESTAMP.fullmatch(timestamp) is not None


def signing_string(
    method: str,
    path_and_query: str,
    timestamp: str,
    nonce: str,
    idempotency_key: str,
    body: bytes,
) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(
        [method.upper(), path_and_query, timestamp, nonce, idempotency_key, digest]
    ).encode()


def sign_request(
    secret: str,
    method: str,
    path_and_query: str,
    timestamp: str,
    nonce: str,
    idempotency_key: str,
    body: bytes,
) -> str:
    message = signing_string(method, path_and_query, timestamp, nonce, idempotency_key, body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def key_secret(master: bytes, key_id: str) -> str:
    """Key secrets are derived from the master secret, so none is ever stored."""
    return "ks_" + hmac.new(master, f"key:{key_id}".encode(), hashlib.sha256).hexdigest()


def webhook_secret(master: bytes, channel_id: object) -> str:
    return "whs_" + hmac.new(master, f"webhook:{channel_id}".encode(), hashlib.sha256).hexdigest()
