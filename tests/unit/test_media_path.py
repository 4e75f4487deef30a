"""Pure pieces of the per-call media path: period-aligned tone blocks, the adaptive jitter
buffer, the load monitor's overload rule."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webphone.media.jitter import JitterBuffer, Released
from webphone.media.load import LoadMonitor, Probe
from webphone.media.tone import detect_tone, pcm_samples, sine_chunks, sine_wave, tone_block

# -- tone blocks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("frequency", "rate", "samples"), [
    (1000, 48000, 48), (440, 48000, 1200), (700, 8000, 80), (350, 16000, 320),
])
def test_a_tone_block_holds_a_whole_number_of_periods(frequency: int, rate: int,
                                                      samples: int) -> None:
    block = tone_block(frequency, rate, 0.5)
    assert len(block) == 2 * samples
    assert (samples * frequency) % rate == 0
    assert detect_tone(block * 10, rate, [frequency, frequency * 1.5]) == frequency


@given(
    frequency=st.integers(min_value=50, max_value=3900),
    rate=st.sampled_from([8000, 16000, 48000]),
    duration=st.floats(min_value=0.0, max_value=0.5),
    chunk=st.sampled_from([0.001, 0.01, 0.02, 0.05]),
)
@settings(max_examples=60, deadline=None)
def test_chunks_from_blocks_are_the_sine_with_continuous_phase(
    frequency: int, rate: int, duration: float, chunk: float
) -> None:
    played = b"".join(sine_chunks(frequency, duration, rate, 0.5, chunk))
    exact = sine_wave(frequency, duration, rate, 0.5)
    assert len(played) == len(exact)
    # the same samples up to float rounding of sin() at large arguments: no phase jump anywhere
    assert all(abs(a - b) <= 1 for a, b in zip(pcm_samples(played), pcm_samples(exact),
                                               strict=True))


def test_a_non_integer_frequency_is_played_within_one_hertz() -> None:
    block = tone_block(440.37, 48000, 0.5)
    assert len(block) <= 2 * 48000
    second = (block * (1 + 96000 // len(block)))[:96000]  # 1 s: enough for 1 Hz resolution
    assert detect_tone(second, 48000, [439, 440, 441], min_ratio=0.3) == 440


def test_bad_tones_are_refused_with_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="frequency"):
        tone_block(30000, 48000)
    with pytest.raises(ValueError, match="amplitude"):
        tone_block(440, 48000, 1.5)


# -- jitter buffer ----------------------------------------------------------------------------


def feed(buffer: JitterBuffer, packets: list[tuple[int, float]]) -> list[Released]:
    """(seq, arrival) pairs with 20 ms timestamps at 8 kHz; the payload is the seq."""
    out: list[Released] = []
    for seq, arrival in packets:
        out += buffer.push(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, seq.to_bytes(4, "big"),
                           arrival)
    return out


def test_in_order_packets_wait_for_two_newer_ones_40_ms() -> None:
    buffer = JitterBuffer(clock_rate=8000)
    assert buffer.depth == 2
    assert feed(buffer, [(10, 0.0), (11, 0.02)]) == []
    out = feed(buffer, [(12, 0.04)])
    assert [r.seq for r in out] == [10]
    assert [r.seq for r in feed(buffer, [(13, 0.06)])] == [11]


def test_a_missing_packet_is_given_up_then_its_late_arrival_dropped() -> None:
    buffer = JitterBuffer(clock_rate=8000)
    out = feed(buffer, [(1, 0.0), (2, 0.02), (4, 0.06), (5, 0.08), (6, 0.10)])
    assert [(r.seq, r.payload is None) for r in out] == [(1, False), (2, False), (3, True),
                                                          (4, False)]
    assert buffer.lost == 1
    assert feed(buffer, [(3, 0.12)]) == []
    assert buffer.late == 1
    assert buffer.depth == 3  # a late packet deepens the buffer at once


def test_the_depth_follows_the_measured_jitter_and_stays_bounded() -> None:
    rng = random.Random(7)
    buffer = JitterBuffer(clock_rate=8000, max_depth=8)
    packets = [(n, n * 0.02 + rng.uniform(0, 0.08)) for n in range(300)]
    feed(buffer, sorted(packets, key=lambda p: p[1]))
    assert buffer.jitter_ms > 10
    assert 3 <= buffer.depth <= 8
    steady = JitterBuffer(clock_rate=8000)
    feed(steady, [(n, n * 0.02) for n in range(300)])
    assert steady.jitter_ms < 0.5
    assert steady.depth == 2


def test_sequence_numbers_wrap_and_a_far_jump_resyncs() -> None:
    buffer = JitterBuffer(clock_rate=8000)
    out = feed(buffer, [(0xFFFE + n, n * 0.02) for n in range(6)])
    assert [r.seq for r in out] == [0xFFFE, 0xFFFF, 0, 1]
    out = feed(buffer, [(5000, 0.2)])
    assert buffer.resyncs == 1
    assert [r.seq for r in out] == [2, 3]  # what was held is flushed, in order


@given(
    order=st.permutations(range(40)),
    drop=st.sets(st.integers(min_value=0, max_value=39), max_size=8),
    start=st.integers(min_value=0, max_value=0xFFFF),
)
@settings(max_examples=150, deadline=None)
def test_every_packet_leaves_at_most_once_in_order_and_nothing_is_invented(
    order: list[int], drop: set[int], start: int
) -> None:
    """Whatever the reordering and loss: released sequence numbers strictly increase, each
    payload is the packet's own, and released + still held + late + duplicates = pushed."""
    buffer = JitterBuffer(clock_rate=8000, max_depth=6)
    pushed = [n for n in order if n not in drop]
    out: list[Released] = []
    late_first = 0
    for i, n in enumerate(pushed):
        late = buffer.late
        out += buffer.push((start + n) & 0xFFFF, n * 160, n.to_bytes(2, "big"), i * 0.02)
        late_first += buffer.late - late
        counted = buffer.late + buffer.duplicates
        assert buffer.push((start + n) & 0xFFFF, n * 160, b"dup", i * 0.02) == []
        assert buffer.late + buffer.duplicates == counted + 1  # a duplicate, or late again
    received = [r for r in out if r.payload is not None]
    offsets = [(r.seq - start) & 0xFFFF for r in out]
    assert offsets == sorted(set(offsets))
    assert all(int.from_bytes(r.payload or b"", "big") == (r.seq - start) & 0xFFFF
               for r in received)
    assert len(received) + len(buffer) + late_first == len(pushed)
    assert buffer.lost == len(out) - len(received)
    assert len(buffer) <= buffer.depth + 1


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="clock_rate"):
        JitterBuffer(clock_rate=0)
    with pytest.raises(ValueError, match="min_depth"):
        JitterBuffer(clock_rate=8000, min_depth=5, max_depth=2)


