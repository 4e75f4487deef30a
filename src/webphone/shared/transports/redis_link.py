"""A member's link to its group over Redis: `RedisLink`, the member's local stand-in for a hub
(read `webphone.shared.transports.redis` first: keys, scripts, frames, timings, Redis trouble).

One state machine per member connection, kept in one class, longer than most (~1,000 lines),
because its timers, tasks and Redis connections share one life cycle: supervision (a session per
Redis connection, reconnecting while a held lease is valid), joining, the lease (renewals, the
renew deadline, stepping down), candidates (acquiring when the record expires or is handed
over), the worker (member frames and our own operations, in order), the events stream. Actions
are `redis_actions`, the continuity plane `redis_plane`; both reach the link through a small
protocol declared beside them, as the link reaches its transport through `LinkOwner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import secrets
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from webphone._backoff import backoff
from webphone.errors import GroupProtocolError
from webphone.shared.lease import Candidate, HolderState, LeaseHolder, LeaseTimings, acknowledged
from webphone.shared.lease import fresh_acquire_allowed as _fresh_ok
from webphone.shared.protocol import (
    MEMBER_FRAMES,
    PROTOCOL_VERSION,
    Action,
    ActionResult,
    Continuity,
    Delegate,
    DelegateResult,
    Error,
    Frame,
    Heartbeat,
    Hello,
    Leave,
    Members,
    MembersQuery,
    Registered,
    Released,
    Role,
    RoleChange,
    Snapshot,
    Welcome,
    decode_frame,
)
from webphone.shared.transports.base import (
    FrameHandler,
    GroupLink,
    GroupLinkClosed,
    HubOptions,
    LostHandler,
)
from webphone.shared.transports.redis_actions import Op, RedisActions
from webphone.shared.transports.redis_plane import PLANE_SCRIPTS, RedisPlane
from webphone.shared.transports.redis_scripts import (
    BLOCK_MS,
    INBOX_PUSH,
    SCRIPTS,
    GroupKeys,
    LeaseView,
    member_infos,
    streams,
    text,
)
from webphone.shared.transports.redis_topology import command, redact
from webphone.shared.transports.redis_wire import REDIS_ERRORS, Wire, follow, open_wire

__all__ = ["REDIS_ERRORS", "LinkOwner", "RedisLink"]

log = logging.getLogger("webphone.shared.redis")




#: each script's SHA1 (EVALSHA) and text (EVAL, when Redis does not know it yet)
_SCRIPTS: dict[str, tuple[str, str]] = {
    name: (hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest(), body)
    for name, body in {**SCRIPTS, **PLANE_SCRIPTS}.items()}


class LinkOwner(Protocol):
    """What a `RedisLink` needs of its transport (`RedisTransport`)."""

    options: HubOptions
    timings: LeaseTimings
    max_members: int
    replica_acks: int
    restart_grace: bool

    @property
    def failover(self) -> bool:
        """True when the group's node can change (the link checks ROLE)."""

    def keys(self, group: str) -> GroupKeys:
        """The keys of `group`."""

    def client(self, socket_timeout: float | None, *, one_server: bool = False,
               url: str | None = None) -> Redis:
        """A new redis-py client (see `RedisTransport.client`)."""

    async def link_node(self, group: str) -> str | None:
        """The URL of the node to connect to (None: the client factory decides)."""

    def holder(self, group: str, hello: Hello) -> LeaseHolder:
        """The member's lease, which outlives any one link."""

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a clean-up task until it is done (`aclose` waits for it)."""

# -- the link ----------------------------------------------------------------------------------


class _Refused(Exception):
    """The group refused our hello (duplicate member id, full)."""


class RedisLink(GroupLink):
    """One member's stand-in for a hub (see the module docstring)."""

    def __init__(self, transport: LinkOwner, group: str, on_frame: FrameHandler,
                 on_lost: LostHandler) -> None:
        self._t = transport
        self.group = group
        self.keys = transport.keys(group)
        self._base = self.keys.base()
        self.timings = transport.timings
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self.nonce = secrets.token_hex(6)
        self.reply_key = self.keys.reply(self.nonce)
        self.peer_pid = None
        # link state
        self._inbox: deque[Frame | Op] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._lost = False
        self._recovering = False
        self._hello: Hello | None = None
        self._holder: LeaseHolder | None = None
        self._candidate = Candidate(self.timings)
        self.mode = "joining"  # dummy | real | handing | unregistering | released | left
        self._ready = False
        self.epoch = 0
        self._announced = 0  # newest epoch we told the member about
        self._info: dict[str, Any] = {}
        self._server_offset = 0.0  # server seconds - loop seconds
        self._server_started: float | None = None  # on the loop clock
        self._events_id = "0-0"
        self._reply_id = "0-0"
        self._snap_version = (0, 0)
        self._no_acquire_before = 0.0  # a real that stepped down lets the others try first
        self._handing_since = 0.0
        # timers and tasks
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._acquire_timer: asyncio.TimerHandle | None = None
        self._handover_timer: asyncio.TimerHandle | None = None
        self._lease_wake = asyncio.Event()
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._gen = 0  # session generation: loops of an earlier session stop
        self._failure: asyncio.Future[BaseException] | None = None
        self._cmd: Redis | None = None
        self._blk: Redis | None = None
        self._wire: Wire | None = None  # the hot commands (scripts, WAIT): `redis_wire`
        self._node: str | None = None  # the URL of the node that holds the group (last _open)
        self.plane = RedisPlane(self, self._loop)  # the continuity plane (redis_plane.py)
        self.actions = RedisActions(  # actions, both sides (redis_actions.py)
            self, self._loop, replica_acks=transport.replica_acks,
            retry_interval=self.timings.retry_interval,
            command_timeout=self.timings.command_timeout)
        self._supervisor = asyncio.create_task(self._supervise(), name="webphone-redis-link")

    # -- GroupLink ---------------------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        if self._closed or self._lost:
            raise GroupLinkClosed("the link to the group's Redis is closed")
        if isinstance(frame, Hello) and self._hello is None:
            self._hello = frame
            self._holder = self._t.holder(self.group, frame)
            self._arm_deadline()  # a real steps down in time even if Redis never answers
        if not self._inbox and (  # the worker is idle: the hot frames go out from here
                (type(frame) is Action and self.actions.enqueue_at_once(frame))
                or (type(frame) is ActionResult and self.actions.post_at_once(frame))):
            return
        self._inbox.append(frame)
        self._wake.set()

    def close(self) -> None:
        if self._closed:
            return
        was_lost = self._lost
        self._closed = True
        self._cancel_timers()
        self._supervisor.cancel()
        if not was_lost:
            self._t.track(asyncio.ensure_future(self._cleanup(leave=True)))

    def abandon(self) -> None:
        """Close without touching Redis (see `RedisTransport.recover_hung`)."""
        if self._closed:
            return
        self._closed = True
        self._cancel_timers()
        self._supervisor.cancel()
        self._t.track(asyncio.ensure_future(self._cleanup(leave=False)))

    @property
    def closed(self) -> bool:
        return self._closed or self._lost

    # -- supervision -------------------------------------------------------------------------

    async def _supervise(self) -> None:
        cap = self.timings.retry_interval  # 50 ms, then 100 ms doubling up to retry_interval
        delays = backoff(first=min(0.05, cap), initial=min(0.1, cap), cap=cap)
        while not self._closed and not self._lost:
            self._failure = self._loop.create_future()
            reason = ""
            try:
                await self._open()
                await self._session()
            except asyncio.CancelledError:
                await self._stop_session()
                raise
            except _Refused as exc:
                await self._stop_session()
                self._lose(str(exc))
                return
            except REDIS_ERRORS as exc:
                reason = f"Redis: {type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug or garbage in Redis: same as a lost link
                log.exception("group link to Redis failed")
                reason = f"{type(exc).__name__}: {exc}"
            await self._stop_session()
            await self._drop_clients()
            if self._closed or self._lost:
                return
            if not self._holding_on():
                self._lose(reason)
                return
            if not self._recovering:
                log.warning("Redis failed (%s); keeping the lease until %.2f s from now while "
                            "reconnecting", reason, self._valid_for())
            self._recovering = True
            await asyncio.sleep(next(delays))

    def _holding_on(self) -> bool:
        """Keep the link through a Redis failure while our lease is valid (the deadline timer
        then tells the member to step down before the link is reported lost), or while a
        handover runs (its timer releases the member)."""
        if self.mode in ("handing", "unregistering"):
            return True
        holder = self._holder
        if holder is None or not holder.valid(self._loop.time()):
            return False
        return self.mode == "real" or (self.mode == "joining" and self._hello is not None
                                       and self._hello.real)

    def _valid_for(self) -> float:
        holder = self._holder
        return max(0.0, holder.valid_until - self._loop.time()) if holder else 0.0

    async def _open(self) -> None:
        if self._cmd is None:
            self._node = await self._t.link_node(self.group)
            self._cmd = self._t.client(self.timings.command_timeout, one_server=True,
                                       url=self._node)
            self._blk = self._t.client(BLOCK_MS / 1000 + self.timings.command_timeout,
                                       url=self._node)
            self._wire = await open_wire(self._cmd, timeout=self.timings.command_timeout)
            db = self._cmd.connection_pool.connection_kwargs.get("db", 0)
            self.actions.channel = self.keys.actions_channel(int(db or 0))
            if self._t.failover:
                # a sentinel's answer may be a moment old: refuse a node that is a replica
                role = await command(self._cmd, "ROLE")
                if text(role[0]) != "master":
                    raise redis_errors.ConnectionError(
                        f"{redact(self._node or '')} is a {text(role[0])}, not the primary")
        self._server_started = await self._uptime()

    async def _uptime(self) -> float | None:
        """When the server started, on our clock (INFO uptime_in_seconds is whole seconds, so
        this errs late, the safe side); None when restart_grace is off."""
        if not self._t.restart_grace:
            return None
        assert self._cmd is not None
        now = self._loop.time()
        try:
            info = await self._cmd.info("server")
        except redis_errors.ResponseError:  # INFO not allowed (ACL): assume it just started
            return self._server_started if self._server_started is not None else now
        return now - float(info.get("uptime_in_seconds", 0))

    def _fresh_ok(self) -> bool:
        if not self._t.restart_grace:
            return True
        return _fresh_ok(self._loop.time(), self._server_started, self.timings.ttl)

    async def _drop_clients(self) -> None:
        clients, self._cmd, self._blk = (self._cmd, self._blk), None, None
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), 1.0)

    async def _session(self) -> None:
        assert self._failure is not None
        if self.mode == "joining":
            await self._join()
        else:
            await self._rejoin()
            await self.plane.fetch_continuity()  # its event may have passed while Redis was away
        if self._lost or self._closed:
            return
        self._recovering = False
        for coro in (self._worker(), self._reader(), self._inbox_loop(), self._lease_loop()):
            self._spawn(coro)
        if self.mode == "real" and self._ready:
            self.actions.start_consumer()
        raise await self._failure

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(self._guard(coro))
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)
        return task

    async def _guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._failure is not None and not self._failure.done():
                self._failure.set_result(exc)

    async def _stop_session(self) -> None:
        # Cancel until done: on Python 3.11 asyncio.wait_for (inside redis-py's command send)
        # returns the result instead of raising when a cancellation races a finished write,
        # so a single cancel() can be swallowed. The loops also stop on the generation.
        self._gen += 1
        self.actions.session_stopped()
        pending = set(self._session_tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.05)

    def _lose(self, reason: str) -> None:
        if self._closed or self._lost:
            return
        self._lost = True
        self._cancel_timers()
        if asyncio.current_task() is not self._supervisor:
            self._supervisor.cancel()
        self._t.track(asyncio.ensure_future(self._cleanup(leave=False)))
        log.info("group link to Redis lost: %s", reason)
        self._on_lost(reason)

    async def _cleanup(self, *, leave: bool) -> None:
        """After close (leave=True: forget our membership, give a held lease back) or loss."""
        with contextlib.suppress(BaseException):
            await self._supervisor
        await self._stop_session()
        hello, holder = self._hello, self._holder
        if leave and hello is not None:
            # A fresh client, never the session's: stopping the session may have cancelled a
            # command mid-send (the member's own LEAVE, when it closes right after leave()),
            # and redis-py then drops that connection, which the one-server client refuses to
            # re-open. LEAVE and RELEASE compare-and-delete: they need not reach the very server
            # instance the session checked (the restart grace is about granting, not this).
            await self._drop_clients()
            try:
                await self._open_quietly()
                await asyncio.wait_for(self._run("leave", [], [hello.member_id, self._ident(),
                                                         self.nonce]),
                                       1.0)
                if holder is not None and holder.state in (
                        HolderState.HELD, HolderState.EXPIRED, HolderState.PENDING):
                    await asyncio.wait_for(self._release(holder.epoch), 1.0)
            except (redis_errors.RedisError, OSError, TimeoutError, asyncio.CancelledError):
                pass
        if holder is not None and holder.state is not HolderState.HELD:
            holder.released()
        await self._drop_clients()

    async def _open_quietly(self) -> None:
        self._cmd = self._t.client(self.timings.command_timeout, url=self._node)
        self._wire = await open_wire(self._cmd, timeout=self.timings.command_timeout)

    def _cancel_timers(self) -> None:
        for timer in (self._deadline_timer, self._acquire_timer, self._handover_timer):
            if timer is not None:
                timer.cancel()
        self.actions.cancel_timers()

    # -- Redis helpers -----------------------------------------------------------------------

    async def _run(self, name: str, extra_keys: list[str], args: list[Any]) -> Any:
        sha, body = _SCRIPTS[name]
        keys = self._base + extra_keys
        wire = self._wire
        assert wire is not None
        try:
            return await wire.command("EVALSHA", sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:  # new to this Redis (or it restarted): EVAL loads it
            return await wire.command("EVAL", body, len(keys), *keys, *args)

    async def _run_acked(self, name: str, extra_keys: list[str],
                         args: list[Any]) -> tuple[Any, bool]:
        """`_run`, then the acknowledgement rule (`webphone.shared.lease.acknowledged`): True
        when enough replicas hold the script's writes. ``WAIT`` goes over the same connection
        (it counts that connection's writes) as a second command: one more round trip, which
        returns as soon as the replicas acknowledged (at most `ack_timeout` later)."""
        out = await self._run(name, extra_keys, args)
        return out, await self._wait_acks(name)

    async def _wait_acks(self, what: str = "claim") -> bool:
        required = self._t.replica_acks
        if required <= 0:
            return True
        ms = max(1, int(self.timings.ack_timeout * 1000))
        assert self._wire is not None  # (WAIT counts the writes of the scripts' connection)
        acks = int(await self._wire.command("WAIT", required, ms))
        if not acknowledged(acks, required):
            log.info("%s: %d of %d replicas acknowledged in %d ms", what, acks, required, ms)
            return False
        return True

    def _deliver(self, frame: Frame) -> None:
        if self._closed or self._lost:
            return
        try:
            self._on_frame(frame)
        except Exception:
            log.exception("the member failed to handle a %r frame", frame.TYPE)

    def _ident(self) -> str:
        hello = self._hello
        assert hello is not None
        return f"{hello.host}|{hello.pid}|{hello.started_at!r}"

    def _note_time(self, lease: LeaseView) -> None:
        self._server_offset = lease.now_ms / 1000 - self._loop.time()

    def _member_info(self, since: float | None = None) -> str:
        if since is not None:
            self._info["since"] = int((since + self._server_offset) * 1000)
        return json.dumps(self._info, separators=(",", ":"))

    # -- what the continuity plane uses (`redis_plane.PlaneHost`) -----------------------------

    async def run_script(self, name: str, extra_keys: list[str], args: list[Any]) -> Any:
        """Run one of the group's scripts."""
        return await self._run(name, extra_keys, args)

    def client(self) -> Redis:
        """The command connection."""
        return self._cmd_client()

    def deliver(self, frame: Frame) -> None:
        """Hand `frame` to the member."""
        self._deliver(frame)

    def decode(self, raw: Any, kind: type[Frame]) -> Frame | None:
        """A frame read from Redis, or None if malformed."""
        return self._decode(raw, kind)

    def member_id(self) -> str:
        """Our member id."""
        assert self._hello is not None
        return self._hello.member_id

    def real_epoch(self) -> int | None:
        """The epoch we hold the lease at, or None."""
        holder = self._holder
        return holder.epoch if self.mode == "real" and holder is not None else None

    async def wait_acks(self, what: str) -> bool:
        """True when enough replicas hold our writes (WAIT, as after a lease grant)."""
        return await self._wait_acks(what)

    # -- and what the actions use (`redis_actions.ActionsHost`) -------------------------------

    async def run_acked(self, name: str, extra_keys: list[str],
                        args: list[Any]) -> tuple[Any, bool]:
        """Run a script, then the acknowledgement rule (see `_run_acked`)."""
        return await self._run_acked(name, extra_keys, args)

    def script_sha(self, name: str) -> str:
        """The SHA1 of a script (EVALSHA)."""
        return _SCRIPTS[name][0]

    def wire(self) -> Wire | None:
        """The hot command connection, if open."""
        return self._wire

    def reader(self) -> Redis:
        """The connection pool for stream reads."""
        assert self._blk is not None
        return self._blk

    def serving(self) -> int | None:
        """Our epoch while we are the ready real."""
        holder = self._holder
        return holder.epoch if self.mode == "real" and self._ready and holder else None

    def lease_valid(self) -> bool:
        """True while we are the real and our lease is valid."""
        holder = self._holder
        return self.mode == "real" and holder is not None and holder.valid(self._loop.time())

    def queue(self, item: Frame | Op) -> None:
        """Give `item` to the worker."""
        self._queue(item)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run `coro` in this session (None, and closed, if none runs)."""
        if self._failure is None or self._failure.done():
            coro.close()
            return None
        return self._spawn(coro)

    # -- joining -----------------------------------------------------------------------------

    async def _join(self) -> None:
        while not self._inbox:
            self._wake.clear()
            await self._wake.wait()
        hello = self._inbox[0]
        if not isinstance(hello, Hello):
            name = hello.TYPE if isinstance(hello, Frame) else "?"
            self._deliver(Error("protocol", f"expected hello, got {name!r}"))
            raise _Refused(f"expected hello, got {name!r}")
        if hello.protocol < PROTOCOL_VERSION:
            message = f"protocol {hello.protocol} is older than {PROTOCOL_VERSION}"
            self._deliver(Error("protocol", message))
            raise _Refused(message)
        holder = self._holder
        assert holder is not None
        now = self._loop.time()
        self._check_deadline()
        reclaim = hello.epoch if (hello.real and holder.valid(now)
                                  and holder.epoch == hello.epoch) else 0
        self._info = {"id": hello.member_id, "pid": hello.pid, "host": hello.host,
                      "ident": self._ident(), "link": self.nonce,
                      "inbox": self.reply_key}
        out, acked = await self._run_acked("join", [], [
            hello.member_id, self._member_info(), self._member_ttl_ms(), self._ident(),
            self._t.max_members, hello.epoch, reclaim, int(self._fresh_ok()),
            self.timings.ttl_ms, 1])
        status = text(out[0])
        if status == "duplicate":
            self._deliver(Error("duplicate_member",
                                f"member id {hello.member_id!r} is already in the group"))
            raise _Refused("duplicate member id")
        if status == "full":
            self._deliver(Error("full", f"the group already has {self._t.max_members} members"))
            raise _Refused("group full")
        self._inbox.popleft()
        self._events_id = text(out[1])
        self._info = json.loads(out[3])
        lease = LeaseView.parse(out[4:11])
        self._note_time(lease)
        members = member_infos(lease, out[11:])
        decoded = self._decode(out[2], Snapshot) if out[2] else None
        snapshot = decoded if isinstance(decoded, Snapshot) else None
        if snapshot is not None:
            self._snap_version = snapshot.version
        self.epoch = max(self.epoch, lease.epoch, hello.epoch)
        role: Role
        if status == "real" and acked:
            self._became_holder(lease.epoch, now, ready=lease.ready)
            role = "real"
        elif status == "real":  # granted, not replicated: confirm it before acting (PENDING)
            holder.acquired(lease.epoch, now, acked=False)
            self.mode, role = "dummy", "dummy"
        else:
            if holder.state is HolderState.HELD:
                if lease.holder == hello.member_id and lease.epoch == holder.epoch:
                    self._queue(Op(kind="release", epoch=lease.epoch))  # we came back as a dummy
                holder.lost()  # (a stall, or refused): the record is not ours to use
            self.mode, role = "dummy", "dummy"
        self._announced = self.epoch
        self._deliver(Welcome(hello.member_id, role, self.epoch, lease.holder,
                              self._t.options.heartbeat_interval, snapshot, members))
        await self.plane.fetch_continuity()  # right after the welcome, as a hub sends it
        if self.mode == "dummy":
            self._schedule_acquire(lease)

    async def _rejoin(self) -> None:
        """Redis is back after a failure while we held the lease (or handed it over)."""
        assert self._hello is not None and self._holder is not None
        holder = self._holder
        self._check_deadline()
        if self._lost or self._closed:
            return
        out = await self._run("heartbeat", [self.reply_key], [
            self._hello.member_id, self._member_info(), self._member_ttl_ms()])
        lease = LeaseView.parse(out[2:9])
        self._note_time(lease)
        last = await self._cmd_client().xrevrange(self.keys.events, count=1)
        self._events_id = text(last[0][0]) if last else "0-0"
        now = self._loop.time()
        if self.mode == "real" and holder.valid(now):
            if lease.holder == self._hello.member_id and lease.epoch == holder.epoch:
                sent = now
                out, acked = await self._run_acked("renew", [], [lease.holder, holder.epoch,
                                                                 self.timings.ttl_ms])
                if text(out[0]) == "ok":
                    holder.renewed(holder.epoch, sent, acked=acked)
                    self._arm_deadline()
                    if self._ready:  # a failover may have lost the flag (not acknowledged)
                        await self._run("ready", [], [lease.holder, holder.epoch])
                    await self.actions.settle_claims(holder.epoch)
                    log.info("Redis is back: still the real at epoch %d", holder.epoch)
                    return
            elif lease.holder is None:
                await self._reclaim(holder)
                return
        self._on_lease(lease)

    async def _reclaim(self, holder: LeaseHolder) -> None:
        """Redis forgot our lease (restart) while it was valid: take it again, new epoch."""
        assert self._hello is not None
        sent = self._loop.time()
        out, acked = await self._run_acked("acquire", [], [self._hello.member_id, holder.epoch,
                                                           holder.epoch, 0, self.timings.ttl_ms])
        lease = LeaseView.parse(out[1:8])
        if text(out[0]) == "ok" and not acked:
            self._step_down(None)  # a re-claim the replicas do not hold: act on nothing
        elif text(out[0]) == "ok" and holder.valid(self._loop.time()):
            log.warning("Redis lost our lease (restart?): re-claimed at epoch %d", lease.epoch)
            self._became_holder(lease.epoch, sent, ready=True)
            self._deliver(RoleChange("real", lease.epoch, self._hello.member_id))
            self._announced = lease.epoch
        else:
            self._on_lease(lease)

    def _member_ttl_ms(self) -> int:
        return int(self._t.options.heartbeat_timeout * 1000)

    def _cmd_client(self) -> Redis:
        assert self._cmd is not None
        return self._cmd

    def _decode(self, raw: Any, kind: type[Frame]) -> Frame | None:
        try:
            frame = decode_frame(raw)
        except GroupProtocolError as exc:
            log.warning("ignoring a malformed %s from Redis: %s", kind.TYPE, exc)
            return None
        if not isinstance(frame, kind):
            log.warning("ignoring a %r frame where a %r was expected", frame.TYPE, kind.TYPE)
            return None
        return frame

    # -- the lease ---------------------------------------------------------------------------

    def _became_holder(self, epoch: int, sent_at: float, *, ready: bool) -> None:
        assert self._holder is not None
        self._holder.acquired(epoch, sent_at)
        self.mode, self._ready = "real", ready
        self.epoch = max(self.epoch, epoch)
        self._candidate.cancel()
        if self._acquire_timer is not None:
            self._acquire_timer.cancel()
        self._info.pop("since", None)
        self._arm_deadline()
        self._lease_wake.set()
        if ready:
            self.actions.start_consumer()

    def _arm_deadline(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        holder = self._holder
        when = holder.next_deadline() if holder is not None else None
        if when is not None and not self._closed and not self._lost:
            self._deadline_timer = self._loop.call_at(when, self._check_deadline)

    def _check_deadline(self) -> None:
        """The renew deadline: a holder that could not renew steps down, at once."""
        holder = self._holder
        if holder is None or not holder.check(self._loop.time()):
            self._arm_deadline()
            return
        if self.mode == "real":
            log.warning("could not renew the group lease (epoch %d) before its deadline: "
                        "stepping down", holder.epoch)
            self._step_down(None)
        elif self.mode == "joining" and self._hello is not None and self._hello.real:
            # a real reconnecting while Redis is unreachable: its lease ran out meanwhile
            self.epoch = max(self.epoch, self._hello.epoch)
            self._announced = self.epoch
            self._deliver(RoleChange("dummy", self.epoch, None))
        elif self.mode == "handing":
            self._release_member(holder.epoch)
        # "unregistering": the member's ping gets no echo now, so it will not unregister
        if self._recovering:
            self._lose("the lease expired while Redis was unreachable")

    def _step_down(self, lease: LeaseView | None) -> None:
        """We are not the real any more: tell the member at once (it fences its SIP client)."""
        holder = self._holder
        assert holder is not None and self._hello is not None
        old_epoch = holder.epoch
        holder.lost()
        self.mode, self._ready = "dummy", False
        self.actions.reign_ended()
        self.plane.reign_ended()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        me = self._hello.member_id
        real_id = lease.holder if lease is not None and lease.holder != me else None
        self.epoch = max(self.epoch, lease.epoch if lease is not None else 0)
        self._announced = self.epoch
        self._info["since"] = int((self._loop.time() + self._server_offset) * 1000)
        self._deliver(RoleChange("dummy", self.epoch, real_id))
        if not self._recovering and (lease is None or lease.holder == me):
            self._queue(Op(kind="release", epoch=old_epoch))  # let the others take over now
        # give the others the first chance (F4: a stepped-down real does not grab it back)
        self._no_acquire_before = self._loop.time() + self.timings.ttl
        self._arm_acquire(self._no_acquire_before)

    def _on_lease(self, lease: LeaseView) -> None:
        """React to the lease as Redis has it now (from a heartbeat, a renewal, an event)."""
        assert self._hello is not None
        self._note_time(lease)
        me = self._hello.member_id
        mine = lease.holder == me and self._holder is not None and \
            lease.epoch == self._holder.epoch
        if self.mode == "real" and not mine:
            self._step_down(lease)
        elif self.mode == "handing" and not mine:
            if lease.holder is None:  # expired or released before a successor registered
                self._release_member(self.epoch)
            elif self._holder is not None:  # the successor took it: wait for its "ready"
                self._holder.lost()
                if self._deadline_timer is not None:
                    self._deadline_timer.cancel()
        elif self.mode == "dummy":
            if lease.epoch > self._announced and lease.holder not in (None, me):
                self.epoch = max(self.epoch, lease.epoch)
                self._announced = self.epoch
                self._deliver(RoleChange("dummy", self.epoch, lease.holder))
            self._schedule_acquire(lease)
        self.actions.check_calls(lease.epoch if lease.holder is not None else 0)

    async def _lease_loop(self) -> None:
        gen = self._gen
        while gen == self._gen:
            holder = self._holder
            due = holder.next_renewal() if holder is not None else None
            if due is None or self.mode not in ("real", "handing", "unregistering"):
                self._lease_wake.clear()
                await self._lease_wake.wait()
                continue
            wait = due - self._loop.time()
            if wait > 0:
                self._lease_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lease_wake.wait(), wait)
                continue
            assert holder is not None and self._hello is not None
            epoch, sent = holder.epoch, self._loop.time()
            try:
                out, acked = await self._run_acked("renew", [], [self._hello.member_id, epoch,
                                                                 self.timings.ttl_ms])
            except REDIS_ERRORS:
                holder.renew_failed(self._loop.time())
                raise
            lease = LeaseView.parse(out[1:8])
            if text(out[0]) == "ok":
                holder.renewed(epoch, sent, acked=acked)
                self._note_time(lease)
                self._arm_deadline()
            elif holder.epoch == epoch:
                self._on_lease(lease)

    # -- candidates --------------------------------------------------------------------------

    def _schedule_acquire(self, lease: LeaseView) -> None:
        """A dummy tries to acquire when the record expires (PTTL) or at once if it is free or
        handed over, plus jitter; never before `_no_acquire_before`."""
        if self.mode != "dummy":
            return
        now = self._loop.time()
        holder = self._holder
        if (holder is not None and holder.state is HolderState.PENDING
                and lease.holder == self._hello_id() and lease.epoch == holder.epoch):
            confirm = holder.next_renewal()  # our grant, not acknowledged yet: confirm it
            self._arm_acquire(confirm if confirm is not None else now)
            return
        pttl: int | None
        if lease.holder is None:
            pttl = 0
            if not self._fresh_ok():  # a restarted Redis: the old real may re-claim first
                started = self._server_started if self._server_started is not None else now
                now = max(now, started + self.timings.ttl + 0.01)
        elif lease.state == "handing" and lease.holder != self._hello_id():
            pttl = 0
        else:
            pttl = lease.pttl_ms if lease.pttl_ms > 0 else self.timings.ttl_ms
        self._arm_acquire(self._candidate.observed(now, pttl, random.random()))

    def _arm_acquire(self, at: float) -> None:
        if self._acquire_timer is not None:
            self._acquire_timer.cancel()
        at = max(at, self._no_acquire_before)
        self._acquire_timer = self._loop.call_at(at, self._queue, Op(kind="acquire"))

    def _hello_id(self) -> str:
        return self._hello.member_id if self._hello else ""

    async def _acquire(self) -> None:
        if self.mode != "dummy" or self._hello is None or self._holder is None:
            return
        holder, sent = self._holder, self._loop.time()
        pending = holder.state is HolderState.PENDING
        if pending:  # confirm our unacknowledged grant: a renewal the replicas acknowledge
            out, acked = await self._run_acked("renew", [], [
                self._hello.member_id, holder.epoch, self.timings.ttl_ms])
        else:
            out, acked = await self._run_acked("acquire", [], [
                self._hello.member_id, self.epoch, 0, int(self._fresh_ok()),
                self.timings.ttl_ms])
        lease = LeaseView.parse(out[1:8])
        self._note_time(lease)
        if text(out[0]) != "ok":
            if pending:
                holder.lost()
            self._on_lease(lease)
            return
        if not acked:
            if pending:
                holder.renewed(holder.epoch, sent, acked=False)
            else:
                holder.acquired(lease.epoch, sent, acked=False)
            self.epoch = max(self.epoch, lease.epoch)
            self._schedule_acquire(lease)
            return
        if self.mode != "dummy" or self._closed:  # left meanwhile: give it back at once
            await self._release(lease.epoch)
            return
        log.info("acquired the group lease at epoch %d", lease.epoch)
        self._became_holder(lease.epoch, sent, ready=False)
        self._announced = lease.epoch
        self._deliver(RoleChange("real", lease.epoch, self._hello.member_id))

    async def _release(self, epoch: int) -> None:
        if self._hello is not None:
            await self._run("release", [], [self._hello.member_id, epoch])

    # -- the worker: member frames and our own operations, in order ------------------------

    def _queue(self, op: Frame | Op) -> None:
        if not self._closed and not self._lost:
            self._inbox.append(op)
            self._wake.set()

    async def _worker(self) -> None:
        gen = self._gen
        while gen == self._gen:
            while not self._inbox:
                self._wake.clear()
                await self._wake.wait()
            item = self._inbox[0]
            self._check_deadline()
            await self._handle(item)  # on failure the item stays first: retried after recovery
            if self._inbox and self._inbox[0] is item:
                self._inbox.popleft()

    async def _handle(self, item: Frame | Op) -> None:
        if isinstance(item, Op):
            if item.kind == "acquire":
                await self._acquire()
            elif item.kind == "expire":
                await self.actions.expire(item.arg)
            elif item.kind == "interrupt":
                await self.actions.interrupt(item.arg)
            elif item.kind == "release":
                await self._release(item.epoch)
            elif item.kind == "continuity":
                await self.plane.fetch_continuity()
            return
        if type(item) not in MEMBER_FRAMES or isinstance(item, Hello):
            log.warning("dropping a %r frame from the member", item.TYPE)
        elif isinstance(item, Heartbeat):
            await self._heartbeat()
        elif isinstance(item, Snapshot):
            await self._publish(item)
        elif isinstance(item, Action):
            await self.actions.enqueue(item)
        elif isinstance(item, ActionResult):
            await self.actions.post_result(item)
        elif isinstance(item, Registered):
            await self._registered(item)
        elif isinstance(item, Delegate | DelegateResult | Continuity):
            await self.plane.handle(item)
        elif isinstance(item, Leave):
            await self._leave()
        elif isinstance(item, MembersQuery):
            out = await self._run("members", [], [])
            lease = LeaseView.parse(out[:7])
            self._deliver(Members(member_infos(lease, out[7:])))

    async def _heartbeat(self) -> None:
        assert self._hello is not None
        if self.mode == "left":  # HEARTBEAT would add the member that just left back again
            self._deliver(Heartbeat())
            return
        out = await self._run("heartbeat", [self.reply_key], [
            self._hello.member_id, self._member_info(), self._member_ttl_ms()])
        version = (int(out[0]), int(out[1]))
        lease = LeaseView.parse(out[2:9])
        self._on_lease(lease)
        if self.mode == "real":
            await self.plane.watch_members()
        if self.mode == "dummy" and version > self._snap_version:
            await self._fetch_snapshot()
        if (self.mode == "handing" and lease.holder == self._hello.member_id
                and self._loop.time() - self._handing_since > self._t.options.heartbeat_timeout):
            await self._hand_over_again(lease.epoch)
        if self.mode == "unregistering" and not (
                self._holder is not None and self._holder.valid(self._loop.time())
                and lease.holder == self._hello.member_id):
            return  # no echo: the member must not unregister (someone may take over)
        self._deliver(Heartbeat())

    async def _fetch_snapshot(self) -> None:
        raw = await self._cmd_client().hget(f"{self.keys.prefix}:snapshot", "frame")
        snapshot = self._decode(raw, Snapshot) if raw else None
        if isinstance(snapshot, Snapshot) and snapshot.version > self._snap_version:
            self._snap_version = snapshot.version
            self._deliver(snapshot)

    async def _publish(self, snap: Snapshot) -> None:
        assert self._hello is not None
        if self.mode not in ("real", "handing"):
            return
        result = text(await self._run("publish", [], [
            snap.epoch, snap.seq, snap.to_json(), self._hello.member_id]))
        if result == "ok":
            self._snap_version = max(self._snap_version, snap.version)
        elif result == "fenced":
            log.info("snapshot at epoch %d refused: not the holder of that epoch", snap.epoch)

    async def _registered(self, frame: Registered) -> None:
        assert self._hello is not None
        if self.mode != "real" or self._holder is None or frame.epoch != self._holder.epoch:
            return
        if text(await self._run("ready", [], [self._hello.member_id, frame.epoch])) == "ok":
            self._ready = True
            self.actions.start_consumer()

    async def _leave(self) -> None:
        assert self._hello is not None and self._holder is not None
        if self.mode == "real":
            epoch = self._holder.epoch
            result = text(await self._run("handover", [], [self._hello.member_id, epoch]))
            self.actions.stop_consumer()
            if result == "alone":
                self.mode = "unregistering"
                self._deliver(Released(epoch, True))
            elif result == "handing":
                self.mode = "handing"
                self._handing_since = self._loop.time()
                self._deliver(RoleChange("handing_over", epoch, self._hello.member_id))
                self._handover_timer = self._loop.call_later(
                    self._t.options.handover_timeout, self._release_member, epoch)
            else:
                self._step_down(None)
            return
        if self.mode == "dummy":
            self.mode = "left"
            self._candidate.cancel()
            if self._acquire_timer is not None:
                self._acquire_timer.cancel()
            await self._run("leave", [], [self._hello.member_id, self._ident(), self.nonce])

    async def _hand_over_again(self, epoch: int) -> None:
        """Nobody took over within a heartbeat timeout: if the others have all gone (crashed
        members drop out of the membership after it), we are the last and unregister."""
        assert self._hello is not None
        self._handing_since = self._loop.time()
        result = text(await self._run("handover", [], [self._hello.member_id, epoch]))
        if result == "alone" and self.mode == "handing":
            self.mode = "unregistering"
            if self._handover_timer is not None:
                self._handover_timer.cancel()
            self._deliver(Released(epoch, True))

    def _release_member(self, epoch: int) -> None:
        """A handover ended (successor registered, or timed out): the old real may close."""
        if self.mode != "handing":
            return
        self.mode = "released"
        if self._handover_timer is not None:
            self._handover_timer.cancel()
        # a lease still held (the handover timed out) is given back when the member closes
        self._deliver(Released(max(epoch, self.epoch), False))

    # -- the reader: events and our inbox ----------------------------------------------------

    async def _reader(self) -> None:
        assert self._blk is not None
        gen = self._gen
        while gen == self._gen:
            resp: Any = await self._blk.xread({self.keys.events: self._events_id},
                                              count=64, block=BLOCK_MS)
            for _stream, entries in streams(resp):
                for entry_id, fields in entries:
                    self._events_id = text(entry_id)
                    self._on_event(fields)

    async def _inbox_loop(self) -> None:
        """Our inbox: action results and the plane's delegates, pushed as they are written
        (each handled from the push's ``data_received``)."""
        def on_entry(entry_id: str, fields: dict[bytes, bytes]) -> bool:
            self._reply_id = entry_id
            self._on_reply(fields)
            return True

        assert self._blk is not None
        await follow(self._blk, self.reply_key, self.reply_key, INBOX_PUSH, self._reply_id,
                     on_entry, timeout=self.timings.command_timeout)

    def _on_event(self, fields: dict[Any, Any]) -> None:
        kind = text(fields.get(b"e", b""))
        epoch = int(text(fields.get(b"n", b"0")) or 0)
        holder = text(fields.get(b"h", b""))
        me = self._hello_id()
        if kind == "snapshot":
            snap = self._decode(fields.get(b"d", b""), Snapshot)
            if isinstance(snap, Snapshot) and snap.version > self._snap_version:
                self._snap_version = snap.version
                if self.mode == "dummy":
                    self._deliver(snap)
        elif kind == "lease" and holder != me:
            if self.mode == "real" and self._holder is not None and epoch > self._holder.epoch:
                self._step_down(LeaseView(holder, epoch, "real", False, -1, 0, 0))
            elif self.mode == "dummy" and epoch > self._announced:
                self.epoch = max(self.epoch, epoch)
                self._announced = self.epoch
                self._deliver(RoleChange("dummy", self.epoch, holder))
                self._arm_acquire(self._loop.time() + self.timings.ttl)  # refined by heartbeats
        elif kind == "ready" and self.mode == "handing" and holder != me:
            self.epoch = max(self.epoch, epoch)
            self._release_member(epoch)
        elif kind == "continuity" and holder != me:
            self._queue(Op(kind="continuity"))
        elif kind in ("free", "handover") and holder != me and self.mode == "dummy":
            self._arm_acquire(self._loop.time() + random.random() * self.timings.jitter)
        if kind in ("lease", "free"):
            self.actions.check_calls(epoch if kind == "lease" else 0)

    def _on_reply(self, fields: dict[Any, Any]) -> None:
        if not self.plane.on_reply(fields):
            self.actions.on_result(fields)
