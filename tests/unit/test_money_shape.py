"""A bare number where money is expected is the usual first mistake: the answer says the shape."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.card_schemas import WithdrawalIn
from api.schemas import MONEY_SHAPE


def test_a_bare_amount_is_told_the_money_shape() -> None:
    with pytest.raises(ValidationError) as refused:
        WithdrawalIn.model_validate({"amount": 300})
    (error,) = refused.value.errors()
    assert error["loc"] == ("amount",)
    assert MONEY_SHAPE in error["msg"]
    assert '{"amount": 300, "currency": "CNY"}' in error["msg"]


def test_the_object_form_is_accepted() -> None:
    body = WithdrawalIn.model_validate({"amount": {"amount": 300, "currency": "CNY"}})
    assert body.amount.to_money().amount == 300
