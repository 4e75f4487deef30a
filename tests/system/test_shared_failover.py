"""Real processes of one extension on a real Kamailio: one binding, failover on crash and hang,
hub replacement, actions while no real exists."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest

from support.group import MemberGroup
from support.kamailio import Kamailio
from support.wait import wait_until

pytestmark = [pytest.mark.system, pytest.mark.kamailio]


def contact_user(contact: str) -> str:
    """"<sip:abcd@host;...>;+sip.instance=..." or "sip:abcd@host..." -> "abcd"."""
    return contact.split("sip:", 1)[1].split("@", 1)[0]


async def test_six_processes_hold_one_binding(
    kamailio: Kamailio, fresh_user: Callable[[], str], member_group: Callable[..., MemberGroup]
) -> None:
    user = fresh_user()
    group = member_group(user)
    procs = await group.spawn_ready([f"m{i}" for i in range(6)])
    assert sorted(p.role or "" for p in procs) == ["dummy"] * 5 + ["real"]
    bindings = kamailio.bindings(user)
    assert len(bindings) == 1
    real = group.reals()[0]
    registered = real.last("registered")
    assert registered is not None
    assert contact_user(bindings[0]["contact"]) == contact_user(registered["contact"])
    members = (await procs[3].command("members"))["value"]
    assert [m["role"] for m in members].count("real") == 1
    assert len(members) == 6 and {m["pid"] for m in members} == {p.pid for p in procs}
    # dummies never sent a REGISTER
    assert all(not p.registers() for p in procs if p is not real)


async def new_real(group: MemberGroup, others: list, since: dict, timeout: float):
    """The first of `others` to report role real after the event index in `since`."""
    waits = {
        asyncio.ensure_future(
            p.wait_event(lambda e: e["event"] == "role" and e["role"] == "real", timeout,
                         since=since[p.name])
        ): p
        for p in others
    }
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    task = done.pop()
    task.result()
    return waits[task]


async def test_sigkill_of_the_real_promotes_a_dummy(
    kamailio: Kamailio, fresh_user: Callable[[], str], member_group: Callable[..., MemberGroup]
) -> None:
    user = fresh_user()
    group = member_group(user)
    procs = await group.spawn_ready(["a", "b", "c", "d"])
    real = group.reals()[0]
    others = [p for p in procs if p is not real]
    since = {p.name: len(p.events) for p in others}
    real.kill()
    successor = await new_real(group, others, since, timeout=10)
    reg = await successor.wait_event(lambda e: e["event"] == "registered", 10,
                                     since=since[successor.name])

    def one_binding_of_successor() -> bool:
        b = kamailio.bindings(user)
        return len(b) == 1 and contact_user(b[0]["contact"]) == contact_user(reg["contact"])

    await wait_until(one_binding_of_successor, 5, message="successor's binding")
    # serving: a dummy's action runs on the new real and its outcome comes back
    dummy = next(p for p in others if p is not successor)
    result = await dummy.command("action", name="hold", call_id="no-such-call")
    assert result["ok"] is False and result["error"] == "CallError", result
    assert "no call" in result["message"]
    members = (await dummy.command("members"))["value"]
    assert len(members) == 3
    assert [m["pid"] for m in members if m["role"] == "real"] == [successor.pid]
    # exactly one member of the survivors believes it is real
    assert [p for p in others if p.role == "real"] == [successor]


async def test_sigstop_of_the_real_is_replaced_and_stands_down_on_sigcont(
    kamailio: Kamailio, fresh_user: Callable[[], str], member_group: Callable[..., MemberGroup]
) -> None:
    user = fresh_user()
    # REGISTER refresh every 5 s: when the hung real wakes, its refresh is overdue (F11)
    group = member_group(user, heartbeat_timeout=1.5,
                         extra=("--register-expires", "10", "--no-media"))
    procs = await group.spawn_ready(["a", "b", "c"])
    real = group.reals()[0]
    others = [p for p in procs if p is not real]
    since = {p.name: len(p.events) for p in others}
    stopped_at = time.monotonic()
    real.stop()
    successor = await new_real(group, others, since, timeout=10)
    promoted = successor.last("role")
    assert promoted is not None
    # replaced by the heartbeat timeout, not before (the connection stayed open)
    assert promoted["t"] - stopped_at >= 1.5 * 0.9
    first = await successor.wait_event(lambda e: e["event"] == "registered", 10,
                                       since=since[successor.name])
    # the successor refreshed once: the stopped real's own refresh is now overdue for sure
    refreshed = await successor.wait_event(
        lambda e: e["event"] == "registered" and e["t"] > first["t"], 10)
    assert contact_user(refreshed["contact"]) == contact_user(first["contact"])
    events_before = len(real.events)
    woke_at = time.monotonic()
    real.cont()
    await real.wait_event(lambda e: e["event"] == "role" and e["role"] == "dummy", 10,
                          since=events_before)
    state = (await real.command("state"))["value"]
    assert state["role"] == "dummy" and state["registered"] is False
    assert real.registers(after=woke_at) == [], "the deposed real sent a REGISTER"
    bindings = kamailio.bindings(user)
    assert len(bindings) == 1
    assert contact_user(bindings[0]["contact"]) == contact_user(first["contact"])
    assert [p for p in procs if p.role == "real"] == [successor]


async def test_sigkill_of_the_hub_keeps_the_real_and_its_registration(
    kamailio: Kamailio, fresh_user: Callable[[], str], member_group: Callable[..., MemberGroup]
) -> None:
    user = fresh_user()
    group = member_group(user)
    procs = await group.spawn_ready(["a", "b", "c", "d"])
    real = group.reals()[0]
    contact = contact_user(kamailio.bindings(user)[0]["contact"])
    hub = group.hub_pid()
    assert hub is not None
    killed_at = time.monotonic()
    os.kill(hub, signal.SIGKILL)

    async def all_on_a_new_hub() -> bool:
        states = [(await p.command("state"))["value"] for p in procs]
        return all(s["hub_pid"] not in (None, hub) for s in states) and len(
            {s["hub_pid"] for s in states}) == 1

    await wait_until(all_on_a_new_hub, 15, interval=0.1, message="members on a new hub")
    assert group.hub_pid() not in (None, hub)
    members = (await procs[1].command("members"))["value"]
    assert len(members) == 4
    assert [m["pid"] for m in members if m["role"] == "real"] == [real.pid]
    assert [p for p in procs if p.role == "real"] == [real]
    assert real.registers(after=killed_at) == [], "the real re-registered after the hub died"
    bindings = kamailio.bindings(user)
    assert len(bindings) == 1 and contact_user(bindings[0]["contact"]) == contact
    # the new hub serves actions: a dummy's action reaches the (same) real
    result = await procs[2].command("action", name="hold", call_id="no-such-call")
    assert result["error"] == "CallError", result


async def test_a_dummys_action_while_the_real_is_gone_gets_exactly_one_outcome(
    kamailio_proc: Callable[..., Kamailio], member_group: Callable[..., MemberGroup]
) -> None:
    kam = kamailio_proc()
    user = "104"
    group = member_group(user, kam=kam, heartbeat_timeout=1.5,
                         extra=("--action-timeout", "1.0", "--no-media"))
    procs = await group.spawn_ready(["a", "b", "c"])
    real = group.reals()[0]
    dummies = [p for p in procs if p is not real]
    caller = dummies[-1]

    # 1. the real hangs after accepting: ActionInterruptedError (never re-run elsewhere)
    since = {p.name: len(p.events) for p in dummies}
    real.stop()
    result = await caller.command("action", name="hold", call_id="x")
    assert result["ok"] is False and result["error"] == "ActionInterruptedError", result
    successor = await new_real(group, dummies, since, timeout=10)
    await successor.wait_event(lambda e: e["event"] == "registered", 10,
                               since=since[successor.name])
    real.kill()  # the hung one is gone for good now

    # 2. no real can register (the SIP server hangs): NoRealPhoneError after the deadline
    remaining = [p for p in dummies if p is not successor]
    since = {p.name: len(p.events) for p in remaining}
    kam.pause()
    successor.kill()
    asker = remaining[-1]

    async def successor_gone() -> bool:
        members = (await asker.command("members"))["value"]
        return successor.pid not in [m["pid"] for m in members]

    await wait_until(successor_gone, 10, interval=0.05, message="hub saw the crash")
    started = time.monotonic()
    result = await asker.command("action", name="hold", call_id="x")
    assert result["ok"] is False and result["error"] == "NoRealPhoneError", result
    assert time.monotonic() - started >= 0.9

    # 3. the server is back: the promoted member registers and the same action gets the real's
    #    own answer
    kam.resume()
    await new_real(group, remaining, since, timeout=15)  # reported after its REGISTER's 200
    result = await asker.command("action", name="hold", call_id="x")
    assert result["ok"] is False and result["error"] == "CallError", result
    assert len(kam.bindings(user)) == 1
