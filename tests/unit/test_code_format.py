"""Redemption codes people can type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.distribution.code_format import (
    ALPHABET,
    ENTROPY_BITS,
    MalformedCode,
    keyed_hash,
    new_code,
    normalize,
)


def test_codes_carry_at_least_80_bits_and_come_in_groups_of_four():
    code = new_code()
    assert ENTROPY_BITS >= 80
    assert [len(group) for group in code.split("-")] == [4, 4, 4, 4, 4]


def test_typing_is_forgiving_about_case_hyphens_and_look_alikes():
    code = new_code()
    sloppy = code.lower().replace("-", " ").replace("1", "l").replace("0", "o")
    assert normalize(sloppy) == code.replace("-", "")


@given(position=st.integers(0, 19), replacement=st.sampled_from(ALPHABET))
def test_every_single_mistyped_symbol_is_caught(position, replacement):
    symbols = normalize(new_code())
    if symbols[position] == replacement:
        return
    typo = symbols[:position] + replacement + symbols[position + 1 :]
    with pytest.raises(MalformedCode):
        normalize(typo)


def test_codes_of_the_wrong_length_or_alphabet_are_malformed():
    for bad in ("", "ABCD", new_code() + "X", "UUUU-UUUU-UUUU-UUUU-UUUU"):
        with pytest.raises(MalformedCode):
            normalize(bad)


def test_the_stored_hash_depends_on_the_key_and_not_on_how_the_code_was_typed():
    code = new_code()
    assert keyed_hash(b"k1", code) == keyed_hash(b"k1", code.lower())
    assert keyed_hash(b"k1", code) != keyed_hash(b"k2", code)
    assert code.replace("-", "") not in keyed_hash(b"k1", code)


def test_codes_do_not_repeat():
    assert len({new_code() for _ in range(10_000)}) == 10_000
