"""What a caller hears and says, for the voice-bot tests (tests/integration/test_pipecat.py), and
callers in a process of their own.

    ear = Ear(); asyncio.ensure_future(ear.listen(session.media))
    t = await ear.sound(after=0); quiet = await ear.silence(after=t)
    sent = await speak(session.media, pcm, rate)        # paced in real time

    callers = await CallerProcess.spawn([sip_info, ...], callee="101", utterance=wav, log_dir=d,
                                        frequencies=[500, 700])
    results = await callers.converse()  # per caller: {"levels": {hz: level}, "speak_s", ...}

The callers' process exists for the test of several concurrent calls: every call costs its two
ends (encode, decode, jitter buffer) about the same, so callers living in the bot's process
doubled the real-time work of the one event loop under test, and under load that loop fell
behind the audio (a 2 s utterance took 3.3-5.5 s to send, the bot's replies came 7-9 s late).
In a process of their own they are the far party of the issue's rule: "not the bottleneck,
say how you made sure" (their loop lag is in each result).

`python tests/support/voice.py --sip-infos FILE --callee 101 --utterance WAV --frequencies
500,700` runs the callers (JSON lines out, commands in, like member_cli).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: `support` is importable from tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.group import MemberProc
from support.procs import child_logging

__all__ = ["FRAME", "LOUD", "QUIET", "RATE", "CallerProcess", "Ear", "leading_silence",
           "loud_frames", "speak", "trailing_silence", "with_tone"]

RATE = 16000  # the callers' receive rate
FRAME = 0.02
LOUD = 0.02  # rms (fraction of full scale) above which the caller hears the bot
QUIET = 0.005  # and below which it hears silence


def with_tone(pcm: bytes, rate: int, frequency: float, level: float = 0.25) -> bytes:
    """`pcm` with a sine of `frequency` added under it (the call's signature)."""
    import numpy as np

    speech = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    t = np.arange(len(speech)) / rate
    mixed = speech * 0.6 + level * 32767 * np.sin(2 * math.pi * frequency * t)
    return np.clip(mixed, -32768, 32767).astype(np.int16).tobytes()


def loud_frames(pcm: bytes, rate: int) -> list[bool]:
    """For each 20 ms frame of `pcm`: louder than `LOUD`?"""
    from webphone.media import rms

    step = int(rate * FRAME) * 2
    return [rms(pcm[i:i + step]) > LOUD for i in range(0, len(pcm), step)]


def trailing_silence(pcm: bytes, rate: int) -> float:
    """Seconds of quiet at the end of `pcm`."""
    loud = loud_frames(pcm, rate)
    return (len(loud) - 1 - max(i for i, x in enumerate(loud) if x)) * FRAME


def leading_silence(pcm: bytes, rate: int) -> float:
    """Seconds of quiet at the start of `pcm`."""
    return loud_frames(pcm, rate).index(True) * FRAME


@dataclass
class Ear:
    """Everything a caller receives, as (time, rms, pcm) per 20 ms frame."""

    frames: list[tuple[float, float, bytes]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def listen(self, media: Any) -> None:
        from webphone.media import rms

        async for frame in media.received_audio(max_frames=500):
            self.frames.append((frame.received_at, rms(frame.pcm), frame.pcm))
            self.changed.set()

    async def _until(self, found: Callable[[], float | None], timeout: float) -> float:
        async with asyncio.timeout(timeout):
            while (t := found()) is None:
                self.changed.clear()
                await self.changed.wait()
        return t

    async def sound(self, after: float, timeout: float = 5.0) -> float:
        """Time of the first loud frame received after `after`."""
        def found() -> float | None:
            return next((t for t, level, _ in self.frames if t > after and level > LOUD), None)

        return await self._until(found, timeout)

    async def silence(self, after: float, hold: float = 0.3, timeout: float = 5.0) -> float:
        """Start of the first run of quiet frames lasting `hold` s after `after`."""
        need = round(hold / FRAME)

        def found() -> float | None:
            run: list[float] = []
            for t, level, _ in self.frames:
                if t <= after:
                    continue
                run = [*run, t] if level < QUIET else []
                if len(run) >= need:
                    return run[0] - FRAME  # the frame's time is its arrival: it began 20 ms earlier
            return None

        return await self._until(found, timeout)

    def pcm(self, start: float, end: float) -> bytes:
        return b"".join(p for t, _, p in self.frames if start < t <= end)


async def speak(media: Any, pcm: bytes, rate: int) -> float:
    """Play `pcm` at the caller, paced in real time (20 ms a step, so the player's buffer holds
    no more than a frame); the loop time its last audio went out, by our own clock."""
    loop = asyncio.get_running_loop()
    step = int(rate * FRAME) * 2
    start = loop.time()
    ended = start

    async def paced() -> AsyncIterator[bytes]:
        nonlocal ended
        for n, i in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, start + n * FRAME - loop.time()))
            yield pcm[i:i + step]
        ended = loop.time() + FRAME

    assert await media.play_pcm(paced(), rate)
    return ended


