"""Tones and tone detection on 16-bit PCM, pure Python (no numpy, no aiortc).

Playing a tone costs nothing per sample: `tone_block` computes one block that holds a whole
number of periods once (cached), and `sine_chunks` hands out slices of it, so the phase runs on
continuously across chunks and blocks. Frequencies whose period-aligned block would exceed one
second at that rate are rounded to the nearest 1 Hz first (an integer frequency always fits).

`detect_tone` and `tone_levels` use the Goertzel algorithm: for each candidate frequency they
give the share of the signal's energy found at that frequency (about 1.0 for a clean sine at
exactly that frequency, about 0 for one far away). That is what tests and voice bots need to
answer "is this 1000 Hz, and not 440 Hz?" without an FFT library.

PCM everywhere in webphone is signed 16-bit little-endian ("s16le"), mono unless said otherwise.
"""

from __future__ import annotations

import functools
import math
import sys
from array import array
from collections.abc import Iterable, Iterator
from fractions import Fraction

__all__ = [
    "detect_tone",
    "goertzel_ratio",
    "pcm_samples",
    "rms",
    "sine_chunks",
    "sine_wave",
    "tone_block",
    "tone_levels",
]

FULL_SCALE = 32768.0


def pcm_samples(pcm: bytes) -> array[int]:
    """Samples of s16le PCM as an `array('h')` (a trailing odd byte is ignored)."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _to_pcm(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def rms(pcm: bytes) -> float:
    """Root mean square level as a fraction of full scale (0.0 silence .. ~0.707 full sine)."""
    samples = pcm_samples(pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / FULL_SCALE


def goertzel_ratio(samples: array[int] | list[int], sample_rate: int, frequency: float) -> float:
    """Share of the signal energy at `frequency` (0..~1), by the Goertzel recurrence.

    `2 |X(f)|^2 / (N * sum(x^2))`: a pure sine at `frequency` gives about 1.0 whatever its
    amplitude (as long as the block spans a few periods); 0.0 for silence.
    """
    n = len(samples)
    if n == 0:
        return 0.0
    energy = math.fsum(s * s for s in samples)
    if energy == 0:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * frequency / sample_rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return max(0.0, 2.0 * power / (n * energy))


def tone_levels(pcm: bytes, sample_rate: int, frequencies: Iterable[float]) -> dict[float, float]:
    """{frequency: goertzel_ratio} for each candidate frequency."""
    samples = pcm_samples(pcm)
    return {f: goertzel_ratio(samples, sample_rate, f) for f in frequencies}


def detect_tone(
    pcm: bytes,
    sample_rate: int,
    frequencies: Iterable[float],
    min_ratio: float = 0.5,
    min_rms: float = 0.001,
) -> float | None:
    """The candidate frequency holding the most energy, if it holds at least `min_ratio` of
    it and the signal is louder than `min_rms` (fraction of full scale); else None."""
    if rms(pcm) < min_rms:
        return None
    levels = tone_levels(pcm, sample_rate, frequencies)
    if not levels:
        return None
    best = max(levels, key=lambda f: levels[f])
    return best if levels[best] >= min_ratio else None


def sine_wave(
    frequency: float,
    duration: float,
    sample_rate: int = 48000,
    amplitude: float = 0.5,
    start_sample: int = 0,
) -> bytes:
    """`duration` seconds of a sine as s16le mono PCM; `amplitude` is a fraction of full scale.
    `start_sample` continues the phase of an earlier chunk."""
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"amplitude must be within 0..1, got {amplitude}")
    if frequency <= 0 or frequency >= sample_rate / 2:
        raise ValueError(f"frequency must be within 0..{sample_rate / 2} Hz, got {frequency}")
    count = round(duration * sample_rate)
    peak = amplitude * 32767
    step = 2.0 * math.pi * frequency / sample_rate
    samples = array("h", (round(peak * math.sin(step * (start_sample + i))) for i in range(count)))
    return _to_pcm(samples)


def _check_tone(frequency: float, sample_rate: int, amplitude: float) -> None:
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"amplitude must be within 0..1, got {amplitude}")
    if frequency <= 0 or frequency >= sample_rate / 2:
        raise ValueError(f"frequency must be within 0..{sample_rate / 2} Hz, got {frequency}")


def _aligned(frequency: float, sample_rate: int) -> tuple[float, int]:
    """(frequency, samples): the frequency actually played and the length of the shortest block
    holding a whole number of its periods (<= 1 s)."""
    ratio = Fraction(frequency).limit_denominator(sample_rate) / sample_rate
    if ratio.denominator > sample_rate:
        frequency = float(max(1, round(frequency)))
        ratio = Fraction(round(frequency), sample_rate)
    return float(ratio * sample_rate), ratio.denominator


@functools.lru_cache(maxsize=64)
def tone_block(frequency: float, sample_rate: int = 48000, amplitude: float = 0.5) -> bytes:
    """A sine as s16le mono PCM holding a whole number of periods (so it loops without a
    click); the same samples as `sine_wave` from sample 0. Cached: compute once, play forever."""
    _check_tone(frequency, sample_rate, amplitude)
    frequency, samples = _aligned(frequency, sample_rate)
    return sine_wave(frequency, samples / sample_rate, sample_rate, amplitude)


def sine_chunks(
    frequency: float,
    duration: float,
    sample_rate: int = 48000,
    amplitude: float = 0.5,
    chunk: float = 0.02,
) -> Iterator[bytes]:
    """The same sine as `sine_wave`, in `chunk`-second pieces with continuous phase: slices of
    `tone_block` (nothing is computed per sample after the first block)."""
    block = tone_block(frequency, sample_rate, amplitude)
    period = len(block)
    per_chunk = max(1, round(chunk * sample_rate)) * 2
    looped = block * (1 + -(-per_chunk // period))  # any slice [offset, offset + chunk) fits
    remaining = round(duration * sample_rate) * 2
    offset = 0
    while remaining > 0:
        size = min(per_chunk, remaining)
        yield looped[offset : offset + size]
        offset = (offset + size) % period
        remaining -= size
