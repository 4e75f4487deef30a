"""The far party's gap meter (tests/support/continuity.py `ToneMeter`): pure, frames in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from support.continuity import RESUMED_AFTER, ToneMeter

TONES = frozenset({1000.0, 1200.0})


def fed(frames: list[tuple[float, float | None]]) -> ToneMeter:
    meter = ToneMeter(expect=TONES)
    for at, hz in frames:
        meter.feed(hz, at)
    return meter


def steady(start: float, end: float, hz: float | None) -> list[tuple[float, float | None]]:
    return [(start + i * 0.02, hz) for i in range(round((end - start) / 0.02))]


def test_a_steady_tone_has_no_gap_beyond_a_frame() -> None:
    report = fed(steady(0.0, 2.0, 1000.0)).report(0.5, 1.5)
    assert report["gap_ms"] <= 20.5 and report["missing_frames"] == 0
    assert report["tones"] == [1000.0]


def test_a_hole_and_a_new_tone_are_measured() -> None:
    frames = steady(0.0, 1.0, 1000.0) + steady(1.3, 2.0, 1200.0)
    report = fed(frames).report(0.5, 1.9)
    assert 300 <= report["gap_ms"] <= 321
    assert report["tones"] == [1000.0, 1200.0]
    assert 13 <= report["missing_frames"] <= 15


def test_frames_without_an_expected_tone_are_a_gap_and_the_end_counts() -> None:
    frames = steady(0.0, 1.0, 1000.0) + steady(1.0, 1.5, None) + steady(1.5, 1.6, 440.0)
    report = fed(frames).report(0.5, 2.0)
    assert report["gap_ms"] >= 999  # from the last tone frame to the end of the interval
    assert report["current"] is None


def test_the_same_tone_after_silence_is_reported_as_resumed() -> None:
    meter = ToneMeter(expect=TONES)
    assert meter.feed(1000.0, 0.0)  # first: a change
    assert not meter.feed(1000.0, 0.02)
    assert meter.feed(1000.0, 0.02 + RESUMED_AFTER + 0.01)  # a new holder, same tone


@given(st.lists(st.tuples(st.floats(0, 10), st.sampled_from([None, 440.0, 1000.0, 1200.0])),
                max_size=60),
       st.floats(0, 5), st.floats(0, 5))
def test_the_gap_never_exceeds_the_interval_and_frames_are_counted(
    frames: list[tuple[float, float | None]], since: float, length: float
) -> None:
    meter = fed(sorted(frames, key=lambda frame: frame[0]))
    report = meter.report(since, since + length)
    assert 0 <= report["gap_ms"] <= length * 1000 + 0.05  # rounded to 0.1 ms
    assert report["tone_frames"] == sum(
        1 for at, hz in frames if hz in TONES and since <= at <= since + length)
