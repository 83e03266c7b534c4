"""Verification codes on PostgreSQL (issue 10, item 1): a send re-sends the live code instead
of replacing it, wrong tries lock a code only for the sender that made them, and a code's
wrong tries from every sender together stay bounded (then it is burned)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.database import open_pool
from adapters.sms import SandboxSms
from adapters.verification import (
    TRIES_PER_CODE,
    TRIES_PER_SENDER,
    VALID_SECONDS,
    PostgresVerificationCodes,
    prune_known_senders,
)
from ledger.errors import VerificationFailed, VerificationLocked
from tests.conftest import migrated_database

pytestmark = pytest.mark.integration

USER, ATTACKER = "203.0.113.7", "198.51.100.66"


@pytest.fixture(scope="module")
def module_database() -> Iterator[str]:
    """One migrated database for the module (each test uses accounts of its own)."""
    with migrated_database() as url:
        yield url


@pytest.fixture(scope="module")
def pool(module_database: str) -> Iterator[Any]:
    opened = open_pool(module_database, size=2)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def codes(pool: Any) -> PostgresVerificationCodes:
    return PostgresVerificationCodes(pool, b"integration-test-secret-key-32by", SandboxSms(pool))


@pytest.fixture
def account() -> str:
    return f"138{uuid.uuid4().int % 10**8:08d}"


CHANNEL = uuid.uuid4()


def sent(pool: Any, account: str) -> str:
    code = SandboxSms(pool).last_code(account)
    assert code is not None
    return code


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def live_codes(pool: Any, account: str) -> int:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM verification_codes WHERE account = %s AND used_at IS NULL "
            "AND expires_at > now()",
            (account,),
        ).fetchone()
    return int(row[0])


def test_a_send_from_anyone_re_sends_the_live_code_instead_of_replacing_it(
    codes: PostgresVerificationCodes, pool: Any, account: str
) -> None:
    """Before: one more send replaced the code the user had just received (422)."""
    assert codes.send(CHANNEL, "Shop", account, USER) == VALID_SECONDS
    users = sent(pool, account)
    for _ in range(2):
        left = codes.send(CHANNEL, "Shop", account, ATTACKER)
        assert VALID_SECONDS - 5 <= left <= VALID_SECONDS
        assert sent(pool, account) == users  # the same code, sent again
    assert live_codes(pool, account) == 1

    codes.check(CHANNEL, account, users, USER)
    codes.use(CHANNEL, account, USER)
    with pytest.raises(VerificationFailed):
        codes.check(CHANNEL, account, users, USER)  # used: not accepted again


def test_a_code_near_its_end_is_not_re_sent_and_stays_valid_beside_the_new_one(
    codes: PostgresVerificationCodes, pool: Any, account: str
) -> None:
    codes.send(CHANNEL, "Shop", account, USER)
    old = sent(pool, account)
    with pool.connection() as conn:  # four and a half minutes pass
        conn.execute(
            "UPDATE verification_codes SET expires_at = now() + interval '30 seconds' "
            "WHERE account = %s",
            (account,),
        )
    assert codes.send(CHANNEL, "Shop", account, ATTACKER) == VALID_SECONDS
    assert live_codes(pool, account) == 2
    codes.check(CHANNEL, account, old, USER)  # the user's code still works
    codes.check(CHANNEL, account, sent(pool, account), USER)  # and so does the new one


def test_wrong_tries_from_another_address_lock_the_code_for_that_address_only(
    codes: PostgresVerificationCodes, pool: Any, account: str
) -> None:
    """Before: five wrong codes from anywhere locked the user's code (423)."""
    codes.send(CHANNEL, "Shop", account, USER)
    right = sent(pool, account)
    answers = []
    for _ in range(TRIES_PER_SENDER):
        with pytest.raises((VerificationFailed, VerificationLocked)) as refused:
            codes.check(CHANNEL, account, wrong(right), ATTACKER)
        answers.append(type(refused.value).__name__)
    assert answers == ["VerificationFailed"] * (TRIES_PER_SENDER - 1) + ["VerificationLocked"]
    with pytest.raises(VerificationLocked):  # even the right code, from the locked sender
        codes.check(CHANNEL, account, right, ATTACKER)

    codes.check(CHANNEL, account, right, USER)


