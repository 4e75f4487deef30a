"""The pipecat transport on the sandbox: examples/pipecat_bot.py serves calls from other
WebPhones, judged by what the caller hears (levels and frequencies at the caller, never the
bot's own flags): the reply to an espeak-ng utterance, DTMF frames, barge-in, hang-up on
EndFrame, five independent calls in one process.

Figures are printed (`pytest -s`); the bounds asserted are the issue's acceptance bounds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.sandbox_server import sandbox_users
from support.voice import (
    FRAME,
    RATE,
    CallerProcess,
    Ear,
    leading_silence,
    loud_frames,
    speak,
    trailing_silence,
)
from support.wait import wait_until
from webphone import SipInfo, WebPhone
from webphone.errors import CallError
from webphone.media import sine_wave, tone_levels
from webphone.sandbox import Sandbox

pytestmark = pytest.mark.timeout(60)

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")  # as tests/conftest.py
try:
    import webphone.integrations.pipecat as pipecat
except ImportError as exc:  # the extra is not installed (scripts/test installs it)
    if IN_CI:
        raise
    pytest.skip(str(exc), allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]


def quiet_pipecat_logs() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("pipecat_bot", ROOT / "examples/pipecat_bot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipecat_bot"] = module
    spec.loader.exec_module(module)
    return module


bot_example = load_example()
quiet_pipecat_logs()


# -- audio at the caller -----------------------------------------------------------------------


def espeak(text: str, path: Path) -> tuple[bytes, int]:
    if shutil.which("espeak-ng") is None:
        (pytest.fail if IN_CI else pytest.skip)("espeak-ng not found (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes()), w.getframerate()


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test") as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, int]]:
    tmp = tmp_path_factory.mktemp("speech")
    return {
        "hello": espeak("Hello.", tmp / "hello.wav"),
        "goodbye": espeak("Goodbye.", tmp / "goodbye.wav"),
        "utterance": espeak("Testing one two three four five.", tmp / "count.wav"),
    }


@dataclass
class Bot:
    phone: WebPhone
    server: Any
    events: list[tuple[str, dict[str, Any]]]

    def seen(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == event
                and all(f.get(k) == v for k, v in match.items())]


@pytest.fixture
async def bot_factory(sb: Sandbox, speech: dict[str, tuple[bytes, int]]
                      ) -> AsyncIterator[Callable[..., Any]]:
    made: list[Bot] = []

    async def factory(*, greeting: tuple[bytes, int] | None = None, max_calls: int = 4,
                      user: str = "101") -> Bot:
        events: list[tuple[str, dict[str, Any]]] = []
        phone = WebPhone(SipInfo.from_dict(sb.sip_info(user)), instance_id=f"bot-{user}",
                         loopback_media=True)
        await phone.start()
        hello = greeting or speech["hello"]
        server = pipecat.serve(
            phone,
            lambda call: bot_example.make_pipeline(
                call, hello, speech["goodbye"],
                on_event=lambda event, **f: events.append((event, {"t": time.monotonic(), **f}))),
            max_calls=max_calls,
        )
        bot = Bot(phone, server, events)
        made.append(bot)
        return bot

    yield factory
    for bot in made:
        await bot.server.close()
        await bot.phone.dispose()


@dataclass
class Caller:
    phone: WebPhone
    session: Any
    ear: Ear
    listening: asyncio.Task[None]

    @property
    def media(self) -> Any:
        return self.session.media


@pytest.fixture
async def caller_factory(sb: Sandbox) -> AsyncIterator[Callable[..., Any]]:
    made: list[Caller] = []

    async def factory(user: str = "102", callee: str = "101") -> Caller:
        phone = WebPhone(SipInfo.from_dict(sb.sip_info(user)), instance_id=f"caller-{user}",
                         loopback_media=True)
        await phone.start()
        session = await phone.call(callee)
        if session.state != "answered":
            await session.wait_for("answered", timeout=10)
        ear = Ear()
        caller = Caller(phone, session, ear, asyncio.ensure_future(ear.listen(session.media)))
        made.append(caller)
        return caller

    yield factory
    for caller in made:
        caller.listening.cancel()
        await caller.phone.dispose()


# -- tests -------------------------------------------------------------------------------------


async def test_bot_greets_then_echoes_the_caller_within_a_second(
    bot_factory: Callable[..., Any], caller_factory: Callable[..., Any],
    speech: dict[str, tuple[bytes, int]],
) -> None:
    """The example bot answers, greets, and says the caller's utterance back; the reply starts
    at the caller within 1.0 s of the end of the utterance."""
    bot = await bot_factory()
    caller = await caller_factory()
    greeted = await caller.ear.sound(after=0)
    greeting_over = await caller.ear.silence(after=greeted)
    assert bot.seen("answered")
    pcm, rate = speech["utterance"]
    sent = await speak(caller.media, pcm, rate)
    uttered = sent - trailing_silence(pcm, rate)  # espeak-ng ends its files with silence
    spoken = len(pcm) / 2 / rate - trailing_silence(pcm, rate) - leading_silence(pcm, rate)
    replied = await caller.ear.sound(after=sent)
    latency = replied - uttered
    reply_over = await caller.ear.silence(after=replied, hold=0.5)
    echo_seconds = reply_over - replied
    print(f"\nreply started {latency * 1000:.0f} ms after the end of the utterance's speech "
          f"({(replied - sent) * 1000:.0f} ms after its last audio was sent); echo "
          f"{echo_seconds:.2f} s of {spoken:.2f} s of speech; greeting "
          f"{greeting_over - greeted:.2f} s")
    assert latency < 1.0
    assert bot.seen("reply")
    assert echo_seconds > 0.6 * spoken  # the utterance came back, not a click


async def test_dtmf_arrives_as_frames_and_pound_says_goodbye_then_hangs_up(
    bot_factory: Callable[..., Any], caller_factory: Callable[..., Any],
    speech: dict[str, tuple[bytes, int]],
) -> None:
    """The transport holds and unholds the caller; RFC 4733 `1` and `#` reach the pipeline as
    InputDTMFFrames; on `#` the bot says goodbye, pushes EndWorkerFrame, and the EndFrame hangs
    the call up after the goodbye was sent: the caller hears it, then sees the call end."""
    bot = await bot_factory()
    caller = await caller_factory()
    await caller.ear.silence(after=await caller.ear.sound(after=0))
    transport = bot.server.calls[0].transport  # the actions: hold, then unhold (re-INVITEs)
    await transport.hold()
    assert caller.session.remote_held
    await transport.unhold()
    assert not caller.session.remote_held
    await caller.session.send_dtmf("1")
    await wait_until(lambda: bot.seen("dtmf_frame", digit="1"), 5, message="frame for 1")
    assert bot.seen("dtmf", digit="1")
    loop = asyncio.get_running_loop()
    pressed = loop.time()
    await caller.session.send_dtmf("#")
    await wait_until(lambda: bot.seen("dtmf_frame", digit="#"), 5, message="frame for #")
    goodbye_heard = await caller.ear.sound(after=pressed)
    await asyncio.wait_for(caller.session.wait_closed(), 10)
    ended = loop.time()
    goodbye = caller.ear.pcm(goodbye_heard - FRAME, ended)
    loud = sum(loud_frames(goodbye, RATE)) * FRAME
    pcm, rate = speech["goodbye"]
    spoken = len(pcm) / 2 / rate - trailing_silence(pcm, rate) - leading_silence(pcm, rate)
    print(f"\ngoodbye heard {(goodbye_heard - pressed) * 1000:.0f} ms after #; "
          f"{loud:.2f} s of it loud (spoken: {spoken:.2f} s); call ended "
          f"{(ended - goodbye_heard):.2f} s after it began: {caller.session.end_reason}")
    assert caller.session.state == "disposed"
    assert loud >= spoken * 0.6, "the goodbye was cut off by the hang-up"
    await wait_until(lambda: not bot.server.calls, 5, message="the server let go of the call")
    assert bot.seen("ended")


async def test_caller_talking_over_the_bot_silences_it_at_once(
    bot_factory: Callable[..., Any], caller_factory: Callable[..., Any],
    speech: dict[str, tuple[bytes, int]],
) -> None:
    """Barge-in: the bot plays a long tone; the caller speaks; Silero VAD confirms speech after
    its start_secs and the bot interrupts. Measured at the caller, by audio: the tone stops
    within 100 ms of the interruption beyond the audio path's own delay (measured on the same
    call by stopping webphone's player directly)."""
    tone = sine_wave(440, 4.0, RATE, 0.3)
    bot = await bot_factory(greeting=(tone, RATE))
    caller = await caller_factory()
    loop = asyncio.get_running_loop()
    heard = await caller.ear.sound(after=0)
    await wait_until(lambda: caller.ear.frames[-1][0] > heard + 0.5, 5)
    pcm, rate = speech["utterance"]
    started = loop.time()
    speaking = asyncio.ensure_future(speak(caller.media, pcm, rate))
    try:
        silent = await caller.ear.silence(after=started, hold=0.3)
        await wait_until(lambda: bot.seen("interrupted"), 5, message="the bot's interruption")
    finally:
        await speaking
    onset = started + leading_silence(pcm, rate)
    decided = bot.seen("interrupted")[0]["t"]
    tone_left = tone_levels(caller.ear.pcm(silent - 0.4, silent - 0.1), RATE, [440])[440]
    # Baseline, same call: webphone's own player stopped directly (no pipecat) -> silence at
    # the caller. It is the audio path: up to one 20 ms frame, the network, and the caller's
    # receive side (aiortc's jitter buffer holds 4 packets before it plays).
    media = bot.server.calls[0].session.media
    await wait_until(lambda: bot.seen("reply"), 10, message="the echo of the barge-in")
    await caller.ear.silence(after=await caller.ear.sound(after=loop.time()), hold=0.4)
    direct = asyncio.ensure_future(media.play_tone(440, 3.0, 0.3))
    playing = await caller.ear.sound(after=loop.time())
    await wait_until(lambda: caller.ear.frames[-1][0] > playing + 0.3, 5)
    stopped = loop.time()
    media.stop_playback()
    assert await direct is False
    baseline = await caller.ear.silence(after=stopped, hold=0.3) - stopped
    taken = silent - decided
    print(f"\nspeech onset -> silence at the caller {(silent - onset) * 1000:.0f} ms (VAD "
          f"start_secs {bot_example.VAD.start_secs * 1000:.0f} ms); the bot's interruption -> "
          f"silence at the caller {taken * 1000:.0f} ms; baseline, webphone's stop_playback() "
          f"-> silence {baseline * 1000:.0f} ms; the transport's share "
          f"{(taken - baseline) * 1000:.0f} ms")
    assert taken - baseline <= 0.1
    assert taken <= 0.25
    assert tone_left > 0.5  # what stopped was the tone, heard until then
    assert silent < heard + 3.5  # well before the 4 s tone would have ended


