"""The continuity plane over Redis: delegates, lost members and the continuity record, for one
`RedisLink` (which has no hub to route them, so every link does its own share).

Keys, all under the group's hash tag (one slot, one Cluster node):

* ``{g}:continuity`` (hash epoch, seq, frame): the newest continuity frame, written only by the
  script below, which refuses anyone but the lease holder at its epoch and anything not newer
  (the same fencing as snapshots). A ``continuity`` event (without the frame: it can be ~250 KiB)
  tells every link to fetch it; a joining link fetches it right after its welcome.
* each link's inbox stream (``{g}:reply:<nonce>``, the one action results already use), named
  in the member's membership record as ``inbox``: a delegate is XADDed to the target member's
  inbox by a script that checks, in one step, that the sender holds the lease at the delegate's
  epoch and that the target is alive with that inbox. The answer goes to the real's inbox.

Outcomes at the real's link, exactly one per delegate: the member's answer; MemberLostError at
once when the target is not a live member, or when it drops out of the membership (Redis cannot
tell a crash from a hang: both are a membership that expired, reported "hung"; a member that
left removed itself, reported "left"); DelegateTimeoutError at the delegate's timeout;
ActionInterruptedError when our link steps down. The real watches the membership on its own
heartbeats (one script call), so a loss is seen within the member TTL plus one heartbeat; a new
real's first look reports the members whose membership had already expired (the old real among
them), unless a join pruned them first.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from webphone.shared.protocol import (
    MAX_ID_CHARS,
    Continuity,
    Delegate,
    DelegateResult,
    ErrorInfo,
    Frame,
    MemberLost,
)
from webphone.shared.transports.redis_scripts import GroupKeys, plane_script, text

__all__ = ["PLANE_SCRIPTS", "PlaneHost", "RedisPlane"]

log = logging.getLogger("webphone.shared.redis")

# ARGV: real, epoch, target, frame, our inbox; KEYS[8]: the target's inbox
_DELEGATE = """
local now = now_ms()
if not is_holder(lease_get(), ARGV[1], ARGV[2]) then return 'fenced' end
local exp = redis.call('ZSCORE', KEYS[5], ARGV[3])
local info = redis.call('HGET', KEYS[4], ARGV[3])
if not exp or tonumber(exp) <= now or not info then return 'unknown' end
local ok, d = pcall(cjson.decode, info)
if not ok or type(d) ~= 'table' or d.inbox ~= KEYS[8] then return 'unknown' end
local id = redis.call('XADD', KEYS[8], 'MAXLEN', '~', 1024, '*', 't', 'delegate', 'd', ARGV[4],
                      'r', ARGV[5])
redis.call('PEXPIRE', KEYS[8], REPLY_TTL)
push(KEYS[8], id, 'delegate', '', '', ARGV[5], ARGV[4])
return 'ok'
"""

# ARGV: delegate id, result frame; KEYS[8]: the real's inbox (an entry, pushed like RESULT's)
_DRESULT = """
local id = redis.call('XADD', KEYS[8], 'MAXLEN', '~', 1024, '*', 't', 'dresult', 'g', ARGV[1],
                      'd', ARGV[2])
