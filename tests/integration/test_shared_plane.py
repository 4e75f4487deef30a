"""The continuity plane end to end (no SIP): `GroupMember.delegate` and its one outcome, lost
members told to the real, and the continuity state reaching every member, over the memory
transport (members in this process) and over real hub processes and Redis with member processes
(tests/support/plane_member.py) that are SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.group import enable_subreaper, reap_adopted_zombies, short_runtime_dir
from support.redis_server import RedisServer
from support.wait import wait_until
from webphone.errors import (
    ActionInterruptedError,
    CallError,
    GroupProtocolError,
    MemberLostError,
    WebPhoneError,
)
from webphone.shared.member import GroupMember, LinkToken
from webphone.shared.protocol import Action, Continuity, Delegate, Released, Role, Snapshot
from webphone.shared.transports.base import HubOptions
from webphone.shared.transports.local import LocalTransport
from webphone.shared.transports.memory import MemoryTransport

OPTIONS = HubOptions(heartbeat_interval=0.1, heartbeat_timeout=1.0, idle_timeout=2.0)
SUPPORT = Path(__file__).resolve().parent.parent / "support"
SDP = "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


class Recorder:
    """A member's listener (both protocols) that records; as the real, registers at once and
    answers delegates by a table (`hold` keeps them unanswered)."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.member: GroupMember | None = None
        self.roles: list[tuple[Role, int]] = []
        self.continuity_at_promotion: list[Continuity | None] = []
        self.delegates: list[Delegate] = []
        self.lost: list[tuple[str, str]] = []
        self.continuity: list[Continuity] = []
        self.answers = answers or {}

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        assert self.member is not None
        self.roles.append((new, epoch))
        if new == "real":
            self.continuity_at_promotion.append(self.member.continuity.state)
            self.member.registered(epoch)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        pass

    def on_action(self, action: Action, token: LinkToken) -> None:
        pass

    def on_released(self, released: Released) -> None:
        pass

    def on_delegate(self, request: Delegate, token: LinkToken) -> None:
        assert self.member is not None
        self.delegates.append(request)
        answer = self.answers.get(request.op, {"op": request.op, "args": request.args})
        if answer == "hold":
            return
        if isinstance(answer, BaseException):
            self.member.send_delegate_result(token, request, error=answer)
        else:
            self.member.send_delegate_result(token, request, value=answer)

    def on_member_lost(self, member_id: str, reason: str) -> None:
        self.lost.append((member_id, reason))

    def on_continuity(self, state: Continuity) -> None:
        self.continuity.append(state)

    @property
    def role(self) -> Role | None:
        return self.roles[-1][0] if self.roles else None


class Plain:
    """A listener that does not take part in the plane (as every listener before it)."""

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None: ...
    def on_snapshot(self, snapshot: Snapshot) -> None: ...
    def on_action(self, action: Action, token: LinkToken) -> None: ...
    def on_released(self, released: Released) -> None: ...


class Members:
    """Members of one group in this process; `close()` closes them all."""

    def __init__(self, make: Any) -> None:
        self.make = make  # () -> a transport
        self.group = f"g-{uuid.uuid4().hex[:8]}"
        self.made: list[GroupMember] = []

    async def join(self, name: str, listener: Any = None) -> tuple[GroupMember, Any]:
        listener = listener if listener is not None else Recorder()
        member = GroupMember(self.make(), self.group, listener, member_id=name)
        listener.member = member
        self.made.append(member)
        await member.start(timeout=10)
        return member, listener

    async def close(self) -> None:
        for member in self.made:
            await member.close()
            await member.transport.aclose()


@pytest.fixture
async def memory() -> AsyncIterator[Members]:
    transport = MemoryTransport(OPTIONS)
    members = Members(lambda: transport)
    yield members
    await members.close()


# -- in one process (memory transport) ---------------------------------------------------------


async def test_a_delegate_gets_the_members_answer_or_its_error(memory: Members) -> None:
    a, la = await memory.join("a")
    await wait_until(lambda: la.role == "real", 5)
    _, lb = await memory.join("b", Recorder({"media.close": CallError("no call c1 here")}))
    await memory.join("plain", Plain())
    answer = await a.delegate("b", "media.offer", "c1", {"sdp": SDP}, timeout=2)
    assert answer == {"op": "media.offer", "args": {"sdp": SDP}}
    assert [(d.op, d.call_id) for d in lb.delegates] == [("media.offer", "c1")]
    with pytest.raises(CallError, match="no call c1 here"):
        await a.delegate("b", "media.close", "c1", {})
    with pytest.raises(MemberLostError, match="'nobody' is not in the group"):
        await a.delegate("nobody", "media.close", "c1", {})
    with pytest.raises(WebPhoneError, match="takes no delegates"):
        await a.delegate("plain", "media.close", "c1", {})
    with pytest.raises(GroupProtocolError, match=r"delegate\.op"):
        await a.delegate("b", "call", "c1", {})
    b = memory.made[1]
    with pytest.raises(ActionInterruptedError, match="not the real"):
        await b.delegate("a", "media.close", "c1", {})  # only the real delegates