@pytest.mark.parametrize("kind", ["cold", "warm"])
async def test_transfer_hands_the_caller_to_another_phone_and_ends_the_pipeline(
    kind: str, sb: Sandbox, bot_factory: Callable[..., Any], caller_factory: Callable[..., Any],
) -> None:
    """`transport.transfer("103")` (cold: REFER) or `transport.warm_transfer("103")` then
    `complete()` (REFER with Replaces): the caller ends up talking with 103 (hears its tone, by
    frequency); the bot's leg ends, its pipeline ends, the server lets go of the call."""
    bot = await bot_factory()
    caller = await caller_factory()
    async with WebPhone(SipInfo.from_dict(sb.sip_info("103")), instance_id="target-103",
                        loopback_media=True) as target:
        answered: asyncio.Queue[Any] = asyncio.Queue()

        async def answer(session: Any) -> None:
            if not session.invite.headers.get("Replaces"):  # those the phone answers itself
                await session.answer()
            answered.put_nowait(session)

        target.on("inbound_call", answer)
        moved: asyncio.Queue[Any] = asyncio.Queue()
        caller.session.on("transferred", moved.put_nowait)
        await wait_until(lambda: bot.server.calls, 5, message="the call served")
        transport = bot.server.calls[0].transport
        if kind == "cold":
            await transport.transfer("103")
        else:
            warm = await transport.warm_transfer("103")
            await asyncio.wait_for(answered.get(), 10)  # the consult call
            await wait_until(lambda: warm.session.state == "answered", 5)
            await warm.complete()
        new = await asyncio.wait_for(moved.get(), 10)
        at_target = await asyncio.wait_for(answered.get(), 10)
        await wait_until(lambda: at_target.media is not None, 5)
        ear = Ear()
        listening = asyncio.ensure_future(ear.listen(new.media))
        playing = asyncio.ensure_future(at_target.media.play_tone(1000, 3.0, 0.3))
        try:
            heard = await ear.sound(after=0)
            await wait_until(lambda: ear.frames[-1][0] > heard + 0.4, 5)
            level = tone_levels(ear.pcm(heard, heard + 0.4), RATE, [440, 1000])
        finally:
            playing.cancel()
            listening.cancel()
        await wait_until(lambda: not bot.server.calls, 10, message="the bot let go")
        print(f"\nafter the {kind} transfer the caller hears 103: {level}")
        assert level[1000] > 0.5 and bot.seen("ended")
        await new.hangup()


