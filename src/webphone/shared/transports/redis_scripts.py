"""The Redis side of a hubless group, pure: key layout, Lua scripts, answers. No I/O.

`webphone.shared.transports.redis` runs these scripts; this module only says what they are. See
that module's docstring for what each script is for, and `webphone.shared.lease` for the rules
the lease scripts follow (`LeaseStore` is the same logic as a Python object).

Every script gets the same KEYS[1..7] (`GroupKeys.base()`): lease, epoch, events, members,
alive, snapshot, actions; per-action scripts add KEYS[8] (the action's record) and KEYS[9] (the
caller's inbox). All of them carry the group's hash tag, so a Redis Cluster keeps a group in one
slot. Time inside scripts is the server's (TIME), never a member's clock. Scripts that read TIME
and then write need effects replication: the default since Redis 5.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from webphone.errors import GroupProtocolError
from webphone.shared.protocol import MemberInfo

__all__ = [
    "ACTION_PUSH",
    "ACT_RETENTION_MS",
    "BLOCK_MS",
    "GROUP_TTL_MS",
    "INBOX_PUSH",
    "REPLY_TTL_MS",
    "SCRIPTS",
    "GroupKeys",
    "LeaseView",
    "entry_key",
    "is_gid",
    "member_infos",
    "plane_script",
    "push_entry",
    "streams",
    "text",
]

log = logging.getLogger("webphone.shared.redis")

#: how long XREAD blocks (ms); the blocking connection's socket timeout is this + command timeout
BLOCK_MS = 1000
#: group keys without a TTL of their own live this long after their last write (ms)
GROUP_TTL_MS = 24 * 3600 * 1000
#: an action's record outlives its deadline by this much (ms), and a claimed one lives this long
ACT_RETENTION_MS = 3600 * 1000
#: a link's inbox lives this long after its last heartbeat or entry (ms)
REPLY_TTL_MS = 60 * 1000


# -- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupKeys:
    """The Redis keys of one group (see the module docstring)."""

    prefix: str

    @classmethod
    def for_group(cls, group: str, namespace: str = "webphone") -> GroupKeys:
        if not namespace or any(ch in namespace for ch in "{}: "):
            raise ValueError("namespace must be non-empty, without braces, colons or spaces")
        tag = hashlib.sha256(group.encode()).hexdigest()[:16]
        return cls(f"{namespace}:{{{tag}}}")

    @property
    def lease(self) -> str:
        return f"{self.prefix}:lease"

    def base(self) -> list[str]:
        """KEYS[1..7] of every script."""
        return [f"{self.prefix}:{name}" for name in
                ("lease", "epoch", "events", "members", "alive", "snapshot", "actions")]

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def actions(self) -> str:
        return f"{self.prefix}:actions"

    def actions_channel(self, db: int) -> str:
        """The channel ENQUEUE pushes each action entry on (the ready real subscribes to it).
        Channels ignore the database number (SELECT): it is in the name, so that the same group
        name in two databases of one server stays two groups. (An inbox's channel is its key's
        name: its random nonce already keeps it apart.)"""
        return f"{self.prefix}:actions:db{db}"

    def act(self, gid: str) -> str:
        return f"{self.prefix}:act:{gid}"

    def reply(self, nonce: str) -> str:
        return f"{self.prefix}:reply:{nonce}"

    def is_reply(self, key: str) -> bool:
        """True for an inbox key of this group (a claim never writes anywhere else)."""
        return _INBOX.fullmatch(key) is not None and key.startswith(self.prefix) \
            and len(key) == len(self.prefix) + 19  # ":reply:" + 12 hex digits


_INBOX = re.compile(r".*:reply:[0-9a-f]{12}")
_GID = re.compile(r"[0-9a-f]{12}\.[A-Za-z0-9_.:-]{1,100}")
_ENTRY_ID = re.compile(rb"[0-9]{1,20}-[0-9]{1,20}")

#: the fields of a pushed action entry, in the order the scripts push them (ENQUEUE)
ACTION_PUSH = (b"g", b"r", b"c", b"n", b"a")
#: the fields of a pushed inbox entry (RESULT, and the plane's DELEGATE and DRESULT)
INBOX_PUSH = (b"t", b"g", b"n", b"r", b"d")

# -- scripts -----------------------------------------------------------------------------------

# KEYS: 1 lease, 2 epoch, 3 events, 4 members, 5 alive, 6 snapshot, 7 actions, [8 act, 9 reply]
_PRELUDE = f"""
local GROUP_TTL = {GROUP_TTL_MS}
local ACT_RETENTION = {ACT_RETENTION_MS}
local REPLY_TTL = {REPLY_TTL_MS}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function lease_get()
  local v = redis.call('HMGET', KEYS[1], 'holder', 'epoch', 'state', 'ready', 'since', 'prev')
  if not v[1] then return nil end
  return {{holder = v[1], epoch = tonumber(v[2]), state = v[3], ready = v[4],
          since = v[5] or '0', prev = v[6] or ''}}
