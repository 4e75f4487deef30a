"""The one backoff schedule of every retry loop (webphone._backoff)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone._backoff import DEFAULT_CAP, backoff


def take(delays: object, n: int) -> list[float]:
    return list(itertools.islice(delays, n))  # type: ignore[call-overload]


def test_the_defaults_retry_at_once_then_1_2_4_up_to_30_seconds() -> None:
    """Without jitter the default schedule is the softphone's: 0, 1, 2, 4 ... 30, 30."""
    assert take(backoff(jitter=0.0), 9) == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_jitter_only_shortens_and_never_exceeds_the_cap() -> None:
    """Jittered delays lie in [(1 - jitter) d, d]; the first (at once) is never jittered."""
    delays = take(backoff(rng=random.Random(7)), 40)
    plain = take(backoff(jitter=0.0), 40)
    assert delays[0] == 0.0
    assert all(0.8 * p <= d <= p <= DEFAULT_CAP for d, p in zip(delays, plain, strict=True))
    assert len(set(delays[10:])) > 1, "jitter spreads the capped delays"


@given(first=st.floats(0, 5), initial=st.floats(0, 5), factor=st.floats(1, 4),
       extra=st.floats(0, 60), jitter=st.floats(0, 0.99), seed=st.integers(0, 2**32))
def test_every_schedule_is_bounded_and_non_decreasing_before_jitter(
    first: float, initial: float, factor: float, extra: float, jitter: float, seed: int
) -> None:
    """For any valid parameters: the first delay is `first`, none exceeds the cap, none is
    negative, and without jitter the delays after the first never shrink."""
    cap = max(first, initial) + extra
    delays = take(backoff(first=first, initial=initial, factor=factor, cap=cap, jitter=jitter,
                          rng=random.Random(seed)), 30)
    assert delays[0] == first
    assert all(0 <= d <= cap for d in delays)
    plain = take(backoff(first=first, initial=initial, factor=factor, cap=cap, jitter=0.0), 30)
    assert plain[1:] == sorted(plain[1:])


@pytest.mark.parametrize("kwargs", [{"first": -1.0}, {"initial": -0.1}, {"factor": 0.5},
                                    {"jitter": 1.0}, {"jitter": -0.1}, {"cap": 0.5}])
def test_a_schedule_that_makes_no_sense_is_refused(kwargs: dict[str, float]) -> None:
    """Negative delays, a shrinking factor, a jitter outside [0, 1) or a cap below the initial
    delay: ValueError naming the values."""
    with pytest.raises(ValueError, match="backoff"):
        backoff(**kwargs)
