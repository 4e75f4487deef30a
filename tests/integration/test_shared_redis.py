"""Group members in this process on a REAL redis-server (no SIP): the lease, fencing epochs,
membership, snapshots and the exactly-one-outcome rule for actions across "hosts"; a partition
of the real (a TCP proxy this test controls) and a Redis restart. The Lua scripts are also
driven directly where a race has to be forced (result vs interrupt, stale snapshots)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from support.redis_server import RedisServer
from support.tcp_proxy import TcpProxy
from support.wait import wait_until, wait_until_sync
from webphone.errors import ActionInterruptedError, CallError, NoRealPhoneError, WebPhoneError
from webphone.shared import group_status
from webphone.shared.member import GroupMember, LinkToken, error_info
from webphone.shared.protocol import Action, Released, Role, Snapshot
from webphone.shared.transports.base import HubOptions
from webphone.shared.transports.redis import RedisLink, RedisTransport
from webphone.shared.transports.redis_scripts import (
    ACTION_PUSH,
    INBOX_PUSH,
    SCRIPTS,
    GroupKeys,
    plane_script,
    push_entry,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

#: lease 0.9 s: renew every 0.3 s, renew deadline 0.6 s, command timeout 0.15 s
OPTIONS = HubOptions(heartbeat_interval=0.1, heartbeat_timeout=0.9)


# -- fixtures and helpers --------------------------------------------------------------------


def started_redis(workdir: Path) -> RedisServer:
    """A redis-server that has been up for a lease ttl: a younger one grants no new lease
    (the restart grace), which would make "the first member is the real" a matter of timing."""
    if shutil.which("redis-server") is None:  # as conftest's fixtures: skip, or fail in CI
        reason = "'redis-server' not found on PATH (apt-get install redis-server)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    server = RedisServer(workdir)
    server.start()
    wait_until_sync(lambda: uptime(server) >= OPTIONS.heartbeat_timeout, 5, 0.05)
    return server


def uptime(server: RedisServer) -> float:
    import socket

    with socket.create_connection((server.host, server.port), timeout=1) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        data = b""
        while b"uptime_in_seconds:" not in data or not data.endswith(b"\r\n"):
            data += s.recv(65536)
    line = data.split(b"uptime_in_seconds:", 1)[1].split(b"\r\n", 1)[0]
    return float(line)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the tests that do not restart it (each uses its own group)."""
    server = started_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


class Listener:
    """Records roles, snapshots, actions and releases; as the real, registers at once and
    answers actions by a table (or holds them when `hold_actions`)."""

    def __init__(self, name: str, answers: dict[str, Any] | None = None,
                 register: bool = True) -> None:
        self.name = name
        self.member: GroupMember | None = None
        self.roles: list[tuple[Role | None, Role, int, float]] = []
        self.snapshots: list[Snapshot] = []
        self.actions: list[Action] = []
        self.released: list[tuple[Released, float]] = []
        self.registered_at: list[float] = []
        self.answers = answers or {}
        self.register = register
        self.hold_actions = False
        self.held: list[tuple[Action, LinkToken]] = []

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        self.roles.append((old, new, epoch, time.monotonic()))
        if new == "real" and self.register and self.member is not None:
            self.registered_at.append(time.monotonic())
            self.member.registered(epoch)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    def on_action(self, action: Action, token: LinkToken) -> None:
        self.actions.append(action)
        if self.hold_actions:
            self.held.append((action, token))
            return
        self.answer(action, token)

    def answer(self, action: Action, token: LinkToken) -> None:
        assert self.member is not None
        answer = self.answers.get(action.name, {"ran": action.name, "by": self.name})
        if isinstance(answer, BaseException):
            self.member.send_result(token, action.action_id, error=error_info(answer))
        else:
            self.member.send_result(token, action.action_id, value=answer)

    def on_released(self, released: Released) -> None:
        self.released.append((released, time.monotonic()))

    @property
    def role(self) -> Role | None:
        return self.roles[-1][1] if self.roles else None


