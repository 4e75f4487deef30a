"""A call outlives the real that held both its dialog and its media (issue #11 item 4, "both at
once", what a plain single process is), and a deposed real stays silent in the dialogs its
successor adopted (invariant 8). Real processes: `member_cli --tone` members on the sandbox, the
far party a `WebPhone` in its own process (tests/support/continuity.py); audio by frequency at
both ends. Also a double failover: the successor dies while it adopts the call.

The successor adopts the dialog from the continuity state (CSeq +1000, its own Contact) and,
the media holder being dead, renews the media (offerless re-INVITE, answer in the ACK; the
webphone far party re-offers on its new endpoint)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.continuity import (
    FAR_TONE,
    FarParty,
    GroupCall,
    answer_call,
    dummies_of,
    far_party,
    first_to,
    is_,
    real_of,
    spawn_holders,
)
from support.group import MemberGroup, MemberProc
from support.sandbox_server import SandboxServer
from support.wait import wait_until
from webphone.sip.sdp import parse_origin

GROUP_USER, FAR_USER = "107", "108"

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


@pytest.fixture
async def far(sandbox_server: SandboxServer, tmp_path: Path) -> AsyncIterator[FarParty]:
    async with far_party(sandbox_server, FAR_USER, tmp_path) as party:
        yield party


async def call_on_the_real(sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup],
                           far: FarParty, *extra: str) -> tuple[GroupCall, MemberProc, MemberProc]:
    """Members a and b (member_cli options `extra`); the far party calls the group and the
    real answers (it holds the dialog and the media). Returns the call, the real, the dummy."""
    sandbox_server.clear_bindings(GROUP_USER)
    members = await spawn_holders(member_group(GROUP_USER, kam=sandbox_server), ["a", "b"],
                                  *extra)
    real, (dummy,) = real_of(members), dummies_of(members)
    call = await answer_call(members, far, GROUP_USER, real.name)
    return call, real, dummy


async def taken_over(call: GroupCall, successor: MemberProc, since: float, mark: int
                     ) -> dict[str, Any]:
    """The successor adopted the call and holds its media: the far party hears its tone, it
    hears the far party's, the far party got no BYE, the successor shows the call answered.
    Returns the far party's report from `since`."""
    await successor.wait_event(is_("adopted", call.call_id), 15, since=mark)
    await call.far.wait_tone(call.tone(successor), after=since, timeout=10)
    await successor.wait_event(is_("heard", call.call_id, hz=FAR_TONE), 10, since=mark)
    report = await call.far.report(since=since)
    assert report["byes"] == 0 and report["state"] == "answered", report
    assert report["current"] == call.tone(successor), report
    state = (await successor.command("state"))["value"]
    assert state["role"] == "real"
    assert [(c["call_id"], c["state"]) for c in state["calls"]] == [(call.call_id, "answered")]
    return report


async def test_sigkill_of_the_real_holding_dialog_and_media(
    sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup], far: FarParty
) -> None:
    """SIGKILL of the real that held both: the dummy is promoted, adopts the dialog, renews the
    media; the call goes on (tones both ways), the far party never gets a BYE."""
    call, real, dummy = await call_on_the_real(sandbox_server, member_group, far)
    mark, killed = len(dummy.events), time.monotonic()
    real.kill()
    report = await taken_over(call, dummy, killed, mark)
    heard = await far.wait_tone(call.tone(dummy), after=killed, timeout=1)
    print(f"\nSIGKILL of the real holding both: the far party hears the successor "
          f"{(heard - killed) * 1000:.0f} ms after the kill; {report}")


async def test_deposed_real_stays_silent_in_the_adopted_dialog(
    sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup], far: FarParty
) -> None:
    """SIGSTOP of the real holding both, past the heartbeat timeout: the dummy takes the call
    over; on SIGCONT the old real learns it was deposed and sends nothing more in the dialog
    (the sandbox receives no message of the call on its connection), the call goes on. Its
    media timeout (1 s) is long past when it wakes: the BYE it would send is fenced."""
    call, real, dummy = await call_on_the_real(sandbox_server, member_group, far,
                                               "--media-timeout", "1")
    sandbox = sandbox_server.sandbox
    assert sandbox is not None
    (old_connection,) = {r.connection for r in sandbox.messages_of(GROUP_USER)
                         if r.direction == "out" and r.message.call_id == call.call_id}
    mark, stopped = len(dummy.events), time.monotonic()
    real.stop()
    before = await taken_over(call, dummy, stopped, mark)
    woke = len(real.events)
    real.cont()
    await real.wait_event(is_("role", role="dummy"), 10, since=woke)
    await real.wait_event(is_("call_state", call.call_id, state="disposed"), 10, since=woke)
    after = await far.report(since=stopped)
    assert after["byes"] == 0 and after["reinvites"] == before["reinvites"], (before, after)
    assert after["current"] == call.tone(dummy), after
    spoke = [r.first_line for r in sandbox.messages_of(GROUP_USER)
             if r.connection == old_connection and r.direction == "in" and r.time > stopped
             and r.message.call_id == call.call_id]
    assert spoke == [], spoke


