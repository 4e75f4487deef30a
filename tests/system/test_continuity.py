"""Calls that survive the group's faults (issue #11), proven with real processes: member processes
(`member_cli --tone`) hold the call's media and play their own tone; the far party (a `WebPhone`
in its own process, tests/support/continuity.py) plays 440 Hz, measures the audio gap by
frequency and counts the BYEs it gets. Each test checks the audio at both ends, that the far party
got no BYE, and that every live member shows the one call.

This file: the harness on a call whose media the real holds (what a plain process does).
test_continuity_group.py: the faults, over the local hub and Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from support.continuity import FAR_TONE, FarParty, spawn_holders
from support.group import MemberGroup, MemberProc
from support.sandbox_server import SandboxServer

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

GROUP_USER, FAR_USER = "105", "106"


def holding(call_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "holding" and e["call_id"] == call_id


def hears(call_id: str, hz: float, after: float = 0.0) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (e["event"] == "heard" and e["call_id"] == call_id and e["hz"] == hz
                      and e["t"] >= after)


async def one_call_everywhere(members: list[MemberProc], call_id: str) -> None:
    """Every member shows exactly this one call, answered."""
    for m in members:
        calls = (await m.command("state"))["value"]["calls"]
        assert [(c["call_id"], c["state"]) for c in calls] == [(call_id, "answered")], (
            m.name, calls)


@pytest.fixture
async def far(sandbox_server: SandboxServer, tmp_path: Path) -> AsyncIterator[FarParty]:
    sandbox_server.clear_bindings(FAR_USER)
    party = await FarParty.spawn(sandbox_server.sip_info(FAR_USER), tmp_path)
    try:
        yield party
    finally:
        await party.close()


async def test_the_real_holds_the_media_and_the_meter_sees_its_death(
    sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup], far: FarParty
) -> None:
    """The harness itself, on a call whose media the real holds (a plain single process's
    case): audio by frequency at both ends, no gap while it lives; its SIGKILL is a gap that
    grows at the far party (what the group tests prove does NOT happen)."""
    sandbox_server.clear_bindings(GROUP_USER)
    group = member_group(GROUP_USER, kam=sandbox_server)
    procs = await spawn_holders(group, ["a", "b"])
    (real,) = group.reals()
    tone = procs[real.name][1]
    calling = asyncio.ensure_future(far.call(GROUP_USER))
    ringing = await real.wait_event(lambda e: e["event"] == "inbound_call", 10)
    call_id = ringing["call_id"]
    answered = await real.command("session", call_id=call_id, name="answer")
    assert answered["ok"], answered
    assert await calling == call_id
    await real.wait_event(holding(call_id), 5)
    heard_at = await far.wait_tone(tone, after=0, timeout=10)
    await real.wait_event(hears(call_id, FAR_TONE), 10)
    await one_call_everywhere([m for m, _ in procs.values()], call_id)
    report = await far.report(since=heard_at + 0.2, until=heard_at + 1.2)  # a steady second
    print(f"\nsteady audio from {real.name}: {report}")
    assert report["tones"] == [tone]
    assert report["gap_ms"] < 500 and report["byes"] == 0
    killed = time.monotonic()
    real.kill()
    report = await far.report(since=killed - 0.5, until=killed + 1.0)
    print(f"after SIGKILL of the real holding the media: {report}")
    assert report["gap_ms"] >= 900