class Group:
    """Members of one fresh group on one Redis; `close()` closes them all."""

    def __init__(self, url: str, options: HubOptions = OPTIONS) -> None:
        self.url = url
        self.options = options
        self.name = f"g-{uuid.uuid4().hex[:8]}"
        self.members: list[tuple[GroupMember, Listener, RedisTransport]] = []

    async def join(self, name: str, host: str | None = None, url: str | None = None,
                   **kwargs: Any) -> tuple[GroupMember, Listener]:
        listener = Listener(name, **{k: kwargs.pop(k) for k in ("answers", "register")
                                     if k in kwargs})
        transport = RedisTransport(url or self.url, self.options, **kwargs)
        member = GroupMember(transport, self.name, listener, member_id=name)
        member.host = host or f"host-{name}"
        listener.member = member
        await member.start(timeout=5)
        self.members.append((member, listener, transport))
        return member, listener

    def reals(self) -> list[str]:
        return [lis.name for m, lis, _ in self.members if m.role == "real" and not m._closed]

    async def close(self) -> None:
        for member, _, transport in self.members:
            await member.close()
            await transport.aclose()


@pytest.fixture
async def group(shared_redis: RedisServer) -> AsyncIterator[Group]:
    g = Group(shared_redis.url)
    yield g
    await g.close()


async def first_real(group: Group, names: list[str], timeout: float = 5.0) -> str:
    async def one() -> str | None:
        reals = [n for n in group.reals() if n in names]
        return reals[0] if len(reals) == 1 else None
    return str(await wait_until(one, timeout, message="exactly one real"))


# -- roles, membership, status ---------------------------------------------------------------


async def test_one_real_members_on_every_host_and_status_without_joining(group: Group) -> None:
    _, la = await group.join("a")
    b, lb = await group.join("b")
    c, lc = await group.join("c")
    await wait_until(lambda: la.role == "real", 5, message="a real")
    assert (lb.role, lc.role) == ("dummy", "dummy") and b.view.real_id == "a"
    infos = await c.members()
    assert [(m.member_id, m.role, m.host) for m in infos] == [
        ("a", "real", "host-a"), ("b", "dummy", "host-b"), ("c", "dummy", "host-c")]
    assert infos[0].joined_at <= infos[1].joined_at <= infos[2].joined_at
    status = await group_status(group.name, hub=group.url)
    assert [(m["member_id"], m["role"], m["self"]) for m in status] == [
        ("a", "real", False), ("b", "dummy", False), ("c", "dummy", False)]
    assert abs(status[0]["joined"] - time.time()) < 30  # wall clock, from the server's
    # a dummy that leaves is gone from the list at once
    await b.leave(1.0)
    await b.close()
    await b.transport.aclose()  # what SharedWebPhone.dispose() does: the link's cleanup ran
    assert [m.member_id for m in await c.members()] == ["a", "c"]
    assert await group_status("no-such-group", hub=group.url) == []


async def test_a_member_closed_while_its_leave_is_being_sent_is_gone_at_once(
        group: Group) -> None:
    """close() right after leave() cancels the link's LEAVE mid-send (the order a slow loop
    gives; pipecat's wait_for makes it the usual one): redis-py then drops that connection, and
    the link's cleanup must still take the member out of the list."""
    await group.join("a")
    b, _ = await group.join("b")
    c, _ = await group.join("c")
    link = b._token.link if b._token else None
    assert isinstance(link, RedisLink) and link._cmd is not None
    conn = link._cmd.connection
    assert conn is not None
    sending = asyncio.Event()

    async def write_that_hangs(command: Any) -> None:
        sending.set()
        await asyncio.Event().wait()  # the bytes never leave: cancelled by close()

    conn.socket_timeout = None  # no write timeout: only close() ends the hung write
    conn._send_packed_command = write_that_hangs  # type: ignore[method-assign]
    await b.leave(1.0)
    await asyncio.wait_for(sending.wait(), 5)
    await b.close()
    await b.transport.aclose()
    assert [m.member_id for m in await c.members()] == ["a", "c"]


async def test_a_dummy_that_left_is_not_brought_back_by_its_heartbeats(group: Group) -> None:
    await group.join("a")
    b, _ = await group.join("b")
    c, _ = await group.join("c")
    await b.leave(1.0)
    assert await b.ping()  # a heartbeat handled after the LEAVE: echoed, membership untouched
    assert [m.member_id for m in await c.members()] == ["a", "c"]


async def test_a_second_process_with_the_same_member_id_is_refused(group: Group) -> None:
    await group.join("a")
    listener = Listener("a2")
    transport = RedisTransport(group.url, OPTIONS)
    member = GroupMember(transport, group.name, listener, member_id="a")
    listener.member = member
    member.pid += 1  # another process
    await member.start(timeout=5)  # refused once, then joins under a fresh id
    assert member.member_id != "a"
    assert {m.member_id for m in await member.members()} == {"a", member.member_id}
    await member.close()
    await transport.aclose()