# -- load monitor -----------------------------------------------------------------------------


class Session:
    """Counters of a session, as the monitor's probe reads them."""

    def __init__(self) -> None:
        self.dropped = self.late = 0
        self.told: list[dict[str, float]] = []
        self.probe = Probe(counters=lambda: (self.dropped, self.late), tell=self.told.append)


def test_overload_is_told_on_loop_lag_or_suffering_frames_and_rate_limited() -> None:
    monitor = LoadMonitor(lag_limit=0.04, quiet=1.0)
    calm, hurt = Session(), Session()
    monitor._sessions[calm.probe] = (0, 0, -1.0)
    monitor._sessions[hurt.probe] = (0, 0, -1.0)
    monitor.check(0.005, 0.0)
    assert calm.told == hurt.told == []
    hurt.late = 2
    monitor.check(0.005, 0.1)
    assert calm.told == [] and hurt.told == [
        {"loop_lag_ms": 5.0, "frames_dropped": 0, "frames_late": 2}]
    hurt.dropped = 1
    monitor.check(0.005, 0.5)  # within `quiet` of the last one: not told again
    assert len(hurt.told) == 1
    monitor.check(0.08, 1.2)  # the loop lags: every session suffers
    assert calm.told[0]["loop_lag_ms"] == 80.0 and len(hurt.told) == 2
    assert math.isclose(monitor.overloads, 3)