async def test_a_reoffer_in_flight_to_the_dying_real_leaves_the_dialog_up(
    sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup], far: FarParty
) -> None:
    """The far party's re-INVITE reached the real's connection (the real is SIGSTOPped, the
    test waits for the sandbox to forward it) and the real is SIGKILLed before it answers: a
    transport error, a 503 from that branch (RFC 3261 §16.9) answered upstream as 500 (§16.7
    step 6). The far party's re-offer fails but its dialog stays (a 408 would end it,
    §12.2.1.2); the dummy takes the call over: tones both ways, no BYE. (Before: 408, the far
    party ended the call, the successor's re-INVITE got 481: the call was lost.)"""
    call, real, dummy = await call_on_the_real(sandbox_server, member_group, far)
    sandbox = sandbox_server.sandbox
    assert sandbox is not None
    mark, stopped = len(dummy.events), time.monotonic()
    real.stop()
    reoffer = asyncio.ensure_future(far.command("reinvite", timeout=30))

    def forwarded() -> bool:
        records = sandbox.messages.copy()  # one C call: the sandbox thread appends meanwhile
        return any(r.direction == "out" and r.user == GROUP_USER and r.time >= stopped
                   and r.message.call_id == call.call_id
                   and r.first_line.startswith("INVITE ") for r in records)

    await wait_until(forwarded, 10, message="the far party's re-INVITE to reach the real")
    real.kill()
    refused = await asyncio.wait_for(reoffer, 15)
    assert not refused["ok"] and "500" in refused["message"], refused
    await taken_over(call, dummy, stopped, mark)


@pytest.fixture
def party_sandbox() -> Iterator[SandboxServer]:
    """A sandbox of this test's own, with its parties (900 echo, 901 tone...)."""
    server = SandboxServer(parties=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_sigkill_of_the_real_calling_a_sandbox_party(
    party_sandbox: SandboxServer, member_group: Callable[..., MemberGroup]
) -> None:
    """The real calls the sandbox's echo party (900: an aiortc far party that never re-offers)
    and holds dialog and media; SIGKILL: the successor's offerless re-INVITE is not followed
    (the party offers from its connection to the dead process), so after `fallback_after` its
    fresh offer brings the audio back: the successor hears its own tone echoed (the party
    hears it, and it hears the party), no BYE reached the party."""
    members = await spawn_holders(member_group(GROUP_USER, kam=party_sandbox), ["a", "b"],
                                  "--hear", "1000,1200")
    real, (dummy,) = real_of(members), dummies_of(members)
    tone = {name: hz for name, (_, hz) in members.items()}
    placed = await real.command("call", callee="900")
    assert placed["ok"], placed
    call_id = placed["value"]["call_id"]
    await real.wait_event(is_("heard", call_id, hz=tone[real.name]), 10)
    mark, killed = len(dummy.events), time.monotonic()
    real.kill()
    await dummy.wait_event(is_("adopted", call_id), 15, since=mark)
    echoed = await dummy.wait_event(is_("heard", call_id, hz=tone[dummy.name]), 10, since=mark)
    print(f"\nSIGKILL of the real calling the echo party: the successor hears itself echoed "
          f"{(echoed['t'] - killed) * 1000:.0f} ms after the kill")
    state = (await dummy.command("state"))["value"]
    assert [(c["call_id"], c["state"]) for c in state["calls"]] == [(call_id, "answered")]
    sandbox = party_sandbox.sandbox
    assert sandbox is not None
    seen = [r.first_line for r in sandbox.messages if r.message.call_id == call_id]
    assert any(line.startswith("INVITE sip:900") for line in seen), seen  # the record works
    assert not [line for line in seen if line.startswith("BYE")], seen


async def the_real_holding_both_killed(
    sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup], far: FarParty
) -> tuple[GroupCall, MemberProc, MemberProc, dict[str, int], float]:
    """Members a, b, c; the far party calls the group, the real answers (it holds both) and
    is SIGKILLed. Returns once a dummy says it is promoted: (the call, the promoted member,
    the other one, each one's event mark before the kill, the time of the kill)."""
    sandbox_server.clear_bindings(GROUP_USER)
    members = await spawn_holders(member_group(GROUP_USER, kam=sandbox_server), ["a", "b", "c"])
    real = real_of(members)
    call = await answer_call(members, far, GROUP_USER, real.name)
    others = [m for m in call.alive() if m is not real]
    marks_ = {m.name: len(m.events) for m in others}
    killed = time.monotonic()
    real.kill()
    promoted = await first_to(others, is_("role", role="real"), marks_)
    (other,) = [m for m in others if m is not promoted]
    return call, promoted, other, marks_, killed


