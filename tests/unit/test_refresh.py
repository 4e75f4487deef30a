"""Registration refresh jitter: a random point in the last part of the interval."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone._refresh import MARGIN, MAX_EXPIRES, longer_expiry, refresh_delay


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


@pytest.mark.parametrize(("status", "header", "requested", "longer"), [
    (423, "120", 60, 120),  # RFC 3261 §10.2.8: ask again for at least Min-Expires
    (423, " 3600 ", 60, 3600),
    (423, "60", 60, None),  # not above what was asked: the same 423 again
    (423, "30", 60, None),
    (423, None, 60, None),  # a 423 without Min-Expires names nothing to try
    (423, "two minutes", 60, None),
    (423, "-5", 60, None),
    (423, "1²", 60, None),  # str.isdigit() says yes, int() says no
    (423, str(MAX_EXPIRES + 1), 60, None),
    (423, "120", 0, None),  # an unregister is never too brief
    (200, "120", 60, None),
    (400, "120", 60, None),
])
def test_longer_expiry_after_interval_too_brief(
    status: int, header: str | None, requested: int, longer: int | None
) -> None:
    assert longer_expiry(status, header, requested) == longer


@given(status=st.integers(100, 699), header=st.one_of(st.none(), st.text(max_size=12)),
       requested=st.integers(0, MAX_EXPIRES))
def test_a_longer_expiry_is_always_longer_and_valid(
    status: int, header: str | None, requested: int
) -> None:
    longer = longer_expiry(status, header, requested)
    if longer is not None:
        assert status == 423 and requested < longer <= MAX_EXPIRES