# -- actions ---------------------------------------------------------------------------------


async def test_actions_run_once_on_the_real_and_its_errors_come_back(group: Group) -> None:
    a, la = await group.join("a", answers={"hold": CallError("no such call"),
                                           "flip": ValueError("odd")})
    await wait_until(lambda: la.role == "real", 5)
    b, _ = await group.join("b")
    assert await b.request("answer", "c1", {}) == {"ran": "answer", "by": "a"}
    with pytest.raises(CallError, match="no such call"):
        await b.request("hold", "c1", {})
    with pytest.raises(WebPhoneError, match="ValueError: odd"):
        await b.request("flip", "c1", {"target": "1"})
    # the real is a caller too (its action goes through Redis to itself)
    assert await a.request("mute", "c1", {}) == {"ran": "mute", "by": "a"}
    assert [x.name for x in la.actions] == ["answer", "hold", "flip", "mute"]


async def test_broken_push_connections_cost_neither_a_link_nor_an_action(
    shared_redis: RedisServer,
) -> None:
    """The pushes that wake the real (actions) and each caller (results) come on connections
    of their own: when Redis drops them all (CLIENT KILL TYPE pubsub), each reader subscribes
    again and reads its stream from the last entry it saw: both links stay (the real keeps
    its lease), every action runs once and its result comes back, the real's own too. (A 3 s
    lease, the default, as for any Redis fault on a loaded machine.)"""
    group = Group(shared_redis.url, HubOptions(heartbeat_interval=0.5, heartbeat_timeout=3.0))
    try:
        await _pushes_broken(group)
    finally:
        await group.close()


async def _pushes_broken(group: Group) -> None:
    a, la = await group.join("a")
    await wait_until(lambda: la.role == "real" and la.registered_at, 5)
    b, _ = await group.join("b")
    assert await b.request("hold", "c1", {}) == {"ran": "hold", "by": "a"}
    links = [m._token.link if m._token else None for m in (a, b)]
    async with Redis.from_url(group.url) as redis:
        for n in range(3):
            assert await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 2
            assert await b.request("park", f"c{n}", {}, timeout=5.0) == {"ran": "park",
                                                                          "by": "a"}
            assert await a.request("mute", f"c{n}", {}, timeout=5.0) == {"ran": "mute",
                                                                          "by": "a"}
    assert [(x.name, x.call_id) for x in la.actions] == [
        ("hold", "c1"), *[(name, f"c{n}") for n in range(3) for name in ("park", "mute")]]
    assert la.role == "real"
    assert [m._token.link if m._token else None for m in (a, b)] == links


async def test_a_repeated_action_id_is_refused_and_runs_once(
    group: Group, caplog: pytest.LogCaptureFixture,
) -> None:
    """A link refuses an action id it already sent (it remembers its newest 1024): the
    action runs once."""
    _, la = await group.join("a")
    await wait_until(lambda: la.role == "real" and la.registered_at, 5)
    b, _ = await group.join("b")
    link = b._token.link if b._token else None
    assert isinstance(link, RedisLink)
    link.send(Action("dup-1", "hold", "c1", {}, 5.0))
    link.send(Action("dup-1", "hold", "c1", {}, 5.0))
    await wait_until(lambda: "duplicate_action" in caplog.text, 5, message="refused")
    await wait_until(lambda: la.actions, 5)
    assert await b.request("park", "c2", {}) == {"ran": "park", "by": "a"}  # in order, after
    assert [x.call_id for x in la.actions] == ["c1", "c2"]


async def test_no_ready_real_means_no_real_phone_error_then_the_real_serves(
    group: Group,
) -> None:
    a, la = await group.join("a", register=False)  # real, but never registers
    await wait_until(lambda: la.role == "real", 5)
    b, _ = await group.join("b")
    started = time.monotonic()
    with pytest.raises(NoRealPhoneError):
        await b.request("hold", "c1", {}, timeout=0.4)
    assert 0.35 <= time.monotonic() - started < 2.0
    assert la.actions == []  # never ran, and never will (it expired, atomically)
    a.registered(a.epoch)
    assert await b.request("hold", "c1", {}, timeout=2.0) == {"ran": "hold", "by": "a"}
    assert [x.name for x in la.actions] == ["hold"]


