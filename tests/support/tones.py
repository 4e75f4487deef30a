"""Tones in media tests: play one for a while, listen until one dominates received audio."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from webphone.media import AudioStream, MediaSession, detect_tone

CANDIDATES = (440, 700, 1000, 1500)


async def heard(stream: AudioStream, freq: float, timeout: float = 5.0,
                candidates: Sequence[float] = CANDIDATES) -> float:
    """Seconds until `freq` dominates (among `candidates`) a 200 ms window of `stream`;
    `TimeoutError` after `timeout`."""
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        while True:
            frames = [await anext(stream) for _ in range(10)]
            pcm = b"".join(frame.pcm for frame in frames)
            if detect_tone(pcm, frames[0].sample_rate, candidates) == freq:
                return time.perf_counter() - started


@contextlib.asynccontextmanager
async def playing(media: MediaSession, freq: float, volume: float = 0.5) -> AsyncIterator[None]:
    """`media` plays `freq` for the duration of the block."""
    task = asyncio.ensure_future(media.play_tone(freq, 30.0, volume))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
