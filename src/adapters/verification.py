"""Verification codes sent to the recharge account: 6 digits, valid 5 minutes, each sender's
wrong tries on a code counted apart. Stored as a keyed hash beside the random nonce the digits
derive from (HMAC under a key derived from LEDGER_SECRET_KEY), never in clear.

What an attacker who knows only the account can do, and what it cannot (issue 10, item 1):

- Asking for a code again never replaces the code the user already holds: while a live code
  has a minute or more left, a send re-sends that same code (its digits are derived again
  from its nonce); otherwise a new code is issued and the older one stays valid until it
  expires or is used. Several codes of one (channel, account) can so be live at once; any of
  them is accepted.
- Wrong tries are counted per (code, sender): five from one sender lock that code for that
  sender only (423 there; everyone else's tries go on). A sender locked on the live code who
  asks again gets a new code (its own fresh five tries); the user's code is untouched.
- The bound against brute force: a code takes at most `TRIES_PER_CODE` wrong tries from all
  senders together, then it is burned (refused for everyone; the next send issues a new one).
  A guess is compared with every live code, and counted against each; so a code can be guessed
  with probability at most TRIES_PER_CODE / 10**6 = 1.5e-5, and an account at most
  (new codes it gets) x 1.5e-5: at the per-account ceiling of sends (placement.py), 20 an hour,
  at most 3e-4 an hour, about 0.7 % a day of sustained attack from at least three addresses
  per code, every code also landing on the user's phone. The price of that bound is the one
  lever left: fifteen wrong tries from three addresses burn a code, and the user asks for
  another (its own send quota is untouched).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any
from uuid import UUID

from adapters.database import RELAXED_COMMIT
from ledger.errors import DomainError, VerificationFailed, VerificationLocked
from ledger.recharges.ports import SmsSender

VALID_SECONDS = 300
RESEND_IF_LEFT_SECONDS = 60
"""A live code with less than this left is not re-sent: a new one is issued."""
TRIES_PER_SENDER = 5
"""Wrong tries one sender has on one code."""
TRIES_PER_CODE = 15
"""Wrong tries one code takes from every sender together before it is burned."""


class PostgresVerificationCodes:
    """The VerificationCodes port: codes kept as keyed hashes in PostgreSQL, sent by SMS."""

    def __init__(self, pool: Any, key: bytes, sms: SmsSender) -> None:
        self.pool = pool
        self.key = key
        self.digits_key = hmac.new(key, b"verification-code-digits", hashlib.sha256).digest()
        self.sms = sms

    def send(self, channel_id: UUID, channel_name: str, account: str, sender: str) -> int:
        """Re-send the newest live code `sender` may still try (with a minute or more left),
        else issue a new one; the seconds the sent code stays valid."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(  # one send at a time per (channel, account): one new code, not two
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"verification:{channel_id}:{account}",),
            )
            row = conn.execute(
                "SELECT v.nonce, ceil(extract(epoch FROM v.expires_at - now()))::int "
                "FROM verification_codes v LEFT JOIN verification_attempts a "
                "ON a.code_id = v.id AND a.sender = %s "
                "WHERE v.channel_id = %s AND v.account = %s AND v.used_at IS NULL "
                "AND v.nonce IS NOT NULL AND v.attempts < %s AND coalesce(a.wrong, 0) < %s "
                "AND v.expires_at > now() + make_interval(secs => %s) "
                "ORDER BY v.sent_at DESC LIMIT 1",
                (
                    sender,
                    channel_id,
                    account,
                    TRIES_PER_CODE,
                    TRIES_PER_SENDER,
                    RESEND_IF_LEFT_SECONDS,
                ),
            ).fetchone()
            if row is not None:
                nonce, valid = bytes(row[0]), int(row[1])
                code = self._digits(nonce)
            else:
                nonce, valid = os.urandom(16), VALID_SECONDS
                code = self._digits(nonce)
                conn.execute(
                    "INSERT INTO verification_codes "
                    "(channel_id, account, code_hash, nonce, expires_at) "
                    "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))",
                    (channel_id, account, self._hash(channel_id, account, code), nonce, valid),
                )
        minutes = max(1, valid // 60)
        shown = "".join(c for c in channel_name if c.isprintable())  # a name kept from before
        self.sms.send(  # the API refused control characters (a NUL made every send a 500)
            account,
            f"[{shown}] Your verification code is {code}. "
            f"It is valid for {minutes} minute{'s' if minutes != 1 else ''}.",
            code,
        )
        return valid

    def check(self, channel_id: UUID, account: str, code: str, sender: str) -> None:
        """Raise unless `code` is one of the account's live codes that `sender` may still try.
        A wrong try is counted, against each such code, in a transaction that commits before
        the refusal is raised."""
        refusal = self._try(channel_id, account, code, sender)
        if refusal is not None:
            raise refusal

    def _try(self, channel_id: UUID, account: str, code: str, sender: str) -> DomainError | None:
        """A right code is found by one statement of its own (its row locks wait for the wrong
        tries in flight, so it sees what they counted); a wrong one is counted in a
        transaction that reads the codes again under their locks."""
        typed = self._hash(channel_id, account, code)
        with self.pool.connection() as conn:
            rows = conn.execute(LIVE_CODES_LOOKED_AT, (sender, channel_id, account)).fetchall()
        outcome = judge(rows, typed)
        if outcome is not WRONG:
            return outcome
        with self.pool.connection() as conn, conn.transaction():
            rows = conn.execute(LIVE_CODES, (sender, channel_id, account)).fetchall()
            outcome = judge(rows, typed)
            if outcome is not WRONG:
                return outcome
            triable = [row for row in rows if is_triable(row)]
            for code_id, _, _, _ in triable:
                conn.execute(
                    "UPDATE verification_codes SET attempts = attempts + 1 WHERE id = %s",
                    (code_id,),
                )
                conn.execute(
                    "INSERT INTO verification_attempts (code_id, sender, wrong) "
                    "VALUES (%s, %s, 1) ON CONFLICT (code_id, sender) "
                    "DO UPDATE SET wrong = verification_attempts.wrong + 1",
                    (code_id, sender),
                )
        left = max(
            min(TRIES_PER_SENDER - wrong, TRIES_PER_CODE - attempts) - 1
            for _, _, attempts, wrong in triable
        )
        if left <= 0:
            return VerificationLocked("too many wrong tries: ask for a new code")
        return VerificationFailed(f"the verification code is wrong ({left} tries left)")

    def use(self, channel_id: UUID, account: str, sender: str) -> None:
        """The code did its work: no live code of the (channel, account) is accepted again,
        and `sender`, who used it, is known to the account from now on."""
        with self.pool.connection() as conn:
            conn.execute(USE, {"channel": channel_id, "account": account, "sender": sender})

    def known(self, account: str, sender: str, within_seconds: int) -> bool:
        """Whether `sender` used a code of the account, through any channel, in the last
        `within_seconds`."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM known_senders WHERE account = %s AND sender = %s "
                "AND known_at > now() - make_interval(secs => %s))",
                (account, sender, within_seconds),
            ).fetchone()
        return bool(row[0])

    def _digits(self, nonce: bytes) -> str:
        number = int.from_bytes(hmac.new(self.digits_key, nonce, hashlib.sha256).digest(), "big")
        return f"{number % 10**6:06d}"

    def _hash(self, channel_id: UUID, account: str, code: str) -> bytes:
        message = f"{channel_id}\n{account}\n{code}".encode()
        return hmac.new(self.key, message, hashlib.sha256).digest()


USE = (
    "WITH used AS (UPDATE verification_codes SET used_at = now() "
    "WHERE channel_id = %(channel)s AND account = %(account)s AND used_at IS NULL) "
    "INSERT INTO known_senders AS k (account, sender, known_at) "
    "SELECT %(account)s, %(sender)s, now() FROM " + RELAXED_COMMIT + " "
    "ON CONFLICT (account, sender) DO UPDATE SET known_at = excluded.known_at"
)
"""The codes marked used and their user known, in one statement (migrations/0020): the user is
recorded even when a concurrent use marked the codes first. Committed without waiting for the
disk (`RELAXED_COMMIT`): the recharge's idempotency record is committed synchronously after it,
before the answer; a crash before that loses the use with the answer, and the client's retry
(the same key, the code already reserved) marks the codes used again."""
LIVE_CODES = (
    "SELECT v.id, v.code_hash, v.attempts, coalesce(a.wrong, 0) "
    "FROM verification_codes v LEFT JOIN verification_attempts a "
    "ON a.code_id = v.id AND a.sender = %s "
    "WHERE v.channel_id = %s AND v.account = %s AND v.used_at IS NULL "
    "AND v.expires_at > now() ORDER BY v.sent_at DESC FOR UPDATE OF v"
)
"""The account's live codes, locked: the tries on one code are made one at a time."""
LIVE_CODES_LOOKED_AT = LIVE_CODES.replace(
    "FROM verification_codes v", "FROM " + RELAXED_COMMIT + ", verification_codes v"
)
"""The same, as a statement of its own that changes nothing but its row locks (released at its
end): nothing of it needs to reach the disk, so its commit does not wait for it. A wrong try
is counted with `LIVE_CODES`, in a transaction that commits synchronously."""
WRONG = VerificationFailed("wrong")
"""`judge`'s answer for a code that matches none of the codes `sender` may still try."""


def is_triable(row: Any) -> bool:
    _, _, attempts, wrong = row
    return bool(attempts < TRIES_PER_CODE and wrong < TRIES_PER_SENDER)


def judge(rows: list[Any], typed: bytes) -> DomainError | None:
    """None if `typed` is one of the live codes the sender may still try; the refusal when
    there is none to try; WRONG when there are some and it matches none of them."""
    if not rows:
        return VerificationFailed("no valid verification code: ask for a new one")
    triable = [row for row in rows if is_triable(row)]
    if not triable:
        return VerificationLocked("too many wrong tries: ask for a new code")
    if any(hmac.compare_digest(bytes(stored), typed) for _, stored, _, _ in triable):
        return None
    return WRONG


def prune_known_senders(pool: Any, older_than_seconds: int = 2 * 86_400) -> None:
    """Forget senders not known for longer than the placement asks about."""
    with pool.connection() as conn:
        conn.execute(
            "DELETE FROM known_senders WHERE known_at < now() - make_interval(secs => %s)",
            (older_than_seconds,),
        )