@pytest.mark.parametrize("how", ["crash", "leave"])
async def test_a_member_lost_with_a_delegate_in_flight_ends_it_once(memory: Members,
                                                                    how: str) -> None:
    a, la = await memory.join("a")
    await wait_until(lambda: la.role == "real", 5)
    b, lb = await memory.join("b", Recorder({"media.take": "hold"}))
    await memory.join("c")
    call = asyncio.ensure_future(a.delegate("b", "media.take", "c1", {}, timeout=5))
    await wait_until(lambda: lb.delegates, 5)
    if how == "crash":
        b.abort()
    else:
        await b.leave(1.0)
    with pytest.raises(MemberLostError, match=r"'b' (crashed|left) before answering"):
        await call
    reason = "crashed" if how == "crash" else "left"
    await wait_until(lambda: la.lost == [("b", reason)], 5)
    assert memory.made[2].listener.lost == []  # type: ignore[attr-defined]  # only the real


async def test_continuity_reaches_every_member_and_a_promoted_real_has_it_at_once(
    memory: Members,
) -> None:
    a, la = await memory.join("a")
    await wait_until(lambda: la.role == "real", 5)
    b, lb = await memory.join("b")
    a.publish_continuity({"c1": {"sdp": SDP, "dialog": {"cseq": 3}}})
    await wait_until(lambda: lb.continuity, 5)
    with pytest.raises(GroupProtocolError, match=r"c1\.auth\.password: secrets"):
        a.publish_continuity({"c1": {"auth": {"password": "x"}}})
    _, lc = await memory.join("c")  # a newcomer gets it right after its welcome
    assert [s.calls for s in lc.continuity] == [{"c1": {"sdp": SDP, "dialog": {"cseq": 3}}}]
    assert b.continuity.state == lb.continuity[-1] and lb.continuity[-1].version == (1, 1)
    assert len(lb.continuity) == 1  # the refused one was never sent
    a.abort()
    await wait_until(lambda: lb.role == "real" or lc.role == "real", 5)
    promoted = lb if lb.role == "real" else lc
    assert promoted.continuity_at_promotion[-1] is not None
    assert promoted.continuity_at_promotion[-1].calls["c1"]["dialog"] == {"cseq": 3}
    assert promoted.lost == [("a", "crashed")]


async def test_a_real_that_stops_being_real_gets_its_delegates_interrupted(
    memory: Members,
) -> None:
    a, la = await memory.join("a")
    await wait_until(lambda: la.role == "real", 5)
    await memory.join("b", Recorder({"media.take": "hold"}))
    call = asyncio.ensure_future(a.delegate("b", "media.take", "c1", {}, timeout=5))
    await asyncio.sleep(0)
    a.resign()  # gives up the role (what a failed registration does)
    with pytest.raises(ActionInterruptedError):
        await call


# -- member processes over a hub process and over Redis ------------------------------------------


