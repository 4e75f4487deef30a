"""What programs get of a call's received audio: `AudioFrame`s, through a bounded
`AudioStream` and/or written by a `WavRecorder`. Pure asyncio and `wave` (no av, no aiortc);
`webphone.media.session` feeds them.
"""

from __future__ import annotations

import asyncio
import wave
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AudioFrame", "AudioStream", "WavRecorder"]


@dataclass(frozen=True)
class AudioFrame:
    """Received audio: `pcm` is s16le mono at `sample_rate`; `received_at` is the event-loop
    time (`loop.time()`) at which it was decoded."""

    pcm: bytes
    sample_rate: int
    received_at: float

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate


class AudioStream:
    """Async iterator over received `AudioFrame`s with a bounded queue.

    When the consumer falls behind, the oldest queued frame is dropped (`dropped` counts them),
    so memory never grows past `max_frames` frames. Iteration ends when the call's media
    closes or `close()` is called. Use it as `async for frame in media.received_audio(): ...`
    or `async with media.received_audio() as stream: ...`.
    """

    def __init__(self, max_frames: int = 50) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.max_frames = max_frames
        self.dropped = 0
        self.delivered = 0
        self.high_water = 0
        self._frames: deque[AudioFrame] = deque()
        self._wakeup = asyncio.Event()
        self.closed = False

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: AudioFrame) -> None:
        if self.closed:
            return
        if len(self._frames) >= self.max_frames:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)
        self.high_water = max(self.high_water, len(self._frames))
        self._wakeup.set()

    def close(self, drain: bool = False) -> None:
        """End the stream: queued frames are dropped, or still handed out when `drain` (the
        media closing uses that, so a consumer gets the call's last words)."""
        self.closed = True
        if not drain:
            self._frames.clear()
        self._wakeup.set()

    def __aiter__(self) -> AudioStream:
        return self

    async def __anext__(self) -> AudioFrame:
        while not self._frames:
            if self.closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        self.delivered += 1
        return self._frames.popleft()

    async def __aenter__(self) -> AudioStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class WavRecorder:
    """Writes received audio to a 16-bit mono WAV file.

    Writes are synchronous but small (one 20 ms frame, through the file's buffer); `close()`
    finalizes the header.
    """

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._writer: Any = wave.open(str(self.path), "wb")  # noqa: SIM115  (closed in close())
        self._writer.setnchannels(1)
        self._writer.setsampwidth(2)
        self._writer.setframerate(sample_rate)
        self.frames = 0

    def write(self, pcm: bytes) -> None:
        if self._writer is not None:
            self._writer.writeframes(pcm)
            self.frames += len(pcm) // 2

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
