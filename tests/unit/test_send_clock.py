"""The per-loop send clock (`webphone.media.clock`) and the outgoing tracks that share it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from webphone.media.audio import FRAME_SAMPLES, MAX_LAG, SEND_RATE, OutgoingAudioTrack
from webphone.media.clock import FRAME, SendClock, send_clock


@given(origin=st.floats(0, FRAME), t=st.floats(0, 1e6))
def test_a_track_joins_the_grid_later_by_less_than_a_frame(origin: float, t: float) -> None:
    clock = SendClock(asyncio.new_event_loop(), origin)
    tick = clock.tick_at_or_after(t)
    assert t - 1e-6 <= tick < t + FRAME
    assert abs((tick - origin) / FRAME - round((tick - origin) / FRAME)) < 1e-6
    assert clock.tick_at_or_after(tick) == tick  # a tick stays where it is


async def test_one_wakeup_serves_every_frame_due_on_a_tick() -> None:
    loop = asyncio.get_running_loop()
    clock = SendClock(loop, loop.time() % FRAME)
    first = clock.tick_at_or_after(loop.time() + 0.01)
    ticks = [first, first + FRAME, first + 2 * FRAME]
    waits = [clock.wait(tick) for tick in ticks for _ in range(20)]
    waits[5].cancel()  # a call closed while its frame waited: the others go on
    resolved_at: list[tuple[float, float]] = []

    def record(tick: float) -> Callable[[asyncio.Future[None]], None]:
        def done(future: asyncio.Future[None]) -> None:
            if not future.cancelled():
                resolved_at.append((tick, loop.time()))
        return done

    for tick, future in zip([t for t in ticks for _ in range(20)], waits, strict=True):
        future.add_done_callback(record(tick))
    await asyncio.wait(waits)
    assert clock.wakeups == 3
    assert len(resolved_at) == 59
    assert all(at >= tick - 0.002 for tick, at in resolved_at)  # never before its tick


async def test_an_earlier_tick_asked_later_rearms_the_timer() -> None:
    loop = asyncio.get_running_loop()
    clock = SendClock(loop, 0.0)
    late = clock.wait(clock.tick_at_or_after(loop.time() + 10 * FRAME))
    early_tick = clock.tick_at_or_after(loop.time() + FRAME)
    await asyncio.wait_for(clock.wait(early_tick), 5 * FRAME)
    assert not late.done()
    late.cancel()


async def test_tracks_of_one_loop_send_on_shared_ticks_in_real_time() -> None:
    tracks = [OutgoingAudioTrack() for _ in range(10)]
    clock = send_clock()
    wakeups0 = clock.wakeups
    returned: list[list[tuple[float, float]]] = [[] for _ in tracks]

    async def pull(track: OutgoingAudioTrack, times: list[tuple[float, float]]) -> None:
        for _ in range(15):
            await track.recv()
            assert track._start is not None
            times.append((time.monotonic(), track._start))

    started = time.monotonic()
    await asyncio.gather(*(pull(track, times) for track, times in zip(tracks, returned,
                                                                        strict=True)))
    elapsed = time.monotonic() - started
    for track, times in zip(tracks, returned, strict=True):
        assert track.frames_sent == 15
        # frame n leaves at or after its time: start + n frames (the pace is real time). The
        # start in force when it left: a loop stalled > MAX_LAG moves it (the track goes on
        # from then, no burst), as a busy machine's scheduler may do to this test
        for n, (at, start) in enumerate(times[1:], start=1):
            assert at >= start + n * FRAME_SAMPLES / SEND_RATE - 0.002
    # 14 frames each after the first, shared ticks: one wake-up per tick, not one per track
    assert clock.wakeups - wakeups0 <= 16
    assert elapsed >= 14 * FRAME - 0.002
    for track in tracks:
        track.close()


async def _pull(track: OutgoingAudioTrack, frames: int, stall_after: int = -1,
                stall: float = 0.0) -> None:
    for n in range(frames):
        await track.recv()
        if n == stall_after:
            time.sleep(stall)  # the event loop itself stalls: what the counters must show


async def test_a_stalled_loop_shows_in_the_tracks_counters() -> None:
    track = OutgoingAudioTrack()
    await _pull(track, 6, stall_after=2, stall=0.06)
    assert track.max_lag >= 0.035  # the tick after the stall came ~40 ms late
    assert track.frames_late >= 1
    # < MAX_LAG: late frames are sent, not skipped (unless the machine stalled this process
    # past MAX_LAG on top of the 60 ms: then skipping ahead is the rule)
    assert track.frames_skipped == 0 or track.max_lag > MAX_LAG
    track.close()


async def test_a_long_stall_skips_ahead_and_counts_what_it_skipped() -> None:
    track = OutgoingAudioTrack()
    await _pull(track, 6, stall_after=2, stall=0.2)
    assert track.frames_skipped >= 5  # ~180 ms behind: never sent, counted as dropped
    assert track.max_lag >= 0.15
    track.close()
