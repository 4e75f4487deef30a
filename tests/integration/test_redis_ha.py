"""Group members in this process on a Redis that fails over: a Sentinel set (a primary, a
replica, three sentinels) and a Redis Cluster (3 primaries, 3 replicas), real servers on
127.0.0.1. The acknowledgement rule (WAIT 1): nobody becomes the real while the replica is
stopped; a real whose replica stops acknowledging steps down as if cut off, and the group has
a real again once the replica is back; the primary SIGKILLed while actions are in flight ->
never two reals, every action exactly one outcome and none run twice, a real again after the
failover (and the old primary's restart as a replica)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_shared_redis import OPTIONS, Group, first_real

from support.redis_ha import (
    ClusterSet,
    RedisNode,
    SentinelSet,
    require_redis_tools,
    wait_old_enough,
)
from support.wait import wait_until
from webphone.errors import ActionInterruptedError, NoRealPhoneError
from webphone.shared.lease import HolderState
from webphone.shared.transports.redis_scripts import GroupKeys

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

LEASE = OPTIONS.heartbeat_timeout
RENEW_DEADLINE = LEASE * 2 / 3


class Topology:
    """The servers of one topology, with the same few operations for both."""

    def __init__(self, kind: str, servers: SentinelSet | ClusterSet) -> None:
        self.kind, self.servers = kind, servers

    @property
    def url(self) -> str:
        return self.servers.url

    def primary(self, group: str) -> RedisNode:
        if isinstance(self.servers, SentinelSet):
            return self.servers.primary()
        return self.servers.primary_for(GroupKeys.for_group(group).lease)

    def replica(self, group: str) -> RedisNode:
        """The replica of the node that holds `group`."""
        primary = self.primary(group)
        nodes = self.servers.nodes
        for node in nodes:
            if node is not primary and node.proc.running:
                with node.client() as c:
                    role = c.execute_command("ROLE")
                if role[0] == b"slave" and int(role[2]) == primary.port:
                    return node
        raise LookupError(f"no replica of {primary}")

    async def fail_over(self, group: str) -> tuple[RedisNode, RedisNode]:
        """SIGKILL the primary that holds `group`; returns (killed, promoted)."""
        old = self.primary(group)
        old.kill()
        if isinstance(self.servers, SentinelSet):
            new = await asyncio.to_thread(self.servers.wait_new_primary, old, 15)
        else:
            key = GroupKeys.for_group(group).lease
            new = await asyncio.to_thread(self.servers.wait_new_primary, key, old, 15)
        return old, new

    async def rejoin(self, node: RedisNode) -> None:
        await asyncio.to_thread(self.servers.rejoin, node)


def _start(kind: str, workdir: Path) -> Topology:
    servers: SentinelSet | ClusterSet
    servers = SentinelSet(workdir) if kind == "sentinel" else ClusterSet(workdir)
    try:
        servers.start()
        wait_old_enough(servers.nodes, LEASE)
    except BaseException:
        servers.close()
        raise
    return Topology(kind, servers)


@pytest.fixture(scope="module", params=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    require_redis_tools()
    topo = _start(request.param, tmp_path_factory.mktemp(request.param))
    try:
        yield topo
    finally:
        topo.servers.close()


@pytest.fixture
async def group(topology: Topology) -> AsyncIterator[Group]:
    g = Group(topology.url)
    yield g
    await g.close()


class RealWatch:
    """Samples the members' roles every 10 ms: the most reals ever seen at once."""

    def __init__(self, group: Group) -> None:
        self.group, self.most, self.samples = group, 0, 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.most = max(self.most, len(self.group.reals()))
            self.samples += 1
            await asyncio.sleep(0.01)  # the sampling period, not synchronisation

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


# -- the acknowledgement rule ------------------------------------------------------------------


