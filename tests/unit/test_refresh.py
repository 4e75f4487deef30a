"""Registration refresh jitter: a random point in the last part of the interval."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone._refresh import MARGIN, refresh_delay


@given(granted=st.integers(min_value=1, max_value=7200), seed=st.integers(0, 2**32))
def test_the_refresh_comes_late_in_the_interval_but_before_expiry(granted: int, seed: int) -> None:
    delay = refresh_delay(granted, random.Random(seed))
    latest = granted - MARGIN if granted >= 20 else max(granted / 2, 1.0)
    assert 0.6 * latest <= delay <= latest <= granted


def test_500_phones_registered_at_once_refresh_spread_over_the_window() -> None:
    rng = random.Random(1)
    delays = sorted(refresh_delay(60, rng) for _ in range(500))
    assert delays[0] >= 32.4 and delays[-1] <= 54.0
    per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(32, 54)]
    assert max(per_second) < 50  # not 500 in one instant: ~23 a second on average


def test_a_non_positive_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="granted expiry"):
        refresh_delay(0)
