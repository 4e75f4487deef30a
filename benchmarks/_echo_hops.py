"""Diagnostic: the round trip through the echo party (900), hop by hop.

``.venv/bin/python -m benchmarks._echo_hops [bursts]`` runs `media_bench`'s round trip (a
WebPhone calls 900 on a sandbox process, plays 1000 Hz bursts) with probes in both processes
that log, per burst, when the tone's first frame passes each stage, on the machine-wide
monotonic clock. It prints min/median/max per hop:

  phase        play_tone() called -> its first frame leaves our track (the send clock's phase)
  to echo      -> that packet reaches the echo party's jitter buffer
  echo jitter  -> the echo's jitter buffer releases it (decoded)
  echo relay   -> written into the echo's outgoing track -> leaves it
  back         -> the echoed packet reaches our jitter buffer
  our jitter   -> released and decoded here
  detector     -> the first 20 ms frame whose dominant frequency is 1000 Hz (what the
                  benchmark reports: the Opus lookahead, twice, moves the tone's start into
                  the frame, so the first one is mostly silence)

The probes wrap private methods of `webphone.media` (`OutgoingAudioTrack._next_chunk`,
`write`/`write_live`, `JitterBuffer.push`/`_due`, `MediaSession._on_pcm`): a diagnostic for
people changing the media path, not a benchmark (it adds ~0.1 ms per frame).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOUD = 0.05  # rms (fraction of full scale) above which a frame carries the tone
HOPS = ("phase", "to echo", "echo jitter", "echo relay", "back", "our jitter", "detector")


def _loud(pcm: bytes) -> bool:
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    return bool(samples) and math.sqrt(
        sum(x * x for x in samples) / len(samples)) / 32768 > LOUD


def install(tag: str, path: str) -> Any:
    """Probe this process's media path; events go to `path` (JSON lines). Returns `log`."""
    from webphone.media import audio, jitter, session

    out = open(path, "a", buffering=1)  # noqa: SIM115  (lives as long as the process)
    was = {"sent": False, "written": False, "delivered": False}
    arrivals: dict[int, float] = {}
    released: list[int] = []

    def log(event: str, **fields: Any) -> None:
        out.write(json.dumps({"t": time.monotonic(), "p": tag, "e": event, **fields}) + "\n")

    def onset(key: str, pcm: bytes | None) -> bool:
        loud = pcm is not None and _loud(pcm)
        started, was[key] = loud and not was[key], loud
        return started

    next_chunk = audio.OutgoingAudioTrack._next_chunk

    def _next_chunk(self: Any) -> bytes:
        chunk: bytes = next_chunk(self)
        if onset("sent", chunk):
            log("sent")
        return chunk

    def wrap_write(original: Any) -> Any:
        def write(self: Any, pcm: bytes, *args: Any) -> Any:
            if onset("written", pcm):
                log("written")
            return original(self, pcm, *args)
        return write

    push = jitter.JitterBuffer.push

    def _push(self: Any, seq: int, *args: Any) -> Any:
        arrivals[seq & 0xFFFF] = time.monotonic()
        out = push(self, seq, *args)
        released[:] = [item.seq for item in out]
        return out

    on_pcm = session.MediaSession._on_pcm

    def _on_pcm(self: Any, pcm: bytes | None, now: float) -> None:
        seq = released.pop(0) if released else None
        if onset("delivered", pcm):
            log("delivered", arrived=arrivals.get(seq) if seq is not None else None)
        on_pcm(self, pcm, now)

    audio.OutgoingAudioTrack._next_chunk = _next_chunk  # type: ignore[method-assign]
    audio.OutgoingAudioTrack.write = wrap_write(audio.OutgoingAudioTrack.write)  # type: ignore[method-assign]
    audio.OutgoingAudioTrack.write_live = wrap_write(  # type: ignore[method-assign]
        audio.OutgoingAudioTrack.write_live)
    jitter.JitterBuffer.push = _push  # type: ignore[method-assign]
    session.MediaSession._on_pcm = _on_pcm  # type: ignore[method-assign]
    return log


def hops(events: list[dict[str, Any]], found: list[float | None]) -> list[dict[str, float]]:
    """Per burst, the milliseconds of each hop (bursts with a stage missing are left out)."""
    plays = [e["t"] for e in events if e["e"] == "play"]
    rows = []
    for i, t0 in enumerate(plays):
        t1 = plays[i + 1] if i + 1 < len(plays) else math.inf
        window = [e for e in events if t0 <= e["t"] < t1]

        def first(party: str, event: str, window: list[dict[str, Any]] = window) -> Any:
            return next((e for e in window if e["p"] == party and e["e"] == event), None)

        stages = [first("phone", "sent"), first("echo", "delivered"), first("echo", "written"),
                  first("echo", "sent"), first("phone", "delivered")]
        detected = found[i] if i < len(found) else None
        if None in stages or detected is None or None in (stages[1]["arrived"],
                                                          stages[4]["arrived"]):
            continue
        sent, echo_in, written, echo_out, back = stages
        del written  # decode -> write is part of "echo relay"
        times = [t0, sent["t"], echo_in["arrived"], echo_in["t"], echo_out["t"],
                 back["arrived"], back["t"], t0 + detected / 1000]
        rows.append({h: 1000 * (b - a) for h, (a, b) in zip(HOPS, pairwise(times), strict=True)})
    return rows


async def _measure(bursts: int, log_path: str) -> list[float | None]:
    from benchmarks import media_bench

    log = install("phone", log_path)

    class ProbedSandbox(media_bench.Sandbox):
        def __init__(self, users: int, *extra: str) -> None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([media_bench.SRC, str(ROOT)]),
                   "ECHO_HOPS_LOG": log_path}
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks._echo_hops", "--sandbox", "--port", "0",
                 "--generate", str(users), *extra], stdout=subprocess.PIPE, env=env, cwd=ROOT)
            assert self.proc.stdout is not None
            self.sip_info = []
            for raw in self.proc.stdout:
                line = raw.decode().strip()
                if line.startswith("{"):
                    self.sip_info.append(json.loads(line))
                elif len(self.sip_info) == users:
                    break

    bursts_of = media_bench._bursts
    found: list[float | None] = []

    async def probed(play: Any, frames: Any, rate: int, count: int = bursts) -> list[float]:
        def logged_play() -> Any:
            log("play")
            return play()

        for _ in range(count):  # one at a time: a burst never detected keeps its place
            times = await bursts_of(logged_play, frames, rate, 1)
            found.append(times[0] if times else None)
        return [t for t in found if t is not None]

    media_bench.Sandbox = ProbedSandbox  # type: ignore[misc]
    media_bench._bursts = probed
    await media_bench.webphone_echo_round_trip()
    return found


def main(bursts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "hops.jsonl")
        load = round(os.getloadavg()[0], 2)
        found = asyncio.run(_measure(bursts, path))
        events = [json.loads(line) for line in Path(path).read_text().splitlines()]
    rows = hops(events, list(found))
    print(f"{len(rows)} of {bursts} bursts traced, load average {load}; ms, min / median / max")
    for hop in (*HOPS, "total"):
        values = [sum(r.values()) if hop == "total" else r[hop] for r in rows]
        if values:
            print(f"  {hop:12s} {min(values):7.1f} {statistics.median(values):7.1f} "
                  f"{max(values):7.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sandbox"]:
        install("echo", os.environ["ECHO_HOPS_LOG"])
        sys.argv = ["webphone.sandbox", *sys.argv[2:]]
        runpy.run_module("webphone.sandbox", run_name="__main__", alter_sys=True)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