async def test_an_action_queued_while_no_real_is_ready_runs_once_when_one_is(
    group: Group,
) -> None:
    a, la = await group.join("a", register=False)
    await wait_until(lambda: la.role == "real", 5)
    b, _ = await group.join("b")
    pending = asyncio.ensure_future(b.request("park", "c1", {}, timeout=5.0))
    keys = GroupKeys.for_group(group.name)
    async with Redis.from_url(group.url) as redis:  # the action waits, queued in Redis
        await wait_until(lambda: redis.keys(keys.act("*")), 5, message="action record queued")
    assert not pending.done()
    a.registered(a.epoch)
    assert await pending == {"ran": "park", "by": "a"}
    assert len(la.actions) == 1



async def test_an_action_for_a_ready_real_is_claimed_by_enqueue_and_interrupted_once_on_a_crash(
    group: Group,
) -> None:
    """With a ready real, ENQUEUE claims the action for it (the real runs it on reading it, no
    CLAIM round trip); a crash of that real before answering ends it ActionInterruptedError,
    once, and it never runs on the successor."""
    a, la = await group.join("a")
    await wait_until(lambda: la.role == "real" and la.registered_at, 5)
    b, lb = await group.join("b")
    _, lc = await group.join("c")
    la.hold_actions = True
    pending = asyncio.ensure_future(b.request("park", "c1", {}, timeout=5.0))
    await wait_until(lambda: la.held, 5, message="the real received the action")
    keys = GroupKeys.for_group(group.name)
    async with Redis.from_url(group.url) as redis:
        entries = await redis.xrange(keys.actions)
    assert [f[b"c"] for _, f in entries] == [b"a"], entries  # claimed for a, at enqueue
    a.abort()  # a crash: nothing sent
    with pytest.raises(ActionInterruptedError):
        await pending
    successor = await wait_until(
        lambda: next((x for x in (lb, lc) if x.role == "real" and x.registered_at), None), 5)
    assert await b.request("hold", "c1", {}, timeout=5.0) == {"ran": "hold", "by": successor.name}
    assert [x.name for x in (*lb.actions, *lc.actions)] == ["hold"]  # never ran again


async def test_enqueue_claims_only_for_a_ready_real_and_result_removes_the_entry(
    shared_redis: RedisServer,
) -> None:
    """ENQUEUE with claim=1: queued while the real is not ready, claimed at its epoch once it
    is (CLAIM then refuses it: never twice); RESULT with the entry id deletes the entry."""
    keys = GroupKeys.for_group(f"enq-{uuid.uuid4().hex[:6]}")
    client = Redis.from_url(shared_redis.url)
    run = {name: client.register_script(text) for name, text in SCRIPTS.items()}
    base = keys.base()
    try:
        out = await run["acquire"](keys=base, args=["a", 0, 0, 1, 5000])
        epoch = int(out[2])
        reply = keys.reply("0" * 12)
        frame = Action("x", "hold", "c1", {}, 5.0).to_json()

        async def enqueue(gid: str) -> bytes:
            result: bytes = await run["enqueue"](keys=[*base, keys.act(gid), reply],
                                                 args=[gid, 5000, frame, "1"])
            return result

        assert await enqueue(f"{'0' * 12}.q") == b"ok"  # not ready: queued
        assert await run["ready"](keys=base, args=["a", epoch]) == b"ok"
        gid = f"{'0' * 12}.c"
        assert await enqueue(gid) == f"claimed:{epoch}".encode()
        assert await enqueue(gid) == b"dup"
        act = keys.act(gid)
        assert await client.hmget(act, "state", "epoch") == [b"claimed", str(epoch).encode()]
        assert await run["claim"](keys=[*base, act, reply], args=["a", epoch, gid, "0-1"]) \
            == b"claimed"
        (entry_id, fields), = [e for e in await client.xrange(keys.actions) if b"c" in e[1]]
        assert (fields[b"c"], fields[b"n"]) == (b"a", str(epoch).encode())
        assert await run["result"](keys=[*base, act, reply],
                                   args=["a", epoch, gid, b"{}", entry_id]) == b"ok"
        assert [e for e in await client.xrange(keys.actions) if b"c" in e[1]] == []
        assert await client.hget(act, "state") == b"done"
    finally:
        await client.aclose()

