"""A call's media taken over by a new process (issue #11 item 3): how long the far party hears
nothing, per take-over path and far party, beside a same-run baseline.

F, the far party, is in a call with H1 (a `MediaSession` in a child process, 1000 Hz). H1 is
SIGKILLed ("kill") or closed ("close"); H2 = `MediaSession.resume(H1's continuity record)`
takes over (`tests/support/media_handoff.py`):
- "offerless": the re-INVITE without SDP (F offers, H2 answers `a=setup:active`), and after
  1 s without audio at H2 the fallback: H2 offers from a new peer connection;
- "offer": H2 offers (`actpass`), F answers.
Far parties: webphone's `MediaSession` that re-offers on "renegotiation_needed" (its call
layer's part), the same without that re-offer (any plain peer: only the fallback brings it
back), and headless Chromium (a plain RTCPeerConnection page of the browser tier; skipped when
Chromium or tests/browser/node_modules is missing).
Value: ms from the start of the take-over exchange to the first 100 ms window in which F hears
H2's 1400 Hz (by frequency). The failure detection before it (the group's: a lost member) is
not included. Baseline: a bare offer/answer between two fresh MediaSessions to the first 100 ms
window with the tone, same run. "never" = not within 10 s.

Run: ``.venv/bin/python -m benchmarks handoff`` (~3 min).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # support.media_handoff
sys.path.insert(0, str(ROOT / "tests" / "browser"))  # chromium (the browser tier's driver)

RUNS = 3
TARGET_MS = 1000.0  # issue #11: media holder dies -> median <= 500 ms, p95 <= 1 s


async def _baseline() -> float:
    from support.media_handoff import F_TONE, GIVE_UP, Ear
    from webphone.media import MediaSession

    a, b = MediaSession(loopback_only=True), MediaSession(loopback_only=True)
    ear = Ear(b)
    playing = asyncio.ensure_future(a.play_tone(F_TONE, 60))
    try:
        began = asyncio.get_running_loop().time()
        await a.apply_answer(await b.create_answer(await a.create_offer()))
        heard = await ear.tone(F_TONE, began, GIVE_UP)
        if heard is None:
            raise RuntimeError("the baseline pair carried no audio")
        return (heard - began) * 1000
    finally:
        playing.cancel()
        ear.close()
        await asyncio.gather(a.close(), b.close())


async def _aiortc_far(end: str, path: str, follow: bool) -> float | None:
    from support.media_handoff import GIVE_UP, H2_TONE, Far, first_holder, take_over
    from webphone.media import MediaSession

    far = Far(follow=follow)
    new = None
    try:
        record = await first_holder(far.media.create_answer, end)
        new = MediaSession.resume(record, loopback_only=True)
        playing = asyncio.ensure_future(new.play_tone(H2_TONE, 60))
        began = asyncio.get_running_loop().time()
        await take_over(far, new, path)
        heard = await far.ear.tone(H2_TONE, began, GIVE_UP)
        playing.cancel()
        return None if heard is None else (heard - began) * 1000
    finally:
        await far.close()
        if new is not None:
            await new.close()


async def _chromium_far(tab: Any, end: str, path: str) -> float | None:
    from support.media_handoff import F_TONE, H2_TONE, first_holder
    from webphone.media import MediaSession

    await tab.api("setTone", F_TONE)
    record = await first_holder(lambda offer: tab.api("pcAnswer", offer), end)
    new = MediaSession.resume(record, loopback_only=True)
    playing = asyncio.ensure_future(new.play_tone(H2_TONE, 60))
    try:
        began = await tab.api("now")
        if path == "offer":
            await new.apply_answer(await tab.api("pcAnswer", await new.create_offer()))
        else:
            offer = await tab.api("pcOffer", True)
            await tab.api("pcApplyAnswer", await new.create_answer(offer))
        heard = await tab.api("pcHeardAt", H2_TONE, began, 10000, timeout=20)
        return None if heard is None else heard - began
    finally:
        playing.cancel()
        await new.close()


@contextlib.asynccontextmanager
async def _chromium() -> AsyncIterator[Callable[[], Awaitable[Any]] | None]:
    """A function opening a fresh pc.html tab, or None when the browser tier cannot run."""
    from chromium import BROWSER_DIR, CHROMIUM, ChromiumDriver

    if not os.access(CHROMIUM, os.X_OK) or not (BROWSER_DIR / "node_modules").is_dir():
        print("  Chromium: not available (apt chromium; npm ci in tests/browser), skipped")
        yield None
        return
    with tempfile.TemporaryDirectory() as workdir:
        driver = ChromiumDriver(Path(workdir))
        driver.start()
        try:
            async with driver.connect() as browser:
                yield lambda: browser.open("pc.html")
        finally:
            driver.stop()


def _row(far: str, end: str, path: str, runs: list[float | None],
         baselines: list[float]) -> dict[str, Any]:
    got = [r for r in runs if r is not None]
    text = " / ".join("never" if r is None else f"{r:.0f}" for r in runs)
    median = statistics.median(got) if len(got) == len(runs) else None
    baseline = statistics.median(baselines)
    row = {
        "name": f"handoff {far} far, H1 {end}, {path}", "value": median, "unit": "ms",
        "baseline": "bare offer/answer", "baseline_value": baseline,
        "target": f"<= {TARGET_MS:.0f} ms", "met": median is not None and median <= TARGET_MS,
        "detail": {"runs_ms": text, "baseline_runs_ms": [round(b) for b in baselines],
                   "load": os.getloadavg()},
    }
    print(f"  {row['name']}: {text} ms (baseline {' / '.join(f'{b:.0f}' for b in baselines)} ms, "
          f"load {os.getloadavg()[0]:.1f})", flush=True)
    return row


async def _all() -> list[dict[str, Any]]:
    baseline = [await _baseline() for _ in range(RUNS)]
    rows = []
    cells: list[tuple[str, str, str]] = [
        (far, end, path) for far in ("MediaSession", "MediaSession (no re-offer)")
        for end in ("kill", "close") for path in ("offerless", "offer")
        if not (far.endswith("re-offer)") and path == "offer")]  # the same as re-offering
    for far, end, path in cells:
        runs = [await _aiortc_far(end, path, follow=far == "MediaSession")
                for _ in range(RUNS)]
        rows.append(_row(far, end, path, runs, baseline))
    async with _chromium() as open_tab:
        if open_tab is not None:
            for end in ("kill", "close"):
                for path in ("offerless", "offer"):
                    runs = []
                    for _ in range(RUNS):
                        tab = await open_tab()
                        try:
                            runs.append(await _chromium_far(tab, end, path))
                        finally:
                            await tab.close()
                    rows.append(_row("Chromium", end, path, runs, baseline))
    return rows


def run() -> list[dict[str, Any]]:
    """Every cell, RUNS runs each."""
    started = time.monotonic()
    rows = asyncio.run(_all())
    print(f"  ({time.monotonic() - started:.0f} s, load {os.getloadavg()})")
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    print_table(run())
