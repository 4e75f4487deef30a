"""Media placement with real processes (issue #11 items 1, 3, 5): a dummy that holds a call's
media leaves gracefully and the real moves the call to another member first (make-before-break).

Members are `member_cli --tone` processes, the far party a `WebPhone` process playing 440 Hz
(tests/support/continuity.py). The dummy holding the media and SIGKILL of a media holder are
in tests/system/test_continuity.py; this adds the graceful leave of a media holder.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from support.continuity import (
    FAR_TONE,
    FarParty,
    answer_call,
    dummies_of,
    far_party,
    marks,
    real_of,
    spawn_holders,
)
from support.group import MemberGroup
from support.sandbox_server import SandboxServer

GROUP_USER, FAR_USER = "109", "110"

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


@pytest.fixture
async def far(sandbox_server: SandboxServer, tmp_path: Path) -> AsyncIterator[FarParty]:
    async with far_party(sandbox_server, FAR_USER, tmp_path) as party:
        yield party


async def test_a_leaving_media_holder_hands_its_call_to_another_member_first(
    sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup], far: FarParty
) -> None:
    """dispose() of the dummy holding the media: the real moves the call's media to the other
    dummy (the least loaded member other than the real) before the holder goes; the far party
    then hears that member's tone, the new holder hears 440 Hz, and nobody sent a BYE."""
    sandbox_server.clear_bindings(GROUP_USER)
    members = await spawn_holders(member_group(GROUP_USER, kam=sandbox_server), ["a", "b", "c"])
    holder, other = dummies_of(members)
    call = await answer_call(members, far, GROUP_USER, holder.name)
    since = marks([other, real_of(members)])
    left = time.monotonic()
    result = await holder.command("dispose", timeout=15)
    assert result["ok"], result
    assert await call.new_holder(since) is other
    heard = await far.wait_tone(call.tone(other), after=left, timeout=10)
    report = await far.report(since=left - 0.5, until=heard + 1.0)
    print(f"\ngraceful leave of the media holder: dispose() {(result['t'] - left) * 1000:.0f} "
          f"ms, gap {report['gap_ms']:.0f} ms, tones {report['tones']}, BYEs {report['byes']}")
    assert report["byes"] == 0 and report["state"] == "answered", report
    assert report["current"] == call.tone(other), report
    holds = (await other.command("holds"))["value"]
    assert holds.get(call.call_id) == FAR_TONE, holds