async def converse(session: Any, ear: Ear, pcm: bytes, rate: int, frequency: float,
                   frequencies: list[float]) -> dict[str, Any]:
    """After the bot's greeting: say `pcm` over a tone of `frequency`, then the levels of
    `frequencies` in what the bot says back (and how long sending and the reply took)."""
    from webphone.media import tone_levels

    # Five pipelines on two loaded cores: generous deadlines, the check is the frequency.
    greeted = await ear.sound(after=0, timeout=10)
    await ear.silence(after=greeted, timeout=10)
    began = asyncio.get_running_loop().time()
    sent = await speak(session.media, with_tone(pcm, rate, frequency), rate)
    replied = await ear.sound(after=sent, timeout=10)
    over = await ear.silence(after=replied, hold=0.4, timeout=10)
    levels = tone_levels(ear.pcm(replied, over), RATE, frequencies)
    return {"levels": {str(f): v for f, v in levels.items()},
            "speak_s": round(sent - began, 3), "audio_s": round(len(pcm) / 2 / rate, 3),
            "reply_after_s": round(replied - sent, 3),
            "send_lag_max_ms": session.media.stats.send_lag_max_ms,
            "loop_lag_ms": session.media.stats.loop_lag_ms}


# -- the test's handle on the callers' process -------------------------------------------------


class CallerProcess(MemberProc):
    """Callers in a process of their own, driven by JSON commands (see the module docstring)."""

    @classmethod
    async def spawn(cls, sip_infos: list[dict[str, Any]], *, callee: str, utterance: Path,
                    frequencies: list[int], log_dir: Path) -> CallerProcess:
        """Start one caller per sipInfo (written 0600 into `log_dir`); returns once every one
        is in an answered call with `callee` and listening."""
        info_path = log_dir / "callers-sip-infos.json"
        fd = os.open(info_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(sip_infos, out)
        argv = [sys.executable, str(Path(__file__).resolve()), "--sip-infos", str(info_path),
                "--callee", callee, "--utterance", str(utterance),
                "--frequencies", ",".join(str(f) for f in frequencies)]
        callers = cls("callers", argv, log_dir / "callers.log")
        await callers.start()
        ready = await callers.ready(timeout=30)
        if ready["event"] != "ready":
            raise RuntimeError(f"the callers failed to start: {ready}\n{callers.log_tail()}")
        return callers

    async def converse(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Every caller's `converse` at once; their results in the order of the sipInfos."""
        result = await self.command("converse", timeout=timeout)
        if not result["ok"]:
            raise AssertionError(f"callers: {result['error']}: {result.get('message')}\n"
                                 f"{self.log_tail()}")
        value: list[dict[str, Any]] = result["value"]
        return value


# -- the callers' process ----------------------------------------------------------------------


def _out(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


async def _callers_main(args: argparse.Namespace) -> int:
    from webphone import SipInfo, WebPhone

    infos = json.loads(Path(args.sip_infos).read_text(encoding="utf-8"))
    frequencies = [int(f) for f in args.frequencies.split(",")]
    with wave.open(args.utterance, "rb") as w:
        pcm, rate = w.readframes(w.getnframes()), w.getframerate()
    phones = [WebPhone(SipInfo.from_dict(info), instance_id=f"caller-{info['username']}",
                       loopback_media=True) for info in infos]
    try:
        calls = []
        for phone in phones:
            await phone.start()
            session = await phone.call(args.callee)
            if session.state != "answered":
                await session.wait_for("answered", timeout=10)
            ear = Ear()
            calls.append((session, ear, asyncio.ensure_future(ear.listen(session.media))))
    except Exception as exc:
        _out("fatal", error=type(exc).__name__, message=str(exc))
        return 1
    _out("ready", pid=os.getpid())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            if cmd.get("cmd") != "converse":
                raise ValueError(f"unknown command {cmd.get('cmd')!r}")
            value = await asyncio.gather(*(
                converse(session, ear, pcm, rate, frequency, frequencies)
                for (session, ear, _), frequency in zip(calls, frequencies, strict=True)))
        except Exception as exc:
            _out("result", id=cmd.get("id"), ok=False, error=type(exc).__name__,
                 message=str(exc))
        else:
            _out("result", id=cmd.get("id"), ok=True, value=value)
    for phone in phones:
        await phone.dispose()
    return 0


def main() -> int:
    """Entry point of the callers' process."""
    p = argparse.ArgumentParser(prog="voice.py")
    p.add_argument("--sip-infos", required=True, help="a JSON list of sipInfo")
    p.add_argument("--callee", required=True)
    p.add_argument("--utterance", required=True, help="a 16-bit mono WAV")
    p.add_argument("--frequencies", required=True, help="one per caller, comma-separated")
    args = p.parse_args()
    child_logging("callers")
    return asyncio.run(_callers_main(args))


if __name__ == "__main__":
    sys.exit(main())
