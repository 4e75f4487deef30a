"""Audio plumbing between programs and aiortc: the outgoing track, playback sources, PCM
conversion (what programs get of received audio: `webphone.media.received`). Imports av and
aiortc.

Outgoing: one `OutgoingAudioTrack` per call is what aiortc's sender pulls, 20 ms frames of
48 kHz mono s16 in real time. It plays whatever a `Playback` wrote into its small buffer and
silence otherwise (also while muted), so RTP keeps flowing and the timestamps stay continuous.
A *live* source (audio produced in real time elsewhere: a call's received audio, a stream)
instead sets the pace: each 20 ms frame leaves as soon as it is complete, and the track keeps
at most `LIVE_BACKLOG` of it, so the source's latency never grows (see `write_live`).
Once the send codec is known it encodes inline (`webphone.media.codec`) and hands aiortc the
encoded packet; until then, and for codecs without an inline encoder, aiortc encodes the frame.

Incoming: `PcmConverter` turns aiortc's decoded frames (opus: 48 kHz stereo; G.711: 8 kHz mono)
into mono s16 at the rate the program asked for.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
import wave
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .clock import SendClock, send_clock
from .codec import InlineEncoder
from .tone import sine_chunks

log = logging.getLogger("webphone.media")

__all__ = [
    "FRAME_BYTES",
    "FRAME_SAMPLES",
    "SEND_RATE",
    "OutgoingAudioTrack",
    "PcmConverter",
    "Playback",
    "wav_chunks",
]

SEND_RATE = 48000
FRAME_SAMPLES = SEND_RATE // 50  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2
_TIME_BASE = fractions.Fraction(1, SEND_RATE)
_SILENCE = bytes(FRAME_BYTES)


def _frame_pcm(frame: Any) -> bytes:
    """The s16 bytes of a packed av.AudioFrame (its plane may be padded)."""
    size = frame.samples * 2 * len(frame.layout.channels)
    return bytes(frame.planes[0])[:size]


class PcmConverter:
    """s16 PCM at any rate, mono or stereo (bytes or av frames) -> s16 mono at `rate`.

    Keeps one av.AudioResampler while the input format stays the same (the resampler carries
    state between chunks; a new one is made when the input changes).
    """

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._resampler: Any = None
        self._key: tuple[str, str, int] | None = None

    def convert_pcm(self, pcm: bytes, rate: int, channels: int = 1) -> bytes:
        if channels not in (1, 2):
            raise ValueError(f"PCM must be mono or stereo, got {channels} channels")
        samples = len(pcm) // (2 * channels)
        if samples == 0:
            return b""
        frame = av.AudioFrame(
            format="s16", layout="mono" if channels == 1 else "stereo", samples=samples
        )
        frame.sample_rate = rate
        frame.planes[0].update(pcm[: samples * 2 * channels])
        return self.convert_frame(frame)

    def convert_frame(self, frame: Any) -> bytes:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key == ("s16", "mono", self.rate) and self._key is None:
            return _frame_pcm(frame)
        if key != self._key:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._key = key
        frame.pts = None
        return b"".join(_frame_pcm(out) for out in self._resampler.resample(frame))

    def flush(self) -> bytes:
        """What the resampler still holds (call at the end of a source)."""
        if self._resampler is None:
            return b""
        out = b"".join(_frame_pcm(f) for f in self._resampler.resample(None))
        self._resampler, self._key = None, None
        return out


# -- outgoing --------------------------------------------------------------------------------


#: How far an outgoing track may fall behind real time before it stops catching up.
MAX_LAG = 0.1
#: Live sources: how long past a frame's time the track waits for it before sending silence.
LIVE_STALL = 0.02
#: Live sources: the most audio that may wait in the track (older audio is dropped).
LIVE_BACKLOG = 2 * FRAME_BYTES


class OutgoingAudioTrack(MediaStreamTrack):
    """The track aiortc sends: 20 ms of 48 kHz mono s16 per `recv()`, paced in real time.

    Plays the bytes in its buffer (`write`), silence when the buffer is empty or while muted.
    The buffer holds at most `buffer_ms` of audio: `write` waits for room, which paces a source
    that produces faster than real time (files, tones) without holding it all in memory.

    While `live` is set the source paces the track instead of the clock (`write_live`).
    """

    kind = "audio"

    def __init__(self, buffer_ms: int = 200) -> None:
        super().__init__()
        self.encoder: InlineEncoder | None = None
        self._buffer = bytearray()
        self._limit = max(FRAME_BYTES, SEND_RATE * 2 * buffer_ms // 1000)
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.muted = False
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0
        self.frames_late = 0  # handed out more than a frame later than their time
        self.frames_skipped = 0  # never sent: the track fell > MAX_LAG behind and skipped ahead
        self.max_lag = 0.0  # the worst lateness seen (seconds)
        self._live = False
        self.live_dropped = 0  # frames of live audio dropped: more than LIVE_BACKLOG waited
        self._flowing = False  # live audio went out in the last frame (no stall since)
        self._last_sent = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._clock: SendClock | None = None  # the send clock of the loop pulling this track
        self._on_grid = False  # the frame times are on that clock's ticks

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def live(self) -> bool:
        """Whether a live source sets the pace (`write_live`) rather than the clock."""
        return self._live

    @live.setter
    def live(self, on: bool) -> None:
        self._live, self._flowing = on, False
        self._wake()

    async def write(self, pcm: bytes, still_wanted: Any = None) -> bool:
        """Append 48 kHz mono s16; waits while the buffer is full. Returns False (without
        writing) if `still_wanted()` turns false while waiting."""
        while len(self._buffer) >= self._limit:
            self._room.clear()
            await self._room.wait()
            if still_wanted is not None and not still_wanted():
                return False
        if still_wanted is not None and not still_wanted():
            return False
        self._buffer += pcm
        self._empty.clear()
        return True

    def write_live(self, pcm: bytes) -> None:
        """Append 48 kHz mono s16 of a live source; never waits.

        Whole frames leave as soon as they are complete (`recv` waits for them rather than for
        its clock), so the delay between the source and the network is the source's own. The
        first chunk after a stall is aligned to a frame boundary with silence before it (a
        resampler's first chunk is short: without that, every frame would wait for the next
        chunk). Beyond `LIVE_BACKLOG` the oldest whole frames are dropped (`live_dropped`):
        a source that bursts after a stall (a jitter buffer catching up) cannot add latency.
        Chunks of whole 20 ms frames (a call's received audio at 48 kHz) leave at once; a
        source whose chunks drift against the frames (e.g. resampled from 44.1 kHz) may have
        part of a frame wait for its next chunk, up to 20 ms more.
        """
        if not self._flowing and len(pcm) % FRAME_BYTES:
            pcm = _SILENCE[: FRAME_BYTES - len(pcm) % FRAME_BYTES] + pcm
        self._flowing = True
        self._buffer += pcm
        excess = -(-(len(self._buffer) - LIVE_BACKLOG) // FRAME_BYTES)
        if excess > 0:
            del self._buffer[: excess * FRAME_BYTES]
            self.live_dropped += excess
        self._empty.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def drained(self) -> None:
        """Wait until everything written has been handed to the sender."""
        await self._empty.wait()

    def clear(self) -> None:
        """Drop buffered audio and wake every waiter (they re-check why they wait)."""
        self._buffer.clear()
        self._room.set()
        self._empty.set()
        self._wake()

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            if self.live:
                await self._live_turn(now)
            else:
                await self._clock_turn(self._start, now)
        chunk = self._next_chunk()
        if self.encoder is not None:
            packet = self.encoder.encode(chunk, self._pts)
            if packet is not None:
                self.frames_sent += 1
                return packet
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk)
        frame.pts = self._pts
        frame.sample_rate = SEND_RATE
        frame.time_base = _TIME_BASE
        self.frames_sent += 1
        return frame

    async def _live_turn(self, now: float) -> None:
        """Wait for a whole frame of the live source, at most until `LIVE_STALL` past the frame's
        time (then silence goes out, at the clock's pace until the source writes again). The
        clock follows: when the source ends, the track goes on 20 ms after its last frame."""
        deadline = self._last_sent + FRAME_SAMPLES / SEND_RATE
        if self._flowing:
            deadline += LIVE_STALL
        loop = asyncio.get_running_loop()
        while len(self._buffer) < FRAME_BYTES and self._live and self.readyState == "live":
            if deadline <= now:
                break
            self._waiter = loop.create_future()
            timer = loop.call_later(deadline - now, self._wake)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
            now = time.monotonic()
        if len(self._buffer) < FRAME_BYTES:
            self._flowing = False
        self._last_sent = now
        self._start = now - self._pts / SEND_RATE
        self._on_grid = False

    async def _clock_turn(self, start: float, now: float) -> None:
        """Wait for the next frame's time on the loop's send clock (`webphone.media.clock`: one
        timer for every call of the process). Joining the clock's grid (first frame, after live
        audio or after skipping ahead) shifts the track's phase once, later by < 20 ms."""
        due = start + self._pts / SEND_RATE
        clock = self._clock
        if clock is None or not self._on_grid:
            clock = self._clock = send_clock()
            due = clock.tick_at_or_after(due)
            self._start = due - self._pts / SEND_RATE
            self._on_grid = True
        self._last_sent = due
        if due > now:
            await clock.wait(due)
            now = time.monotonic()  # the tick itself may come late (a stalled loop)
        if now - due > 0:
            self._late(now - due, now)

    def _late(self, lag: float, now: float) -> None:
        self.max_lag = max(self.max_lag, lag)
        if lag > FRAME_SAMPLES / SEND_RATE:
            self.frames_late += 1
        if lag > MAX_LAG:
            # Nobody pulled for a while (between two peer connections, or a stalled loop): go
            # on from now instead of sending the missed time as a burst.
            self.frames_skipped += int(lag * SEND_RATE) // FRAME_SAMPLES
            self._start = now - self._pts / SEND_RATE
            self._on_grid = False

    def _next_chunk(self) -> bytes:
        if self.muted or not self._buffer:
            chunk = _SILENCE
        else:
            chunk = bytes(self._buffer[:FRAME_BYTES])
            if len(chunk) < FRAME_BYTES:
                chunk += _SILENCE[len(chunk):]
        del self._buffer[:FRAME_BYTES]
        if len(self._buffer) < self._limit:
            self._room.set()
        if not self._buffer:
            self._empty.set()
        return chunk

    def stop(self) -> None:
        """Called by aiortc when a sender lets go of the track (its peer connection closed):
        ignored. The track belongs to its `MediaSession`, which hands it to a new peer
        connection when the far end changes; it ends with `close()` only."""

    def close(self) -> None:
        """End the track for good (`recv` raises `MediaStreamError` from now on)."""
        super().stop()
        self.clear()


class Playback:
    """One source at a time into an `OutgoingAudioTrack`; a new `play` interrupts the current."""

    def __init__(self, track: OutgoingAudioTrack) -> None:
        self._track = track
        self._generation = 0
        self._active = False
        self.closed = False

    @property
    def playing(self) -> bool:
        return self._active

    def stop(self) -> None:
        """Interrupt the current source (its `play` returns False) and drop buffered audio."""
        self._generation += 1
        self._active = False
        self._track.live = False
        self._track.clear()

    def close(self) -> None:
        self.closed = True
        self.stop()

    async def play(
        self, chunks: AsyncIterable[bytes] | Iterable[bytes], live: bool = False
    ) -> bool:
        """Play 48 kHz mono s16 chunks; True when played to the end, False if interrupted.
        `live`: an async source producing in real time, which sets the pace (each frame is
        sent once complete, at most `LIVE_BACKLOG` waits: `OutgoingAudioTrack.write_live`)."""
        if live and not isinstance(chunks, AsyncIterable):
            raise TypeError("live playback needs an async iterator that produces in real time")
        self.stop()
        generation = self._generation

        def current() -> bool:
            return generation == self._generation and not self.closed

        self._active = True
        self._track.live = live
        try:
            if live and isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    if not current():
                        return False
                    self._track.write_live(chunk)
            elif isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    if not await self._track.write(chunk, current):
                        return False
            else:
                for chunk in chunks:
                    if not await self._track.write(chunk, current):
                        return False
            while current() and self._track.buffered:
                await self._track.drained()
            return current()
        finally:
            if generation == self._generation:
                self._active = False
                self._track.live = False


async def converted(
    source: AsyncIterable[bytes], sample_rate: int, channels: int = 1
) -> AsyncIterator[bytes]:
    """`source` PCM (s16, `sample_rate`, `channels`) as 48 kHz mono s16 chunks."""
    converter = PcmConverter(SEND_RATE)
    pending = b""
    frame = 2 * channels
    async for chunk in source:
        data = pending + bytes(chunk)
        usable = len(data) - len(data) % frame
        pending = data[usable:]
        out = converter.convert_pcm(data[:usable], sample_rate, channels)
        if out:
            yield out
    tail = converter.flush()
    if tail:
        yield tail


def tone_source(frequency: float, duration: float, amplitude: float = 0.5) -> Iterable[bytes]:
    """A sine, directly at the send rate, in 100 ms chunks: the player wakes once per five
    frames to refill the track's buffer (200 ms) rather than once per frame."""
    return sine_chunks(frequency, duration, SEND_RATE, amplitude, chunk=0.1)


async def wav_chunks(path: str | Path, chunk_seconds: float = 0.5) -> AsyncIterator[bytes]:
    """A 16-bit PCM WAV file (mono or stereo, any rate) as 48 kHz mono s16 chunks; the file is
    read in a worker thread, a chunk at a time."""
    reader = await asyncio.to_thread(wave.open, str(path), "rb")
    try:
        if reader.getsampwidth() != 2 or reader.getnchannels() not in (1, 2):
            raise ValueError(
                f"{path}: only 16-bit PCM WAV, mono or stereo, can be played "
                f"(got {reader.getsampwidth() * 8}-bit, {reader.getnchannels()} channels)"
            )
        rate, channels = reader.getframerate(), reader.getnchannels()
        frames_per_chunk = max(1, int(rate * chunk_seconds))

        async def raw() -> AsyncIterator[bytes]:
            while True:
                data = await asyncio.to_thread(reader.readframes, frames_per_chunk)
                if not data:
                    return
                yield data

        async for chunk in converted(raw(), rate, channels):
            yield chunk
    finally:
        reader.close()