async def test_nobody_becomes_the_real_while_the_replica_cannot_acknowledge(
    topology: Topology, group: Group,
) -> None:
    replica = topology.replica(group.name)
    replica.proc.pause()  # SIGSTOP: connected, silent (WAIT gets 0 acknowledgements)
    try:
        _, la = await group.join("a")
        _, lb = await group.join("b")
        await asyncio.sleep(LEASE)  # the claim: nothing happens for a whole lease
        assert (la.role, lb.role) == ("dummy", "dummy") and group.reals() == []
    finally:
        replica.proc.resume()
    await first_real(group, ["a", "b"], timeout=5)
    # and what the real acts on is on the replica
    real = next(m for m, lis, _ in group.members if lis.role == "real")
    keys = GroupKeys.for_group(group.name)
    with replica.client() as c:
        if topology.kind == "cluster":
            c.execute_command("READONLY")  # a cluster replica answers reads only after this
        holder, epoch = c.hmget(keys.lease, "holder", "epoch")
    assert (holder, int(epoch)) == (real.member_id.encode(), real.epoch)


async def test_a_real_whose_replica_stops_acknowledging_steps_down_as_if_cut_off(
    topology: Topology, group: Group,
) -> None:
    _, la = await group.join("a")
    await wait_until(lambda: la.role == "real", 5, message="a real")
    stepped_down = holder_at_step_down(group, la)
    b, _ = await group.join("b")
    replica = topology.replica(group.name)
    stopped = time.monotonic()
    replica.proc.pause()
    try:
        await wait_until(lambda: la.role == "dummy", 5, message="a steps down")
        # at its own renew deadline (a loop timer: how late a loaded machine runs it is not
        # the member's doing), and that deadline comes from a renewal sent before the stop:
        # the renewals the silent replica did not acknowledge extended nothing
        [(state, deadline)] = stepped_down
        assert state is HolderState.EXPIRED, state
        assert deadline <= stopped + RENEW_DEADLINE, f"{deadline - stopped:.2f} s after"
        assert group.reals() == []
    finally:
        replica.proc.resume()
    await first_real(group, ["a", "b"], timeout=5)
    assert await b.request("hold", "c1", {}, timeout=3) == {"ran": "hold",
                                                            "by": group.reals()[0]}


def holder_at_step_down(group: Group, listener: Any) -> list[tuple[HolderState, float]]:
    """The state and deadline of `listener`'s lease holder each time it steps down from real,
    read in the step-down itself (a later acquisition reuses the holder)."""
    [transport] = [t for _, lis, t in group.members if lis is listener]
    [holder] = transport.holders.values()
    seen: list[tuple[HolderState, float]] = []
    on_role = listener.on_role

    def record(old: Any, new: Any, epoch: int) -> None:
        if (old, new) == ("real", "dummy"):
            seen.append((holder.state, holder.valid_until))
        on_role(old, new, epoch)

    listener.on_role = record
    return seen


# -- a failover with actions in flight ---------------------------------------------------------


async def test_primary_crash_with_actions_in_flight(topology: Topology, group: Group) -> None:
    members = [await group.join(n) for n in ("a", "b", "c")]
    await first_real(group, ["a", "b", "c"])
    watch = RealWatch(group)
    outcomes: dict[str, list[str]] = {}
    stop = asyncio.Event()

    async def caller(name: str, member: Any) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"{name}-{n}"
            try:
                await member.request("hold", key, {}, timeout=2.0)
                outcomes.setdefault(key, []).append("ok")
            except (NoRealPhoneError, ActionInterruptedError) as exc:
                outcomes.setdefault(key, []).append(type(exc).__name__)

    callers = [asyncio.ensure_future(caller(lis.name, m)) for m, lis in members]
    try:
        await wait_until(lambda: len(outcomes) > 30, 10, message="actions flowing")
        killed_at = time.monotonic()
        old, _new = await topology.fail_over(group.name)
        await topology.rejoin(old)
        real = await first_real(group, ["a", "b", "c"], timeout=15)
        served = time.monotonic() - killed_at
        before = len(outcomes)
        await wait_until(lambda: len(outcomes) > before + 30, 10, message="served again")
    finally:
        stop.set()
        await asyncio.gather(*callers)
        await watch.stop()
    assert watch.samples > 100 and watch.most == 1, f"{watch.most} reals at once"
    assert all(len(v) == 1 for v in outcomes.values()), "an action with two outcomes"
    ran = [a.call_id for _, lis in members for a in lis.actions]
    assert len(ran) == len(set(ran)), "an action ran twice"
    assert {k for k, v in outcomes.items() if v == ["ok"]} <= set(ran)
    print(f"{topology.kind}: served again {served:.2f} s after the kill (real {real}); "
          f"{len(outcomes)} actions: {sum(v == ['ok'] for v in outcomes.values())} ok")
