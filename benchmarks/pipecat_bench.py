"""The pipecat transport's cost, beside webphone's own audio API in the same run.

One call between two WebPhones on an in-process sandbox (127.0.0.1, opus), the "bot" side
measured three times per variant, alternating:

* CPU in: the caller plays a tone; the bot reads it (a) with `media.received_audio()` (the
  baseline) or (b) through `WebPhoneTransport.input()` into a pipeline that drops it. CPU time
  of this whole process (both phones, the sandbox, aiortc) per second of audio; the transport's
  cost is (b) - (a).
* CPU out: the bot sends 24 kHz audio (a) with `media.play_pcm()` or (b) as pipecat
  `TTSAudioRawFrame`s through `WebPhoneTransport.output()`.
* End of speech -> first bot audio at the caller, with a bot that answers at once: (a)
  webphone alone (end of speech = 200 ms under an energy threshold, then `play_tone`), (b) a
  pipeline with Silero VAD (stop_secs 0.2) pushing a tone on `VADUserStoppedSpeakingFrame`.
  Both wait the same 200 ms; what (b) adds is Silero's own lag plus the pipeline and transport.
  The caller speaks an espeak-ng sentence (needs espeak-ng).

Run: ``.venv/bin/python -m benchmarks pipecat``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

RUNS = 3
SECONDS = 4.0  # of audio per CPU measurement
# Targets: 50 ms of CPU per second of audio is 5 % of a core per call for the transport and
# pipecat's frame machinery, so the default max_calls=4 stays within a fifth of a core.
OUT_RATE = 24000  # pipecat's default output rate (what TTS services produce)
LOUD = 0.02
STOP = 0.2  # s of quiet that ends speech, for both bots


def _quiet_logs() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


async def _pcm_chunks(pcm: bytes, rate: int, frame: float = 0.02) -> AsyncIterator[bytes]:
    step = int(rate * frame) * 2
    for i in range(0, len(pcm), step):
        yield pcm[i:i + step]


async def _speak(media: Any, pcm: bytes, rate: int) -> float:
    """Play `pcm` paced in real time (20 ms a step); the loop time its speech ended.

    Paced, the player's buffer holds no more than a frame, so the end is known from our own
    clock; `play_pcm` returning is not that moment (its source may run far ahead)."""
    loop = asyncio.get_running_loop()
    step = int(rate * 0.02) * 2
    start = loop.time()
    ended = start

    async def paced() -> AsyncIterator[bytes]:
        nonlocal ended
        for n, i in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
            yield pcm[i:i + step]
        ended = loop.time() + 0.02

    await media.play_pcm(paced(), rate)
    return ended


class Call:
    """A bot phone and a caller phone in a call, with the caller's received audio levels."""

    def __init__(self) -> None:
        self.heard: list[tuple[float, float]] = []
        self.changed = asyncio.Event()

    async def __aenter__(self) -> Call:
        from webphone import SipInfo, WebPhone
        from webphone.sandbox import Sandbox

        users = {"101": "pw101", "102": "pw102"}
        self.sandbox = Sandbox(users=users, domain="sip.test")
        await self.sandbox.start()
        self.bot = WebPhone(SipInfo.from_dict(self.sandbox.sip_info("101")), loopback_media=True)
        self.caller = WebPhone(SipInfo.from_dict(self.sandbox.sip_info("102")),
                               loopback_media=True)
        await self.bot.start()
        await self.caller.start()
        arrived: asyncio.Queue[Any] = asyncio.Queue()
        self.bot.on("inbound_call", arrived.put_nowait)
        self.outgoing = await self.caller.call("101")
        self.session = await asyncio.wait_for(arrived.get(), 10)
        await self.session.answer()
        if self.outgoing.state != "answered":
            await self.outgoing.wait_for("answered", timeout=10)
        await self.session.media.wait_connected()
        self._listen = asyncio.ensure_future(self._listening())
        return self

    async def _listening(self) -> None:
        from webphone.media import rms

        async for frame in self.outgoing.media.received_audio(max_frames=500):
            self.heard.append((frame.received_at, rms(frame.pcm)))
            self.changed.set()

    async def sound_after(self, after: float, timeout: float = 10.0) -> float:
        async with asyncio.timeout(timeout):
            while not (t := [x for x, level in self.heard if x > after and level > LOUD]):
                self.changed.clear()
                await self.changed.wait()
        return t[0]

    async def quiet_after(self, after: float, hold: float = 0.4) -> None:
        need = round(hold / 0.02)
        async with asyncio.timeout(10):
            while True:
                levels = [level for x, level in self.heard if x > after]
                if len(levels) >= need and max(levels[-need:]) < LOUD / 4:
                    return
                self.changed.clear()
                await self.changed.wait()

    async def __aexit__(self, *exc: object) -> None:
        self._listen.cancel()
        await self.caller.dispose()
        await self.bot.dispose()
        await self.sandbox.close()


