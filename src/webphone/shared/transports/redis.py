"""Groups across hosts over Redis: leadership by lease, fencing epochs, no hub process.

``SharedWebPhone(sip_info, hub="redis://host:6379/0")`` (or ``rediss://``, ``unix://``). There
is no central process: `RedisTransport.connect()` returns a `RedisLink`, the member's local
stand-in for a hub. It speaks the hub's frames to the member (`webphone.shared.protocol`) and
Redis to the group, following the rules of `webphone.shared.lease` (read its docstring first).

Keys. Every key of a group shares one hash tag, ``{<sha256(group)[:16]>}``, so a Redis Cluster
keeps them in one slot (scripts and multi-stream reads need that)::

    webphone:{tag}:lease      hash   holder, epoch, state (real|handing|unregistering), ready,
                                     since, prev; PEXPIRE ttl: the lease
    webphone:{tag}:epoch      string the epoch counter (INCR on every acquisition, never lower
                                     than an epoch a member reports): the fencing token
    webphone:{tag}:members    hash   member id -> JSON (pid, host, joined, since, ident, link:
                                     the link that wrote it, the only one whose LEAVE counts)
    webphone:{tag}:alive      zset   member id -> expiry (server ms): heartbeats
    webphone:{tag}:snapshot   hash   epoch, seq, frame: the latest snapshot, for late joiners
    webphone:{tag}:events     stream lease / ready / handover / free / snapshot (MAXLEN ~256)
    webphone:{tag}:actions    stream actions waiting for the real (MAXLEN ~10000)
    webphone:{tag}:act:<id>   hash   one action: queued -> claimed(epoch) -> done | interrupted,
                                     or queued -> expired. The exactly-once marker.
    webphone:{tag}:reply:<n>  stream one link's inbox: result entries (and the plane's)

Channels (pub/sub): ``{tag}:actions:db<N>`` and each inbox's name. The scripts that add an entry
to the actions stream or to an inbox also PUBLISH it there, whole (`redis_scripts.push_entry`):
the ready real and each link are woken by the entry itself, on a connection that only waits
(`RedisLink._entries`), not by an XREAD sent again per entry. The streams stay the record: a
reader reads what they hold when it subscribes, and after a broken connection.

Every change is a Lua script (atomic; server time from TIME, never a member's clock). The
member's frames map onto them:

  =================  ===============================================================
  member sends       the link does
  =================  ===============================================================
  ``hello``          JOIN: add to members/alive; if the lease is free, acquire it (new epoch)
                     and answer ``welcome(real)``. ``hello(real=true, epoch=E)`` re-claims
                     (new epoch, still registered) only if the record names us at E or is
                     gone, and only while our own lease validity lasts.
  ``heartbeat``      HEARTBEAT: refresh membership, read the lease; a real that finds another
                     holder steps down first; then echo. A dummy schedules its next acquire
                     attempt for the record's expiry (PTTL) + jitter.
  ``snapshot``       PUBLISH: only from the holder at that epoch, only if (epoch, seq) is newer;
                     stored and appended to the events stream (the fan-out)
  ``action``         ENQUEUE: ``act:<id>`` = queued with a deadline (SET NX semantics), XADD to
                     the actions stream. At the deadline, EXPIRE: queued -> NoRealPhoneError.
  (real reads)       CLAIM: only the ready holder of the current epoch; queued -> claimed(E);
                     then the action runs, once. (The caller is not woken for that: it learns
                     of the claim from EXPIRE at the deadline or INTERRUPT on a lease change.)
  ``action_result``  RESULT: only from the holder at E for an action claimed at E -> done, to the
                     caller's inbox. A caller that sees the lease leave epoch E runs INTERRUPT:
                     claimed(E) and E gone -> interrupted (ActionInterruptedError). RESULT and
                     INTERRUPT decide on the same key, atomically: exactly one outcome.
  ``registered``     READY: the holder registered; ``ready`` event (make-before-break)
  ``leave``          dummy: LEAVE (forget membership). real: HANDOVER -> state "handing" and a
                     ``handover`` event; a dummy takes the lease over (new epoch), registers, and
                     its ``ready`` event releases us (``released``, unregister=false). Nobody
                     else alive: state "unregistering" (nobody can acquire), ``released``
                     (unregister=true); we unregister and RELEASE (compare-and-delete).
  ``members_query``  MEMBERS: prune expired members, list the live ones with roles
  =================  ===============================================================

Timing (`LeaseTimings`, derived from the group's heartbeat timeout; see `webphone.shared.lease`
for the defaults and why): the holder renews every `renew_interval` and steps down on its own
when `renew_deadline` passed without a renewal (a plain event-loop timer, so it runs before any
task woken by the same stall), always before the record can expire and be taken over.

Redis trouble. Commands time out after `command_timeout`. A dummy whose Redis fails reports
the link lost; the member reconnects with backoff (`connect()` never fails for an unreachable
Redis: the link retries in the background, so a real is always told to step down in time). A
holder whose Redis fails keeps its link and keeps serving calls while its lease is valid,
reconnecting every 0.05-`retry_interval` s; back in time it renews (or, if Redis restarted and
forgot the lease, re-claims it at a new epoch) and carries on; otherwise it steps down at its
deadline and only then reports the link lost. A restarted Redis grants no *new* lease during its
first `ttl` of uptime (`restart_grace`; INFO uptime), so that a real that is still valid can
re-claim before a dummy registers over it.

Redis that fails over (Sentinel, Cluster; `redis_topology` locates the node that holds the
group). With `replica_acks` > 0 every decision a member acts on waits for the replicas
(``WAIT``, `_run_acked`): a lease grant (join, acquire, re-claim), a renewal, an action claim
and a caller's verdict (expire, interrupt). An unacknowledged grant leaves the member a dummy
with a `PENDING` lease that it confirms by renewing; an unacknowledged renewal extends nothing,
so a real whose replicas stay silent steps down at its renew deadline exactly as if Redis were
unreachable; an unacknowledged claim is not run until the claim is acknowledged (or the lease
is gone, and the caller's INTERRUPT decides); an unacknowledged verdict is asked again. After a
failover the link's connections break and it locates the new primary, as after a restart.

The key layout and the Lua scripts are in `redis_scripts` (pure). This module is the I/O shell:
the transport and the link, one state machine per member connection (kept in one class, longer
than most, because its timers, tasks and Redis clients share one life cycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from webphone._backoff import backoff
from webphone.errors import GroupProtocolError
from webphone.shared.lease import Candidate, HolderState, LeaseHolder, LeaseTimings, acknowledged
from webphone.shared.lease import fresh_acquire_allowed as _fresh_ok
from webphone.shared.protocol import (
    MEMBER_FRAMES,
    PROTOCOL_VERSION,
    Action,
    ActionAccepted,
    ActionResult,
    Continuity,
    Delegate,
    DelegateResult,
    Error,
    ErrorInfo,
    Frame,
    Heartbeat,
    Hello,
    Leave,
    MemberInfo,
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
    GroupTransport,
    GroupTransportError,
    HubOptions,
    LostHandler,
)
from webphone.shared.transports.redis_plane import PLANE_SCRIPTS, RedisPlane
from webphone.shared.transports.redis_scripts import (
    ACTION_PUSH,
    BLOCK_MS,
    INBOX_PUSH,
    SCRIPTS,
    GroupKeys,
    LeaseView,
    entry_key,
    is_gid,
    member_infos,
    push_entry,
    streams,
    text,
)
from webphone.shared.transports.redis_topology import (
    RedisTarget,
    command,
    parse_hub_url,
    redact,
)

__all__ = ["SCRIPTS", "GroupKeys", "LeaseView", "RedisLink", "RedisTransport"]

log = logging.getLogger("webphone.shared.redis")

#: how many of its latest action ids a link remembers to refuse a repeated one
MAX_USED_IDS = 1024
#: what a broken, slow or restarted Redis raises through redis-py
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis_errors.RedisError, OSError, TimeoutError)


# -- the transport -----------------------------------------------------------------------------


ClientFactory = Callable[[float | None], Redis]


class RedisTransport(GroupTransport):
    """Groups whose members reach each other through one Redis (any host).

    ``RedisTransport(url, options, *, timings=None, restart_grace=True, namespace="webphone",
    client_factory=None, max_members=1024, replica_acks=None)``: `url` is any hub URL of
    `redis_topology` (one server, ``redis+sentinel://``, ``redis+cluster://``); `timings`
    default to ``LeaseTimings.from_heartbeat_timeout(options.heartbeat_timeout)``;
    `replica_acks` overrides the URL's acknowledgement rule (how many replicas must
    acknowledge every lease grant, renewal and action decision: ``WAIT``);
    `client_factory(timeout)` builds the redis-py asyncio client instead (then `url` is only
    shown in messages, and `replica_acks` defaults to 0: ``WAIT`` needs the script's own
    connection, so the factory must return single-connection clients to use it).
    """

    name = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        options: HubOptions | None = None,
        *,
        timings: LeaseTimings | None = None,
        restart_grace: bool = True,
        namespace: str = "webphone",
        client_factory: ClientFactory | None = None,
        max_members: int = 1024,
        replica_acks: int | None = None,
    ) -> None:
        super().__init__(options)
        self.target = RedisTarget(kind="server", url=url)
        if client_factory is None:
            try:
                self.target = parse_hub_url(url)
            except ValueError as exc:
                raise GroupTransportError(str(exc)) from None
        if replica_acks is not None and replica_acks < 0:
            raise GroupTransportError(f"replica_acks must be >= 0, not {replica_acks}")
        #: replicas that must acknowledge a grant/renewal/decision (the lease's ack rule)
        self.replica_acks = self.target.replica_acks if replica_acks is None else replica_acks
        self.url = url
        self.timings = timings or LeaseTimings.from_heartbeat_timeout(
            self.options.heartbeat_timeout)
        self.restart_grace = restart_grace
        self.namespace = namespace
        self.max_members = max_members
        self._factory = client_factory
        #: (group, member id, started_at) -> its lease, which outlives any one link
        self.holders: dict[tuple[str, str, float], LeaseHolder] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        GroupKeys.for_group("", namespace)  # validates the namespace

    def keys(self, group: str) -> GroupKeys:
        return GroupKeys.for_group(group, self.namespace)

    def client(self, socket_timeout: float | None, *, one_server: bool = False,
               url: str | None = None) -> Redis:
        """A new redis-py asyncio client: no retries of its own (the link decides), commands
        time out after `socket_timeout` (None: never, for a connection that only waits for
        pushes: the link's other loops notice a Redis that stopped answering).

        `one_server`: one connection that is never silently re-opened (redis-py re-opens a
        broken pooled connection on the next command). A link's commands then all reach the
        server instance it checked (INFO uptime, for the restart grace); after a restart the
        next command fails instead, and the link starts over with a fresh check."""
        if self._factory is not None:
            return self._factory(socket_timeout)
        client: Redis = Redis.from_url(
            url or self.target.url, socket_timeout=socket_timeout,
            socket_connect_timeout=self.timings.command_timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, decode_responses=False,
            single_connection_client=one_server, protocol=2)  # RESP2: 15-20 % less parsing
        if one_server:
            pool = client.connection_pool
            pool.connection_class = _one_server_class(pool.connection_class)
        return client

    async def node_url(self, group: str) -> str:
        """The URL of the Redis node that holds `group` now (Sentinel: the primary; Cluster:
        the primary of the group's slot; one server: the URL)."""
        return await self.target.locate(self.keys(group).lease, self.timings.command_timeout)

    def holder(self, group: str, hello: Hello) -> LeaseHolder:
        key = (group, hello.member_id, hello.started_at)
        holder = self.holders.get(key)
        if holder is None:
            holder = self.holders[key] = LeaseHolder(self.timings)
        return holder

    async def connect(self, group: str, on_frame: FrameHandler, on_lost: LostHandler) -> GroupLink:
        return RedisLink(self, group, on_frame, on_lost)

    async def recover_hung(self, link: GroupLink) -> None:
        """Redis stayed silent for the hub timeout: drop the link but keep what it holds in
        Redis (lease, membership). The member reconnects at once and its new link re-claims
        the lease while it is valid, or tells the member to step down at its deadline; giving
        the lease back here would let another member register while this one still is."""
        if isinstance(link, RedisLink):
            link.abandon()
        else:
            link.close()

    async def query_members(
        self, group: str, timeout: float = 2.0
    ) -> tuple[MemberInfo, ...] | None:
        try:
            client = self.client(timeout, url=await self.target.locate(
                self.keys(group).lease, timeout) if self._factory is None else None)
        except REDIS_ERRORS as exc:
            raise OSError(f"Redis at {redact(self.url)} did not answer: {exc}") from exc
        try:
            script = client.register_script(SCRIPTS["members"])
            out = await asyncio.wait_for(script(keys=self.keys(group).base(), args=[]), timeout)
        except REDIS_ERRORS as exc:
            raise OSError(f"Redis at {redact(self.url)} did not answer: {exc}") from exc
        finally:
            await client.aclose()
        infos = member_infos(LeaseView.parse(out[:7]), out[7:])
        return infos or None

    def track(self, task: asyncio.Task[None]) -> None:
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def aclose(self) -> None:
        """Wait (briefly) for closed links to leave the group and close their clients."""
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=2.0)


_ONE_SERVER: dict[type, type] = {}


def _one_server_class(base: type) -> type:
    """`base` (a redis-py asyncio connection class) that connects once and then refuses to
    reconnect: the connection's user must notice a lost server (see `RedisTransport.client`)."""
    known = _ONE_SERVER.get(base)
    if known is not None:
        return known

    class OneServer(base):  # type: ignore[misc]
        _was_connected = False

        async def connect_check_health(self, check_health: bool = True,
                                       retry_socket_connect: bool = True) -> None:
            if self._was_connected and not self.is_connected:
                raise redis_errors.ConnectionError(
                    "the connection to Redis was lost (not re-opened behind the link's back)")
            await super().connect_check_health(check_health=check_health,
                                               retry_socket_connect=retry_socket_connect)
            self._was_connected = True

    _ONE_SERVER[base] = OneServer
    return OneServer


def _kind(push: Any) -> str:
    """The kind of a pub/sub reply (``message``, ``subscribe``, ...), or "" if it has none."""
    return text(push[0]) if isinstance(push, list) and push else ""


async def _close_quietly(*closables: Any) -> None:
    """aclose() each of `closables` (redis-py clients, pubsubs), whatever they raise."""
    for item in closables:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(item.aclose(), 1.0)


# -- the link ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Call:
    """An action this member sent, until its one outcome."""

    action_id: str  # the member's id
    deadline: asyncio.TimerHandle | None = None
    epoch: int | None = None  # claimed at this epoch (accepted), once we know it
    checked: int | None = None  # the lease epoch at which INTERRUPT last looked at it


class _Refused(Exception):
    """The group refused our hello (duplicate member id, full)."""


@dataclass(frozen=True)
class _Op:
    """Work for the link's own worker (not a member frame)."""

    kind: str  # "acquire" | "expire" | "interrupt" | "release" | "continuity"
    arg: str = ""
    epoch: int = 0


class RedisLink(GroupLink):
    """One member's stand-in for a hub (see the module docstring)."""

    def __init__(self, transport: RedisTransport, group: str, on_frame: FrameHandler,
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
        self._inbox: deque[Frame | _Op] = deque()
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
        self._calls: dict[str, _Call] = {}  # gid -> call
        # the newest MAX_USED_IDS action ids, oldest first (a dict: `in` must not scan them all
        # on every action, as a deque does)
        self._used_ids: dict[str, None] = {}
        self._claimed: dict[str, tuple[str, str]] = {}  # gid -> (caller's inbox, entry id)
        self._claiming: dict[str, str] = {}  # claims sent but not settled (gid -> inbox)
        self._interrupting: set[str] = set()  # gids with an INTERRUPT queued
        self._no_acquire_before = 0.0  # a real that stepped down lets the others try first
        self._handing_since = 0.0
        # timers and tasks
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._acquire_timer: asyncio.TimerHandle | None = None
        self._handover_timer: asyncio.TimerHandle | None = None
        self._lease_wake = asyncio.Event()
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._gen = 0  # session generation: loops of an earlier session stop
        self._consumer: asyncio.Task[None] | None = None
        self._failure: asyncio.Future[BaseException] | None = None
        self._cmd: Redis | None = None
        self._blk: Redis | None = None
        self._actions_channel = ""  # where ENQUEUE pushes action entries (set by _open)
        self._scripts: dict[str, Any] = {}
        self._node: str | None = None  # the URL of the node that holds the group (last _open)
        self.plane = RedisPlane(self, self._loop)  # the continuity plane (redis_plane.py)
        self._supervisor = asyncio.create_task(self._supervise(), name="webphone-redis-link")

    # -- GroupLink ---------------------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        if self._closed or self._lost:
            raise GroupLinkClosed("the link to the group's Redis is closed")
        if isinstance(frame, Hello) and self._hello is None:
            self._hello = frame
            self._holder = self._t.holder(self.group, frame)
            self._arm_deadline()  # a real steps down in time even if Redis never answers
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
            if self._t._factory is None:
                self._node = await self._t.node_url(self.group)
            self._cmd = self._t.client(self.timings.command_timeout, one_server=True,
                                       url=self._node)
            self._blk = self._t.client(BLOCK_MS / 1000 + self.timings.command_timeout,
                                       url=self._node)
            self._scripts = {name: self._cmd.register_script(text)
                             for name, text in {**SCRIPTS, **PLANE_SCRIPTS}.items()}
            db = self._cmd.connection_pool.connection_kwargs.get("db", 0)
            self._actions_channel = self.keys.actions_channel(int(db or 0))
            if self._t.target.kind != "server":
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
            self._start_consumer()
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
        self._consumer = None
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
        self._scripts = {name: self._cmd.register_script(text) for name, text in SCRIPTS.items()}

    def _cancel_timers(self) -> None:
        for timer in (self._deadline_timer, self._acquire_timer, self._handover_timer):
            if timer is not None:
                timer.cancel()
        for call in self._calls.values():
            if call.deadline is not None:
                call.deadline.cancel()

    # -- Redis helpers -----------------------------------------------------------------------

    async def _run(self, name: str, extra_keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        keys = self._base + extra_keys
        try:  # EVALSHA directly (AsyncScript adds a layer per call on the hot path)
            return await self._cmd_client().evalsha(script.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:  # a restarted Redis: load it again
            return await script(keys=keys, args=args)

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
        acks = int(await command(self._cmd_client(), "WAIT", required, ms))
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
                    self._queue(_Op("release", epoch=lease.epoch))  # we came back as a dummy
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
                    await self._settle_claims(holder.epoch)
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
            self._start_consumer()

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
        self._stop_consumer()
        self._claimed.clear()  # their callers get ActionInterruptedError
        self._claiming.clear()  # (INTERRUPT, once the lease leaves our epoch)
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
            self._queue(_Op("release", epoch=old_epoch))  # let the others take over now
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
        self._check_calls(lease.epoch if lease.holder is not None else 0)

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
        self._acquire_timer = self._loop.call_at(at, self._queue, _Op("acquire"))

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

    def _queue(self, op: _Op) -> None:
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

    async def _handle(self, item: Frame | _Op) -> None:
        if isinstance(item, _Op):
            if item.kind == "acquire":
                await self._acquire()
            elif item.kind == "expire":
                await self._expire(item.arg)
            elif item.kind == "interrupt":
                await self._interrupt(item.arg)
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
            await self._enqueue(item)
        elif isinstance(item, ActionResult):
            await self._post_result(item)
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
            self._start_consumer()

    async def _leave(self) -> None:
        assert self._hello is not None and self._holder is not None
        if self.mode == "real":
            epoch = self._holder.epoch
            result = text(await self._run("handover", [], [self._hello.member_id, epoch]))
            self._stop_consumer()
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

    # -- actions: the caller's side ----------------------------------------------------------

    async def _enqueue(self, frame: Action) -> None:
        if frame.action_id in self._used_ids:
            self._deliver(Error("duplicate_action",
                                f"action id {frame.action_id!r} was already used"))
            return
        gid = f"{self.nonce}.{frame.action_id}"
        entry = frame.to_obj()  # already checked; the real checks it again when it reads it
        entry["action_id"] = gid
        timeout_ms = max(1, int(frame.timeout * 1000))
        # Claimed for a ready real by ENQUEUE itself (it runs it as soon as it reads it), unless
        # claims must wait for the replicas (`_claim_acked`): then the real claims it.
        claim = "1" if self._t.replica_acks <= 0 else "0"
        # Known before ENQUEUE is sent: its result is pushed on another connection, and may
        # be read before ENQUEUE's own answer.
        old = self._calls.get(gid)  # (a retry after a Redis failure: ENQUEUE answers "dup")
        if old is not None and old.deadline is not None:
            old.deadline.cancel()
        call = self._calls[gid] = _Call(frame.action_id)
        call.deadline = self._loop.call_later(frame.timeout, self._queue, _Op("expire", gid))
        out = text(await self._run("enqueue", [self.keys.act(gid), self.reply_key],
                                   [gid, timeout_ms, json.dumps(entry, separators=(",", ":")),
                                    claim, self._actions_channel]))
        self._used_ids[frame.action_id] = None
        if len(self._used_ids) > MAX_USED_IDS:
            del self._used_ids[next(iter(self._used_ids))]
        if out.startswith("claimed:"):
            self._accepted(gid, int(out.split(":", 1)[1]))
            self._check_calls(self.epoch)  # the lease may have moved on while we waited

    async def _expire(self, gid: str) -> None:
        call = self._calls.get(gid)
        if call is None:
            return
        out, acked = await self._run_acked("expire", [self.keys.act(gid)], [])
        state, epoch = text(out[0]), text(out[1])
        if not acked:  # a verdict the replicas do not hold yet is no verdict: ask again
            self._loop.call_later(self.timings.retry_interval, self._queue, _Op("expire", gid))
        elif state == "expired":
            self._expired(gid)
        elif state in ("interrupted", "gone"):
            self._interrupted(gid)
        elif state == "claimed":
            self._accepted(gid, int(epoch))  # the outcome comes from the real or INTERRUPT
            self._check_calls(self.epoch)

    def _expired(self, gid: str) -> None:
        self._finish(gid, error=ErrorInfo(
            "NoRealPhoneError", f"no real phone in group {self.group!r} was ready within the "
            "action's deadline"))

    def _accepted(self, gid: str, epoch: int) -> None:
        call = self._calls.get(gid)
        if call is not None and call.epoch is None:
            call.epoch = epoch
            self._deliver(ActionAccepted(call.action_id))

    async def _interrupt(self, gid: str) -> None:
        self._interrupting.discard(gid)
        if gid not in self._calls:
            return
        out, acked = await self._run_acked("interrupt", [self.keys.act(gid)], [])
        state = text(out[0])
        if not acked:  # not replicated yet: ask again (the same verdict, or a newer one)
            self._interrupting.add(gid)
            self._loop.call_later(self.timings.retry_interval, self._queue,
                                  _Op("interrupt", gid))
        elif state in ("interrupted", "gone"):
            self._interrupted(gid)
        elif state == "expired":
            self._expired(gid)
        elif state in ("running", "claimed"):
            self._accepted(gid, int(text(out[1])))

    def _interrupted(self, gid: str) -> None:
        self._finish(gid, error=ErrorInfo(
            "ActionInterruptedError", "the real phone lost the group's lease after accepting "
            "the action; it may or may not have run, and is not re-run"))

    def _finish(self, gid: str, *, error: ErrorInfo | None = None,
                result: ActionResult | None = None) -> None:
        call = self._calls.pop(gid, None)
        if call is None:
            return
        if call.deadline is not None:
            call.deadline.cancel()
        if result is not None:
            self._deliver(ActionResult(call.action_id, result.epoch, result.ok, result.value,
                                       result.error))
        else:
            self._deliver(ActionResult(call.action_id, self.epoch, False, None, error))

    # -- actions: the real's side ------------------------------------------------------------

    def _start_consumer(self) -> None:
        if self._consumer is None and self._failure is not None and not self._failure.done():
            self._consumer = self._spawn(self._consume())

    def _stop_consumer(self) -> None:
        task, self._consumer = self._consumer, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _consume(self) -> None:
        """Run the actions of the stream, in order: those queued before we were ready, then
        each one as ENQUEUE pushes it (no XREAD to re-issue per action: see `_entries`)."""
        gen = self._gen
        entries = self._entries(self.keys.actions, self._actions_channel, ACTION_PUSH, "0-0")
        async with contextlib.aclosing(entries):
            async for entry_id, fields in entries:
                if not (self.mode == "real" and self._ready and gen == self._gen):
                    return
                if b"c" in fields:
                    await self._claimed_for(entry_id, fields)
                elif not await self._claim(entry_id, fields):
                    return

    async def _entries(self, stream: str, channel: str, names: tuple[bytes, ...],
                       after: str) -> AsyncGenerator[tuple[str, dict[bytes, bytes]], None]:
        """Every entry of `stream` after `after`, in order, as it is written. The scripts
        that XADD to the stream also PUBLISH the entry on `channel` (`push_entry`), so a
        reader is woken with the entry itself, on a connection of its own that only waits.
        Subscribed first, then the entries the stream already holds (written while nobody
        listened), then the pushes: a push of an entry already read is skipped (stream ids
        only grow, and a channel delivers in the order Redis published).

        A broken push connection (Redis dropped it: `CLIENT KILL TYPE pubsub`, a proxy's idle
        timeout) is subscribed again at once and the stream read from the last entry seen:
        the pushes lost meanwhile are in the stream, nothing is read twice, and the session
        (a dummy's link, and the actions in flight on it) goes on. Only when that fails too
        (Redis itself is away) does the error fail the session."""
        last = entry_key(after)
        broken: BaseException | None = None
        while True:
            client = self._t.client(None, url=self._node)
            push = client.pubsub()
            try:
                await push.subscribe(channel)
                while _kind(await push.parse_response(block=True)) != "subscribe":
                    pass
                while True:
                    assert self._blk is not None  # (not the command connection: renewals)
                    resp: Any = await self._blk.xread({stream: after}, count=64)
                    batch = [(text(i), f) for _stream, entries in streams(resp)
                             for i, f in entries]
                    for entry_id, fields in batch:
                        after, last = entry_id, entry_key(entry_id)
                        yield entry_id, fields
                    if len(batch) < 64:
                        break
                broken = None
                while True:
                    message = await push.parse_response(block=True)
                    if _kind(message) != "message":
                        continue
                    entry = push_entry(message[2], names)
                    if entry is None:
                        log.warning("ignoring a malformed push on %s", channel)
                    elif entry_key(entry[0]) > last:
                        after, last = entry[0], entry_key(entry[0])
                        yield entry
            except REDIS_ERRORS as exc:
                if broken is not None:
                    raise
                broken = exc
                log.info("the push connection of %s broke (%s: %s); subscribing again",
                         channel, type(exc).__name__, exc)
            finally:  # in the background: we may be being cancelled
                self._t.track(asyncio.ensure_future(_close_quietly(push, client)))

    async def _claimed_for(self, entry_id: str, fields: dict[Any, Any]) -> None:
        """An entry ENQUEUE claimed for the ready real of its epoch: run it if that is us, now
        (the claim is what CLAIM would have written); else it is not ours to run, ever: its
        caller's INTERRUPT decides (ActionInterruptedError once that epoch is over)."""
        assert self._holder is not None
        gid, reply = text(fields.get(b"g", b"")), text(fields.get(b"r", b""))
        if gid in self._claimed:  # running already (read again after a reconnect)
            return
        epoch = self._holder.epoch
        mine = (text(fields.get(b"c", b"")) == self._hello_id()
                and text(fields.get(b"n", b"")) == str(epoch)
                and self._holder.valid(self._loop.time()))
        action = self._decode(fields.get(b"a", b""), Action) if mine else None
        if not mine or not is_gid(gid) or not self.keys.is_reply(reply):
            await self._cmd_client().xdel(self.keys.actions, entry_id)
        elif not isinstance(action, Action) or action.action_id != gid:
            await self._post(gid, reply, ActionResult(gid, epoch, False, None, ErrorInfo(
                "GroupProtocolError", "the action entry in Redis was malformed")), entry_id)
        else:
            self._claimed[gid] = (reply, entry_id)
            self._deliver(action)

    async def _claim(self, entry_id: str, fields: dict[Any, Any]) -> bool:
        assert self._hello is not None and self._holder is not None
        gid, reply = text(fields.get(b"g", b"")), text(fields.get(b"r", b""))
        if not is_gid(gid) or not self.keys.is_reply(reply):
            log.warning("dropping a malformed action entry %s", entry_id)
            await self._cmd_client().xdel(self.keys.actions, entry_id)
            return True
        epoch = self._holder.epoch
        self._claiming[gid] = reply  # until we know: a Redis failure may hide the answer
        out, acked = await self._run_acked("claim", [self.keys.act(gid), reply],
                                           [self._hello.member_id, epoch, gid, entry_id])
        result = text(out)
        if result != "ok" or not await self._claim_acked(acked):
            self._claiming.pop(gid, None)
            # not ours, or stepping down (the caller's INTERRUPT decides: never run);
            # "not_real": it stays in the stream for the next real
            return result not in ("ok", "not_real")
        self._claiming.pop(gid, None)
        action = self._decode(fields.get(b"a", b""), Action)
        if not isinstance(action, Action) or action.action_id != gid:
            # claimed but unreadable: answer it so that the caller is not left waiting
            await self._post(gid, reply, ActionResult(gid, epoch, False, None, ErrorInfo(
                "GroupProtocolError", "the action entry in Redis was malformed")))
            return True
        self._claimed[gid] = (reply, entry_id)
        self._deliver(action)
        return True

    async def _settle_claims(self, epoch: int) -> None:
        """Back after a Redis failure, still the real at `epoch`: a claim whose answer was lost
        may have taken an action that we never ran, and its caller would wait for a result
        while our lease lasts. Answer each one (it did not run); a claim that never happened
        is refused by RESULT and its entry is still in the stream for us to claim."""
        for gid, reply in list(self._claiming.items()):
            await self._post(gid, reply, ActionResult(gid, epoch, False, None, ErrorInfo(
                "ActionInterruptedError", "the group's Redis failed while the real phone "
                "claimed the action; it did not run, and is not re-run")))
            self._claiming.pop(gid, None)

    async def _claim_acked(self, acked: bool) -> bool:
        """Run a claimed action only once the replicas hold the claim: a promoted replica
        without it would hand the action to the next real, and it would run twice. Waits
        (``WAIT`` again) while our lease is valid; False once it is not."""
        holder = self._holder
        while not acked:
            if holder is None or not holder.valid(self._loop.time()) or self.mode != "real":
                return False
            acked = await self._wait_acks()
        return True

    async def _post_result(self, frame: ActionResult) -> None:
        claimed = self._claimed.get(frame.action_id)
        if claimed is None:
            return
        # forgotten once posted, not before: a RESULT that fails with Redis is sent again by
        # the worker after recovery, and meanwhile its entry, read again, is not run again
        await self._post(frame.action_id, claimed[0], frame, claimed[1])
        self._claimed.pop(frame.action_id, None)

    async def _post(self, gid: str, reply: str, frame: ActionResult, entry_id: str = "") -> None:
        assert self._hello is not None
        args = [self._hello.member_id, frame.epoch, gid, frame.to_json()]
        result = text(await self._run("result", [self.keys.act(gid), reply],
                                      [*args, entry_id] if entry_id else args))
        if result != "ok":
            log.info("result of %s not delivered (%s): the caller gets "
                     "ActionInterruptedError", gid, result)

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
        """Our inbox: action results and the plane's delegates, pushed as they are written."""
        entries = self._entries(self.reply_key, self.reply_key, INBOX_PUSH, self._reply_id)
        async with contextlib.aclosing(entries):
            async for entry_id, fields in entries:
                self._reply_id = entry_id
                self._on_reply(fields)

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
            self._queue(_Op("continuity"))
        elif kind in ("free", "handover") and holder != me and self.mode == "dummy":
            self._arm_acquire(self._loop.time() + random.random() * self.timings.jitter)
        if kind in ("lease", "free") and self._calls:
            self._check_calls(epoch if kind == "lease" else 0)

    def _check_calls(self, epoch: int) -> None:
        """The lease is at `epoch` (0: nobody holds it). A pending action may have been claimed
        at an earlier epoch (nobody tells the caller when: that would cost a wake-up on every
        action), so each one is looked at once per lease epoch: INTERRUPT decides atomically
        (claimed at an epoch that ended -> interrupted; queued -> left alone)."""
        for gid, call in self._calls.items():
            if call.checked != epoch and call.epoch != epoch and gid not in self._interrupting:
                call.checked = epoch
                self._interrupting.add(gid)
                self._queue(_Op("interrupt", gid))

    def _on_reply(self, fields: dict[Any, Any]) -> None:
        if self.plane.on_reply(fields):
            return
        kind, gid = text(fields.get(b"t", b"")), text(fields.get(b"g", b""))
        call = self._calls.get(gid)
        if call is None:
            return
        epoch = int(text(fields.get(b"n", b"0")) or 0)
        if kind == "result":
            result = self._decode(fields.get(b"d", b""), ActionResult)
            if isinstance(result, ActionResult) and result.epoch == epoch:
                self._finish(gid, result=result)
