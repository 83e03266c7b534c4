"""Redemption codes people can type: Crockford base32 in groups, with a check character.

19 random symbols carry 95 bits from the operating system's CSPRNG; a 20th symbol is a
Luhn mod 32 check over them, so a mistyped symbol or two swapped neighbours are caught
before the code is looked up (`code_malformed`), and told apart from a wrong code.
Typing is forgiving the Crockford way: case, hyphens and spaces don't matter, I and L read
as 1, O as 0.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VALUES = {symbol: value for value, symbol in enumerate(ALPHABET)}
ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0"})
DATA_SYMBOLS = 19
GROUP = 4
ENTROPY_BITS = DATA_SYMBOLS * 5


class MalformedCode(ValueError):
    """Not a code at all: wrong length, a symbol outside the alphabet, or a failed check."""


def check_symbol(data: str) -> str:
    """Luhn mod 32 over the data symbols."""
    total = 0
    factor = 2
    for symbol in reversed(data):
        addend = factor * VALUES[symbol]
        total += addend // 32 + addend % 32
        factor = 1 if factor == 2 else 2
    return ALPHABET[(32 - total % 32) % 32]


def new_code() -> str:
    data = "".join(secrets.choice(ALPHABET) for _ in range(DATA_SYMBOLS))
    return group(data + check_symbol(data))


def group(symbols: str) -> str:
    return "-".join(symbols[i : i + GROUP] for i in range(0, len(symbols), GROUP))


def normalize(typed: str) -> str:
    """The canonical 20 symbols of a typed code, or MalformedCode."""
    symbols = typed.upper().replace("-", "").replace(" ", "").translate(ALIASES)
    if len(symbols) != DATA_SYMBOLS + 1 or any(s not in VALUES for s in symbols):
        raise MalformedCode("a code is 20 symbols of 0-9 and A-Z (no U), in groups of 4")
    if check_symbol(symbols[:-1]) != symbols[-1]:
        raise MalformedCode("the code's check symbol does not match: a symbol is mistyped")
    return symbols


def keyed_hash(key: bytes, code: str) -> str:
    """How a code is stored and looked up: never in clear."""
    return hmac.new(key, normalize(code).encode(), hashlib.sha256).hexdigest()
