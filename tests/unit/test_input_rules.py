"""The input rules of api/input_rules.py, and every request body schema keeping them."""

from __future__ import annotations

import inspect
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, get_args, get_origin

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from api import card_schemas, schemas
from api.input_rules import (
    Expiry,
    Instant,
    body_refusal,
    canonical_uuid,
    media_type_refusal,
    unwanted_character,
)
from api.schemas import Body


def bodies() -> list[type[Body]]:
    found = {
        model
        for module in (schemas, card_schemas)
        for _, model in inspect.getmembers(module, inspect.isclass)
        if issubclass(model, Body) and model is not Body
    }
    return sorted(found, key=lambda model: model.__name__)


# text


@pytest.mark.parametrize("character", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
def test_every_c0_and_c1_control_is_unwanted(character: str) -> None:
    assert unwanted_character(f"ab{character}c") == (2, character)


@pytest.mark.parametrize("character", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\u061c"])
def test_bidirectional_controls_are_unwanted(character: str) -> None:
    assert unwanted_character(character) == (0, character)


@pytest.mark.parametrize("text", ["北京 朝阳店", "Ça va — l'épicerie", "👨\u200d👩\u200d👧", "a b"])
def test_ordinary_text_in_any_script_is_kept(text: str) -> None:
    assert unwanted_character(text) is None


@given(st.text())
def test_text_is_refused_exactly_when_it_holds_an_unwanted_character(text: str) -> None:
    class Named(Body):
        name: str

    bad = any(
        (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF)
        or c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
        for c in text
    )
    if bad:
        with pytest.raises(ValidationError, match="control characters"):
            Named(name=text)
    else:
        assert Named(name=text).name == text


@pytest.mark.parametrize("model", bodies(), ids=lambda model: model.__name__)
def test_every_body_refuses_a_control_character_in_every_string_field(
    model: type[Body],
) -> None:
    """Each string field (or list of strings) of each body, given a NUL, is refused on that
    field whatever the rest of the body holds (by the rule, or first by a stricter pattern)."""
    checked = 0
    for name, field in model.model_fields.items():
        if not holds(str, field.annotation):
            continue
        value: Any = ["AB\x00CD"] if holds(list, field.annotation) else "AB\x00CD"
        with pytest.raises(ValidationError) as refused:
            model.model_validate({name: value})
        messages = [e["msg"] for e in refused.value.errors() if e["loc"][0] == name]
        assert messages, (model.__name__, name)
        patterned = any("pattern" in m or "IPv4" in m for m in messages)
        assert patterned or any("control characters" in m for m in messages), messages
        checked += 1
    assert checked or not any(holds(str, f.annotation) for f in model.model_fields.values())


def holds(kind: type, annotation: Any) -> bool:
    """Whether a field's type is, or contains, `kind` (through Optional, Annotated, list)."""
    if annotation is kind or get_origin(annotation) is kind:
        return True
    return any(holds(kind, argument) for argument in get_args(annotation))


def test_nested_bodies_refuse_too() -> None:
    with pytest.raises(ValidationError, match="control characters"):
        schemas.RechargeIn.model_validate(
            {
                "code": "AAAA",
                "account": "13900000000",
                "verification_code": "1",
                "user": {"name": "\u202eevil"},
            }
        )


def test_every_request_body_is_a_body() -> None:
    """A request schema outside Body would escape the rules: every *In model is a Body."""
    for module in (schemas, card_schemas):
        for name, model in inspect.getmembers(module, inspect.isclass):
            if name.endswith("In") and issubclass(model, BaseModel):
                assert issubclass(model, Body), name


# times


def test_an_expiry_is_in_the_future_before_2100_and_in_utc() -> None:
    expiry = TypeAdapter(Expiry)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert expiry.validate_python(soon.isoformat()) == soon
    shanghai = expiry.validate_python("2099-12-31T23:00:00+08:00")
    assert shanghai == datetime(2099, 12, 31, 15, tzinfo=UTC)
    assert shanghai.utcoffset() == timedelta(0)
    for refused in (
        "9999-12-31T23:59:59-14:00",
        "2100-01-01T00:00:00Z",
        "2020-01-01T00:00:00Z",
        (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        "2099-01-01T00:00:00",
    ):
        with pytest.raises(ValidationError):
            expiry.validate_python(refused)


def test_an_instant_lies_from_1970_to_before_3000() -> None:
    instant = TypeAdapter(Instant)
    assert instant.validate_python("2026-01-01T00:00:00") == datetime(2026, 1, 1, tzinfo=UTC)
    assert instant.validate_python("2999-12-31T23:59:59Z") == datetime(
        2999, 12, 31, 23, 59, 59, tzinfo=UTC
    )
    for refused in (
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "1969-12-31T23:59Z",
        "3000-01-01T00:00:00Z",
    ):
        with pytest.raises(ValidationError):
            instant.validate_python(refused)


# ids


def test_only_the_lowercase_hyphenated_uuid_is_an_id() -> None:
    value = uuid.uuid4()
    assert canonical_uuid(str(value)) == value
    for other in (
        f"urn:uuid:{value}",
        f"{{{value}}}",
        str(value).upper(),
        value.hex,
        f" {value}",
        f"{value}\n",
        str(value).replace("-", "\u2010"),
    ):
        assert canonical_uuid(other) is None, other


# bodies


def test_json_in_utf8_with_distinct_keys_is_taken() -> None:
    assert body_refusal(json.dumps({"name": "北京", "n": [1, {"a": None}]}).encode()) is None
    assert body_refusal(json.dumps({"name": "北京"}, ensure_ascii=False).encode()) is None


@pytest.mark.parametrize(
    "body, why",
    [
        (b'{"name": "a", "name": "b"}', "twice"),
        (b'{"m": {"amount": 1, "amount": 2}}', "twice"),
        (b'[{"a": 1}, {"b": 1, "b": 1}]', "twice"),
        (json.dumps({"name": "x"}).encode("utf-16"), "not UTF-8"),
        (json.dumps({"name": "x"}).encode("utf-16-le"), "not JSON"),
        (json.dumps({"name": "x"}).encode("utf-32-be"), "not JSON"),
        (json.dumps({"name": "x"}).encode("utf-8-sig"), "byte order mark"),
        (b'{"name": "\xff"}', "not UTF-8"),
        (b'{"amount": NaN}', "not JSON"),
        (b'{"amount": -Infinity}', "not JSON"),
        (b'{"name": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'{"name": ', "not JSON"),
    ],
)
def test_other_bodies_are_refused_with_the_reason(body: bytes, why: str) -> None:
    refusal = body_refusal(body)
    assert refusal is not None and why in refusal, refusal


@pytest.mark.parametrize(
    "content_type, refused",
    [
        (None, False),
        ("application/json", False),
        ("application/json; charset=utf-8", False),
        ('Application/JSON; charset="UTF-8"', False),
        ("application/merge-patch+json", False),
        ("application/json; charset=utf-16", True),
        ("application/json; charset=iso-8859-1", True),
        ("text/plain", True),
        ("application/x-www-form-urlencoded", True),
        ("", True),
    ],
)
def test_json_in_utf8_is_the_only_media_type(content_type: str | None, refused: bool) -> None:
    assert (media_type_refusal(content_type) is not None) == refused


def test_a_name_is_still_stripped_and_never_blank() -> None:
    assert schemas.ChannelIn(name="  Shop  ").name == "Shop"
    with pytest.raises(ValidationError, match="at least 1 character"):
        schemas.ChannelIn(name="   ")