async def test_enqueue_and_result_push_each_entry_they_add_to_its_reader(
    shared_redis: RedisServer,
) -> None:
    """The real is woken by ENQUEUE's push of the action entry, the caller by RESULT's push of
    the result entry: each push is the very entry the stream holds (id and fields), so the
    reader needs no XREAD; an ENQUEUE without a channel pushes nothing."""
    keys = GroupKeys.for_group(f"push-{uuid.uuid4().hex[:6]}")
    client = Redis.from_url(shared_redis.url)
    run = {name: client.register_script(text) for name, text in SCRIPTS.items()}
    base, reply, channel = keys.base(), keys.reply("1" * 12), keys.actions_channel(0)
    pubsub = Redis.from_url(shared_redis.url).pubsub()
    try:
        await pubsub.subscribe(channel, reply)
        for _ in range(2):
            assert (await pubsub.parse_response(block=True))[0] == b"subscribe"
        epoch = int((await run["acquire"](keys=base, args=["a", 0, 0, 1, 5000]))[2])
        await run["ready"](keys=base, args=["a", epoch])
        frame = Action("x", "hold", "c1", {}, 5.0).to_json()
        gids = [f"{'1' * 12}.silent", f"{'1' * 12}.pushed"]
        await run["enqueue"](keys=[*base, keys.act(gids[0]), reply],
                             args=[gids[0], 5000, frame, "1"])
        await run["enqueue"](keys=[*base, keys.act(gids[1]), reply],
                             args=[gids[1], 5000, frame, "1", channel])
        message = await pubsub.parse_response(block=True)
        assert message[:2] == [b"message", channel.encode()]
        entry_id, fields = push_entry(message[2], ACTION_PUSH) or ("", {})
        stored = {i.decode(): f for i, f in await client.xrange(keys.actions)}
        assert len(stored) == 2 and list(stored)[1] == entry_id  # the second, not the first
        assert stored[entry_id] == fields
        assert fields[b"g"] == gids[1].encode() and fields[b"c"] == b"a"
        await run["result"](keys=[*base, keys.act(gids[1]), reply],
                            args=["a", epoch, gids[1], b'{"r":1}', entry_id])
        message = await pubsub.parse_response(block=True)
        assert message[:2] == [b"message", reply.encode()]
        entry_id, fields = push_entry(message[2], INBOX_PUSH) or ("", {})
        ((stored_id, stored_fields),) = await client.xrange(reply)
        assert (stored_id.decode(), stored_fields) == (entry_id, fields)
        assert fields == {b"t": b"result", b"g": gids[1].encode(), b"n": str(epoch).encode(),
                          b"d": b'{"r":1}'}
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_a_reader_gets_every_entry_once_in_order_written_before_or_after_it_subscribed(
    group: Group,
) -> None:
    """`RedisLink._entries`: what the stream held before the reader subscribed (its pushes went
    to nobody), then the pushes; a push of an entry already read, and a malformed one, are
    skipped. Entries are written as the scripts write them (XADD, then `push`)."""
    a, _ = await group.join("a")
    link = a._token.link if a._token else None
    assert isinstance(link, RedisLink)
    stream = f"{link.keys.prefix}:test-entries"
    add = plane_script("""
local id = redis.call('XADD', KEYS[8], '*', 't', 'result', 'g', ARGV[1], 'd', ARGV[2])
push(KEYS[8], id, 'result', ARGV[1], '', '', ARGV[2])
return id
""")
    client = Redis.from_url(group.url)

    async def write(n: int) -> bytes:
        out: bytes = await client.eval(add, 8, *link.keys.base(), stream, f"g{n}", f"d{n}")
        return out

    got: list[tuple[str, bytes]] = []
    entries = link._entries(stream, stream, INBOX_PUSH, "0-0")
    try:
        first = [await write(n) for n in range(3)]  # nobody subscribed yet: stream only
        got += [(i, f[b"g"]) for i, f in [await anext(entries) for _ in range(3)]]
        await client.publish(stream, first[1] + b"\nresult\ng1\n\n\nd1")  # read already
        await client.publish(stream, b"garbage")
        later = [await write(n) for n in range(3, 5)]
        got += [(i, f[b"g"]) for i, f in [await anext(entries) for _ in range(2)]]
    finally:
        await entries.aclose()
        await client.aclose()
    assert got == [(i.decode(), f"g{n}".encode()) for n, i in enumerate([*first, *later])]


# -- snapshots -------------------------------------------------------------------------------