async def test_an_action_during_the_takeover_runs_once_it_is_done(
    sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup], far: FarParty
) -> None:
    """A dummy hangs up while the successor is still adopting the call (the real holding both
    was just SIGKILLed): the action waits for the takeover and then ends the adopted call with
    a BYE to the far party; it is neither lost nor refused."""
    call, promoted, dummy, marks_, _ = await the_real_holding_both_killed(
        sandbox_server, member_group, far)
    result = await dummy.command("session", call_id=call.call_id, name="hangup")
    assert result["ok"], result
    await far.wait_event(is_("call_state", state="disposed"), 10)
    adopted = await promoted.wait_event(is_("adopted", call.call_id), 1,
                                        since=marks_[promoted.name])
    assert adopted["t"] <= result["t"]  # the hangup ran once the call was taken over
    report = await far.report(since=time.monotonic() - 5)
    assert report["byes"] == 1 and report["end_reason"] == "remote hung up", report


def group_sdp_versions(sandbox_server: SandboxServer, call_id: str) -> list[tuple[int, str]]:
    """The (o= version, first line) of every SDP the far party received from the group in the
    call, in order: offers and answers of whichever member held the dialog."""
    sandbox = sandbox_server.sandbox
    assert sandbox is not None
    return [(parse_origin(r.message.body.decode()).version, r.first_line)
            for r in sandbox.messages_of(FAR_USER)
            if r.direction == "out" and r.message.call_id == call_id and r.message.body]


@pytest.mark.parametrize("moment", ["promoted", "reinvite", "answered", "reinvite-hang"])
async def test_double_failover_the_successor_dies_while_adopting(
    sandbox_server: SandboxServer, member_group: Callable[..., MemberGroup], far: FarParty,
    moment: str
) -> None:
    """A double failover: the real holding both is SIGKILLed, and so is its successor in the
    middle of the takeover: as soon as it says it is the real ("promoted": the records it
    adopted are published, nothing sent yet), or once its re-INVITE renewing the media reached
    the far party ("reinvite": the far party's 200 with its offer waits for an ACK that never
    comes), or once it answered the far party's re-offer that followed its renewal ("answered":
    the far party has its new SDP, its published record does not show it yet), or it hangs at
    its re-INVITE (SIGSTOP, "reinvite-hang"). The third member adopts the call from
    what the successor published and renews the media; tones both ways, no BYE. A hung
    successor woken afterwards (SIGCONT) learns it was deposed and ends nothing (its renewal,
    ACK or BYE are fenced). (Before: the successor published no record while renewing, and
    the far party's unACKed 2xx blocked its re-offer: the call was lost. Then: the third member
    resumed from the record's o= version as the successor had, and its SDP came with a version
    the far party had seen already with another body, against RFC 3264 §8.)"""
    call, successor, last, marks_, killed = await the_real_holding_both_killed(
        sandbox_server, member_group, far)
    if moment in ("reinvite", "reinvite-hang"):
        await far.wait_event(lambda e: is_("sip_in", method="INVITE")(e) and e["t"] > killed,
                             15)
    elif moment == "answered":
        await far.wait_event(lambda e: is_("sdp_in")(e) and e["t"] > killed, 15)
    successor.stop() if moment == "reinvite-hang" else successor.kill()
    report = await taken_over(call, last, killed, marks_[last.name])
    heard = await far.wait_tone(call.tone(last), after=killed, timeout=1)
    print(f"\ndouble failover ({moment}): the far party hears {last.name} "
          f"{(heard - killed) * 1000:.0f} ms after the first kill; {report}")
    # RFC 3264 §8: every new SDP of the session comes with a higher o= version than the ones
    # before (a far party may take an equal version for "no change" and keep the old media)
    sdps = group_sdp_versions(sandbox_server, call.call_id)
    assert all(a[0] < b[0] for a, b in itertools.pairwise(sdps)), sdps
    if moment == "reinvite-hang":
        woke = len(successor.events)
        successor.cont()
        await successor.wait_event(is_("role", role="dummy"), 10, since=woke)
        after = await far.report(since=time.monotonic(), until=time.monotonic() + 2.0)
        assert after["byes"] == 0 and after["state"] == "answered", after
        assert after["current"] == call.tone(last) and after["gap_ms"] < 500, after
