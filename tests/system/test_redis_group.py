"""Member processes acting as different hosts (each with its own host name) share one
registration on a real Kamailio through a real redis-server (``hub="redis://..."``): one binding;
SIGKILL of the real -> a successor registered within the lease + one REGISTER; graceful leave ->
immediate handover; SIGSTOP past the lease -> replaced, and on SIGCONT the old real stands down
without a REGISTER; Redis restarted mid-run -> the group recovers with the same real; the real
cut off from Redis (a TCP proxy in this test) -> exactly one real and never two bindings."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from support.group import MemberGroup, MemberProc, short_runtime_dir
from support.kamailio import Kamailio
from support.redis_server import RedisServer
from support.tcp_proxy import TcpProxy
from support.wait import wait_until

pytestmark = [pytest.mark.system, pytest.mark.kamailio, pytest.mark.redis,
              pytest.mark.timeout(60)]

#: the lease is the heartbeat timeout: 1.5 s, renewed every 0.5 s, renew deadline 1.0 s
LEASE = 1.5
RENEW_DEADLINE = LEASE * 2 / 3

#: a member process with a host name of its own and hub="redis://...": member_cli, wrapped
MEMBER = """
import functools, socket, sys
host, url = sys.argv[1], sys.argv[2]
socket.gethostname = lambda: host  # this process acts as another host
from webphone.shared import member_cli
member_cli.SharedWebPhone = functools.partial(member_cli.SharedWebPhone, hub=url)
sys.exit(member_cli.main(sys.argv[3:]))
"""


class RedisMembers(MemberGroup):
    """Member processes of one group on Redis; `urls[name]` overrides the URL of one member
    (a proxy), everyone else uses `url`."""

    def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = url
        self.urls: dict[str, str] = {}

    def argv(self, name: str, *extra: str) -> list[str]:
        argv = super().argv(name, *extra)
        at = argv.index("-m")
        return [argv[0], "-c", MEMBER, f"host-{name}", self.urls.get(name, self.url),
                *argv[at + 2:]]


@pytest.fixture
async def redis_members(
    kamailio: Kamailio, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Callable[..., RedisMembers]]:
    made: list[RedisMembers] = []

    def factory(user: str, **options: Any) -> RedisMembers:
        options.setdefault("heartbeat_interval", 0.25)
        options.setdefault("heartbeat_timeout", LEASE)
        group = RedisMembers(redis_server.url, short_runtime_dir(), tmp_path,
                             kamailio.sip_info(user), **options)
        made.append(group)
        return group

    try:
        yield factory
    finally:
        for group in made:
            await group.close()


def contact_user(contact: str) -> str:
    return contact.split("sip:", 1)[1].split("@", 1)[0]


def redis_uptime(server: RedisServer) -> int:
    with socket.create_connection((server.host, server.port), timeout=1) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        data = b""
        while b"uptime_in_seconds:" not in data or not data.endswith(b"\r\n"):
            data += s.recv(65536)
    return int(data.split(b"uptime_in_seconds:", 1)[1].split(b"\r\n", 1)[0])


async def redis_old_enough(server: RedisServer) -> None:
    """A Redis younger than a lease grants no new lease (the restart grace): wait it out, so
    that the first member is the real at once."""
    await wait_until(lambda: redis_uptime(server) >= LEASE, 5, 0.05, "redis uptime")


async def next_real(members: list[MemberProc], since: dict[str, int],
                    timeout: float) -> MemberProc:
    """The first of `members` to report role real after the event index in `since`."""
    waits = {asyncio.ensure_future(m.wait_event(
        lambda e: e["event"] == "role" and e["role"] == "real", timeout, since=since[m.name])): m
        for m in members}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    task = done.pop()
    task.result()
    return waits[task]


def marks(members: list[MemberProc]) -> dict[str, int]:
    return {m.name: len(m.events) for m in members}


class BindingWatch:
    """Samples the user's bindings on Kamailio until stopped: the most ever seen at once."""

    def __init__(self, kamailio: Kamailio, user: str) -> None:
        self.kamailio, self.user = kamailio, user
        self.most = 0
        self.samples = 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            bindings = await asyncio.to_thread(self.kamailio.bindings, self.user)
            self.most = max(self.most, len(bindings))
            self.samples += 1
            await asyncio.sleep(0.02)  # sampling period, not synchronisation

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# -- tests -----------------------------------------------------------------------------------


