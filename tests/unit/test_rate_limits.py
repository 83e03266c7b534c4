"""The sliding-window estimate behind rate limits and the lock-out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.rate_limits import Limit, estimate, wait

LOCKOUT = Limit(hits=10, window_seconds=900)


def test_a_lock_out_reached_just_before_a_window_boundary_does_not_end_at_it():
    start = 9_000
    just_after = start + 1
    assert estimate(0, 10, just_after, start, LOCKOUT) >= 9.9
    # Ten wrong codes in the last 15 minutes: the next try is allowed once the oldest have
    # slid out of the window far enough, a tenth of it later.
    assert wait(0, 10, just_after, start, LOCKOUT) == 89


def test_the_previous_window_counts_less_as_it_slides_away():
    start = 9_000
    assert estimate(0, 10, start + 450, start, LOCKOUT) == 5
    assert estimate(3, 10, start + 900, start, LOCKOUT) == 3


@given(
    current=st.integers(0, 50), previous=st.integers(0, 50), elapsed=st.floats(0, 899.9)
)
def test_after_the_wait_one_more_hit_is_within_the_limit(current, previous, elapsed):
    start = 9_000
    now = start + elapsed
    later = now + wait(current, previous, now, start, LOCKOUT)
    if later < start + LOCKOUT.window_seconds:
        assert estimate(current + 1, previous, later, start, LOCKOUT) <= LOCKOUT.hits + 1e-9
    else:
        next_start = start + LOCKOUT.window_seconds
        assert estimate(1, current, later, next_start, LOCKOUT) <= LOCKOUT.hits + 1e-9
