"""Live sources (`play_pcm(..., live=True)`): the source sets the pace, its latency never grows.

The track tests step `recv()` by hand: "leaves at once" means the coroutine finishes without
suspending (no clock, no timing); the session tests relay real audio through two aiortc peer
connections on loopback and check tones by frequency.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from support.tones import heard, playing
from support.wait import wait_until
from webphone.media import AudioStream, MediaSession
from webphone.media.audio import FRAME_BYTES, LIVE_BACKLOG, OutgoingAudioTrack, Playback
from webphone.media.tone import sine_wave

pytestmark = pytest.mark.timeout(60)

_PENDING = object()


def step(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` until it first suspends: its result, or `_PENDING` (then it is closed)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    return _PENDING


def pcm_of(frame: Any) -> bytes:
    return bytes(frame.planes[0])[:FRAME_BYTES]


def tone(freq: float, frames: int = 1) -> bytes:
    return sine_wave(freq, 0.02 * frames, 48000, 0.4)


async def started_track(live: bool) -> OutgoingAudioTrack:
    track = OutgoingAudioTrack()
    assert step(track.recv()) is not _PENDING  # the first frame starts the clock
    track.live = live
    return track


async def test_a_live_frame_leaves_as_soon_as_it_is_complete() -> None:
    track = await started_track(live=True)
    track.write_live(tone(1000))
    assert pcm_of(step(track.recv())) == tone(1000)
    # the clock alone would have waited: the same frame in a paced track suspends
    paced = await started_track(live=False)
    await paced.write(tone(1000))
    assert step(paced.recv()) is _PENDING


async def test_a_short_first_chunk_is_aligned_not_held_for_the_next() -> None:
    track = await started_track(live=True)
    short = tone(1000)[: FRAME_BYTES - 384]  # what a resampler's first chunk looks like
    track.write_live(short)
    assert pcm_of(step(track.recv())) == bytes(384) + short
    track.write_live(tone(700))  # flowing: no more silence put in
    assert pcm_of(step(track.recv())) == tone(700)


async def test_a_burst_keeps_only_the_newest_frames() -> None:
    track = await started_track(live=True)
    frames = [sine_wave(f, 0.02, 48000, 0.4) for f in (440, 700, 1000, 1500, 2000)]
    track.write_live(b"".join(frames))
    assert track.buffered == LIVE_BACKLOG == 2 * FRAME_BYTES
    assert track.live_dropped == 3
    assert [pcm_of(step(track.recv())) for _ in range(2)] == frames[-2:]


async def test_a_stalled_source_gets_silence_then_is_aligned_again() -> None:
    track = await started_track(live=True)
    track.write_live(tone(1000))
    step(track.recv())
    # nothing comes: after the frame's time and the stall allowance, silence goes out
    assert pcm_of(await asyncio.wait_for(track.recv(), 1)) == bytes(FRAME_BYTES)
    short = tone(700)[:FRAME_BYTES // 2]
    track.write_live(short)  # the source is back: aligned again, sent at once
    assert pcm_of(step(track.recv())) == bytes(FRAME_BYTES // 2) + short


async def test_a_live_source_must_be_async() -> None:
    track = await started_track(live=False)
    with pytest.raises(TypeError, match="async iterator"):
        await Playback(track).play([tone(1000)], live=True)
    assert not track.live and not track.buffered


async def test_ending_live_returns_to_the_clock_and_close_wakes_a_waiter() -> None:
    track = await started_track(live=True)
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)  # the stimulus: recv is now waiting for the source
    track.close()
    assert pcm_of(await asyncio.wait_for(waiting, 1)) == bytes(FRAME_BYTES)
    track = await started_track(live=True)
    track.live = False
    track.write_live(tone(1000))
    assert step(track.recv()) is _PENDING  # paced by the clock again


# -- a relay between two sessions -------------------------------------------------------------

RATE = 16000


Relay = tuple[MediaSession, MediaSession, AudioStream, asyncio.Event]


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    """(caller, echo, the echo's received audio, gate): the echo plays back live what it
    hears (like the sandbox's echo party), taking it from its stream while `gate` is set."""
    caller = MediaSession(loopback_only=True, receive_sample_rate=RATE)
    echo = MediaSession(loopback_only=True, receive_sample_rate=48000)
    source = echo.received_audio(max_frames=25)
    gate = asyncio.Event()
    gate.set()

    async def gated() -> AsyncIterator[bytes]:
        async for frame in source:
            await gate.wait()
            yield frame.pcm

    answer = await echo.create_answer(await caller.create_offer())
    await caller.apply_answer(answer)
    await asyncio.gather(caller.wait_connected(5), echo.wait_connected(5))
    task = asyncio.ensure_future(echo.play_pcm(gated(), 48000, live=True))
    try:
        yield caller, echo, source, gate
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.gather(caller.close(), echo.close())


async def test_a_live_relay_sends_back_what_it_hears(relay: Relay) -> None:
    caller, echo, _source, _gate = relay
    stream = caller.received_audio()
    for freq in (1000, 700):
        async with playing(caller, freq, 0.4):
            await heard(stream, freq)
    assert echo.stats.frames_sent > 0 and echo.stats.frames_trimmed == 0


async def test_a_relay_that_fell_behind_drops_the_backlog_not_the_latency(relay: Relay) -> None:
    caller, echo, source, gate = relay
    stream = caller.received_audio()
    async with playing(caller, 1000, 0.4):
        await heard(stream, 1000)
        gate.clear()  # the stimulus: the relay stops taking audio while 200 ms queue up
        await wait_until(lambda: len(source) >= 10, 5)
        gate.set()  # ... then catches up at once: all but the newest 40 ms are dropped
        await wait_until(lambda: echo.stats.frames_trimmed >= 8, 5)
        await heard(stream, 1000)
    async with playing(caller, 700, 0.4):
        await heard(stream, 700)
