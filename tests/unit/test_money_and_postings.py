"""Money, stock quantities, balanced postings and how they are stored inside events."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from eventsourcing.persistence import JSONTranscoder
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import CurrencyMismatch, DomainError, InvalidAmount
from ledger.money import CURRENCIES, MAX_AMOUNT, MAX_QUANTITY, Money, require_quantity
from ledger.postings import Posting, Postings, UnbalancedPostings
from ledger.transcodings import MoneyAsList, PostingsAsRows, register_ledger_transcodings

# Money


@pytest.mark.parametrize(
    "amount",
    [1.0, 0.5, 100.0, Decimal("1"), Fraction(1, 1), True, False, "100", "1.00", None, b"1"],
    ids=repr,
)
def test_money_refuses_anything_but_a_plain_integer_amount(amount: object) -> None:
    with pytest.raises(InvalidAmount):
        Money(amount)  # type: ignore[arg-type]


def test_money_is_a_domain_error_with_a_stable_code() -> None:
    with pytest.raises(DomainError) as refused:
        Money(1.5)  # type: ignore[arg-type]
    assert refused.value.code == "invalid_amount"


@pytest.mark.parametrize("amount", [MAX_AMOUNT, -MAX_AMOUNT, 0, 1, -1])
def test_money_accepts_amounts_up_to_the_limit(amount: int) -> None:
    assert Money(amount).amount == amount


@pytest.mark.parametrize("amount", [MAX_AMOUNT + 1, -MAX_AMOUNT - 1, 10**30, -(10**30)])
def test_money_refuses_amounts_past_the_limit(amount: int) -> None:
    with pytest.raises(InvalidAmount):
        Money(amount)


@pytest.mark.parametrize("currency", ["GBP", "cny", "", " CNY", "CNY ", "RMB", None, 156])
def test_money_refuses_unknown_currencies(currency: object) -> None:
    with pytest.raises(InvalidAmount):
        Money(100, currency)  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", sorted(CURRENCIES))
def test_money_accepts_every_known_currency(currency: str) -> None:
    assert Money(1, currency).currency == currency


def test_money_defaults_to_fen_of_yuan() -> None:
    assert Money(5) == Money(5, "CNY")


def test_money_adds_subtracts_and_multiplies_in_integers() -> None:
    assert Money(250) + Money(50) == Money(300)
    assert Money(250) - Money(300) == Money(-50)
    assert Money(250) * 3 == Money(750)
    assert -Money(250) == Money(-250)
    assert type((Money(7) * 3).amount) is int


def test_money_of_different_currencies_does_not_mix() -> None:
    with pytest.raises(CurrencyMismatch):
        Money(1, "CNY") + Money(1, "USD")
    with pytest.raises(CurrencyMismatch):
        Money(1, "CNY") - Money(1, "USD")


def test_arithmetic_past_the_limit_is_refused() -> None:
    with pytest.raises(InvalidAmount):
        Money(MAX_AMOUNT) + Money(1)
    with pytest.raises(InvalidAmount):
        Money(-MAX_AMOUNT) - Money(1)
    with pytest.raises(InvalidAmount):
        Money(10**9) * MAX_QUANTITY


@pytest.mark.parametrize("amount", [0, -1, -MAX_AMOUNT])
def test_require_positive_refuses_zero_and_negative(amount: int) -> None:
    with pytest.raises(InvalidAmount):
        Money(amount).require_positive()


def test_require_positive_returns_the_money_itself() -> None:
    assert Money(1).require_positive() == Money(1)


def test_money_serialises_as_a_plain_dict() -> None:
    assert Money(1234, "HKD").as_dict() == {"amount": 1234, "currency": "HKD"}


def test_money_is_immutable() -> None:
    money = Money(1)
    with pytest.raises(AttributeError):
        money.amount = 2  # type: ignore[misc]


# Stock quantities


@pytest.mark.parametrize("quantity", [1, 2, MAX_QUANTITY])
def test_quantity_is_a_whole_number_from_one_to_the_limit(quantity: int) -> None:
    assert require_quantity(quantity) == quantity


@pytest.mark.parametrize(
    "quantity", [0, -1, MAX_QUANTITY + 1, 1.0, 1.5, True, "1", None, Decimal(1)], ids=repr
)
def test_quantity_refuses_zero_negative_past_limit_and_non_integers(quantity: object) -> None:
    with pytest.raises(InvalidAmount):
        require_quantity(quantity)  # type: ignore[arg-type]


# Postings


def test_a_posting_refuses_a_zero_leg() -> None:
    with pytest.raises(UnbalancedPostings):
        Posting("channel:a:funds", "CNY", 0)


@pytest.mark.parametrize("amount", [1.0, True, "5", MAX_AMOUNT + 1, -MAX_AMOUNT - 1], ids=repr)
def test_a_posting_refuses_non_integer_and_past_limit_amounts(amount: object) -> None:
    with pytest.raises(UnbalancedPostings):
        Posting("channel:a:funds", "CNY", amount)  # type: ignore[arg-type]


def test_postings_refuse_an_empty_movement() -> None:
    with pytest.raises(UnbalancedPostings):
        Postings(())


def test_postings_refuse_a_single_leg() -> None:
    with pytest.raises(UnbalancedPostings):
        Postings((Posting("channel:a:funds", "CNY", 100),))


def test_postings_refuse_legs_that_do_not_sum_to_zero() -> None:
    with pytest.raises(UnbalancedPostings):
        Postings((Posting("a", "CNY", -100), Posting("b", "CNY", 99)))


def test_postings_balance_per_asset_not_in_total() -> None:
    # The legs sum to zero overall, but yuan cannot pay for dollars.
    with pytest.raises(UnbalancedPostings):
        Postings((Posting("a", "CNY", -100), Posting("b", "USD", 100)))
    with pytest.raises(UnbalancedPostings):
        Postings((Posting("a", "CNY", -3), Posting("b", "unit:p", 3)))


def test_postings_may_carry_several_balanced_assets() -> None:
    postings = Postings(
        (
            Posting("a", "CNY", -100),
            Posting("b", "CNY", 100),
            Posting("s", "unit:p", -2),
            Posting("t", "unit:p", 2),
        )
    )
    assert len(list(postings)) == 4


def test_postings_of_builds_a_debit_and_a_credit_per_transfer() -> None:
    postings = Postings.of(
        ("channel:buyer:funds", "channel:seller:funds", "CNY", 2500),
        ("channel:seller:stock:p", "channel:buyer:stock:p", "unit:p", 3),
    )
    assert postings.legs == (
        Posting("channel:buyer:funds", "CNY", -2500),
        Posting("channel:seller:funds", "CNY", 2500),
        Posting("channel:seller:stock:p", "unit:p", -3),
        Posting("channel:buyer:stock:p", "unit:p", 3),
    )


@pytest.mark.parametrize("amount", [0, -1])
def test_postings_of_refuses_transfers_that_are_not_positive(amount: int) -> None:
    with pytest.raises(UnbalancedPostings):
        Postings.of(("a", "b", "CNY", amount))


def test_postings_of_refuses_no_transfers() -> None:
    with pytest.raises(UnbalancedPostings):
        Postings.of()


def test_postings_refuse_tampered_rows() -> None:
    rows = Postings.of(("a", "b", "CNY", 100)).to_rows()
    rows[1][2] = 101
    with pytest.raises(UnbalancedPostings):
        Postings.from_rows(rows)


transfers = st.lists(
    st.tuples(
        st.sampled_from(["channel:a:funds", "channel:b:funds", "platform:p:payable", "x"]),
        st.sampled_from(["channel:c:funds", "external:deposits:CNY", "y"]),
        st.sampled_from(["CNY", "USD", "unit:p", "unit:q"]),
        st.integers(min_value=1, max_value=MAX_AMOUNT),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(transfers)
def test_postings_of_always_balances_per_asset_and_round_trips_as_rows(
    moves: list[tuple[str, str, str, int]],
) -> None:
    postings = Postings.of(*moves)
    totals: dict[str, int] = {}
    for leg in postings:
        totals[leg.asset] = totals.get(leg.asset, 0) + leg.amount
    assert set(totals.values()) == {0}
    assert len(postings.legs) == 2 * len(moves)
    assert Postings.from_rows(postings.to_rows()) == postings


# Transcodings


@pytest.fixture
def transcoder() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    register_ledger_transcodings(transcoder)
    return transcoder


def test_money_round_trips_through_the_event_transcoder(transcoder: JSONTranscoder) -> None:
    for money in (Money(0), Money(MAX_AMOUNT, "USD"), Money(-MAX_AMOUNT, "EUR")):
        decoded = transcoder.decode(transcoder.encode(money))
        assert decoded == money
        assert type(decoded.amount) is int


def test_postings_round_trip_through_the_event_transcoder(transcoder: JSONTranscoder) -> None:
    postings = Postings.of(
        ("channel:a:funds", "platform:p:payable", "CNY", 20000),
        ("platform:p:supply:x", "channel:a:stock:x", "unit:x", 10),
    )
    assert transcoder.decode(transcoder.encode(postings)) == postings


def test_values_nested_in_an_event_state_round_trip(transcoder: JSONTranscoder) -> None:
    state = {
        "amount": Money(99, "HKD"),
        "postings": Postings.of(("a", "b", "HKD", 99)),
        "prices": {"p": Money(1)},
    }
    assert transcoder.decode(transcoder.encode(state)) == state


def test_stored_postings_that_no_longer_balance_do_not_load(transcoder: JSONTranscoder) -> None:
    encoded = transcoder.encode(Postings.of(("a", "b", "CNY", 100)))
    tampered = encoded.replace(b"100", b"101", 1)
    assert tampered != encoded
    with pytest.raises(UnbalancedPostings):
        transcoder.decode(tampered)


def test_stored_money_with_an_unknown_currency_does_not_load(transcoder: JSONTranscoder) -> None:
    tampered = transcoder.encode(Money(100, "CNY")).replace(b"CNY", b"XXX")
    with pytest.raises(InvalidAmount):
        transcoder.decode(tampered)


def test_transcodings_encode_plain_lists() -> None:
    assert MoneyAsList().encode(Money(5, "USD")) == [5, "USD"]
    assert MoneyAsList().decode([5, "USD"]) == Money(5, "USD")
    rows = PostingsAsRows().encode(Postings.of(("a", "b", "CNY", 5)))
    assert rows == [["a", "CNY", -5], ["b", "CNY", 5]]
    assert PostingsAsRows().decode(rows) == Postings.of(("a", "b", "CNY", 5))