end
local function lease_out(l, now)
  if not l then
    return {{'', tostring(redis.call('GET', KEYS[2]) or '0'), '', '0', '-2', '0', tostring(now)}}
  end
  return {{l.holder, tostring(l.epoch), l.state, l.ready, tostring(redis.call('PTTL', KEYS[1])),
          l.since, tostring(now)}}
end
local function is_holder(l, member, epoch)
  return l ~= nil and l.holder == member and l.epoch == tonumber(epoch)
end
local function event(kind, epoch, holder, data)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 256, '*', 'e', kind, 'n', tostring(epoch),
             'h', holder, 'd', data or '')
  redis.call('PEXPIRE', KEYS[3], GROUP_TTL)
end
local function prune(now)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(dead) do
    redis.call('HDEL', KEYS[4], id)
    redis.call('ZREM', KEYS[5], id)
  end
end
local function members_out(now)
  local out = {{}}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. now, '+inf')) do
    local info = redis.call('HGET', KEYS[4], id)
    if info then table.insert(out, info) end
  end
  return out
end
-- the stream entry `id` (just XADDed) pushed to its reader as well: the PUBLISH wakes a reader
-- at once, the stream keeps the entry for a reader that was not subscribed (see `push_entry`)
local function push(channel, id, ...)
  if channel and channel ~= '' then
    redis.call('PUBLISH', channel, id .. '\\n' .. table.concat({{...}}, '\\n'))
  end
end
local function append(out, items)
  for _, v in ipairs(items) do table.insert(out, v) end
  return out
end
-- a free record (absent/expired), a handed-over one, or our own re-claim: new epoch
local function acquire(member, known, reclaim, fresh_ok, ttl, now)
  local l = lease_get()
  local ready = '0'
  if l then
    if reclaim > 0 and l.holder == member and l.epoch == reclaim then
      ready = '1'
    elseif not (l.state == 'handing' and l.holder ~= member) then
      return nil
    end
  elseif reclaim > 0 then
    ready = '1'
  elseif fresh_ok ~= 1 then
    return nil
  end
  local e = redis.call('INCR', KEYS[2])
  if e <= known then
    e = known + 1
    redis.call('SET', KEYS[2], e)
  end
  redis.call('PEXPIRE', KEYS[2], GROUP_TTL)
  local prev = ''
  if l then prev = l.holder end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'holder', member, 'epoch', e, 'state', 'real', 'ready', ready,
             'since', now, 'prev', prev)
  redis.call('PEXPIRE', KEYS[1], ttl)
  event('lease', e, member, prev)
  return e
end
"""

# ARGV: member, info, member_ttl_ms, ident, max_members, known, reclaim, fresh_ok, ttl_ms, want
_JOIN = """
local now = now_ms()
local member = ARGV[1]
local joined = now
local old = redis.call('HGET', KEYS[4], member)
if old then
  local ok, d = pcall(cjson.decode, old)
  local exp = redis.call('ZSCORE', KEYS[5], member)
  if ok and type(d) == 'table' then
    if exp and tonumber(exp) > now and d.ident ~= ARGV[4] then return {'duplicate'} end
    if d.ident == ARGV[4] and d.joined then joined = d.joined end
  end
end
prune(now)
if not redis.call('ZSCORE', KEYS[5], member) and
   redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[5]) then
  return {'full'}
end
local info = cjson.decode(ARGV[2])
info.joined = joined
info.since = now
local text = cjson.encode(info)
redis.call('HSET', KEYS[4], member, text)
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), member)
redis.call('PEXPIRE', KEYS[4], GROUP_TTL)
redis.call('PEXPIRE', KEYS[5], GROUP_TTL)
local status = 'dummy'
if ARGV[10] == '1' and acquire(member, tonumber(ARGV[6]), tonumber(ARGV[7]),
                               tonumber(ARGV[8]), tonumber(ARGV[9]), now) then
  status = 'real'
