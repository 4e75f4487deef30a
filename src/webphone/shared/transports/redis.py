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
(`redis_wire.follow`), not by an XREAD sent again per entry. The streams stay the record: a
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

Modules: this one is the transport (the public face: URLs, clients, the leases that outlive a
link); `redis_link` the link, one state machine per member connection; `redis_actions` the
actions on both sides; `redis_plane` the continuity plane; `redis_wire` the hot path's RESP
connections and the push reader; `redis_scripts` the key layout and the Lua scripts (pure);
`redis_topology` Sentinel and Cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from webphone.shared.lease import LeaseHolder, LeaseTimings
from webphone.shared.protocol import Hello, MemberInfo
from webphone.shared.transports.base import (
    FrameHandler,
    GroupLink,
    GroupTransport,
    GroupTransportError,
    HubOptions,
    LostHandler,
)
from webphone.shared.transports.redis_link import REDIS_ERRORS, RedisLink
from webphone.shared.transports.redis_scripts import SCRIPTS, GroupKeys, LeaseView, member_infos
from webphone.shared.transports.redis_topology import RedisTarget, parse_hub_url, redact

__all__ = ["SCRIPTS", "GroupKeys", "LeaseView", "RedisLink", "RedisTransport"]

log = logging.getLogger("webphone.shared.redis")


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

    async def link_node(self, group: str) -> str | None:
        """The URL of the node a link of `group` connects to (None: `client_factory` decides)."""
        return None if self._factory is not None else await self.node_url(group)

    @property
    def failover(self) -> bool:
        """True when the node that holds a group can change (Sentinel, Cluster): a link then
        refuses a node that is not the primary (ROLE)."""
        return self.target.kind != "server"

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


