"""The direct action link (transports/local_direct.py) between real OS processes on a real
Kamailio: actions reach the real in one hop, and one in flight when the real is SIGKILLed ends
in exactly one outcome, ActionInterruptedError, and is never run again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.continuity import (
    answer_call,
    dummies_of,
    far_party,
    real_of,
    spawn_holders,
    survived,
)
from support.group import MemberGroup, MemberProc, hub_pids
from support.kamailio import Kamailio
from support.wait import wait_until

pytestmark = [pytest.mark.system, pytest.mark.kamailio]

FAR_USER = "106"


def direct_links(pid: int) -> list[int]:
    """The unread bytes of each direct action connection process `pid` accepted (`ss`)."""
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, check=True).stdout
    return [int(fields[2]) for line in out.splitlines() if (fields := line.split())
            and len(fields) > 4 and fields[1] == "ESTAB" and fields[4].endswith(".act")
            and f"pid={pid}," in line]


def queued_on_direct_links(pid: int) -> int:
    """Bytes waiting unread on the direct action connections process `pid` accepted."""
    return sum(direct_links(pid))


async def test_actions_go_direct_and_one_in_flight_when_the_real_dies_ends_interrupted(
    member_group: Callable[..., MemberGroup], kamailio: Kamailio, tmp_path: Path,
) -> None:
    """With the hub stopped an action still gets the real's own answer (it went direct); an
    action queued on the direct link of a real that is then SIGKILLed ends in exactly one
    outcome, ActionInterruptedError, and the next real answers the next action (and serves
    its own direct link, the dead real's socket file removed). A call is in progress
    throughout, its media on the caller: it survives, tones checked at both ends."""
    group = member_group("109", heartbeat_timeout=1.5, extra=("--action-timeout", "5.0"))
    members = await spawn_holders(group, ["a", "b", "c"])
    procs = [member for member, _ in members.values()]
    real = real_of(members)
    await real.wait_event(lambda e: e["event"] == "registered", 10)
    caller = dummies_of(members)[-1]
    async with far_party(kamailio, FAR_USER, tmp_path) as far:
        call = await answer_call(members, far, "109", caller.name)
        stopped = await _direct_then_interrupted(group, procs, real, caller)
        await survived(call, stopped, caller,
                       "the real SIGSTOPped, then SIGKILLed with an action on its direct link")


async def _direct_then_interrupted(group: MemberGroup, procs: list[MemberProc],
                                   real: MemberProc, caller: MemberProc) -> float:
    """Steps 1-3 of the test above; returns when the real was stopped."""

    # 1. the first action goes through the hub and opens the direct link; once it is open, an
    #    action is answered by the real even while the hub is stopped
    first = await caller.command("action", name="hold", call_id="x")
    assert first["ok"] is False and first["error"] == "CallError", first
    (hub,) = hub_pids(group.runtime_dir)
    os.kill(hub, signal.SIGSTOP)
    try:
        direct = await caller.command("action", timeout=1.0, name="hold", call_id="x")
    finally:
        os.kill(hub, signal.SIGCONT)
    assert direct["ok"] is False and direct["error"] == "CallError", direct

    # 2. an action waits on the direct link of a stopped real, which is then SIGKILLed
    since = {p.name: len(p.events) for p in procs if p is not real}
    stopped = time.monotonic()
    real.stop()
    task = asyncio.ensure_future(caller.command("action", name="hold", call_id="x"))
    await wait_until(lambda: queued_on_direct_links(real.pid) > 0, 5, interval=0.01,
                     message="the action is queued on the stopped real's direct link")
    real.kill()
    outcome = await task
    assert outcome["ok"] is False and outcome["error"] == "ActionInterruptedError", outcome

    # 3. a successor registers and answers; the interrupted action had exactly one outcome
    others = [p for p in procs if p is not real]
    waits = [asyncio.ensure_future(p.wait_event(lambda e: e["event"] == "registered", 15,
                                                since=since[p.name])) for p in others]
    done, rest = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in rest:
        waiting.cancel()
    done.pop().result()
    after = await caller.command("action", name="hold", call_id="x")
    assert after["ok"] is False and after["error"] == "CallError", after
    results = [e for e in caller.events[since[caller.name]:]
               if e["event"] == "result" and e.get("id") == outcome["id"]]
    assert len(results) == 1, results
    # the successor serves its own direct link and removed the dead real's socket file
    await wait_until(lambda: len(list(group.runtime_dir.glob("*.act"))) == 1, 5, interval=0.02,
                     message="one direct action socket in the runtime directory")
    return stopped


async def test_a_deposed_real_never_runs_what_waited_on_its_direct_link(
    member_group: Callable[..., MemberGroup],
) -> None:
    """A real SIGSTOPped with a "call" queued on its direct link is replaced; the caller gets
    ActionInterruptedError once; when the old real wakes up (SIGCONT) it does not place the
    call (it has not heard from the hub for the whole stop: it refuses), nor does anyone."""
    group = member_group("110", heartbeat_timeout=1.5,
                         extra=("--action-timeout", "5.0", "--no-media"))
    procs = await group.spawn_ready(["a", "b", "c"])
    real = group.reals()[0]
    await real.wait_event(lambda e: e["event"] == "registered", 10)
    caller = [p for p in procs if p is not real][-1]
    first = await caller.command("action", name="hold", call_id="x")
    assert first["error"] == "CallError", first
    await wait_until(lambda: direct_links(real.pid), 5, interval=0.01,
                     message="the caller's direct link to the real is open")

    since = {p.name: len(p.events) for p in procs}
    real.stop()
    task = asyncio.ensure_future(caller.command("action", name="call", args={"callee": "102"}))
    await wait_until(lambda: queued_on_direct_links(real.pid) > 0, 5, interval=0.01,
                     message="the call is queued on the stopped real's direct link")
    outcome = await task
    assert outcome["ok"] is False and outcome["error"] == "ActionInterruptedError", outcome

    real.cont()
    await real.wait_event(lambda e: e["event"] == "role" and e["role"] == "dummy", 10,
                          since=since[real.name])
    await real.command("state")  # answered after everything it read on waking up
    placed = [(p.name, e) for p in procs for e in p.events[since[p.name]:]
              if e["event"] == "outbound_call"]
    assert placed == []
