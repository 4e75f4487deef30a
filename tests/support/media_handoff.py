"""A call's media taken over by a new holder (issue #11 item 3), for tests and the benchmark.

F, the far party, lives in this process for the whole call. H1, the first media holder, is a
`MediaSession` in a CHILD process (spawned): it offers, F answers, H1 plays `H1_TONE` and
reports once it hears F's `F_TONE`; on request it sends its `continuity()` record. H1 then
ends: "kill" (SIGKILL: nothing sent, a crashed member) or "close" (`close()`: DTLS
close_notify). H2 = `MediaSession.resume(record)` here takes over by one of two paths:

- "offerless": the re-INVITE without SDP. F offers, H2 answers (`a=setup:active`: H2 is the
  DTLS client). If H2 hears nothing within `FALLBACK_AFTER`, H2 offers afresh from a new peer
  connection (`create_offer(renew=True)`), F answers: the fallback re-INVITE.
- "offer": H2 offers (`actpass`), F answers.

A webphone far party whose answer came from a new endpoint emits "renegotiation_needed"; F
here re-offers then, as its call layer would (`follow=True`).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from webphone.media import MediaError, MediaSession, detect_tone

H1_TONE, H2_TONE, F_TONE = 1000.0, 1400.0, 440.0
TONES = (440.0, 1000.0, 1400.0)
FALLBACK_AFTER = 1.0  # s of silence after the offerless exchange before the fresh offer
GIVE_UP = 10.0
WINDOW_S = 0.1


# -- H1, in a child process ------------------------------------------------------------------


def _holder(pipe: Connection) -> None:
    asyncio.run(_holder_main(pipe))


async def _holder_main(pipe: Connection) -> None:
    media = MediaSession(loopback_only=True)
    pipe.send(await media.create_offer())
    await media.apply_answer(await asyncio.to_thread(pipe.recv))
    playing = asyncio.ensure_future(media.play_tone(H1_TONE, 3600))
    ear = Ear(media)
    pipe.send(("heard", await ear.tone(F_TONE, 0.0, GIVE_UP)))
    while (command := await asyncio.to_thread(pipe.recv)) != "close":  # a SIGKILL never ends
        if command == "continuity":
            pipe.send(media.continuity())
    playing.cancel()
    ear.close()
    await media.close()
    pipe.send("closed")


class Holder:
    """H1 in a spawned child process, driven over a pipe."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._pipe, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_holder, args=(theirs,), daemon=True)

    async def call(self, answer: Callable[[str], Awaitable[str]]) -> None:
        """Start H1, whose offer the far party's `answer` takes; returns once H1 hears F
        (`MediaError` if not)."""
        self.process.start()
        offer = await self._recv()
        self._pipe.send(await answer(offer))
        kind, at = await self._recv()
        if kind != "heard" or at is None:
            raise MediaError("H1 never heard the far party's tone")

    async def continuity(self) -> dict[str, Any]:
        self._pipe.send("continuity")
        record: dict[str, Any] = await self._recv()
        return record

    async def end(self, how: str) -> None:
        """"kill" (SIGKILL) or "close" (graceful), and wait until the process is gone."""
        if how == "close":
            self._pipe.send("close")
            while await self._recv() != "closed":
                pass
        else:
            self.process.kill()
        await asyncio.to_thread(self.process.join, 10)

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)

    async def _recv(self) -> Any:
        if not await asyncio.to_thread(self._pipe.poll, GIVE_UP + 5):
            raise MediaError("the media holder child did not answer in time")
        return self._pipe.recv()


async def first_holder(answer: Callable[[str], Awaitable[str]], end: str,
                       check: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
    """A call with H1 in a child process (`check()` while it runs, e.g. that F hears it),
    ended by `end` ("kill" or "close"); returns H1's continuity record."""
    holder = Holder()
    try:
        await holder.call(answer)
        if check is not None:
            await check()
        record = await holder.continuity()
        await holder.end(end)
    finally:
        holder.stop()
    return record


# -- listening ---------------------------------------------------------------------------------


class Ear:
    """The dominant tone of each 100 ms of a session's received audio, with its loop time."""

    def __init__(self, media: MediaSession) -> None:
        self.heard: list[tuple[float, float | None]] = []
        self._news = asyncio.Event()
        self._task = asyncio.ensure_future(self._listen(media))

    async def _listen(self, media: MediaSession) -> None:
        loop = asyncio.get_running_loop()
        buffer = b""
        async for frame in media.received_audio():
            buffer += frame.pcm
            if len(buffer) >= int(frame.sample_rate * WINDOW_S) * 2:
                self.heard.append((loop.time(), detect_tone(buffer, frame.sample_rate, TONES)))
                buffer = b""
                self._news.set()

    async def tone(self, hz: float, since: float, timeout: float) -> float | None:
        """Loop time of the first window after `since` dominated by `hz` (None: not in time)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    for at, heard in self.heard:
                        if at >= since and heard == hz:
                            return at
                    self._news.clear()
                    await self._news.wait()
        return None

    def close(self) -> None:
        self._task.cancel()


# -- the far party and the take-over -----------------------------------------------------------


class Far:
    """F: a webphone `MediaSession` that re-offers on "renegotiation_needed" when `follow`."""

    def __init__(self, follow: bool = True) -> None:
        self.media = MediaSession(loopback_only=True)
        self.ear = Ear(self.media)
        self.playing = asyncio.ensure_future(self.media.play_tone(F_TONE, 3600))
        self.peer: MediaSession | None = None  # whoever answers F's re-offers
        self.reoffers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        if follow:
            self.media.on("renegotiation_needed", self._reoffer_soon)

    def _reoffer_soon(self) -> None:
        task = asyncio.ensure_future(self._reoffer())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reoffer(self) -> None:
        if self.peer is None:
            return
        self.reoffers += 1
        offer = await self.media.create_offer()
        await self.media.apply_answer(await self.peer.create_answer(offer))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.playing.cancel()
        self.ear.close()
        await self.media.close()


async def take_over(far: Far, new: MediaSession, path: str) -> MediaSession:
    """H2 (`new`, from `MediaSession.resume(record)`) takes the call over from F by `path`
    ("offerless" with its fallback, or "offer")."""
    far.peer = new
    if path == "offer":
        await new.apply_answer(await far.media.create_answer(await new.create_offer()))
        return new
    await far.media.apply_answer(await new.create_answer(await far.media.create_offer()))
    try:
        await new.wait_first_audio(FALLBACK_AFTER)
    except MediaError:  # the fallback re-INVITE: a fresh offer from a new endpoint
        if far.reoffers == 0:
            await new.apply_answer(
                await far.media.create_answer(await new.create_offer(renew=True)))
    return new