# -- pipelines -------------------------------------------------------------------------------


def _pipeline(call: Call, middle: list[Any], *, audio_in: bool = True) -> tuple[Any, Any]:
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker

    from webphone.integrations.pipecat import WebPhoneParams, WebPhoneTransport

    transport = WebPhoneTransport(call.session, WebPhoneParams(
        audio_in_enabled=audio_in, hangup_on_end=False, end_pipeline_on_hangup=False))
    worker = PipelineWorker(
        Pipeline([transport.input(), *middle, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=OUT_RATE),
        idle_timeout_secs=None, enable_rtvi=False, check_dangling_tasks=False)
    return transport, worker


async def _running(worker: Any) -> Callable[[], Awaitable[None]]:
    """Start `worker` in a runner of its own; returns the coroutine function that stops it."""
    from pipecat.workers.runner import WorkerRunner

    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(worker)
    task = asyncio.ensure_future(runner.run())

    async def stop() -> None:
        await worker.cancel(reason="benchmark done")
        await asyncio.wait_for(task, 10)

    return stop


def _counter() -> Any:
    from pipecat.frames.frames import Frame, InputAudioRawFrame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class Counter(FrameProcessor):
        """Drops the caller's audio, counting it."""

        frames = 0
        first = asyncio.Event()

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                self.frames += 1
                self.first.set()
                return
            await self.push_frame(frame, direction)

    return Counter()


# -- CPU -------------------------------------------------------------------------------------


async def _cpu(work: Callable[[], Awaitable[None]]) -> float:
    """CPU ms of this process per second of wall time while `work` runs."""
    loop = asyncio.get_running_loop()
    cpu, wall = time.process_time(), loop.time()
    await work()
    return (time.process_time() - cpu) * 1000 / (loop.time() - wall)


async def cpu_in(call: Call) -> tuple[list[float], list[float]]:
    from webphone.media import sine_wave

    tone = asyncio.ensure_future(call.outgoing.media.play_pcm(
        _pcm_chunks(sine_wave(700, 4 * RUNS * SECONDS + 10, 16000, 0.3), 16000), 16000))
    base, ours = [], []
    try:
        for _ in range(RUNS + 1):  # the first round warms up (pipecat imports lazily)
            async def iterate() -> None:
                stream = call.session.media.received_audio()
                deadline = asyncio.get_running_loop().time() + SECONDS
                async for frame in stream:
                    if frame.received_at >= deadline:
                        break
                stream.close()

            base.append(await _cpu(iterate))
            counter = _counter()
            _, worker = _pipeline(call, [counter])
            stop = await _running(worker)
            await asyncio.wait_for(counter.first.wait(), 10)
            ours.append(await _cpu(lambda: asyncio.sleep(SECONDS)))
            await stop()
    finally:
        tone.cancel()
        call.outgoing.media.stop_playback()
    return base[1:], ours[1:]


async def cpu_out(call: Call) -> tuple[list[float], list[float]]:
    from pipecat.frames.frames import TTSAudioRawFrame

    from webphone.media import sine_wave

    pcm = sine_wave(440, SECONDS, OUT_RATE, 0.3)
    base, ours = [], []
    for _ in range(RUNS + 1):  # the first round warms up (pipecat imports lazily)
        async def play() -> None:
            # The same window as below: from handing the audio over until the caller heard
            # it end.
            start = asyncio.get_running_loop().time()
            player = asyncio.ensure_future(
                call.session.media.play_pcm(_pcm_chunks(pcm, OUT_RATE, 0.1), OUT_RATE))
            await call.quiet_after(await call.sound_after(start), hold=0.2)
            assert await player

        base.append(await _cpu(play))
        _, worker = _pipeline(call, [], audio_in=False)  # the output half alone
        stop = await _running(worker)
        await call.quiet_after(asyncio.get_running_loop().time(), hold=0.2)

        async def speak(worker: Any = worker) -> None:
            step = OUT_RATE // 10 * 2
            start = asyncio.get_running_loop().time()
            await worker.queue_frames([TTSAudioRawFrame(pcm[i:i + step], OUT_RATE, 1)
                                       for i in range(0, len(pcm), step)])
            await call.quiet_after(await call.sound_after(start), hold=0.2)

        ours.append(await _cpu(speak))
        await stop()
    return base[1:], ours[1:]


# -- end of speech -> first bot audio --------------------------------------------------------


def _speech() -> tuple[bytes, int]:
    """An espeak-ng sentence, cut right after its last loud 20 ms (espeak-ng ends its files
    with quiet, which would count as the bot's wait)."""
    from webphone.media import rms

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is needed: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        # No comma: a pause in the sentence must not look like its end to either bot.
        text = "The quick brown fox jumps over the lazy dog"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        with wave.open(str(path), "rb") as w:
            pcm, rate = w.readframes(w.getnframes()), w.getframerate()
    step = int(rate * 0.02) * 2
    loud = [rms(pcm[i:i + step]) > LOUD for i in range(0, len(pcm), step)]
    last = max(i for i, x in enumerate(loud) if x)
    return pcm[:(last + 1) * step], rate


async def _reply_latency(call: Call, speech: tuple[bytes, int]) -> float:
    pcm, rate = speech
    sent = await _speak(call.outgoing.media, pcm, rate)
    heard = await call.sound_after(sent)
    await call.quiet_after(heard)
    return heard - sent


def _instant_bot() -> Any:
    from pipecat.frames.frames import (
        Frame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    from webphone.media import sine_wave

    reply = sine_wave(440, 0.5, 16000, 0.3)

    class InstantBot(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)
            if isinstance(frame, VADUserStoppedSpeakingFrame):
                await self.push_frame(TTSStartedFrame())
                await self.push_frame(TTSAudioRawFrame(reply, 16000, 1))
                await self.push_frame(TTSStoppedFrame())

    return InstantBot()


async def latency(call: Call) -> tuple[list[float], list[float]]:
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams
    from pipecat.processors.audio.vad_processor import VADProcessor

    from webphone.media import rms

    speech = _speech()
    base, ours = [], []
    for _ in range(RUNS):
        async def webphone_bot() -> None:
            quiet = spoke = 0
            async for frame in call.session.media.received_audio():
                if rms(frame.pcm) > LOUD:
                    spoke, quiet = spoke + 1, 0
                else:
                    quiet += 1
                if spoke >= 10 and quiet >= STOP / 0.02:
                    await call.session.media.play_tone(440, 0.5, 0.3)
                    return

        bot = asyncio.ensure_future(webphone_bot())
        base.append(await _reply_latency(call, speech))
        await asyncio.wait_for(bot, 5)

        vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(
            params=VADParams(start_secs=0.2, stop_secs=STOP)))
        _, worker = _pipeline(call, [vad, _instant_bot()])
        stop = await _running(worker)
        await asyncio.sleep(0.5)  # the pipeline's start (Silero loads its model) is not timed
        ours.append(await _reply_latency(call, speech))
        await stop()
    return base, ours


# -- the table -------------------------------------------------------------------------------


def _row(name: str, unit: str, base: list[float], ours: list[float], baseline: str,
         target: str, met: bool | None, load: tuple[float, float, float], **detail: Any
         ) -> dict[str, Any]:
    return {"name": name, "value": statistics.median(ours), "unit": unit, "baseline": baseline,
            "baseline_value": statistics.median(base), "target": target, "met": met,
            "detail": {"runs": _stats(ours), "baseline_runs": _stats(base),
                       "load_average": load, **detail}}


async def _main() -> list[dict[str, Any]]:
    _quiet_logs()
    async with Call() as call:
        load0 = os.getloadavg()
        in_base, in_ours = await cpu_in(call)
        out_base, out_ours = await cpu_out(call)
        lat_base, lat_ours = await latency(call)
        load = os.getloadavg()
    in_extra = [o - b for o, b in zip(in_ours, in_base, strict=True)]
    out_extra = [o - b for o, b in zip(out_ours, out_base, strict=True)]
    lat_extra = [(o - b) * 1000 for o, b in zip(lat_ours, lat_base, strict=True)]
    loads = (load0, load)
    return [
        _row("pipecat: CPU per s of audio in (transport.input)", "ms CPU/s", in_base, in_ours,
             "media.received_audio()", "transport adds <= 50 ms/s",
             statistics.median(in_extra) <= 50, load,
             added=_stats(in_extra), loads=loads),
        _row("pipecat: CPU per s of audio out (transport.output)", "ms CPU/s", out_base,
             out_ours, "media.play_pcm()", "transport adds <= 50 ms/s",
             statistics.median(out_extra) <= 50, load,
             added=_stats(out_extra), loads=loads),
        _row("pipecat: end of speech -> first bot audio (instant bot)", "ms",
             [x * 1000 for x in lat_base], [x * 1000 for x in lat_ours],
             "webphone alone, same 200 ms stop", "<= 1000 ms",
             statistics.median(lat_ours) <= 1.0, load,
             added_ms=_stats(lat_extra), loads=loads),
    ]


def run() -> list[dict[str, Any]]:
    """The benchmark rows (see benchmarks/__main__.py)."""
    rows = asyncio.run(_main())
    for row in rows:
        d = row["detail"]
        print(f"  {row['name']}: min/median/max {d['runs']['min']:.1f}/{d['runs']['median']:.1f}"
              f"/{d['runs']['max']:.1f} {row['unit']}; baseline ({row['baseline']}) "
              f"{d['baseline_runs']['min']:.1f}/{d['baseline_runs']['median']:.1f}/"
              f"{d['baseline_runs']['max']:.1f}; load average {d['load_average'][0]:.2f}")
    return rows
