"""Webhooks: each final state of a recharge is POSTed to the channel's URL, signed like a
request (signing v2: X-Timestamp, X-Nonce, X-Signature over method, the URL's path?query,
timestamp, nonce, an empty idempotency key and the body digest), with an event id the receiver
de-duplicates on. Delivery is retried with backoff until a 2xx, each try with a fresh nonce.
A URL that names or resolves to an internal address is refused at the connection
(`adapters.outbound`) and not retried: nothing is sent there."""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx

from adapters.outbound import AddressNotAllowed, OutboundAddresses, checked_transport
from adapters.signing import new_nonce, sign_request, webhook_secret

log = logging.getLogger(__name__)
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class WebhookRefused(RuntimeError):
    """The receiver did not answer 2xx; the broker retries with backoff."""


def signed_delivery(url: str, secret: str, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    timestamp = str(int(time.time()))
    nonce = new_nonce()
    headers = {
        "Content-Type": "application/json",
        "X-Event-Id": str(event["event_id"]),
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Signature": sign_request(secret, "POST", path, timestamp, nonce, "", body),
    }
    return body, headers


def deliver(client: httpx.Client, url: str, secret: str, event: dict[str, Any]) -> int:
    body, headers = signed_delivery(url, secret, event)
    try:
        reply = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise WebhookRefused(f"{type(error).__name__} posting to {url}") from error
    if not 200 <= reply.status_code < 300:
        raise WebhookRefused(f"{url} answered {reply.status_code}")
    return reply.status_code


class WebhookDelivery:
    """Delivers channels' events, each signed with its channel's webhook secret (derived from
    the master secret, so none is stored)."""

    def __init__(self, master: bytes, addresses: OutboundAddresses | None = None) -> None:
        self._master = master
        self._http = httpx.Client(
            timeout=httpx.Timeout(10.0, connect=3.0),
            follow_redirects=False,
            limits=LIMITS,
            transport=checked_transport(addresses, LIMITS),
        )

    def deliver(self, channel_id: UUID, url: str, event: dict[str, Any]) -> int:
        """The receiver's status; 0 when the URL's address is refused (not retried)."""
        try:
            return deliver(self._http, url, webhook_secret(self._master, channel_id), event)
        except AddressNotAllowed as refused:
            log.warning(
                "webhook of channel %s not delivered, address refused: %s", channel_id, refused
            )
            return 0

    def close(self) -> None:
        self._http.close()