async def test_late_joiner_gets_the_latest_snapshot_and_stale_ones_are_refused(
    group: Group,
) -> None:
    a, la = await group.join("a")
    await wait_until(lambda: la.role == "real", 5)
    _, lb = await group.join("b")
    for n in range(3):
        a.publish({"calls": [{"id": f"c{n}", "direction": "inbound", "state": "ringing"}]})
    await wait_until(lambda: lb.snapshots and lb.snapshots[-1].state["calls"][0]["id"] == "c2",
                     5, message="fan-out to b")
    versions = [s.version for s in lb.snapshots]
    assert versions == sorted(set(versions))  # never backwards
    _, lc = await group.join("c")
    assert lc.snapshots and lc.snapshots[0].state["calls"][0]["id"] == "c2"  # in welcome
    # fencing in Redis: a snapshot from a non-holder or an old version is refused
    keys = GroupKeys.for_group(group.name)
    client = Redis.from_url(group.url)
    try:
        publish = client.register_script(SCRIPTS["publish"])
        epoch = a.epoch
        frame = Snapshot(epoch, 99, {"calls": []}).to_json()
        assert await publish(keys=keys.base(), args=[epoch, 99, frame, "b"]) == b"fenced"
        assert await publish(keys=keys.base(), args=[epoch + 1, 1, frame, "a"]) == b"fenced"
        assert await publish(keys=keys.base(), args=[epoch, 1, frame, "a"]) == b"old"
        stored = await client.hmget(f"{keys.prefix}:snapshot", "epoch", "seq")
        assert [int(x) for x in stored] == [epoch, lb.snapshots[-1].seq]
    finally:
        await client.aclose()


# -- graceful leave --------------------------------------------------------------------------


async def test_graceful_leave_is_make_before_break_and_the_last_one_unregisters(
    group: Group,
) -> None:
    a, la = await group.join("a")
    await wait_until(lambda: la.role == "real", 5)
    b, lb = await group.join("b")
    epoch = a.epoch
    started = time.monotonic()
    released = await a.leave(5.0)
    assert released is not None and released.unregister is False
    assert lb.role == "real" and b.epoch > epoch
    # b registered before a was released, and well before a lease could have expired
    assert lb.registered_at[-1] <= la.released[-1][1]
    assert la.released[-1][1] - started < OPTIONS.heartbeat_timeout / 2
    await a.close()
    await a.transport.aclose()  # as SharedWebPhone.dispose() does: a is out of the group
    released = await b.leave(5.0)
    assert released is not None and released.unregister is True
    assert await b.ping()  # the member's check before it unregisters: the lease is still ours


async def test_the_last_real_leaving_after_a_crashed_dummy_unregisters(group: Group) -> None:
    a, la = await group.join("a")
    await wait_until(lambda: la.role == "real", 5)
    b, _ = await group.join("b")
    b_link = b._token.link if b._token else None
    assert isinstance(b_link, RedisLink)

    async def crashed(*, leave: bool) -> None:  # b "crashes": nothing is cleaned up in Redis
        await b_link._stop_session()
        await b_link._drop_clients()

    b_link._cleanup = crashed  # type: ignore[method-assign]
    b.abort()
    released = await a.leave(5.0)  # waits for a successor, then finds b gone
    assert released is not None and released.unregister is True


# -- fencing and exactly one outcome, forced at the script level --------------------------


async def test_the_leave_of_a_members_old_link_does_not_remove_its_new_one(
        shared_redis: RedisServer) -> None:
    """A quick re-link (same process, same ident): the old link's LEAVE may run after the new
    link's JOIN. Only the link that wrote the member's record takes it out of the list."""
    keys = GroupKeys.for_group(f"relink-{uuid.uuid4().hex[:6]}")
    client = Redis.from_url(shared_redis.url)
    run = {name: client.register_script(text) for name, text in SCRIPTS.items()}
    base, ident = keys.base(), "host-b|42|1.0"

    async def listed() -> list[str]:
        out = await run["members"](keys=base, args=[])
        return [json.loads(raw)["id"] for raw in out[7:]]

    try:
        for link in ("old", "new"):  # the new link joins before the old one's cleanup ran
            info = json.dumps({"id": "b", "pid": 42, "host": "host-b", "ident": ident,
                               "link": link})
            out = await run["join"](keys=base, args=["b", info, 5000, ident, 10, 0, 0, 1,
                                                     5000, 0])
            assert out[0] == b"dummy", out
        assert await run["leave"](keys=base, args=["b", ident, "old"]) == b"ok"
        assert await listed() == ["b"]
        assert await run["leave"](keys=base, args=["b", "other|1|1.0", "new"]) == b"ok"
        assert await listed() == ["b"]  # another process's ident never removes it either
        assert await run["leave"](keys=base, args=["b", ident, "new"]) == b"ok"
        assert await listed() == []
    finally:
        await client.aclose()