push(KEYS[8], id, 'dresult', ARGV[1], '', '', ARGV[2])
return 'ok'
"""

# ARGV: epoch, seq, frame, member; KEYS[8]: the continuity hash
_CONTINUITY = """
if not is_holder(lease_get(), ARGV[4], ARGV[1]) then return 'fenced' end
local cv = redis.call('HMGET', KEYS[8], 'epoch', 'seq')
local ce, cs = tonumber(cv[1] or '0'), tonumber(cv[2] or '0')
local e, s = tonumber(ARGV[1]), tonumber(ARGV[2])
if e < ce or (e == ce and s <= cs) then return 'old' end
redis.call('HSET', KEYS[8], 'epoch', e, 'seq', s, 'frame', ARGV[3])
redis.call('PEXPIRE', KEYS[8], GROUP_TTL)
event('continuity', e, ARGV[4], '')
return 'ok'
"""

# the membership as the real watches it: {server now, id, expiry, id, expiry, ...}
_ALIVE = """
local out = {tostring(now_ms())}
return append(out, redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES'))
"""

PLANE_SCRIPTS: dict[str, str] = {
    name: plane_script(body) for name, body in
    {"delegate": _DELEGATE, "dresult": _DRESULT, "continuity": _CONTINUITY,
     "alive": _ALIVE}.items()
}
#: delegates received and not yet answered that a link remembers the real's inbox for
MAX_SERVING = 1024


class PlaneHost(Protocol):
    """What the plane needs of its `RedisLink`."""

    keys: GroupKeys
    reply_key: str
    nonce: str

    async def run_script(self, name: str, extra_keys: list[str], args: list[Any]) -> Any:
        """Run one of the group's scripts (base keys first)."""

    def client(self) -> Redis:
        """The command connection."""

    def deliver(self, frame: Frame) -> None:
        """Hand a frame to the member, as a hub would."""

    def decode(self, raw: Any, kind: type[Frame]) -> Frame | None:
        """A frame read from Redis, or None (logged) if malformed or of another type."""

    def member_id(self) -> str:
        """Our member id."""

    def real_epoch(self) -> int | None:
        """The epoch we hold the lease at, or None when we are not the real."""

    async def wait_acks(self, what: str) -> bool:
        """After a write: True when enough replicas hold it (always, with replica_acks 0)."""


@dataclass(kw_only=True)
class _Asked:
    own_id: str  # the member's delegate id
    target: str
    op: str
    timer: Any  # asyncio.TimerHandle


class RedisPlane:
    """The plane's share of one link (see the module docstring)."""

    def __init__(self, host: PlaneHost, loop: Any) -> None:
        self._h = host
        self._loop = loop
        self._asked: dict[str, _Asked] = {}  # our gid -> the delegate we sent as the real
        self._serving: dict[str, str] = {}  # gid -> the asking real's inbox
        #: member -> membership expiry (server ms) at our last look as the real; None: no look
        #: yet in this reign
        self._alive: dict[str, float] | None = None
        self._continuity = (0, 0)
        self._unacked: Continuity | None = None  # written, not yet held by enough replicas
        self._ids = 0

    @property
    def continuity_key(self) -> str:
        """The group's continuity record."""
        return f"{self._h.keys.prefix}:continuity"

    # -- member frames -----------------------------------------------------------------------

    async def handle(self, frame: Frame) -> None:
        """A plane frame from our member."""
        if isinstance(frame, Delegate):
            await self._delegate(frame)
        elif isinstance(frame, DelegateResult):
            await self._answer(frame)
        elif isinstance(frame, Continuity):
            await self._write_continuity(frame)

    async def _write_continuity(self, frame: Continuity) -> None:
        """Write the record; with replicas, WAIT like the lease, and write it again on our next
        heartbeat until they hold it (a failover must not roll the record back unseen)."""
        self._unacked = None
        result = text(await self._h.run_script("continuity", [self.continuity_key], [
            frame.epoch, frame.seq, frame.to_json(), self._h.member_id()]))
        if result == "fenced":
            log.info("continuity at epoch %d refused: not the holder", frame.epoch)
            return
        if result == "ok":
            self._continuity = max(self._continuity, frame.version)
        if not await self._h.wait_acks("continuity"):
            self._unacked = frame

    async def _delegate(self, frame: Delegate) -> None:
        epoch = self._h.real_epoch()
        if epoch is None or epoch != frame.epoch:
            self._fail(frame.id, "ActionInterruptedError", "this member is not the real of "
                       f"epoch {frame.epoch}: {frame.op!r} was not sent")
            return
        info = await self._h.client().hget(f"{self._h.keys.prefix}:members", frame.to)
        inbox = _inbox(info)
        self._ids += 1
        gid = f"{self._h.nonce}.{self._ids}"[:MAX_ID_CHARS]
        forwarded = Delegate(id=gid, to=frame.to, call_id=frame.call_id, op=frame.op,
                             args=frame.args, epoch=epoch, timeout=frame.timeout)
        # Known before DELEGATE is sent: the answer is pushed to our inbox on another
        # connection and handled as it arrives, possibly before DELEGATE's own reply is read.
        timer = self._loop.call_later(frame.timeout, self._timed_out, gid)
        self._asked[gid] = _Asked(own_id=frame.id, target=frame.to, op=frame.op, timer=timer)
        result = "unknown"
        try:
            if inbox is not None and self._h.keys.is_reply(inbox):
                result = text(await self._h.run_script("delegate", [inbox], [
                    self._h.member_id(), epoch, frame.to, forwarded.to_json(),
                    self._h.reply_key]))
        finally:
            if result in ("unknown", "fenced"):  # (or Redis failed: the worker sends it again)
                self._forget(gid)
        if result == "unknown":
            self._fail(frame.id, "MemberLostError", f"member {frame.to!r} is not in the "
                       f"group: {frame.op!r} was not sent")
        elif result == "fenced":
            self._fail(frame.id, "ActionInterruptedError", "this member lost the lease: "
                       f"{frame.op!r} was not sent")

    def _forget(self, gid: str) -> None:
        asked = self._asked.pop(gid, None)
        if asked is not None:
            asked.timer.cancel()

    async def _answer(self, frame: DelegateResult) -> None:
        reply = self._serving.pop(frame.id, None)
        if reply is None or not self._h.keys.is_reply(reply):
            return
        await self._h.run_script("dresult", [reply], [frame.id, frame.to_json()])

    # -- from Redis --------------------------------------------------------------------------

    def on_reply(self, fields: dict[Any, Any]) -> bool:
        """An entry of our inbox: True if it was the plane's."""
        kind = text(fields.get(b"t", b""))
        if kind == "delegate":
            request = self._h.decode(fields.get(b"d", b""), Delegate)
            if isinstance(request, Delegate) and request.to == self._h.member_id():
                if len(self._serving) >= MAX_SERVING:
                    self._serving.pop(next(iter(self._serving)))
                self._serving[request.id] = text(fields.get(b"r", b""))
                self._h.deliver(request)
        elif kind == "dresult":
            result = self._h.decode(fields.get(b"d", b""), DelegateResult)
            asked = self._asked.pop(text(fields.get(b"g", b"")), None)
            if isinstance(result, DelegateResult) and asked is not None:
                asked.timer.cancel()
                self._h.deliver(DelegateResult(id=asked.own_id, ok=result.ok,
                                               value=result.value, error=result.error))
        else:
            return False
        return True

    async def fetch_continuity(self) -> None:
        """Read the record (a `continuity` event, a join) and deliver it if newer."""
        raw = await self._h.client().hget(self.continuity_key, "frame")
        frame = self._h.decode(raw, Continuity) if raw else None
        if isinstance(frame, Continuity) and frame.version > self._continuity:
            self._continuity = frame.version
            self._h.deliver(frame)

    async def watch_members(self) -> None:
        """(the real, on its heartbeats) Members that dropped out since the last look are
        lost: their delegates end MemberLostError and the member is told `member_lost`."""
        if self._unacked is not None:
            await self._write_continuity(self._unacked)
        out = await self._h.run_script("alive", [], [])
        now = float(text(out[0]))
        current = {text(out[i]): float(text(out[i + 1])) for i in range(1, len(out) - 1, 2)}
        me = self._h.member_id()
        if self._alive is None:  # our first look as the real: the expired are news too
            self._alive = {m: now + 1 for m, e in current.items() if e <= now}
        # members we saw alive, and every member a delegate of ours waits for (it may have
        # joined and gone between two looks)
        watched = {**{a.target: now + 1 for a in self._asked.values()}, **self._alive}
        for member, expiry in watched.items():
            seen = current.get(member)
            if seen is None or seen <= now:
                reason = "left" if seen is None and expiry > now else "hung"
                self.member_lost(member, reason, tell=member != me)
        self._alive = {m: e for m, e in current.items() if e > now}

    def member_lost(self, member: str, reason: str, *, tell: bool = True) -> None:
        """End what was delegated to `member`; tell our member (the real)."""
        for gid, asked in [(g, a) for g, a in self._asked.items() if a.target == member]:
            del self._asked[gid]
            asked.timer.cancel()
            self._fail(asked.own_id, "MemberLostError", f"member {member!r} {reason} before "
                       f"answering {asked.op!r}; it may or may not have done it, and it is "
                       "not re-sent")
        if tell:
            self._h.deliver(MemberLost(member_id=member, reason=reason))

    def reign_ended(self) -> None:
        """We stepped down: no answer will be taken for what we asked."""
        self._alive = None
        self._unacked = None
        for asked in self._asked.values():
            asked.timer.cancel()
            self._fail(asked.own_id, "ActionInterruptedError", "this member stopped being "
                       f"the real before member {asked.target!r} answered {asked.op!r}")
        self._asked.clear()

    def _timed_out(self, gid: str) -> None:
        asked = self._asked.pop(gid, None)
        if asked is not None:
            self._fail(asked.own_id, "DelegateTimeoutError", f"member {asked.target!r} did "
                       f"not answer {asked.op!r} in time; it may still be doing it")

    def _fail(self, delegate_id: str, error: str, message: str) -> None:
        self._h.deliver(DelegateResult(id=delegate_id, ok=False,
                                       error=ErrorInfo(error, message[:2000])))


def _inbox(info: Any) -> str | None:
    if not info:
        return None
    try:
        record = json.loads(info)
    except ValueError:
        return None
    inbox = record.get("inbox") if isinstance(record, dict) else None
    return inbox if isinstance(inbox, str) else None