FREQUENCIES = [500, 700, 900, 1100, 1300]


async def test_five_concurrent_calls_are_independent_and_a_sixth_is_declined(
    sb: Sandbox, bot_factory: Callable[..., Any], speech: dict[str, tuple[bytes, int]],
    tmp_path: Path,
) -> None:
    """One process serves 5 calls at once, each with its own pipeline: every caller says its
    utterance over a tone of its own and hears back its tone, not another's. A 6th call over
    max_calls=5 is declined. The 5 callers are a process of their own (support.voice says
    why): this process is the bot's, with the sandbox."""
    bot = await bot_factory(max_calls=5)
    utterance = tmp_path / "utterance.wav"
    pcm, rate = speech["utterance"]
    with wave.open(str(utterance), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    callers = await CallerProcess.spawn(
        [sb.sip_info(str(102 + i)) for i in range(len(FREQUENCIES))], callee="101",
        utterance=utterance, frequencies=FREQUENCIES, log_dir=tmp_path)
    try:
        await wait_until(lambda: len(bot.server.calls) == 5, 10, message="5 calls served")
        async with WebPhone(SipInfo.from_dict(sb.sip_info("107")), instance_id="caller-107",
                            loopback_media=True) as sixth:
            try:
                refused = await sixth.call("101")
                await asyncio.wait_for(refused.wait_closed(), 10)
                outcome = f"{refused.state}: {refused.end_reason}"
            except CallError as exc:
                outcome = f"CallError: {exc}"
        print(f"\nthe 6th call: {outcome}")
        assert bot.server.declined == 1 and len(bot.server.calls) == 5
        results = await callers.converse()
    finally:
        await callers.close()
    for frequency, result in zip(FREQUENCIES, results, strict=True):
        level = {int(f): v for f, v in result["levels"].items()}
        loudest = max(level, key=lambda f: level[f])
        print(f"caller with {frequency} Hz heard back: "
              + ", ".join(f"{f}: {v:.3f}" for f, v in level.items())
              + f" (sent {result['audio_s']:.2f} s of audio in {result['speak_s']:.2f} s, "
              f"reply after {result['reply_after_s']:.2f} s; callers' loop lag "
              f"{result['loop_lag_ms']:.0f} ms)")
        assert loudest == frequency, level


class SlowListener:
    """A pipeline stage 3x slower than real time (60 ms of awaited work per 20 ms frame of
    received audio: a remote speech-to-text that cannot keep up), noting when it first hears
    each tone."""

    WORK_S = 0.06

    def __init__(self, tones: tuple[float, ...]) -> None:
        from pipecat.frames.frames import InputAudioRawFrame
        from pipecat.processors.frame_processor import FrameProcessor

        from webphone.media import detect_tone

        listener = self

        class _Slow(FrameProcessor):
            async def process_frame(self, frame: Any, direction: Any) -> None:
                await super().process_frame(frame, direction)
                if isinstance(frame, InputAudioRawFrame):
                    listener.frames += 1
                    hz = detect_tone(frame.audio, frame.sample_rate, tones)
                    listener.processed.append((time.monotonic(), hz))
                    if hz is not None:
                        listener.heard.setdefault(hz, time.monotonic())
                    await asyncio.sleep(listener.WORK_S)  # the stage's work, not a wait
                await self.push_frame(frame, direction)

        self.processor = _Slow()
        self.frames = 0
        self.heard: dict[float, float] = {}
        self.processed: list[tuple[float, float | None]] = []  # (when, its tone)

    def stale_after(self, since: float, hz: float) -> int:
        """Frames processed after `since` but before the first of tone `hz`: the backlog."""
        first = self.heard[hz]
        return sum(1 for t, _ in self.processed if since <= t < first)


async def test_a_pipeline_slower_than_the_call_hears_the_newest_audio_in_bounded_memory(
    sb: Sandbox, caller_factory: Callable[..., Any],
) -> None:
    """Behind the input, a stage 3x slower than real time. pipecat's queues would hold every
    frame (when the caller changes tone after 2 s, the stage still has ~70 frames of the old
    one to work through, and more as the call goes on); with `audio_in_max_pending=5` and
    `audio_in_max_frames=10` at most 15 frames wait (plus the few the media pipeline holds):
    the stage reaches the new tone after at most 20 old frames, whatever the machine's load,
    the transport's stats count the frames dropped, oldest first, never more than 5 pending."""
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker

    slow = SlowListener((700.0, 1500.0))
    served: list[Any] = []

    def make(call: Any) -> Any:
        served.append(call)
        t = call.transport
        return PipelineWorker(Pipeline([t.input(), slow.processor, t.output()]),
                              idle_timeout_secs=None, enable_rtvi=False)

    phone = WebPhone(SipInfo.from_dict(sb.sip_info("101")), instance_id="bot-101",
                     loopback_media=True)
    await phone.start()
    params = pipecat.WebPhoneParams(audio_in_max_pending=5, audio_in_max_frames=10)
    try:
        async with pipecat.serve(phone, make, params=params):
            caller = await caller_factory()
            await caller.media.play_tone(700, 2.0)
            switched = time.monotonic()
            playing = asyncio.ensure_future(caller.media.play_tone(1500, 5.0))
            try:
                await wait_until(lambda: 1500.0 in slow.heard, 5, message="1500 Hz heard")
            finally:
                playing.cancel()
            stats = served[0].transport.stats
            late, stale = slow.heard[1500.0] - switched, slow.stale_after(switched, 1500.0)
            print(f"\nthe slow stage heard the caller's new tone {late * 1000:.0f} ms after it "
                  f"began, after {stale} frames of the old one; {stats}; it processed "
                  f"{slow.frames} frames")
            assert stale <= 20
            assert stats.pending_max <= 5 and stats.frames_dropped > 0 and stats.waits > 0
            assert stats.frames_in - slow.frames <= 5 + 1  # (+1: the one being processed)
    finally:
        await phone.dispose()
