"""The sandbox platform's order callbacks: once an order is final, a signed POST of
``{order_no, status, platform_order_id, starts_at, ends_at, reason}`` to the ledger's callback
URL, signed the way the partner API's calls are (`adapters.platform_gateway.signed_headers`,
a fresh timestamp and nonce on every post) and retried until a 2xx, the way real partner
platforms call back. The fault knobs (`adapters.sandbox.faults`) make them late, repeated,
out of order, badly signed, or a success after a failure.

Every post is listed (``GET /sandbox/callbacks``) so a test can see what the platform sent
and what the ledger answered.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from adapters.platform_gateway import encode_body, new_nonce, signed_headers
from adapters.sandbox.faults import Faults

log = logging.getLogger("sandbox.callbacks")

MAX_ATTEMPTS = 8
FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 5.0
WRONG_SECRET = "not-the-partner-secret"


class CallbackSender:
    """Schedules and posts callbacks on timer threads; `reset` forgets the sent list and
    drops every callback not posted yet."""

    def __init__(
        self,
        secret: str,
        partner_id: str,
        faults: Callable[[], Faults],
        take_bad_signature: Callable[[], bool],
    ) -> None:
        self._secret = secret
        self._partner_id = partner_id
        self._faults = faults
        self._take_bad_signature = take_bad_signature
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0))
        self._lock = threading.Lock()
        self._sent: list[dict[str, Any]] = []
        self._generation = 0

    def order_final(self, payload: dict[str, Any]) -> None:
        """An order reached a final status: call back (or not) as the knobs say."""
        faults = self._faults()
        url = faults.callback_url
        if not url or random.random() >= faults.callback_probability:
            return
        delay = faults.callback_delay_ms / 1000
        for _ in range(1 + faults.callback_duplicates):
            self.later(self._wait(delay, faults), url, payload)
        if faults.callback_out_of_order:  # a stale status after the final one
            stale = {"order_no": payload["order_no"], "status": "processing"}
            self.later(2 * delay + self._wait(delay, faults) + 0.05, url, stale)

    def later(self, seconds: float, url: str, payload: dict[str, Any]) -> None:
        with self._lock:
            generation = self._generation
        timer = threading.Timer(seconds, self._deliver, (generation, url, payload))
        timer.daemon = True
        timer.start()

    def sent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._sent)

    def reset(self) -> None:
        with self._lock:
            self._generation += 1
            self._sent = []

    def close(self) -> None:
        self.reset()
        self._client.close()

    @staticmethod
    def _wait(delay: float, faults: Faults) -> float:
        return delay + (random.uniform(0, max(delay, 0.2)) if faults.callback_out_of_order else 0)

    def _deliver(self, generation: int, url: str, payload: dict[str, Any]) -> None:
        wait = FIRST_RETRY_SECONDS
        for attempt in range(1, MAX_ATTEMPTS + 1):
            with self._lock:
                if generation != self._generation:
                    return
            status, signed_right = self._post(url, payload)
            with self._lock:
                if generation != self._generation:
                    return
                self._sent.append(
                    {
                        "order_no": payload["order_no"],
                        "status": payload["status"],
                        "refund_no": payload.get("refund_no"),
                        "attempt": attempt,
                        "answer": status,
                        "signed_right": signed_right,
                        "at": time.time(),
                    }
                )
            if status is not None and 200 <= status < 300:
                return
            time.sleep(wait)
            wait = min(wait * 2, MAX_RETRY_SECONDS)
        log.warning("callback %s %s given up", payload["order_no"], payload["status"])

    def _post(self, url: str, payload: dict[str, Any]) -> tuple[int | None, bool]:
        signed_right = not self._take_bad_signature()
        secret = self._secret if signed_right else WRONG_SECRET
        body = encode_body(payload)
        timestamp = str(int(time.time()))
        headers = signed_headers(secret, self._partner_id, timestamp, new_nonce(), body)
        try:
            reply = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            log.info("callback to %s failed: %s", url, error)
            return None, signed_right
        return reply.status_code, signed_right