class Proc:
    """tests/support/plane_member.py as a child process; its JSON-line events in `events`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    async def wait(self, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events
                         if all(e.get(k) == v for k, v in match.items())), None)
        return dict(await wait_until(found, 15, message=f"event {match}"))

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.reader.cancel()


@pytest.fixture(params=["local", "redis"])
async def where(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    """How to reach one fresh group: a local hub process in a runtime dir, or a redis-server."""
    if request.param == "local":
        enable_subreaper()
        runtime_dir = short_runtime_dir()
        yield {"argv": ["--runtime-dir", str(runtime_dir)],
               "make": lambda: LocalTransport(OPTIONS, runtime_dir=runtime_dir)}
        reap_adopted_zombies(exclude=set())
        shutil.rmtree(runtime_dir, ignore_errors=True)
        return
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing (apt redis-server)")
        pytest.skip("needs redis-server (apt redis-server)")
    from webphone.shared.transports.redis import RedisTransport
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield {"argv": ["--hub", server.url], "make": lambda: RedisTransport(server.url, OPTIONS)}
    finally:
        server.stop()


@pytest.fixture
async def procs(where: dict[str, Any]) -> AsyncIterator[Any]:
    group = f"g-{uuid.uuid4().hex[:8]}"
    started: list[Proc] = []

    async def spawn(name: str, *extra: str) -> Proc:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SUPPORT / "plane_member.py"), "--group", group, "--id", name,
            *where["argv"], *extra, stdout=asyncio.subprocess.PIPE, env=env)
        started.append(Proc(proc))
        await started[-1].wait(event="ready")
        return started[-1]

    members = Members(where["make"])
    members.group = group
    yield spawn, members
    await members.close()
    for proc in started:
        await proc.kill()


@pytest.mark.parametrize("signal_", [signal.SIGKILL, signal.SIGSTOP], ids=["kill", "stop"])
async def test_a_real_delegates_to_a_member_process_which_then_dies_or_hangs(
    procs: Any, signal_: signal.Signals,
) -> None:
    spawn, members = procs
    a, la = await members.join("a")
    await wait_until(lambda: la.role == "real", 10)
    b = await spawn("b")
    answer = await a.delegate("b", "media.offer", "c1", {"sdp": SDP}, timeout=5)
    assert answer == {"sdp": f"{SDP} answered", "pid": b.proc.pid}
    call = asyncio.ensure_future(a.delegate("b", "media.close", "c1", {"hold": True},
                                            timeout=30))
    await b.wait(event="delegate", op="media.close")
    b.proc.send_signal(signal_)  # a stopped one is SIGKILLed by the fixture
    reason = "crashed" if signal_ == signal.SIGKILL else "hung"
    with pytest.raises(MemberLostError, match=r"'b' (crashed|hung) before answering"):
        await call
    await wait_until(lambda: la.lost, 10)
    # Redis sees a crash as an expired membership: "hung"
    assert la.lost in ([("b", reason)], [("b", "hung")])
    assert len(la.lost) == 1


async def test_a_new_real_has_the_continuity_state_at_once(procs: Any) -> None:
    spawn, members = procs
    record = {"c1": {"sdp": SDP, "dialog": {"call_id": "c1", "cseq": 7}}}
    old = await spawn("old", "--publish", json.dumps(record))
    await old.wait(event="role", role="real")
    _, lb = await members.join("b")
    await wait_until(lambda: lb.continuity, 10, message="continuity at b")
    await old.kill()
    await wait_until(lambda: lb.role == "real", 10, message="b promoted")
    state = lb.continuity_at_promotion[-1]
    assert state is not None and state.calls == record
    await wait_until(lambda: lb.lost, 10)
    assert lb.lost[0][0] == "old"


@pytest.fixture
async def redis_members(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Members]:
    """Members of one group over a fresh redis-server (closed after the test)."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (apt redis-server)")
    from webphone.shared.transports.redis import RedisTransport
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    members = Members(lambda: RedisTransport(server.url, OPTIONS))
    try:
        yield members
    finally:
        await members.close()
        server.stop()


async def test_the_redis_scripts_fence_the_plane_and_keep_it_in_one_slot(
    redis_members: Members,
) -> None:
    """Over Redis nothing routes frames but the scripts: only the holder at its epoch writes
    the continuity record or delegates, never an older record, never to a member that is not
    alive with that inbox; every key of the plane is in the group's slot."""
    from redis.crc import key_slot

    from webphone.shared.transports.redis import RedisLink
    members = redis_members
    a, la = await members.join("a")
    await wait_until(lambda: la.role == "real", 10)
    b, _ = await members.join("b")
    link = a._token.link if a._token else None
    assert isinstance(link, RedisLink)
    key = link.plane.continuity_key
    assert key_slot(key.encode()) == key_slot(link.keys.lease.encode())
    frame = Continuity(epoch=a.epoch, seq=5, calls={"c1": {"sdp": SDP}})

    async def write(epoch: int, seq: int, member: str) -> str:
        out = await link.run_script("continuity", [key], [epoch, seq, frame.to_json(),
                                                          member])
        return out.decode() if isinstance(out, bytes) else str(out)

    assert await write(a.epoch, 5, "b") == "fenced"  # not the holder
    assert await write(a.epoch + 1, 5, "a") == "fenced"  # not at that epoch
    assert await write(a.epoch, 5, "a") == "ok"
    assert await write(a.epoch, 4, "a") == "old"
    inbox = b._token.link.reply_key if b._token and b._token.link else ""  # type: ignore[attr-defined]
    forwarded = Delegate(id="x.1", to="b", call_id="c1", op="media.close", args={},
                         epoch=a.epoch, timeout=1.0).to_json()

    async def delegate(member: str, epoch: int, to: str, target_inbox: str) -> str:
        out = await link.run_script("delegate", [target_inbox], [
            member, epoch, to, forwarded, link.reply_key])
        return out.decode() if isinstance(out, bytes) else str(out)

    assert await delegate("b", a.epoch, "b", inbox) == "fenced"
    assert await delegate("a", a.epoch, "nobody", inbox) == "unknown"
    assert await delegate("a", a.epoch, "b", link.reply_key) == "unknown"  # not b's inbox
    assert key_slot(inbox.encode()) == key_slot(key.encode())


