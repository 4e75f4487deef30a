"""Bot audio into a call: pipecat's chunks through one `media.play_pcm()` per run of speech.

pipecat calls `write_audio_frame` for each chunk as soon as it has one; `Speaker.write` feeds
the chunk to the run's `play_pcm` source and returns only when the audio before it is nearly
sent (`PlayoutClock`), so what an interruption must drop is at most one chunk plus the lead.
`interrupt()` drops it and stops webphone's player at once; `drain()` lets it play out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from ._core import PlayoutClock

__all__ = ["Speaker"]


class _Feed:
    """One run of bot audio for `media.play_pcm`: chunks until closed."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.closed = False
        self._wake = asyncio.Event()

    def put(self, pcm: bytes) -> None:
        self.chunks.append(pcm)
        self._wake.set()

    def close(self, *, drop: bool) -> None:
        if drop:
            self.chunks.clear()
        self.closed = True
        self._wake.set()

    async def source(self) -> AsyncIterator[bytes]:
        while True:
            while not self.chunks:
                if self.closed:
                    return
                self._wake.clear()
                await self._wake.wait()
            yield self.chunks.popleft()


class Speaker:
    """Bot audio into the call: one `play_pcm` per run, paced writes, instant interruption."""

    def __init__(self, media: Any, sample_rate: int, lead: float) -> None:
        self.media = media
        self.sample_rate = sample_rate
        self._clock = PlayoutClock(lead)
        self._feed: _Feed | None = None
        self._playing: asyncio.Future[bool] | None = None

    async def write(self, pcm: bytes) -> None:
        if self._feed is None:
            self._feed = feed = _Feed()
            self._playing = asyncio.ensure_future(
                self.media.play_pcm(feed.source(), self.sample_rate)
            )
            self._playing.add_done_callback(lambda _: self._ended(feed))
        self._feed.put(pcm)
        loop = asyncio.get_running_loop()
        delay = self._clock.schedule(loop.time(), len(pcm) / (2 * self.sample_rate))
        if delay > 0:
            await asyncio.sleep(delay)

    def _ended(self, feed: _Feed) -> None:
        # Someone else played on this media (a new play_* interrupts ours), or it closed:
        # the next write starts a new run instead of feeding a source nobody reads.
        if self._feed is feed:
            self._feed = None
            self._clock.reset()

    def interrupt(self) -> None:
        """Drop everything queued and silence the call now."""
        feed, self._feed = self._feed, None
        self._clock.reset()
        if feed is not None:
            feed.close(drop=True)
            self.media.stop_playback()

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until the audio written so far has been sent."""
        feed, playing = self._feed, self._playing
        self._feed = None
        if feed is None or playing is None:
            return
        feed.close(drop=False)
        with contextlib.suppress(Exception, TimeoutError):
            await asyncio.wait_for(asyncio.shield(playing), timeout)
