"""A real call into a group of member processes: baresip calls the extension; every member sees
it ringing, a dummy answers it, another dummy hangs it up (the real does the SIP work)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from support.baresip import Baresip
from support.group import MemberGroup
from support.kamailio import Kamailio

pytestmark = [pytest.mark.system, pytest.mark.kamailio, pytest.mark.baresip]


async def test_call_seen_on_every_member_answered_and_hung_up_from_dummies(
    kamailio: Kamailio,
    fresh_user: Callable[[], str],
    member_group: Callable[..., MemberGroup],
    baresip: Callable[..., Awaitable[Baresip]],
) -> None:
    user = fresh_user()
    group = member_group(user)
    procs = await group.spawn_ready(["a", "b", "c", "d"])
    real = group.reals()[0]
    dummies = [p for p in procs if p is not real]
    bob = await baresip("bob", ice=True)
    await bob.command("dial", f"sip:{user}@{kamailio.domain}")

    def inbound(e: dict[str, object]) -> bool:
        return e["event"] == "inbound_call"

    seen = [await p.wait_event(inbound, 15) for p in procs]
    call_id = seen[0]["call_id"]
    assert all(e["call_id"] == call_id and e["state"] == "ringing" for e in seen)
    assert {e.get("remote") for e in seen} == {"bob"}

    answered = await dummies[0].command("session", call_id=call_id, name="answer")
    assert answered["ok"], answered
    await bob.wait_event("CALL_ESTABLISHED", timeout=15)
    for p in procs:
        await p.wait_event(lambda e: e["event"] == "call_state" and e["call_id"] == call_id
                           and e["state"] == "answered", 10)

    hung_up = await dummies[1].command("session", call_id=call_id, name="hangup")
    assert hung_up["ok"], hung_up
    await bob.wait_event("CALL_CLOSED", timeout=10)
    for p in procs:
        await p.wait_event(lambda e: e["event"] == "call_state" and e["call_id"] == call_id
                           and e["state"] == "disposed", 10)
    for p in procs:
        assert (await p.command("state"))["value"]["calls"] == []
    assert len(kamailio.bindings(user)) == 1


async def test_outbound_call_placed_from_a_dummy_cancelled_from_another(
    kamailio: Kamailio,
    fresh_user: Callable[[], str],
    member_group: Callable[..., MemberGroup],
    baresip: Callable[..., Awaitable[Baresip]],
) -> None:
    user = fresh_user()
    group = member_group(user)
    procs = await group.spawn_ready(["a", "b", "c"])
    real = group.reals()[0]
    dummies = [p for p in procs if p is not real]
    bob = await baresip("bob", ice=True)
    placed = await dummies[0].command("call", callee="bob")
    assert placed["ok"], placed
    call_id = placed["value"]["call_id"]
    assert placed["value"]["state"] in ("init", "ringing")
    await bob.wait_event("CALL_INCOMING", timeout=10)
    for p in procs:
        await p.wait_event(lambda e: e["event"] == "outbound_call" and e["call_id"] == call_id,
                           10)
    cancelled = await dummies[1].command("session", call_id=call_id, name="cancel")
    assert cancelled["ok"], cancelled
    await bob.wait_event("CALL_CLOSED", timeout=10)
    for p in procs:
        await p.wait_event(lambda e: e["event"] == "call_state" and e["call_id"] == call_id
                           and e["state"] in ("disposed", "failed"), 10)


async def test_graceful_leave_drains_the_call_then_hands_over(
    kamailio: Kamailio,
    fresh_user: Callable[[], str],
    member_group: Callable[..., MemberGroup],
    baresip: Callable[..., Awaitable[Baresip]],
) -> None:
    user = fresh_user()
    group = member_group(user)
    procs = await group.spawn_ready(["a", "b", "c"])
    real = group.reals()[0]
    dummies = [p for p in procs if p is not real]
    bob = await baresip("bob", ice=True)
    await bob.command("dial", f"sip:{user}@{kamailio.domain}")
    ringing = await dummies[0].wait_event(lambda e: e["event"] == "inbound_call", 15)
    call_id = ringing["call_id"]
    assert (await dummies[0].command("session", call_id=call_id, name="answer"))["ok"]
    await bob.wait_event("CALL_ESTABLISHED", timeout=15)

    # the real leaves while the call is up: it keeps serving the call (drain) ...
    marks = {p.name: len(p.events) for p in dummies}
    assert real.proc is not None and real.proc.stdin is not None
    real.proc.stdin.write(b'{"id": 99, "cmd": "dispose", "timeout": 30, "drain": true}\n')
    await real.proc.stdin.drain()
    state = (await dummies[1].command("state"))["value"]
    assert [c["state"] for c in state["calls"]] == ["answered"]
    members = (await dummies[1].command("members"))["value"]
    assert [m["pid"] for m in members if m["role"] == "real"] == [real.pid]  # not handed over
    assert all(not p.registers() for p in dummies)

    # ... until the call ends; then a successor registers first, and the old real closes
    # without unregistering (the binding is the successor's)
    await bob.hangup()
    await real.wait_event(lambda e: e["event"] == "result" and e.get("id") == 99, 20)
    successor = await _first(dummies, marks, lambda e: e["event"] == "registered")
    bindings = kamailio.bindings(user)
    assert len(bindings) == 1
    assert bindings[0]["contact"].split("@")[0] in str(successor.last("registered"))
    assert [e for e in real.registers() if e.get("expires") == "0"] == []


async def _first(procs, marks, predicate):  # type: ignore[no-untyped-def]
    tasks = {asyncio.ensure_future(p.wait_event(predicate, 15, since=marks[p.name])): p
             for p in procs}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    task = done.pop()
    task.result()
    return tasks[task]