end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if last[1] then last_id = last[1][1] end
local snap = redis.call('HGET', KEYS[6], 'frame') or ''
local out = {status, last_id, snap, text}
append(out, lease_out(lease_get(), now))
return append(out, members_out(now))
"""

# ARGV: member, info, member_ttl_ms;  KEYS[8]: our inbox
_HEARTBEAT = """
local now = now_ms()
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('EXISTS', KEYS[8]) == 1 then redis.call('PEXPIRE', KEYS[8], REPLY_TTL) end
local sv = redis.call('HMGET', KEYS[6], 'epoch', 'seq')
local out = {tostring(sv[1] or '0'), tostring(sv[2] or '0')}
return append(out, lease_out(lease_get(), now))
"""

# ARGV: member, known, reclaim, fresh_ok, ttl_ms
_ACQUIRE = """
local now = now_ms()
local e = acquire(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
                  tonumber(ARGV[5]), now)
local l = lease_get()
local status = 'held'
if e then status = 'ok' elseif not l then status = 'fresh' end
return append({status}, lease_out(l, now))
"""

# ARGV: member, epoch, ttl_ms   (compare-and-pexpire)
_RENEW = """
local now = now_ms()
local l = lease_get()
if is_holder(l, ARGV[1], ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return append({'ok'}, lease_out(l, now))
end
return append({'lost'}, lease_out(l, now))
"""

# ARGV: member, epoch   (compare-and-delete)
_RELEASE = """
local l = lease_get()
if is_holder(l, ARGV[1], ARGV[2]) then
  redis.call('DEL', KEYS[1])
  event('free', l.epoch, l.holder, '')
  return 'ok'
end
return 'not_holder'
"""

# ARGV: member, epoch
_READY = """
local l = lease_get()
if not is_holder(l, ARGV[1], ARGV[2]) then return 'fenced' end
if l.ready ~= '1' then
  redis.call('HSET', KEYS[1], 'ready', '1')
  event('ready', l.epoch, l.holder, l.prev)
end
return 'ok'
"""

# ARGV: member, epoch
_HANDOVER = """
local now = now_ms()
local l = lease_get()
if not is_holder(l, ARGV[1], ARGV[2]) then return 'fenced' end
prune(now)
local others = redis.call('ZCOUNT', KEYS[5], '(' .. now, '+inf')
if redis.call('ZSCORE', KEYS[5], ARGV[1]) then others = others - 1 end
if others <= 0 then
  redis.call('HSET', KEYS[1], 'state', 'unregistering')
  return 'alone'
end
redis.call('HSET', KEYS[1], 'state', 'handing')
event('handover', l.epoch, l.holder, '')
return 'handing'
"""

# ARGV: member, ident, link. Only the link that wrote the record forgets it: the LEAVE of a
# member's old link, run after its new link's JOIN (a quick re-link, same ident), must not
# take the member out of the list. A record without a link (older versions): by ident.
_LEAVE = """
local old = redis.call('HGET', KEYS[4], ARGV[1])
if old then
  local ok, d = pcall(cjson.decode, old)
  if ok and type(d) == 'table' and d.ident == ARGV[2] and
     (d.link == nil or d.link == ARGV[3]) then
    redis.call('HDEL', KEYS[4], ARGV[1])
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
end
return 'ok'
"""

_MEMBERS = """
local now = now_ms()
prune(now)
return append(lease_out(lease_get(), now), members_out(now))
"""

# ARGV: snapshot epoch, seq, frame, member
_PUBLISH = """
local l = lease_get()
if not is_holder(l, ARGV[4], ARGV[1]) then return 'fenced' end
local sv = redis.call('HMGET', KEYS[6], 'epoch', 'seq')
local se, ss = tonumber(sv[1] or '0'), tonumber(sv[2] or '0')
local e, s = tonumber(ARGV[1]), tonumber(ARGV[2])
if e < se or (e == se and s <= ss) then return 'old' end
redis.call('HSET', KEYS[6], 'epoch', e, 'seq', s, 'frame', ARGV[3])
redis.call('PEXPIRE', KEYS[6], GROUP_TTL)
event('snapshot', e, ARGV[4], ARGV[3])
return 'ok'
"""

# KEYS[8] act, KEYS[9] caller's inbox; ARGV: gid, timeout_ms, action frame[, claim[, channel]]
# claim = '1': if a real is ready, the action is claimed for it here (what CLAIM would do when it
# reads the entry), so that it runs the action as soon as it reads it: one round trip less
# on the real's side. channel: the entry is also pushed there (the real's wake-up, ACTION_PUSH).
# Returns 'dup', 'ok' (queued) or 'claimed:<epoch>'.
_ENQUEUE = """
local now = now_ms()
if redis.call('EXISTS', KEYS[8]) == 1 then return 'dup' end
local l = lease_get()
local deadline = now + tonumber(ARGV[2])
if ARGV[4] == '1' and l and l.ready == '1' and l.state == 'real' then
  redis.call('HSET', KEYS[8], 'state', 'claimed', 'epoch', l.epoch, 'deadline', deadline,
             'reply', KEYS[9])
  redis.call('PEXPIRE', KEYS[8], ACT_RETENTION)
  local id = redis.call('XADD', KEYS[7], 'MAXLEN', '~', 10000, '*', 'g', ARGV[1], 'r', KEYS[9],
                        'a', ARGV[3], 'c', l.holder, 'n', tostring(l.epoch))
  redis.call('PEXPIRE', KEYS[7], GROUP_TTL)
  push(ARGV[5], id, ARGV[1], KEYS[9], l.holder, tostring(l.epoch), ARGV[3])
  return 'claimed:' .. tostring(l.epoch)
end
redis.call('HSET', KEYS[8], 'state', 'queued', 'deadline', deadline, 'reply', KEYS[9])
redis.call('PEXPIRE', KEYS[8], tonumber(ARGV[2]) + ACT_RETENTION)
local id = redis.call('XADD', KEYS[7], 'MAXLEN', '~', 10000, '*', 'g', ARGV[1], 'r', KEYS[9],
                      'a', ARGV[3])
redis.call('PEXPIRE', KEYS[7], GROUP_TTL)
push(ARGV[5], id, ARGV[1], KEYS[9], '', '', ARGV[3])
return 'ok'
"""

# KEYS[8] act, KEYS[9] caller's inbox; ARGV: member, epoch, gid, stream entry id
_CLAIM = """
local now = now_ms()
local l = lease_get()
if not (is_holder(l, ARGV[1], ARGV[2]) and l.ready == '1' and l.state == 'real') then
  return 'not_real'
end
redis.call('XDEL', KEYS[7], ARGV[4])  -- claimed, expired or gone: the entry is done with
local a = redis.call('HMGET', KEYS[8], 'state', 'deadline', 'reply')
if not a[1] or a[3] ~= KEYS[9] then return 'gone' end
if a[1] ~= 'queued' then return a[1] end
if now > tonumber(a[2]) then
  redis.call('HSET', KEYS[8], 'state', 'expired')
  return 'late'
end
redis.call('HSET', KEYS[8], 'state', 'claimed', 'epoch', ARGV[2])
redis.call('PEXPIRE', KEYS[8], ACT_RETENTION)
return 'ok'
"""

# KEYS[8] act, KEYS[9] caller's inbox; ARGV: member, epoch, gid, result frame[, stream entry id]
# (the entry of an action claimed by ENQUEUE is deleted here: nobody else needs it). The result
# entry is pushed on the inbox's channel (its name), INBOX_PUSH.
_RESULT = """
if ARGV[5] then redis.call('XDEL', KEYS[7], ARGV[5]) end
local l = lease_get()
if not is_holder(l, ARGV[1], ARGV[2]) then return 'fenced' end
local a = redis.call('HMGET', KEYS[8], 'state', 'epoch', 'reply')
if not a[1] then return 'gone' end
if a[1] ~= 'claimed' or a[2] ~= ARGV[2] or a[3] ~= KEYS[9] then return a[1] end
redis.call('HSET', KEYS[8], 'state', 'done')
local id = redis.call('XADD', KEYS[9], 'MAXLEN', '~', 1000, '*', 't', 'result', 'g', ARGV[3],
                      'n', ARGV[2], 'd', ARGV[4])
redis.call('PEXPIRE', KEYS[9], REPLY_TTL)
push(KEYS[9], id, 'result', ARGV[3], ARGV[2], '', ARGV[4])
return 'ok'
"""

# KEYS[8] act   (the caller's deadline)
_EXPIRE = """
local a = redis.call('HMGET', KEYS[8], 'state', 'epoch')
if not a[1] then return {'gone', ''} end
if a[1] == 'queued' then
  redis.call('HSET', KEYS[8], 'state', 'expired')
  return {'expired', ''}
end
return {a[1], a[2] or ''}
"""

# KEYS[8] act   (the caller saw the lease leave the claim's epoch)
_INTERRUPT = """
local a = redis.call('HMGET', KEYS[8], 'state', 'epoch')
if not a[1] then return {'gone', ''} end
if a[1] ~= 'claimed' then return {a[1], a[2] or ''} end
local l = lease_get()
if l and l.epoch == tonumber(a[2]) then return {'running', a[2]} end
redis.call('HSET', KEYS[8], 'state', 'interrupted')
return {'interrupted', a[2]}
"""

_FUNCTION = re.compile(r"^(?:--[^\n]*\n)*local function (\w+)\(", re.M)


def _prelude_for(body: str) -> str:
    """The prelude's constants and only the functions `body` calls, directly or through another
    one (in the prelude's order): each ``local function`` is a closure made again on every run
    of the script, ~0.4 us of the server's time each, and a script uses a few of eleven."""
    found = list(_FUNCTION.finditer(_PRELUDE))
    pieces = {m.group(1): _PRELUDE[m.start():n.start() if n else len(_PRELUDE)]
              for m, n in zip(found, [*found[1:], None], strict=True)}
    needed: set[str] = set()
    todo = [body]
    while todo:
        text_ = todo.pop()
        for name, code in pieces.items():
            if name not in needed and re.search(rf"\b{name}\(", text_):
                needed.add(name)
                todo.append(code)
    return _PRELUDE[:found[0].start()] + "".join(
        code for name, code in pieces.items() if name in needed)


SCRIPTS: dict[str, str] = {
    name: _prelude_for(body) + body for name, body in {
        "join": _JOIN, "heartbeat": _HEARTBEAT, "acquire": _ACQUIRE, "renew": _RENEW,
        "release": _RELEASE, "ready": _READY, "handover": _HANDOVER, "leave": _LEAVE,
        "members": _MEMBERS, "publish": _PUBLISH, "enqueue": _ENQUEUE, "claim": _CLAIM,
        "result": _RESULT, "expire": _EXPIRE, "interrupt": _INTERRUPT,
    }.items()
}


def plane_script(body: str) -> str:
    """A script of the continuity plane (`redis_plane.py`): `body` after the shared prelude
    (the parts of it that `body` uses)."""
    return _prelude_for(body) + body


def is_gid(gid: str) -> bool:
    """True for an action id as links write them (<link nonce>.<member's action id>)."""
    return _GID.fullmatch(gid) is not None


def push_entry(data: bytes, names: tuple[bytes, ...]) -> tuple[str, dict[bytes, bytes]] | None:
    """A stream entry as the scripts' ``push`` publishes it (``<entry id>\\n<field>\\n...``,
    the fields in the order of `names`, the last one free text) as (entry id, fields), the
    empty fields left out as XADD leaves them out; None if it is not one."""
    parts = data.split(b"\n", len(names))
    if len(parts) != len(names) + 1 or _ENTRY_ID.fullmatch(parts[0]) is None:
        return None
    return parts[0].decode(), {name: value for name, value in zip(names, parts[1:],
                                                                   strict=True) if value}


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as a tuple that orders like the stream."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def text(value: Any) -> str:
    """A Redis reply item as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def streams(resp: Any) -> list[tuple[Any, Any]]:
    """XREAD's answer as (stream, entries) pairs: a list (RESP2) or a dict (RESP3)."""
    if not resp:
        return []
    if isinstance(resp, dict):
        return list(resp.items())
    return [(item[0], item[1]) for item in resp]


@dataclass(frozen=True)
class LeaseView:
    """The lease as a script saw it (server time)."""

    holder: str | None
    epoch: int
    state: str
    ready: bool
    pttl_ms: int
    since_ms: int
    now_ms: int

    @classmethod
    def parse(cls, items: list[Any]) -> LeaseView:
        holder, epoch, state, ready, pttl, since, now = (text(v) for v in items[:7])
        return cls(holder or None, int(epoch or 0), state, ready == "1", int(pttl),
                   int(float(since or 0)), int(now))


def member_infos(lease: LeaseView, items: list[Any]) -> tuple[MemberInfo, ...]:
    """Members as `MemberInfo` (times on this host's monotonic clock, as a hub's are), oldest
    first. Ages come from the server's clock, so hosts whose clocks disagree still agree."""
    mono, server_now = time.monotonic(), lease.now_ms / 1000
    infos = []
    for raw in items:
        try:
            d = json.loads(raw)
            role, since = "dummy", float(d.get("since", d["joined"])) / 1000
            if d["id"] == lease.holder:
                role = "real" if lease.state == "real" else "handing_over"
                since = lease.since_ms / 1000
            joined = float(d["joined"]) / 1000
            infos.append(MemberInfo(str(d["id"]), int(d["pid"]), str(d["host"]), role,
                                    max(0.0, mono - (server_now - joined)),
                                    max(0.0, mono - (server_now - since))))
        except (ValueError, KeyError, TypeError, GroupProtocolError) as exc:
            log.warning("ignoring a malformed member entry in Redis: %s", exc)
    return tuple(sorted(infos, key=lambda m: m.joined_at))