async def test_a_delegates_answer_read_before_delegates_own_reply_is_not_lost(
    redis_members: Members,
) -> None:
    """Over Redis the answer to a delegate is pushed to the real's inbox and handled as it
    arrives, on another connection than the DELEGATE script's own reply: forced here to come
    first (the real reads DELEGATE's reply only once the answer was handled), it still ends
    the delegate, with its value (not DelegateTimeoutError)."""
    from webphone.shared.transports.redis import RedisLink
    members = redis_members
    a, la = await members.join("a")
    await wait_until(lambda: la.role == "real", 10)
    await members.join("b")
    link = a._token.link if a._token else None
    assert isinstance(link, RedisLink)
    answered = asyncio.Event()
    on_reply, run_script = link._on_reply, link.run_script

    def seen(fields: dict[Any, Any]) -> None:
        on_reply(fields)
        if fields.get(b"t") == b"dresult":
            answered.set()

    async def answer_first(name: str, extra_keys: list[str], args: list[Any]) -> Any:
        out = await run_script(name, extra_keys, args)
        if name == "delegate":
            await asyncio.wait_for(answered.wait(), 5)
        return out

    link._on_reply = seen  # type: ignore[method-assign]
    link.run_script = answer_first  # type: ignore[method-assign]
    assert await a.delegate("b", "media.offer", "c1", {"sdp": SDP}, timeout=3) == {
        "op": "media.offer", "args": {"sdp": SDP}}
    assert answered.is_set()


async def test_a_real_never_republishes_an_older_reigns_state() -> None:
    """a publishes X, gives the role up, b publishes Y and crashes, a is real again; when the
    hub restarts, a re-claims with its welcome and must not send X again as the newest state
    (it would win over Y by its newer epoch)."""
    transport = MemoryTransport(OPTIONS)
    members = Members(lambda: transport)
    try:
        a, la = await members.join("a")
        await wait_until(lambda: la.role == "real", 5)
        b, lb = await members.join("b")
        a.publish_continuity({"c1": {"from": "a"}})
        await wait_until(lambda: lb.continuity, 5)
        a.resign(rejoin_after=0.0)
        await wait_until(lambda: lb.role == "real" and a.connected, 5)
        b.publish_continuity({"c1": {"from": "b"}})
        await wait_until(lambda: la.continuity and la.continuity[-1].calls["c1"]["from"] == "b",
                         5)
        b.abort()
        await wait_until(lambda: la.role == "real", 5)
        transport.kill_hub(members.group)
        await wait_until(lambda: a.hubs_seen >= 3 and a.role == "real", 5)
        _, lc = await members.join("c")
        await a.members()  # a round trip: whatever a sent on this hub has been routed
        assert all(s.calls["c1"]["from"] != "a" for s in lc.continuity), lc.continuity
    finally:
        await members.close()


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
async def test_the_plane_over_sentinel_and_cluster(
    kind: str, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The same plane where the group's node is located per link and writes wait for a
    replica (replica_acks 1): a delegate and its answer, the continuity record (acknowledged),
    a member lost, and the record fetched by a newcomer."""
    from support.redis_ha import ClusterSet, SentinelSet, require_redis_tools, wait_old_enough
    from webphone.shared.transports.redis import RedisTransport
    require_redis_tools()
    servers = (SentinelSet if kind == "sentinel" else ClusterSet)(tmp_path_factory.mktemp(kind))
    servers.start()
    members = Members(lambda: RedisTransport(servers.url, OPTIONS))
    try:
        wait_old_enough(servers.nodes, OPTIONS.heartbeat_timeout)
        a, la = await members.join("a")
        await wait_until(lambda: la.role == "real", 10)
        b, lb = await members.join("b", Recorder({"media.take": "hold"}))
        assert await a.delegate("b", "media.offer", "c1", {"sdp": SDP}, timeout=5) == {
            "op": "media.offer", "args": {"sdp": SDP}}
        a.publish_continuity({"c1": {"sdp": SDP}})
        await wait_until(lambda: lb.continuity, 10)
        _, lc = await members.join("c")  # fetched by its link right after the welcome
        await wait_until(lambda: [s.calls for s in lc.continuity] == [{"c1": {"sdp": SDP}}], 10)
        call = asyncio.ensure_future(a.delegate("b", "media.take", "c1", {}, timeout=30))
        await wait_until(lambda: any(d.op == "media.take" for d in lb.delegates), 10)
        b.abort()
        with pytest.raises(MemberLostError):
            await call
        # abort() closes the Redis link, whose cleanup removes the membership: "left"
        await wait_until(lambda: la.lost == [("b", "left")], 10)
    finally:
        await members.close()
        servers.close()
