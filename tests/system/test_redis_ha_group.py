"""A group on a Redis that fails over (Sentinel: a primary, a replica, three sentinels; Cluster:
3 primaries + 3 replicas), with a call up and actions in flight, and the primary that holds the
group SIGKILLed: never two reals, never two bindings on Kamailio (sampled every 20 ms), every
action exactly one outcome, the group served again; the call, whose media lives on the real,
goes on with its audio (checked by frequency at both ends) when the real kept its role.

The group: this process's `SharedWebPhone` (the first member, so the real: it places the call
and holds its media) and two member processes (member_cli) acting as other hosts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_redis_group import BindingWatch, RedisMembers, contact_user

from support.calls import TONES, connect, heard, phones
from support.group import short_runtime_dir
from support.kamailio import Kamailio
from support.redis_ha import ClusterSet, SentinelSet, require_redis_tools, wait_old_enough
from support.wait import wait_until
from webphone import SharedWebPhone
from webphone.shared.transports.redis_scripts import GroupKeys

pytestmark = [pytest.mark.system, pytest.mark.kamailio, pytest.mark.redis,
              pytest.mark.timeout(90)]

#: (topology, lease): the default lease (3 s, renew deadline 2 s) is shorter than a failover
#: here (promotion 1.4-2.2 s, then the old primary back as a replica to acknowledge): the real
#: steps down. With a 6 s lease (renew deadline 4 s) the real rides out a Cluster failover.
SETUPS = [("sentinel", 3.0), ("cluster", 3.0), ("cluster", 6.0)]


@pytest.fixture(params=SETUPS, ids=[f"{kind}-{lease:.0f}s" for kind, lease in SETUPS])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, float]]:
    require_redis_tools()
    kind, lease = request.param
    made: SentinelSet | ClusterSet
    made = SentinelSet(tmp_path / "s") if kind == "sentinel" else ClusterSet(tmp_path / "c")
    try:
        made.start()
        wait_old_enough(made.nodes, lease)
        yield made, lease
    finally:
        made.close()


@pytest.fixture
async def members(setup: tuple[Any, float], tmp_path: Path,
                  kamailio: Kamailio) -> AsyncIterator[Callable[[str], RedisMembers]]:
    made: list[RedisMembers] = []
    servers, lease = setup

    def factory(user: str) -> RedisMembers:
        group = RedisMembers(servers.url, short_runtime_dir(), tmp_path, kamailio.sip_info(user),
                             heartbeat_interval=0.5, heartbeat_timeout=lease,
                             extra=("--no-media",))
        made.append(group)
        return group

    try:
        yield factory
    finally:
        for group in made:
            await group.close()


def primary_of(servers: SentinelSet | ClusterSet, group: str) -> Any:
    if isinstance(servers, SentinelSet):
        return servers.primary()
    return servers.primary_for(GroupKeys.for_group(group).lease)


async def fail_over(servers: SentinelSet | ClusterSet, group: str) -> Any:
    """SIGKILL the primary that holds `group`, wait for the promotion, restart the killed
    node as a replica (its supervisor); returns the killed node."""
    old = primary_of(servers, group)
    old.kill()
    if isinstance(servers, SentinelSet):
        await asyncio.to_thread(servers.wait_new_primary, old, 15)
    else:
        await asyncio.to_thread(servers.wait_new_primary, GroupKeys.for_group(group).lease,
                                old, 15)
    await asyncio.to_thread(servers.rejoin, old)
    return old


async def test_primary_killed_with_a_call_up_and_actions_in_flight(
    kamailio: Kamailio, fresh_user: Callable[[], str], setup: tuple[Any, float],
    members: Callable[[str], RedisMembers],
) -> None:
    servers, lease = setup
    user, peer_user = fresh_user(), fresh_user()
    here = SharedWebPhone(kamailio.sip_info(user), hub=servers.url, heartbeat_interval=0.5,
                          heartbeat_timeout=lease, member_id="here", loopback_media=True)
    roles: list[tuple[float, str]] = []
    here.on("role", lambda role: roles.append((time.monotonic(), role)))
    await here.start()
    watch: BindingWatch | None = None
    try:
        await wait_until(lambda: here.role == "real", 10, message="this process is the real")
        await wait_until(lambda: len(kamailio.bindings(user)) == 1, 10, message="registered")
        procs = await members(user).spawn_ready(["b", "c"])
        assert [p.role for p in procs] == ["dummy", "dummy"]
        async with phones(kamailio, [peer_user]) as (peer,):
            out, inc = await connect(here, peer, peer_user)  # type: ignore[arg-type]
            assert out.media is not None and inc.media is not None
            tones = [asyncio.ensure_future(out.media.play_tone(TONES[0], 60)),
                     asyncio.ensure_future(inc.media.play_tone(TONES[1], 60))]
            assert await heard(inc, lambda t: t == TONES[0]) == TONES[0]
            assert await heard(out, lambda t: t == TONES[1]) == TONES[1]
            watch = BindingWatch(kamailio, user)
            outcomes: list[dict[str, Any]] = []
            stop = asyncio.Event()

            async def caller(p: Any) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    result = await p.command("action", timeout=20, name="hold",
                                             call_id=f"{p.name}-{n}")
                    outcomes.append(result)

            callers = [asyncio.ensure_future(caller(p)) for p in procs]
            await wait_until(lambda: len(outcomes) > 20, 10, message="actions flowing")
            killed = time.monotonic()
            await fail_over(servers, here.group)

            async def served() -> bool:
                reals = [here] if here.role == "real" else []
                reals += [p for p in procs if p.role == "real"]
                return len(reals) == 1 and len(kamailio.bindings(user)) == 1

            await wait_until(served, 20, 0.05, "a real again")
            back = time.monotonic() - killed
            before = len(outcomes)
            await wait_until(lambda: len(outcomes) > before + 10, 10, message="served again")
            stop.set()
            await asyncio.gather(*callers)
            kept = not any(role == "dummy" for t, role in roles if t > killed)
            if kept:  # the call's media lives on the real: it went on
                assert await heard(inc, lambda t: t == TONES[0]) == TONES[0]
                assert await heard(out, lambda t: t == TONES[1]) == TONES[1]
                assert out.state == "answered" and inc.state == "answered"
            else:  # fenced: its calls end on this side, without a BYE (it may not send one)
                assert out.state == "disposed"
            for task in tones:
                task.cancel()
            await watch.stop()
            print(f"{type(servers).__name__} lease {lease} s: served again {back:.2f} s after "
                  f"the kill; the real {'kept its role and the call' if kept else 'stepped down'}; "
                  f"{len(outcomes)} actions, bindings sampled {watch.samples}x; call state "
                  f"here {out.state}, at the peer {inc.state}")
            assert watch.samples > 30 and watch.most == 1, f"{watch.most} bindings at once"
            errors = {r.get("error") for r in outcomes}
            assert errors <= {"CallError", "NoRealPhoneError", "ActionInterruptedError"}, errors
            assert sum(r.get("error") == "CallError" for r in outcomes) > 20  # ran on a real
            bindings = kamailio.bindings(user)
            assert len(bindings) == 1
            successor = [p for p in procs if p.role == "real"]
            registered = successor[0].last("registered") if successor else None
            if registered is not None:  # the binding is the successor's (same instance id)
                assert contact_user(bindings[0]["contact"]) == contact_user(
                    registered["contact"])
    finally:
        if watch is not None:
            await watch.stop()
        await here.dispose()