async def test_result_and_interrupt_race_has_exactly_one_winner(shared_redis: RedisServer) -> None:
    keys = GroupKeys.for_group(f"race-{uuid.uuid4().hex[:6]}")
    client = Redis.from_url(shared_redis.url)
    run = {name: client.register_script(text) for name, text in SCRIPTS.items()}
    base = keys.base()
    try:
        async def acquire(member: str, known: int) -> int:
            out = await run["acquire"](keys=base, args=[member, known, 0, 1, 5000])
            assert out[0] == b"ok", out
            return int(out[2])

        for order in (("result", "interrupt"), ("interrupt", "result")):
            e1 = await acquire("a", 0)
            assert await run["ready"](keys=base, args=["a", e1]) == b"ok"
            gid = f"{'0' * 12}.{order[0]}"
            act, reply = keys.act(gid), keys.reply("0" * 12)
            action = Action(gid, "hold", "c1", {}, 5.0).to_json()
            assert await run["enqueue"](keys=[*base, act, reply], args=[gid, 5000, action]) \
                == b"ok"
            assert await run["enqueue"](keys=[*base, act, reply], args=[gid, 5000, action]) \
                == b"dup"  # the marker is set once
            assert await run["claim"](keys=[*base, act, reply], args=["a", e1, gid, "0-1"]) == b"ok"
            assert await run["claim"](keys=[*base, act, reply], args=["a", e1, gid, "0-1"]) \
                == b"claimed"  # never twice
            # the real loses the lease after accepting; b takes over at a new epoch
            assert await run["release"](keys=base, args=["a", e1]) == b"ok"
            e2 = await acquire("b", e1)
            assert e2 > e1
            outcomes = []
            for step in order:
                if step == "result":
                    outcomes.append(await run["result"](
                        keys=[*base, act, reply], args=["a", e1, gid, b"{}"]))
                else:
                    outcomes.append((await run["interrupt"](keys=[*base, act], args=[]))[0])
            assert outcomes.count(b"ok") + outcomes.count(b"interrupted") == 1, outcomes
            await run["release"](keys=base, args=["b", e2])
        # a fenced real (not the holder at that epoch) can neither claim nor answer
        e3 = await acquire("c", 0)
        gid = f"{'1' * 12}.x"
        act, reply = keys.act(gid), keys.reply("1" * 12)
        await run["enqueue"](keys=[*base, act, reply],
                             args=[gid, 5000, Action(gid, "hold", "c1", {}, 5.0).to_json()])
        assert await run["claim"](keys=[*base, act, reply], args=["c", e3, gid, "0-1"]) \
            == b"not_real"  # not registered (ready) yet
        await run["ready"](keys=base, args=["c", e3])
        assert await run["claim"](keys=[*base, act, reply], args=["a", e3, gid, "0-1"]) \
            == b"not_real"
        assert await run["claim"](keys=[*base, act, reply], args=["c", e3 - 1, gid, "0-1"]) \
            == b"not_real"
    finally:
        await client.aclose()


async def test_every_key_of_a_group_is_in_one_cluster_slot(group: Group) -> None:
    a, la = await group.join("a")
    await wait_until(lambda: la.role == "real", 5)
    b, _ = await group.join("b")
    a.publish({"calls": []})
    await b.request("hold", "c1", {})
    prefix = GroupKeys.for_group(group.name).prefix
    client = Redis.from_url(group.url)
    try:
        names = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    finally:
        await client.aclose()
    kinds = {n.decode().split(":")[2] for n in names}
    assert {"lease", "epoch", "events", "members", "alive", "snapshot", "actions", "act",
            "reply"} <= kinds
    assert len({key_slot(n) for n in names}) == 1


# -- Redis trouble -------------------------------------------------------------------------