def test_a_locked_sender_asking_again_gets_a_new_code_and_the_users_stays_valid(
    codes: PostgresVerificationCodes, pool: Any, account: str
) -> None:
    codes.send(CHANNEL, "Shop", account, USER)
    users = sent(pool, account)
    for _ in range(TRIES_PER_SENDER):
        with pytest.raises((VerificationFailed, VerificationLocked)):
            codes.check(CHANNEL, account, wrong(users), ATTACKER)
    codes.send(CHANNEL, "Shop", account, ATTACKER)
    fresh = sent(pool, account)
    assert live_codes(pool, account) == 2
    codes.check(CHANNEL, account, fresh, ATTACKER)  # the new code has its own tries
    codes.check(CHANNEL, account, users, USER)


def test_a_codes_wrong_tries_from_every_sender_together_are_bounded_then_it_is_burned(
    codes: PostgresVerificationCodes, pool: Any, account: str
) -> None:
    """The bound against brute force: a code takes at most TRIES_PER_CODE wrong tries from
    all addresses together; then even the right code is refused, everywhere, and the next
    send issues a new code."""
    codes.send(CHANNEL, "Shop", account, USER)
    right = sent(pool, account)
    guessers = [f"198.51.100.{n}" for n in range(TRIES_PER_CODE // TRIES_PER_SENDER + 1)]
    for guesser in guessers:
        for _ in range(TRIES_PER_SENDER):
            with pytest.raises((VerificationFailed, VerificationLocked)):
                codes.check(CHANNEL, account, wrong(right), guesser)
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT attempts FROM verification_codes WHERE account = %s", (account,)
        ).fetchone()
    assert row[0] == TRIES_PER_CODE  # counted no further: the later guesses tried nothing
    with pytest.raises(VerificationLocked):
        codes.check(CHANNEL, account, right, USER)

    codes.send(CHANNEL, "Shop", account, USER)
    renewed = sent(pool, account)
    codes.check(CHANNEL, account, renewed, USER)


def test_a_channel_name_with_control_characters_from_before_still_sends(
    codes: PostgresVerificationCodes, pool: Any, account: str
) -> None:
    """Names are refused with control characters now; one stored before (issue 10, item 6:
    a NUL made every send for the channel a 500) is sent without them."""
    codes.send(uuid.uuid4(), "Nul\x00shop\u202e\n", account, USER)
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT message FROM sandbox_sms_outbox WHERE account = %s", (account,)
        ).fetchone()
    assert row is not None and row[0].startswith("[Nulshop] Your verification code is ")


DAY = 86_400


def test_the_sender_that_used_a_code_is_known_to_the_account_for_a_day(
    codes: PostgresVerificationCodes, pool: Any, account: str
) -> None:
    codes.send(CHANNEL, "Shop", account, ATTACKER)
    codes.check(CHANNEL, account, sent(pool, account), USER)
    assert not codes.known(account, USER, DAY)

    codes.use(CHANNEL, account, USER)

    assert codes.known(account, USER, DAY)
    assert not codes.known(account, ATTACKER, DAY)  # it asked for the code, never typed it
    assert not codes.known(f"{account}0", USER, DAY)
    assert live_codes(pool, account) == 0
    codes.use(CHANNEL, account, "198.51.100.77")  # a use that raced the first: no code left
    assert codes.known(account, "198.51.100.77", DAY)  # its sender read the code all the same

    with pool.connection() as conn:  # a day and a little more passes
        conn.execute(
            "UPDATE known_senders SET known_at = known_at - interval '1 day 1 second' "
            "WHERE account = %s AND sender = %s",
            (account, USER),
        )
    assert not codes.known(account, USER, DAY)
    assert codes.known(account, USER, DAY + 2)
    prune_known_senders(pool, DAY)
    assert not codes.known(account, USER, 10 * DAY)
    assert codes.known(account, "198.51.100.77", DAY)
