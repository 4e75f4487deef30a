"""DTLS roles when a call's media holder is replaced (issue #11 item 3; docs/dtls-roles.md).

    .venv/bin/python -m benchmarks dtls_roles          # or: python -m benchmarks.dtls_roles_bench

The far party F lives in this process for the whole call. The original media holder H1 runs
in a child process (so that it can really be SIGKILLed: no DTLS close_notify), offers
`actpass`, and F answers (aiortc answers `active`: F is the DTLS client, as Chromium was in
../shared/reference/browser-dtls-restart.md). H1 plays 1000 Hz, F checks it hears it. Then H1
ends ("close": MediaSession.close(), close_notify sent; "kill": SIGKILL), and H2, a brand-new
peer connection (new certificate, new ICE credentials), takes over in one of three ways:

* `actpass`: H2 offers as aiortc does (`a=setup:actpass`), F answers;
* `active`:  H2's offer says `a=setup:active` (RFC 8842 §5.3: a subsequent offer may choose),
  so F must answer `passive` and H2 is the DTLS client;
* `offerless`: H2 sends no offer (a re-INVITE without SDP), F offers (Chromium with
  `iceRestart: true`; `offerless, no ICE restart`: a plain createOffer()), H2 answers (aiortc
  answers an `actpass` offer with `active`: H2 is the DTLS client).

Measured: ms from the start of that exchange until F hears H2's 1400 Hz (windows of 100 ms),
or "never" within `GIVE_UP` s. Two kinds of F: webphone's `MediaSession` (it follows a new
fingerprint with a new peer connection, git 4c68814), the same with that disabled, i.e.
one plain aiortc RTCPeerConnection for the whole call, and headless Chromium (if installed;
benchmarks/_chromium_peer.py). Baseline: the first connection of the
same pair (offer/answer to the first 1000 Hz window), same run.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

RUNS = 3
GIVE_UP = 10.0
STOP_TO_OFFER = 0.3  # s between H1's end and H2's exchange (a failover never is instant)
H1_TONE, H2_TONE, F_TONE = 1000.0, 1400.0, 440.0
TONES = (440.0, 1000.0, 1400.0)


# -- H1, in a child process ---------------------------------------------------------------------


def _holder(pipe: Connection, networks: list[str] | None = None) -> None:
    asyncio.run(_holder_main(pipe, networks))


def _media(networks: list[str] | None) -> Any:
    """A MediaSession on loopback, or on `networks` (a veth pair to a network namespace)."""
    from webphone.media import MediaSession

    if networks is None:
        return MediaSession(loopback_only=True)
    return MediaSession(ice_networks=networks)


async def _holder_main(pipe: Connection, networks: list[str] | None) -> None:
    media = _media(networks)
    pipe.send(await media.create_offer())
    await media.apply_answer(await asyncio.to_thread(pipe.recv))
    playing = asyncio.ensure_future(media.play_tone(H1_TONE, 3600))
    ear = _Ear(media)  # for peers whose hearing we cannot see (baresip): when H1 hears them

    async def report() -> None:
        at = await ear.when(F_TONE, 0.0, GIVE_UP)
        pipe.send(("heard", None if at is None else time.monotonic()))

    reporter = asyncio.ensure_future(report())
    command = await asyncio.to_thread(pipe.recv)  # "close" (a SIGKILL never gets here)
    reporter.cancel()
    ear.close()
    if command == "close":
        playing.cancel()
        await media.close()
    pipe.send("closed")


# -- F and H2, here ----------------------------------------------------------------------------


class _Ear:
    """Listens to F's received audio; `when(tone)`: the loop time of the first 100 ms window
    with that tone after `since`."""

    def __init__(self, media: Any) -> None:
        self.heard: list[tuple[float, float | None]] = []
        self._task = asyncio.ensure_future(self._listen(media))

    async def _listen(self, media: Any) -> None:
        from webphone.media.tone import detect_tone

        loop = asyncio.get_running_loop()
        buffer = b""
        async with media.received_audio() as stream:
            async for frame in stream:
                buffer += frame.pcm
                if len(buffer) >= frame.sample_rate // 10 * 2:
                    self.heard.append((loop.time(), detect_tone(buffer, frame.sample_rate,
                                                                TONES)))
                    buffer = b""

    async def when(self, tone: float, since: float, timeout: float) -> float | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for at, heard in self.heard:
                if at >= since and heard == tone:
                    return at
            await asyncio.sleep(0.02)  # polling a list the listener fills; bounded by timeout
        return None

    def close(self) -> None:
        self._task.cancel()


class _AiortcFar:
    """webphone's MediaSession as the far party; `follows=False` disables its following of a
    new endpoint: one plain aiortc RTCPeerConnection for the call while aiortc keeps it open."""

    def __init__(self, follows: bool) -> None:
        from webphone.media import MediaSession

        media = self.media = MediaSession(loopback_only=True)
        if not follows:
            media._peer_changed = (  # type: ignore[method-assign]
                lambda offer_sdp: media._pc.signalingState == "closed")
        self.ear = _Ear(media)
        self.create_answer, self.create_offer = media.create_answer, media.create_offer
        self.apply_answer = media.apply_answer

    async def now(self) -> float:
        return asyncio.get_running_loop().time() * 1000

    async def wait_tone(self, hz: float, since: float, timeout: float) -> float | None:
        at = await self.ear.when(hz, since / 1000, timeout)
        return None if at is None else at * 1000

    async def close(self) -> None:
        self.ear.close()
        await self.media.close()


def _setup_active(sdp: str) -> str:
    return sdp.replace("a=setup:actpass", "a=setup:active")


async def _take_over(far: Any, mode: str) -> Any:
    from webphone.media import MediaSession

    new = MediaSession(loopback_only=True)
    if mode.startswith("offerless"):
        offer = await far.create_offer(ice_restart=mode == "offerless")
        await far.apply_answer(await new.create_answer(offer))
    else:
        offer = await new.create_offer()
        if mode == "active":
            offer = _setup_active(offer)
        await new.apply_answer(await far.create_answer(offer))
    return new


async def _one(far_kind: str, stop: str, mode: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_holder, args=(theirs,), daemon=True)
    child.start()
    if far_kind == "Chromium":
        from benchmarks._chromium_peer import ChromiumPeer

        far: Any = await ChromiumPeer().start()
    else:
        far = _AiortcFar(follows=far_kind == "MediaSession")
    new = None
    try:
        offer = await asyncio.to_thread(ours.recv)
        started = await far.now()
        ours.send(await far.create_answer(offer))
        first = await far.wait_tone(H1_TONE, started, GIVE_UP)
        if first is None:
            raise RuntimeError("the first connection carried no audio")
        await _stop(child, ours, stop)
        began = await far.now()
        error = None
        try:
            new = await _take_over(far, mode)
            playing = asyncio.ensure_future(new.play_tone(H2_TONE, 3600))
            back = await far.wait_tone(H2_TONE, began, GIVE_UP)
            playing.cancel()
        except Exception as exc:  # a refused exchange is a result, not a crash
            back, error = None, f"{type(exc).__name__}: {exc}"
        return {"baseline_ms": first - started,
                "ms": None if back is None else back - began, "error": error}
    finally:
        await far.close()
        if new is not None:
            await new.close()
        if child.is_alive():
            child.kill()
        child.join(5)


async def _stop(child: Any, pipe: Connection, stop: str) -> None:
    """End H1 ("close": gracefully; "kill": SIGKILL), then let failover time pass."""
    if stop == "close":
        pipe.send("close")
        while await asyncio.to_thread(pipe.recv) != "closed":
            pass
    else:
        child.kill()
    await asyncio.to_thread(child.join, 5)
    await asyncio.sleep(STOP_TO_OFFER)


def _summary(values: list[float | None]) -> tuple[float | None, str]:
    got = [v for v in values if v is not None]
    text = " / ".join("never" if v is None else f"{v:.0f}" for v in values)
    return (statistics.median(got) if len(got) == len(values) else None), text


async def _all() -> list[dict[str, Any]]:
    rows = []
    from benchmarks._chromium_peer import available

    kinds = ["MediaSession", "plain aiortc"] + (["Chromium"] if available() else [])
    for far in kinds:
        for stop in ("close", "kill"):
            modes = ["actpass", "active", "offerless"]
            if far == "Chromium":  # aiortc cannot restart ICE: the same as "offerless" there
                modes.append("offerless, no ICE restart")
            for mode in modes:
                runs = [await _one(far, stop, mode) for _ in range(RUNS)]
                rows.append(_row(far, stop, mode, runs))
    rows += await _baresip_rows()
    return rows


async def _baresip_rows() -> list[dict[str, Any]]:
    from benchmarks._baresip_far import BaresipFar, available

    if not available():
        print("  baresip: not installed, skipped")
        return []
    rows = []
    for netns in (False, True):
        try:
            far = await BaresipFar(netns=netns).start()
        except Exception as exc:  # no root / no `ip netns`: say so, measure the rest
            print(f"  baresip (netns={netns}): cannot start: {exc}")
            continue
        where = "in a netns" if netns else "on loopback"
        try:
            for stop in ("close", "kill"):
                for mode in ("actpass", "active", "offerless"):
                    runs = [await far.one(_holder, _media, stop, mode, F_TONE, _stop, _Ear,
                                          GIVE_UP) for _ in range(RUNS)]
                    rows.append(_row(f"baresip {where} (H2 hears it)", stop, mode, runs))
        finally:
            await far.close()
    return rows


def _row(far: str, stop: str, mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    value, text = _summary([r["ms"] for r in runs])
    base = statistics.median(r["baseline_ms"] for r in runs)
    row = {
        "name": f"dtls {far} far, H1 {stop}, H2 {mode}",
        "value": value, "unit": "ms", "baseline": "first connection",
        "baseline_value": base, "target": "audio back", "met": value is not None,
        "detail": {"runs_ms": text, "errors": [r["error"] for r in runs if r["error"]],
                   "load": os.getloadavg()},
    }
    print(f"  {row['name']}: {text} ms (baseline {base:.0f} ms)", flush=True)
    return row


def run() -> list[dict[str, Any]]:
    """Every cell, RUNS runs each (about 8 minutes on 2 cores with Chromium)."""
    started = time.monotonic()
    rows = asyncio.run(_all())
    print(f"  ({time.monotonic() - started:.0f} s, load {os.getloadavg()})")
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    print_table(run())
