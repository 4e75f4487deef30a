"""A headless Chromium RTCPeerConnection as the far party of `dtls_roles_bench` (no npm).

Chromium is driven over the DevTools protocol with `websockets` (one page, `Runtime.evaluate`
with awaited promises): enough for a benchmark, where the browser tier's Node driver would
be a second process to start. The page's peer connection plays 440 Hz (an oscillator) and
listens with an AnalyserNode; `wait_tone(hz, since)` is when it first heard `hz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
import urllib.request
from typing import Any

import websockets

CHROMIUM = os.environ.get("WEBPHONE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--mute-audio", "--allow-loopback-in-peer-connection",
         "--disable-features=WebRtcHideLocalIpsWithMdns",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0"]

PAGE = r"""
window.bench = (() => {
  const ctx = new AudioContext({sampleRate: 48000});
  const osc = ctx.createOscillator(); osc.frequency.value = 440;
  const out = ctx.createMediaStreamDestination(); osc.connect(out); osc.start();
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTrack(out.stream.getAudioTracks()[0], out.stream);
  const heard = [];
  pc.ontrack = (ev) => {
    const stream = new MediaStream([ev.track]);
    const el = new Audio(); el.srcObject = stream; el.muted = true; el.play();
    const src = ctx.createMediaStreamSource(stream);
    const an = ctx.createAnalyser(); an.fftSize = 4096; src.connect(an);
    const bins = new Float32Array(an.frequencyBinCount);
    setInterval(() => {
      an.getFloatFrequencyData(bins);
      let best = 0;
      for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
      if (bins[best] > -60) heard.push([performance.now(), best * 48000 / an.fftSize]);
    }, 20);
  };
  const gathered = () => new Promise((ok) => {
    if (pc.iceGatheringState === "complete") return ok();
    pc.addEventListener("icegatheringstatechange",
      () => { if (pc.iceGatheringState === "complete") ok(); });
  });
  return {
    now: () => performance.now(),
    async answer(sdp) {
      await pc.setRemoteDescription({type: "offer", sdp});
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(); return pc.localDescription.sdp;
    },
    async offer(iceRestart) {
      await pc.setLocalDescription(await pc.createOffer({iceRestart}));
      await gathered(); return pc.localDescription.sdp;
    },
    async applyAnswer(sdp) { await pc.setRemoteDescription({type: "answer", sdp}); },
    async waitTone(hz, since, timeoutMs) {
      const end = performance.now() + timeoutMs;
      while (performance.now() < end) {
        const hit = heard.find(([t, f]) => t >= since && Math.abs(f - hz) < 30);
        if (hit) return hit[0];
        await new Promise((ok) => setTimeout(ok, 20));
      }
      return null;
    },
    close() { pc.close(); },
  };
})();
"""


def available() -> bool:
    return shutil.which(CHROMIUM) is not None


class ChromiumPeer:
    """One headless Chromium, one page, one peer connection (`await ChromiumPeer().start()`)."""

    def __init__(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="dtls-chromium-")
        self._proc: asyncio.subprocess.Process | None = None
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._drainer: asyncio.Future[None] | None = None

    async def start(self) -> ChromiumPeer:
        self._proc = await asyncio.create_subprocess_exec(
            CHROMIUM, *FLAGS, f"--user-data-dir={self._profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert self._proc.stderr is not None
        while True:
            line = (await asyncio.wait_for(self._proc.stderr.readline(), 30)).decode()
            if not line:
                raise RuntimeError("chromium exited before DevTools listened")
            found = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                break
        port = int(found.group(1))
        self._drainer = asyncio.ensure_future(self._drain())
        targets = await asyncio.to_thread(_json, f"http://127.0.0.1:{port}/json/list")
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await websockets.connect(page["webSocketDebuggerUrl"], max_size=None)
        await self.eval(PAGE)
        return self

    async def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while await self._proc.stderr.readline():
            pass

    async def eval(self, expression: str, timeout: float = 30.0) -> Any:
        number = next(self._ids)
        await self._ws.send(json.dumps({"id": number, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            reply = json.loads(await asyncio.wait_for(self._ws.recv(), timeout))
            if reply.get("id") == number:
                break
        result = reply.get("result", {})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"chromium: {text}")
        return result.get("result", {}).get("value")

    # the far party's interface in dtls_roles_bench (like MediaSession's)
    async def create_answer(self, offer: str) -> str:
        return str(await self.eval(f"bench.answer({json.dumps(offer)})"))

    async def create_offer(self, ice_restart: bool = True) -> str:
        """An offer from the live connection (`iceRestart` as the page's SDK would ask)."""
        return str(await self.eval(f"bench.offer({json.dumps(ice_restart)})"))

    async def apply_answer(self, answer: str) -> None:
        await self.eval(f"bench.applyAnswer({json.dumps(answer)})")

    async def now(self) -> float:
        return float(await self.eval("bench.now()"))

    async def wait_tone(self, hz: float, since: float, timeout: float) -> float | None:
        """Page time (ms) when `hz` was first heard at or after `since` (page ms), or None."""
        at = await self.eval(f"bench.waitTone({hz}, {since}, {timeout * 1000})", timeout + 5)
        return None if at is None else float(at)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._proc.wait(), 10)
        shutil.rmtree(self._profile, ignore_errors=True)


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())
