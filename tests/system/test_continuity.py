"""A call survives the group's faults (issue #11 "Done means"), with real processes.

Members are `member_cli --tone` processes (each plays its own tone into the calls whose media it
holds and reports what it hears); the far party is a `WebPhone` in its own process
(tests/support/continuity.py) playing 440 Hz. For every fault: the far party keeps hearing a
member's tone (the gap is printed: benchmarks/continuity_bench.py measures it), the member that
holds the media afterwards hears 440 Hz, the far party got no BYE, and every live member shows
the one call, answered. Over the local hub (sandbox) and Redis; the kills also through Kamailio.

The gap bounds asserted here are correctness bounds, far above the targets: "the audio came
back", not a measurement (a dead call is a gap that grows without end). The last test checks
the harness itself: a call whose media the real holds (what a plain process does), whose
SIGKILL IS such a growing gap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from support.baresip import Baresip
from support.continuity import (
    FAR_TONE,
    MEMBER_TONES,
    FarParty,
    GroupCall,
    Members,
    answer_call,
    dummies_of,
    far_party,
    first_to,
    is_,
    marks,
    real_of,
    spawn_holders,
    survived,
    tone_in_wav,
)
from support.group import MemberGroup, MemberProc
from support.kamailio import Kamailio
from support.redis_server import RedisServer
from support.sandbox_server import SandboxServer
from support.wait import wait_until

GROUP_USER, FAR_USER = "105", "106"
#: The group's heartbeat timeout over the local hub (MemberGroup's default) and its lease over
#: Redis (s). The Redis lease is the library's default, for the reason webphone.shared.lease
#: gives (a busy 2-core machine stalls a loop for a second or two): a lease is a real-time
#: budget, renewed within 2/3 of it. At 1.5 s (renewed within 1.0 s), under load 5-8 (nice 10)
#: the Redis cases failed in 6 of 11 runs, every failure whose logs were read the same way: the
#: successor that had just taken the lease, busy renewing the call's media, missed that
#: deadline, stepped down, was deposed and its call fenced (a second failover nobody caused).
#: At 3 s: 1 step-down in 9 runs.
HEARTBEAT_S, REDIS_LEASE_S = 1.5, 3.0
#: correctness bounds (see the module docstring), not targets; a media holder's death is seen
#: after the heartbeat timeout or the lease, so its bound counts from there
SIGNALLING_GAP_BOUND_MS = 1000.0
MEDIA_GAP_BEYOND_DETECTION_MS = 3500.0

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

BOTH = pytest.mark.parametrize("holders", ["local", "redis"], indirect=True)
#: over the local hub and Redis on the sandbox, and over the local hub through Kamailio
SERVERS = pytest.mark.parametrize(("holders", "server"), [
    ("local", "sandbox"), ("redis", "sandbox"), ("local", "kamailio")], indirect=True)


@pytest.fixture
def server(request: pytest.FixtureRequest, sandbox_server: SandboxServer) -> Any:
    """The SIP server of the group and the far party: the sandbox (default) or the test
    Kamailio (parametrized "kamailio": it routes in-dialog requests to the device's new flow)."""
    if getattr(request, "param", "sandbox") == "kamailio":
        return request.getfixturevalue("kamailio")
    return sandbox_server


@pytest.fixture
async def holders(request: pytest.FixtureRequest, server: Any,
                  member_group: Callable[..., MemberGroup]
                  ) -> Callable[[list[str]], Any]:
    """`await holders(names)` -> {name: (member, tone)}: a group on the sandbox over the local
    hub (default) or a real redis-server (parametrized "redis": `BOTH`)."""
    extra: tuple[str, ...] = ()
    timeout = HEARTBEAT_S
    if getattr(request, "param", "local") == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        extra = ("--hub", redis.url)
        timeout = REDIS_LEASE_S
    server.clear_bindings(GROUP_USER)
    group = member_group(GROUP_USER, kam=server, heartbeat_timeout=timeout)

    async def spawn(names: list[str]) -> Members:
        return await spawn_holders(group, names, *extra)

    return spawn


@pytest.fixture
def media_gap_bound_ms(request: pytest.FixtureRequest) -> float:
    """The correctness bound of a media holder's death: `MEDIA_GAP_BEYOND_DETECTION_MS` after
    the group can see it (the heartbeat timeout, or the lease over Redis)."""
    callspec = getattr(request.node, "callspec", None)
    redis = callspec is not None and callspec.params.get("holders") == "redis"
    return (REDIS_LEASE_S if redis else HEARTBEAT_S) * 1000 + MEDIA_GAP_BEYOND_DETECTION_MS


@pytest.fixture
async def far(server: Any, tmp_path: Path) -> AsyncIterator[FarParty]:
    async with far_party(server, FAR_USER, tmp_path) as party:
        yield party


async def a_call_a_dummy_holds(holders: Callable[[list[str]], Any], far: FarParty
                               ) -> tuple[MemberProc, MemberProc, GroupCall]:
    """Members a, b, c; the far party calls the group and a dummy answers, holding the media:
    (the real, that dummy, the call)."""
    members = await holders(["a", "b", "c"])
    real, dummy = real_of(members), dummies_of(members)[0]
    call = await answer_call(members, far, GROUP_USER, dummy.name)
    assert call.holder is dummy, f"{call.holder.name} holds the media, not {dummy.name}"
    return real, dummy, call


async def reinvited_after(far: FarParty, since: float) -> None:
    """Until the far party receives a re-INVITE sent after `since` (the successor's)."""
    await far.wait_event(lambda e: is_("sip_in", method="INVITE")(e) and e["t"] > since, 15)


async def test_a_dummy_answers_holds_the_media_hears_and_speaks(
    holders: Callable[[list[str]], Any], far: FarParty
) -> None:
    real, dummy, call = await a_call_a_dummy_holds(holders, far)
    report = await survived(call, time.monotonic() + 0.5, dummy, "a dummy holds the media")
    assert report["reinvites"] == 0
    assert call.call_id not in (await real.command("holds"))["value"]


@SERVERS
async def test_sigkill_of_the_signalling_holder(
    holders: Callable[[list[str]], Any], far: FarParty
) -> None:
    real, dummy, call = await a_call_a_dummy_holds(holders, far)
    killed = time.monotonic()
    real.kill()
    await reinvited_after(far, killed)
    report = await survived(call, killed, dummy, "SIGKILL of the signalling holder")
    assert report["gap_ms"] < SIGNALLING_GAP_BOUND_MS, report


async def test_sigstop_of_the_signalling_holder_past_the_timeout(
    holders: Callable[[list[str]], Any], far: FarParty
) -> None:
    """The hung real is replaced; on SIGCONT it stands down and stays silent in the adopted
    dialog (fencing): no BYE, no second re-INVITE at the far party."""
    real, dummy, call = await a_call_a_dummy_holds(holders, far)
    stopped = time.monotonic()
    real.stop()
    await reinvited_after(far, stopped)
    report = await survived(call, stopped, dummy, "SIGSTOP of the signalling holder")
    mark = len(real.events)
    real.cont()
    await real.wait_event(is_("role", role="dummy"), 10, since=mark)
    after = await survived(call, time.monotonic() + 0.5, dummy,
                           "after SIGCONT of the deposed real")
    assert after["reinvites"] == report["reinvites"], "the deposed real spoke in the dialog"
    assert report["gap_ms"] < SIGNALLING_GAP_BOUND_MS, report


async def test_graceful_leave_of_the_signalling_holder(
    holders: Callable[[list[str]], Any], far: FarParty
) -> None:
    real, dummy, call = await a_call_a_dummy_holds(holders, far)
    left = time.monotonic()
    result = await real.command("dispose", timeout=15, drain=False)
    assert result["ok"], result
    await reinvited_after(far, left)
    report = await survived(call, left, dummy, f"graceful leave of the signalling holder "
                              f"(dispose() {result['t'] - left:.2f} s)")
    assert report["gap_ms"] < SIGNALLING_GAP_BOUND_MS, report


@SERVERS
async def test_sigkill_of_the_media_holder(
    holders: Callable[[list[str]], Any], far: FarParty, media_gap_bound_ms: float
) -> None:
    _, dummy, call = await a_call_a_dummy_holds(holders, far)
    since = marks([m for m in call.alive() if m is not dummy])
    killed = time.monotonic()
    dummy.kill()
    holder = await call.new_holder(since)
    assert holder is not dummy
    report = await survived(call, killed, holder,
                            f"SIGKILL of the media holder (now {holder.name})")
    assert report["gap_ms"] < media_gap_bound_ms, report


@BOTH
async def test_double_failover_while_a_dummy_holds_the_media(
    holders: Callable[[list[str]], Any], far: FarParty, media_gap_bound_ms: float
) -> None:
    """The younger dummy holds the call's media; the real is SIGKILLed, and so is its
    successor once its target refresh (a re-INVITE with the same SDP) reached the far party,
    whose 200 then waits for an ACK that never comes. The last member takes the dialog over
    from what the successor published and refreshes it again: the far party takes the older
    200 as ACKed (RFC 3261 §14.1; else it would BYE the call at 64*T1), no BYE. Over the local
    hub the older dummy is promoted first, so the audio never stops; over Redis whoever takes
    the lease first: when that is the media holder, the last member renews the media too."""
    members = await holders(["a", "b", "c"])
    real = real_of(members)
    listed = (await real.command("members"))["value"]  # oldest first
    older, younger = (members[m["member_id"]][0] for m in listed if m["role"] == "dummy")
    call = await answer_call(members, far, GROUP_USER, younger.name)
    assert call.holder is younger, call.holder.name
    since = marks([older, younger])
    killed = time.monotonic()
    real.kill()
    successor = await first_to([older, younger], is_("role", role="real"), since, 20)
    await reinvited_after(far, killed)
    successor.kill()
    (last,) = [m for m in (older, younger) if m is not successor]
    await last.wait_event(is_("adopted", call.call_id), 20, since=since[last.name])
    report = await survived(call, killed, last, f"double failover, {younger.name} holds the "
                              f"media, {successor.name} promoted first")
    bound = media_gap_bound_ms if successor is younger else SIGNALLING_GAP_BOUND_MS
    assert report["gap_ms"] < bound and report["reinvites"] >= 2, report


@BOTH
async def test_sigkill_of_a_real_that_held_both(
    holders: Callable[[list[str]], Any], far: FarParty, media_gap_bound_ms: float
) -> None:
    members = await holders(["a", "b", "c"])
    real = real_of(members)
    call = await answer_call(members, far, GROUP_USER, real.name)
    since = marks([m for m in call.alive() if m is not real])
    killed = time.monotonic()
    real.kill()
    holder = await call.new_holder(since)
    report = await survived(call, killed, holder, f"SIGKILL of the real holding both (media now "
                              f"on {holder.name})")
    assert report["gap_ms"] < media_gap_bound_ms, report


async def test_the_real_holds_the_media_and_the_meter_sees_the_group_die(
    holders: Callable[[list[str]], Any], far: FarParty
) -> None:
    """The harness itself, on a call whose media the real holds (a plain single process's
    case): audio by frequency at both ends, no gap while it lives; the SIGKILL of the whole
    group is a gap that grows at the far party (what the tests above prove does NOT happen
    when a member survives)."""
    members = await holders(["a", "b"])
    real = real_of(members)
    call = await answer_call(members, far, GROUP_USER, real.name)
    report = await survived(call, time.monotonic() + 0.5, real, "the real holds the media")
    assert report["tones"] == [members[real.name][1]] and report["reinvites"] == 0
    killed = time.monotonic()
    for member, _ in members.values():  # nobody is left to take the call over
        member.kill()
    report = await far.report(since=killed - 0.5, until=killed + 1.0)
    print(f"after SIGKILL of every member: {report}")
    assert report["gap_ms"] >= 900


@pytest.mark.kamailio
@pytest.mark.baresip
async def test_baresip_keeps_its_call_when_the_real_dies_and_hears_the_holder(
    kamailio: Kamailio, member_group: Callable[..., MemberGroup],
    baresip: Callable[..., Awaitable[Baresip]], tmp_path: Path
) -> None:
    """baresip 1.0 through Kamailio as the far party (UDP, ICE, DTLS-SRTP): a dummy answers and
    holds the audio, the real is SIGKILLed, the successor's target refresh is accepted: no BYE,
    the dummy hears baresip's 440 Hz after the kill and baresip's recording ends with the
    dummy's tone. (A media holder's death cannot be survived with baresip 1.0: it follows no
    new media endpoint, docs/dtls-roles.md; the call then ends with a BYE and the reason.)"""
    kamailio.clear_bindings(GROUP_USER)
    members = await spawn_holders(member_group(GROUP_USER), ["a", "b", "c"], loopback=False)
    record = tmp_path / "heard"
    record.mkdir()
    bob = await baresip("bob", ice=True, record_dir=record)
    dummy, real = dummies_of(members)[-1], real_of(members)
    since = marks([m for m, _ in members.values()])
    await bob.dial(f"sip:{GROUP_USER}@{kamailio.domain}")
    ringing = await dummy.wait_event(is_("inbound_call"), 10, since=since[dummy.name])
    call_id = ringing["call_id"]
    assert (await dummy.command("session", call_id=call_id, name="answer"))["ok"]
    await bob.wait_event("CALL_ESTABLISHED", timeout=10)
    await dummy.wait_event(is_("heard", call_id, hz=FAR_TONE), 10, since=since[dummy.name])
    (dump,) = record.glob("dump-*-dec.wav")
    began, size = time.monotonic(), dump.stat().st_size  # its rate (written at the end)
    await wait_until(lambda: dump.stat().st_size >= size + 8000, 10, message="a recording")
    per_second = (dump.stat().st_size - size) / (time.monotonic() - began)
    mark = len(dummy.events)
    killed = time.monotonic()
    real.kill()
    adopted = await wait_until(lambda: [m for m, _ in members.values() if m is not real and
                                        m.last("adopted") is not None], 15,
                               message="a successor adopting the call")
    # a second and more of baresip's recording after the adoption (48 kHz, 16-bit stereo)
    # a second and more of baresip's recording after the adoption
    size = dump.stat().st_size
    await wait_until(lambda: dump.stat().st_size >= size + per_second * 1.3, 10,
                     message="baresip's recording to go on")
    holds = (await dummy.command("holds"))["value"]
    assert holds.get(call_id) == FAR_TONE, holds
    assert not [e for e in dummy.events[mark:] if e["event"] == "heard"], "the audio changed"
    assert "CALL_CLOSED" not in [e.get("type") for e in bob.events]
    await bob.hangup()
    await bob.wait_event("CALL_CLOSED", timeout=10)
    tone = members[dummy.name][1]
    assert tone_in_wav(dump, -1.2, -0.2, MEMBER_TONES) == tone, "baresip's end"
    print(f"\nbaresip through Kamailio: the real SIGKILLed, {adopted[0].name} adopted the call; "
          f"it went on with {dummy.name}'s audio ({time.monotonic() - killed:.1f} s checked), "
          "no BYE")



@pytest.mark.parametrize("holders", ["redis"], indirect=True)
async def test_redis_pushes_lost_while_a_dummy_holds_a_call(
    holders: Callable[[list[str]], Any], far: FarParty, redis_server: RedisServer
) -> None:
    """Redis drops every push connection (`CLIENT KILL TYPE pubsub`: the real's actions and
    each member's inbox) while a dummy holds a call's media and the third member's `hold` is
    in flight (the far party has the re-INVITE). The hold still succeeds (no
    ActionInterruptedError: the readers subscribe again and read the streams, the links
    stay); then `unhold`, `mute` and `unmute` from the same member go through Redis to the
    real, which asks the holder through its inbox: the far party hears the holder's tone stop
    and come back. The call goes on: no BYE, the holder hears 440 Hz, every member shows it
    answered, and no other member's tone was ever heard."""
    real, dummy, call = await a_call_a_dummy_holds(holders, far)
    (other,) = [m for m in call.alive() if m not in (real, dummy)]
    tone = call.tone(dummy)
    began = time.monotonic()
    holding = asyncio.ensure_future(other.command("session", call_id=call.call_id, name="hold"))
    await far.wait_event(lambda e: is_("sip_in", method="INVITE")(e) and e["t"] > began, 10)
    client = Redis.from_url(redis_server.url)
    try:
        killed_at = time.monotonic()
        killed = await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await client.aclose()
    assert killed >= 4, killed  # the real's actions and three inboxes
    result = await holding
    assert result["ok"], ("hold", result.get("error"), result.get("message"))
    for name, heard in (("unhold", None), ("mute", None), ("unmute", tone)):
        began = time.monotonic()
        result = await other.command("session", call_id=call.call_id, name=name)
        assert result["ok"], (name, result.get("error"), result.get("message"))
        if name != "unhold":  # (the far party hears us all along: hold is RingCentral's)
            await far.wait_event(lambda e, hz=heard, t=began: e["event"] == "heard"
                                 and e["hz"] == hz and e["t"] >= t, 10)
    report = await survived(call, killed_at, dummy, f"{killed} Redis push connections lost")
    assert set(report["tones"]) == {tone}, report  # (twice: before and after the mute)
