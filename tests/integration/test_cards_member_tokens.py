"""Members' bearer tokens on the real PostgreSQL: only their hash is stored, a new one
replaces the old, and the API's authenticator knows the member by it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from adapters.database import open_pool
from adapters.tokens import PostgresMemberTokens
from api.principals import Authenticator
from api.problems import Problem

pytestmark = pytest.mark.integration


@pytest.fixture
def pool(database_url: str) -> Iterator[Any]:
    opened = open_pool(database_url, size=2, name="member-tokens-test")
    yield opened
    opened.close()


def test_a_members_token_is_stored_as_its_hash_and_a_new_one_replaces_it(pool: Any) -> None:
    tokens, member = PostgresMemberTokens(pool), uuid4()
    first = tokens.issue(member)
    second = tokens.issue(member)

    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, token_hash, role, subject FROM api_tokens WHERE subject = %s",
            (str(member),),
        ).fetchall()
    assert [(i, bytes(h), r) for i, h, r, _ in rows] == [
        (f"tok_{member.hex}", hashlib.sha256(second.encode()).digest(), "member")
    ]
    authenticator = Authenticator(pool, b"secret", 300)
    assert authenticator.bearer(second).subject == member
    with pytest.raises(Problem):
        authenticator.bearer(first)