async def test_hosts_share_one_binding_crash_and_graceful_handover(
    kamailio: Kamailio, fresh_user: Callable[[], str], redis_server: RedisServer,
    redis_members: Callable[..., RedisMembers],
) -> None:
    user = fresh_user()
    group = redis_members(user)
    procs = await group.spawn_ready(["a", "b", "c"])
    real = await wait_until(lambda: group.reals()[0] if len(group.reals()) == 1 else None, 10,
                            message="one real")
    await real.wait_event(lambda e: e["event"] == "registered", 10)
    assert len(kamailio.bindings(user)) == 1
    members = (await procs[1].command("members"))["value"]
    assert sorted((m["host"], m["pid"]) for m in members) == sorted(
        (f"host-{p.name}", p.pid) for p in procs)
    assert [m["pid"] for m in members if m["role"] == "real"] == [real.pid]
    assert all(not p.registers() for p in procs if p is not real)  # dummies never REGISTER

    # SIGKILL: nothing tells the group; the lease expires, a dummy takes it and registers
    others = [p for p in procs if p is not real]
    since = marks(others)
    killed = time.monotonic()
    real.kill()
    successor = await next_real(others, since, 10)
    reg = await successor.wait_event(lambda e: e["event"] == "registered", 10,
                                     since=since[successor.name])
    failover = reg["t"] - killed
    assert failover <= LEASE + 1.0, f"{failover:.2f} s: more than the lease + one REGISTER"
    assert failover >= LEASE / 3  # it did wait for the lease (renewed every LEASE/3)
    bindings = kamailio.bindings(user)
    assert len(bindings) == 1 and contact_user(bindings[0]["contact"]) == contact_user(
        reg["contact"])
    dummy = next(p for p in others if p is not successor)
    result = await dummy.command("action", name="hold", call_id="no-such-call")
    assert result["ok"] is False and result["error"] == "CallError", result

    # graceful leave: the successor registers first, the old real never unregisters
    since = marks([dummy])
    left = time.monotonic()
    await successor.command("dispose", timeout=5)
    await dummy.wait_event(lambda e: e["event"] == "registered", 10, since=since[dummy.name])
    took = next(e for e in dummy.events[since[dummy.name]:] if e["event"] == "registered")
    assert took["t"] - left < LEASE / 2, "graceful handover waited for the lease"
    assert [e["expires"] for e in successor.registers(after=left)] == []  # no unregister
    await wait_until(lambda: successor.last("exit") is not None, 10, message="old real exits")
    bindings = kamailio.bindings(user)
    assert len(bindings) == 1 and contact_user(bindings[0]["contact"]) == contact_user(
        took["contact"])


async def test_sigstop_past_the_lease_is_replaced_and_stands_down_on_sigcont(
    kamailio: Kamailio, fresh_user: Callable[[], str], redis_server: RedisServer,
    redis_members: Callable[..., RedisMembers],
) -> None:
    user = fresh_user()
    # REGISTER refresh every 2.4-4 s: when the stopped real wakes, its own refresh is overdue
    group = redis_members(user, extra=("--register-expires", "10", "--no-media"))
    procs = await group.spawn_ready(["a", "b", "c"])
    real = await wait_until(lambda: group.reals()[0] if len(group.reals()) == 1 else None, 10)
    first_reg = await real.wait_event(lambda e: e["event"] == "registered", 10)
    others = [p for p in procs if p is not real]
    since = marks(others)
    stopped = time.monotonic()
    real.stop()
    successor = await next_real(others, since, 10)
    promoted = successor.last("role")
    assert promoted is not None and promoted["t"] - stopped >= LEASE / 3
    reg = await successor.wait_event(lambda e: e["event"] == "registered", 10,
                                     since=since[successor.name])
    # wait until the stopped real's own refresh is overdue: it was due 2.4-4 s after its
    # REGISTER (a jittered point of 10 - 6 s); the successor refreshes as often, so one of its
    # refreshes comes after that deadline
    overdue = first_reg["t"] + 5
    await successor.wait_event(
        lambda e: e["event"] == "registered" and e["t"] > max(reg["t"], overdue), 15)
    assert time.monotonic() > overdue
    events_before = len(real.events)
    woke = time.monotonic()
    real.cont()
    await real.wait_event(lambda e: e["event"] == "role" and e["role"] == "dummy", 10,
                          since=events_before)
    state = (await real.command("state"))["value"]
    assert state["role"] == "dummy" and state["registered"] is False
    assert real.registers(after=woke) == [], "the deposed real sent a REGISTER"
    bindings = kamailio.bindings(user)
    assert len(bindings) == 1 and contact_user(bindings[0]["contact"]) == contact_user(
        reg["contact"])
    members = (await real.command("members"))["value"]
    assert [m["pid"] for m in members if m["role"] == "real"] == [successor.pid]
    assert [p for p in procs if p.role == "real"] == [successor]


