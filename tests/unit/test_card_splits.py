"""The money rules of member cards over every price, discount and ratio (SPEC 3.6-3.8)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.cards.splits import (
    BASIS_POINTS,
    DrawLimits,
    apply_bp,
    check_commission,
    check_discount,
    main_card_draw,
    split_shared,
)
from ledger.errors import DiscountBelowMain, InvalidAmount, InvalidRatio, LimitExceeded
from ledger.money import MAX_AMOUNT

prices = st.one_of(st.integers(1, 1000), st.integers(1, MAX_AMOUNT))
discounts = st.integers(1, BASIS_POINTS)
ratios = st.integers(0, BASIS_POINTS - 1)


def half_up(amount: int, bp: int) -> int:
    exact = Fraction(amount * bp, BASIS_POINTS)
    return int(exact + Fraction(1, 2)) if exact >= 0 else -1


@st.composite
def shared_terms(draw: st.DrawFn) -> tuple[int, int, int, int, bool]:
    main_bp = draw(discounts)
    shared_bp = draw(st.integers(main_bp, BASIS_POINTS))
    price = draw(prices)
    return price, main_bp, shared_bp, draw(ratios), draw(st.booleans())


@given(st.integers(0, MAX_AMOUNT), st.integers(0, BASIS_POINTS))
def test_rounding_is_half_up_to_the_fen(amount: int, bp: int) -> None:
    assert apply_bp(amount, bp) == half_up(amount, bp)


def test_rounding_examples() -> None:
    assert apply_bp(10001, 9000) == 9001  # 9000.9
    assert apply_bp(5, 1000) == 1  # 0.5 rounds up
    assert apply_bp(4, 1000) == 0  # 0.4 rounds down
    assert apply_bp(10001, 8000) == 8001  # 8000.8


@given(shared_terms())
def test_shared_split_parts_sum_exactly_and_none_is_negative(
    terms: tuple[int, int, int, int, bool],
) -> None:
    price, main_bp, shared_bp, ratio, has_sharer = terms
    try:
        split = split_shared(price, main_bp, shared_bp, ratio, has_sharer)
    except InvalidAmount:
        assert apply_bp(price, shared_bp) == 0
        return
    assert split.consumer_pays == half_up(price, shared_bp)
    assert split.merchant == half_up(price, main_bp)
    assert split.merchant + split.sharer + split.owner == split.consumer_pays
    assert min(split.merchant, split.sharer, split.owner) >= 0
    assert split.sharer + split.owner == split.margin
    expected_sharer = split.margin * ratio // BASIS_POINTS if has_sharer else 0
    assert split.sharer == expected_sharer
    if has_sharer:
        exact = Fraction(split.margin * ratio, BASIS_POINTS)
        assert 0 <= exact - split.sharer < 1


def test_the_example_of_the_spec() -> None:
    split = split_shared(10001, 8000, 9000, 3000, has_sharer=True)
    parts = (split.consumer_pays, split.merchant, split.sharer, split.owner)
    assert parts == (9001, 8001, 300, 700)


def test_without_a_sharing_user_the_owner_takes_the_whole_margin() -> None:
    split = split_shared(10000, 8000, 9000, 3000, has_sharer=False)
    assert (split.sharer, split.owner) == (0, 1000)


@given(discounts, discounts, st.integers(1, MAX_AMOUNT))
def test_a_shared_discount_better_than_the_main_one_is_refused(
    main_bp: int, shared_bp: int, price: int
) -> None:
    if shared_bp < main_bp:
        with pytest.raises(DiscountBelowMain):
            split_shared(price, main_bp, shared_bp, 0, False)
    elif apply_bp(price, shared_bp) > 0:
        assert split_shared(price, main_bp, shared_bp, 0, False).margin >= 0


@pytest.mark.parametrize("bp", [0, -1, BASIS_POINTS + 1, True, 8000.0])
def test_discounts_out_of_range_are_refused(bp: object) -> None:
    with pytest.raises(InvalidRatio):
        check_discount(bp)  # type: ignore[arg-type]


@pytest.mark.parametrize("bp", [-1, BASIS_POINTS, 3000.5])
def test_commission_ratios_out_of_range_are_refused(bp: object) -> None:
    with pytest.raises(InvalidRatio):
        check_commission(bp)  # type: ignore[arg-type]


@pytest.mark.parametrize("price", [0, -1, MAX_AMOUNT + 1])
def test_prices_out_of_range_are_refused(price: int) -> None:
    with pytest.raises(InvalidAmount):
        main_card_draw(price, 8000)


@given(prices, discounts)
def test_a_main_card_draws_the_rounded_main_price(price: int, main_bp: int) -> None:
    if half_up(price, main_bp) == 0:
        with pytest.raises(InvalidAmount):
            main_card_draw(price, main_bp)
    else:
        assert main_card_draw(price, main_bp) == half_up(price, main_bp)


limits = st.builds(
    DrawLimits,
    monthly=st.integers(1, 10**6),
    per_use=st.none() | st.integers(1, 10**6),
    total=st.none() | st.integers(1, 10**6),
)


@given(limits, st.integers(1, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_a_draw_passes_exactly_when_it_fits_every_limit(
    limit: DrawLimits, draw: int, this_month: int, in_total: int
) -> None:
    fits = (
        (limit.per_use is None or draw <= limit.per_use)
        and this_month + draw <= limit.monthly
        and (limit.total is None or in_total + draw <= limit.total)
    )
    if fits:
        limit.check(draw, this_month, in_total)
    else:
        with pytest.raises(LimitExceeded):
            limit.check(draw, this_month, in_total)


@given(limits, st.lists(st.tuples(st.integers(0, 2), st.integers(1, 10**5)), max_size=40))
def test_accepted_draws_never_pass_a_limit(limit: DrawLimits, draws: list[tuple[int, int]]) -> None:
    by_month: dict[int, int] = {}
    total = 0
    for month, amount in draws:
        try:
            limit.check(amount, by_month.get(month, 0), total)
        except LimitExceeded:
            continue
        by_month[month] = by_month.get(month, 0) + amount
        total += amount
        assert by_month[month] <= limit.monthly
        assert limit.total is None or total <= limit.total
        assert limit.per_use is None or amount <= limit.per_use


@pytest.mark.parametrize("bad", [0, -5, MAX_AMOUNT + 1])
def test_limits_are_positive_amounts(bad: int) -> None:
    with pytest.raises(InvalidAmount):
        DrawLimits(monthly=bad)
