"""examples/pipecat_bot.py as three processes of one SharedWebPhone group on the sandbox: the
real one serves a call; SIGKILL of it mid-call: the successor adopts the call (issue #11),
takes its media (the dead real held it) and its `serve()` builds a pipeline for it: the caller
hears the bot again, in the same call, without a BYE (the times are printed).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.group import MemberGroup, MemberProc, short_runtime_dir
from support.sandbox_server import SandboxServer
from support.wait import wait_until
from webphone import SipInfo, WebPhone
from webphone.media import rms

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")  # as tests/conftest.py
try:
    import webphone.integrations.pipecat  # noqa: F401
except ImportError as exc:  # the extra is not installed (scripts/test installs it)
    if IN_CI:
        raise
    pytest.skip(str(exc), allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
BOT_USER, CALLER_USER = "108", "109"
LOUD = 0.02


class BotGroup(MemberGroup):
    """Members that are the example bot (`--shared`) instead of webphone's member_cli."""

    def __init__(self, runtime_dir: Path, log_dir: Path, sip_info: dict[str, Any]) -> None:
        super().__init__(runtime_dir, log_dir, sip_info)
        self.audio_dir = log_dir / "bot-audio"

    def argv(self, name: str, *extra: str) -> list[str]:
        return [sys.executable, str(ROOT / "examples/pipecat_bot.py"), "--shared",
                "--sip-info", str(self._sip_info_file()), "--runtime-dir", str(self.runtime_dir),
                "--loopback-media", "--audio-dir", str(self.audio_dir), *extra]


@pytest.fixture
async def bots(sandbox_server: SandboxServer, tmp_path: Path) -> AsyncIterator[BotGroup]:
    if shutil.which("espeak-ng") is None:
        (pytest.fail if IN_CI else pytest.skip)("espeak-ng not found (apt-get install espeak-ng)")
    sandbox_server.clear_bindings(BOT_USER)
    runtime_dir = short_runtime_dir()
    group = BotGroup(runtime_dir, tmp_path, sandbox_server.sip_info(BOT_USER))
    try:
        yield group
    finally:
        await group.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)


class Ear:
    """Arrival times of loud frames at the caller."""

    def __init__(self) -> None:
        self.loud: list[float] = []
        self.last = 0.0
        self.changed = asyncio.Event()

    async def listen(self, media: Any) -> None:
        async for frame in media.received_audio(max_frames=500):
            self.last = frame.received_at
            if rms(frame.pcm) > LOUD:
                self.loud.append(frame.received_at)
            self.changed.set()

    async def sound(self, after: float, timeout: float) -> float:
        async with asyncio.timeout(timeout):
            while not (heard := [t for t in self.loud if t > after]):
                self.changed.clear()
                await self.changed.wait()
        return heard[0]


async def call_and_listen(phone: WebPhone) -> tuple[Any, Ear, asyncio.Task[None]]:
    session = await phone.call(BOT_USER)
    if session.state != "answered":
        await session.wait_for("answered", timeout=10)
    ear = Ear()
    return session, ear, asyncio.ensure_future(ear.listen(session.media))


async def three_bots(bots: BotGroup) -> tuple[MemberProc, list[MemberProc]]:
    """Three bot processes: the real one and the others."""
    procs = await bots.spawn_ready(["a", "b", "c"])
    (real,) = bots.reals()
    return real, [p for p in procs if p is not real]


def caller_phone(sandbox_server: SandboxServer) -> WebPhone:
    """The caller, a plain WebPhone (`async with`)."""
    sandbox_server.clear_bindings(CALLER_USER)
    return WebPhone(SipInfo.from_dict(sandbox_server.sip_info(CALLER_USER)),
                    instance_id="pipecat-caller", loopback_media=True)


async def test_sigkill_of_the_bot_mid_call_the_caller_hears_the_bot_again(
    sandbox_server: SandboxServer, bots: BotGroup
) -> None:
    """The real bot process (holding the call's SIP and audio) is SIGKILLed mid-greeting: a
    successor adopts the call and serves it with a new pipeline; the caller, in the same call
    and without a BYE, hears the bot greet again."""
    real, others = await three_bots(bots)
    loop = asyncio.get_running_loop()
    async with caller_phone(sandbox_server) as caller:
        byes: list[Any] = []
        caller.sip_client.on("inbound_message", lambda m: byes.append(m) if getattr(
            m, "method", None) == "BYE" else None)
        session, ear, listening = await call_and_listen(caller)
        greeted = await ear.sound(after=0, timeout=15)
        await real.wait_event(lambda e: e["event"] == "answered", 5)
        since = {p.name: len(p.events) for p in others}
        await wait_until(lambda: ear.last > greeted + 0.5, 5)  # mid-greeting
        killed = loop.time()
        real.kill()

        # the successor's serve() builds a pipeline for the adopted call: its bot greets
        served = await wait_until(lambda: [(p, e) for p in others for e in p.events[since[p.name]:]
                                           if e["event"] == "answered"], 15,
                                  message="another process to serve the call")
        server, answered = served[0]
        again = await ear.sound(after=max(answered["t"], killed + 0.2), timeout=10)
        print(f"\nafter SIGKILL of the bot's process: {server.name} serves the call "
              f"{(answered['t'] - killed) * 1000:.0f} ms later; the caller hears the bot again "
              f"{(again - killed) * 1000:.0f} ms after the kill; call {session.state}, BYEs "
              f"{len(byes)}")
        assert session.state == "answered" and not byes
        assert answered["call_id"] == session.call_id
        await session.hangup()
        listening.cancel()