async def test_a_partitioned_real_steps_down_before_anyone_can_take_over(
    group: Group, shared_redis: RedisServer
) -> None:
    proxy = await TcpProxy(shared_redis.host, shared_redis.port).start()
    try:
        a, la = await group.join("a", url=proxy.url)
        await wait_until(lambda: la.role == "real", 5)
        _, lb = await group.join("b")
        c, lc = await group.join("c")
        la.hold_actions = True
        pending = asyncio.ensure_future(c.request("hold", "c1", {}))
        await wait_until(lambda: la.held, 5, message="the real accepted the action")
        cut = time.monotonic()
        proxy.block()
        await wait_until(lambda: la.role == "dummy", 3, message="a stepped down")
        await wait_until(lambda: lb.role == "real" or lc.role == "real", 3, message="successor")
        stepped_down = la.roles[-1][3]
        successor = lb if lb.role == "real" else lc
        promoted = successor.roles[-1][3]
        t = a.transport.options.heartbeat_timeout  # the lease ttl
        # a stopped at its renew deadline (2/3 ttl after its last renewal, which came at most
        # 1/3 ttl before the cut); nobody took over before the lease expired in Redis
        assert stepped_down - cut <= t * 2 / 3 + 0.15
        assert promoted - stepped_down >= t / 3 - 0.15
        with pytest.raises(ActionInterruptedError):
            await pending  # accepted by a, which lost the lease: never re-run
        late = la.held[0]
        la.answer(*late)  # the deposed real's late answer is fenced (nobody gets it)
        assert [n for n in group.reals()] == [successor.name]
        proxy.unblock()
        # a comes back as a dummy of the same group; one real all along
        await wait_until(lambda: a.connected and a.view.real_id == successor.name, 10,
                         message="a rejoined")
        assert group.reals() == [successor.name]
        assert await a.request("hold", "c2", {}) == {"ran": "hold", "by": successor.name}
    finally:
        await proxy.close()


async def test_redis_restart_keeps_the_real_and_its_registration(tmp_path: Path) -> None:
    server = started_redis(tmp_path / "redis")
    # a 3 s lease (renew deadline 2 s): the restart must fit in the renew deadline even on a
    # loaded machine, or the real rightly steps down
    g = Group(server.url, HubOptions(heartbeat_interval=0.1, heartbeat_timeout=3.0))
    try:
        for name in "abc":
            await g.join(name)
        name = await first_real(g, ["a", "b", "c"], timeout=8)
        real, lr, _ = next(x for x in g.members if x[1].name == name)
        others = [x for x in g.members if x[1].name != name]
        epoch, seen = real.epoch, {lis.name: len(lis.roles) for _, lis, _ in g.members}
        server.restart()  # empty data set: the lease, members and epoch counter are gone
        # the real re-claims at a higher epoch (adopted, no new registration); the dummies,
        # refused a new lease while Redis is younger than a lease ttl, stay dummies
        await wait_until(lambda: real.epoch > epoch and all(m.connected for m, _, _ in g.members),
                         10, message="group back")
        assert [r[:2] for r in lr.roles[seen[name]:]] == [("real", "real")]  # adopted
        assert all(len(lis.roles) == seen[lis.name] or lis.role == "dummy" for _, lis, _ in others)
        assert g.reals() == [name]
        infos = await wait_until(lambda: _three(others[0][0]), 5, message="membership rebuilt")
        assert [m.member_id for m in infos if m.role == "real"] == [name]
        assert await others[1][0].request("hold", "c1", {}) == {"ran": "hold", "by": name}
    finally:
        await g.close()
        server.stop()


async def _three(member: GroupMember) -> Any:
    infos = await member.members()
    return infos if len(infos) == 3 else None


async def test_a_dead_redis_leaves_the_real_stepping_down_at_its_deadline(
    tmp_path: Path,
) -> None:
    server = started_redis(tmp_path / "redis")
    g = Group(server.url)
    try:
        a, la = await g.join("a")
        await wait_until(lambda: la.role == "real", 5)
        link = a._token.link if a._token else None
        assert isinstance(link, RedisLink)
        stopped = time.monotonic()
        server.stop()
        await wait_until(lambda: la.role == "dummy", 3, message="a stepped down")
        down_after = la.roles[-1][3] - stopped
        assert down_after <= OPTIONS.heartbeat_timeout * 2 / 3 + 0.1
        # meanwhile the member keeps trying (backoff) and finds the group again
        server.start()
        await wait_until(lambda: la.role == "real" and a.connected, 10, message="real again")
    finally:
        await g.close()
        with contextlib.suppress(Exception):
            server.stop()


def test_bad_urls_are_refused_at_once() -> None:
    from webphone.shared.transports.base import GroupTransportError

    with pytest.raises(GroupTransportError):
        RedisTransport("http://nope", OPTIONS)
    wait_until_sync(lambda: True, 0.1)
