"""Request signatures shared by channel requests, merchant requests and webhooks:
lowercase hex HMAC-SHA256 of `METHOD\\nPATH?QUERY\\nTIMESTAMP\\nSHA256_HEX(BODY)`."""

from __future__ import annotations

import hashlib
import hmac


def signing_string(method: str, path_and_query: str, timestamp: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path_and_query}\n{timestamp}\n{digest}".encode()


def sign_request(secret: str, method: str, path_and_query: str, timestamp: str, body: bytes) -> str:
    message = signing_string(method, path_and_query, timestamp, body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def key_secret(master: bytes, key_id: str) -> str:
    """Key secrets are derived from the master secret, so none is ever stored."""
    return "ks_" + hmac.new(master, f"key:{key_id}".encode(), hashlib.sha256).hexdigest()


def webhook_secret(master: bytes, channel_id: object) -> str:
    return "whs_" + hmac.new(master, f"webhook:{channel_id}".encode(), hashlib.sha256).hexdigest()