async def test_redis_restart_mid_run_the_group_recovers_with_the_same_real(
    kamailio: Kamailio, fresh_user: Callable[[], str], redis_server: RedisServer,
    redis_members: Callable[..., RedisMembers],
) -> None:
    user = fresh_user()
    # a 3 s lease (renew deadline 2 s): the restart fits in the renew deadline even on a busy
    # machine (a longer outage rightly makes the real step down)
    group = redis_members(user, heartbeat_timeout=3.0)
    procs = await group.spawn_ready(["a", "b", "c"])
    real = await wait_until(lambda: group.reals()[0] if len(group.reals()) == 1 else None, 10)
    await real.wait_event(lambda e: e["event"] == "registered", 10)
    contact = contact_user(kamailio.bindings(user)[0]["contact"])
    since = marks(procs)
    restarted = time.monotonic()
    await redis_server.astop()
    await redis_server.astart()  # same port, empty data set

    async def three_members_one_real() -> bool:
        members = (await procs[2].command("members", timeout=3))["value"]
        return len(members) == 3 and [m["pid"] for m in members if m["role"] == "real"] == [
            real.pid]

    await wait_until(three_members_one_real, 15, 0.1, "the group back on the new Redis")
    # the real kept its role (re-claimed the lease at a new epoch) and its registration
    assert not [e for e in real.events[since[real.name]:] if e["event"] == "role"]
    assert real.registers(after=restarted) == [], "the real re-registered after the restart"
    assert all(p.role == "dummy" for p in procs if p is not real)
    bindings = kamailio.bindings(user)
    assert len(bindings) == 1 and contact_user(bindings[0]["contact"]) == contact
    result = await procs[1].command("action", name="hold", call_id="no-such-call")
    assert result["error"] == "CallError", result


async def test_a_real_cut_off_from_redis_is_replaced_and_there_are_never_two_bindings(
    kamailio: Kamailio, fresh_user: Callable[[], str], redis_server: RedisServer,
    redis_members: Callable[..., RedisMembers],
) -> None:
    user = fresh_user()
    proxy = await TcpProxy(redis_server.host, redis_server.port).start()
    watch: BindingWatch | None = None
    try:
        group = redis_members(user, extra=("--no-media",))
        group.urls["a"] = proxy.url  # a reaches Redis only through the proxy
        await redis_old_enough(redis_server)
        (a,) = await group.spawn_ready(["a"])
        assert a.role == "real"
        await a.wait_event(lambda e: e["event"] == "registered", 10)
        b, c = await group.spawn_ready(["b", "c"])
        watch = BindingWatch(kamailio, user)
        since = marks([a, b, c])
        cut = time.monotonic()
        proxy.block()
        down = await a.wait_event(lambda e: e["event"] == "role" and e["role"] == "dummy", 10,
                                  since=since["a"])
        successor = await next_real([b, c], since, 10)
        up = successor.last("role")
        assert up is not None
        # a stopped refreshing before anybody could take over, and did so by its deadline
        assert down["t"] - cut <= RENEW_DEADLINE + 0.3
        assert up["t"] > down["t"]
        reg = await successor.wait_event(lambda e: e["event"] == "registered", 10,
                                         since=since[successor.name])
        assert a.registers(after=cut) == [], "the cut-off real sent a REGISTER"
        proxy.unblock()

        async def a_back_as_dummy() -> bool:
            members = (await a.command("members", timeout=3))["value"]
            return len(members) == 3 and [m["pid"] for m in members if m["role"] == "real"] \
                == [successor.pid]

        await wait_until(a_back_as_dummy, 15, 0.1, "a rejoined as a dummy")
        assert [p.name for p in (a, b, c) if p.role == "real"] == [successor.name]
        await watch.stop()
        assert watch.samples > 10 and watch.most == 1, f"{watch.most} bindings at once"
        bindings = kamailio.bindings(user)
        assert len(bindings) == 1 and contact_user(bindings[0]["contact"]) == contact_user(
            reg["contact"])
    finally:
        if watch is not None:
            await watch.stop()
        await proxy.close()


def test_member_program_is_importable() -> None:
    compile(MEMBER, "<member>", "exec")
    assert short_runtime_dir().exists()
