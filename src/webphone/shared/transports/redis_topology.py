"""Where a group's Redis is: one server, the primary a set of Sentinels names, or the Redis
Cluster node that serves the group's hash slot. Hub URLs (pure) and locating the node (I/O).

Hub URLs::

    redis://[user:password@]host[:port][/db][?replica_acks=N]       one server (redis-py's
    rediss://...   unix:///path/redis.sock[?db=N]                    syntax; TLS; a socket)
    redis+sentinel://[user:password@]host[:port][,host[:port]...]/SERVICE[?db=N&replica_acks=N
                     &sentinel_username=U&sentinel_password=P]      (sentinel port 26379)
    redis+cluster://[user:password@]host[:port][,host[:port]...][?replica_acks=N]   (port 6379)
    rediss+sentinel://...   rediss+cluster://...                    the same over TLS

redis-py documents no URL for Sentinel or Cluster (``Sentinel([...]).master_for(name)`` and
``RedisCluster(startup_nodes=[...])`` are objects), so the forms follow the convention that
several clients share (Lettuce ``redis-sentinel://h1,h2/db#service``, the ``redis+sentinel``
scheme of Celery/kombu and Django's redis-sentinel-url): the scheme says the topology, the
comma-separated hosts are where to ask (sentinels, or any cluster nodes), the path names the
Sentinel service. ``user:password@`` is for the Redis servers; sentinels that need their own
credentials take ``sentinel_username``/``sentinel_password``.

`replica_acks` is the acknowledgement rule of `webphone.shared.lease`: how many replicas must
acknowledge (Redis ``WAIT``) every lease grant, renewal and action decision before a member
acts on it. Defaults: 0 for one server (nothing to wait for: today's behaviour and cost), 1 for
Sentinel and Cluster (a failover promotes a replica, which must hold every lease that a member
acts on). ``?replica_acks=1`` on a ``redis://`` URL serves a server whose replicas are promoted
by something else (a managed Redis behind one name); ``?replica_acks=0`` on a Sentinel URL
accepts the old risk (two reals for up to a lease after a failover) for lower latency.

Locating: a Sentinel URL asks the sentinels in order (``SENTINEL GET-MASTER-ADDR-BY-NAME``)
and takes the first answer that is a primary (``ROLE``: one sentinel may name the demoted node
for seconds after a failover); a Cluster URL asks the seed nodes (``CLUSTER SLOTS``) which
primary serves the group's slot. Members talk to that one node over plain connections: the
scripts, ``WAIT`` and ``XREAD`` of a link go to the node that holds the group, on one
connection (``WAIT`` counts that connection's writes). After a failover those connections
break, and the link locates the node again; a stale answer is caught by ``ROLE`` (a replica)
or by ``MOVED`` (another node serves the slot), both errors that make the link retry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.crc import key_slot

__all__ = ["HUB_SCHEMES", "RedisTarget", "command", "parse_hub_url", "redact"]

Kind = Literal["server", "sentinel", "cluster"]

#: every URL scheme a hub may have, and the topology it means
HUB_SCHEMES: dict[str, Kind] = {
    "redis": "server", "rediss": "server", "unix": "server",
    "redis+sentinel": "sentinel", "rediss+sentinel": "sentinel",
    "redis+cluster": "cluster", "rediss+cluster": "cluster",
}
_DEFAULT_PORT = {"sentinel": 26379, "cluster": 6379}
_OPTIONS = {"server": {"replica_acks"},
            "sentinel": {"db", "replica_acks", "sentinel_username", "sentinel_password"},
            "cluster": {"replica_acks"}}


def redact(url: str) -> str:
    """`url` without its password (for error messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.netloc.rpartition('@')[2]}"
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """A parsed hub URL (see the module docstring). `node_url(host, port)` is the plain
    ``redis://`` URL of one data node, with the URL's credentials, TLS and db."""

    kind: Kind
    url: str  # as given (one server: without our own options, for redis-py)
    hosts: tuple[tuple[str, int], ...] = ()  # sentinels or cluster seeds
    service: str = ""
    db: int = 0
    tls: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    replica_acks: int = 0

    def node_url(self, host: str, port: int) -> str:
        """The URL of one data node of a Sentinel or Cluster target."""
        auth = ""
        if self.password is not None or self.username is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        where = f"[{host}]" if ":" in host else host
        return f"{'rediss' if self.tls else 'redis'}://{auth}{where}:{port}/{self.db}"

    async def locate(self, slot_key: str, timeout: float) -> str:
        """The URL of the node a group whose keys hash like `slot_key` must talk to now.
        Raises a redis-py ConnectionError when nobody knows (the link retries)."""
        if self.kind == "server":
            return self.url
        errors: list[str] = []
        for host, port in self.hosts:
            client = Redis(host=host, port=port, socket_timeout=timeout,
                           socket_connect_timeout=timeout, ssl=self.tls,
                           **self._auth_for_hosts())
            try:
                found = await asyncio.wait_for(self._ask(client, slot_key), timeout)
            except (redis_errors.RedisError, OSError, TimeoutError) as exc:
                errors.append(f"{host}:{port}: {type(exc).__name__}: {exc}")
                continue
            finally:
                await client.aclose()
            if found is None:
                errors.append(f"{host}:{port}: does not know it")
            elif self.kind == "sentinel" and not await self._is_primary(found, timeout):
                # a sentinel can name a demoted primary for seconds after a failover (a stale
                # view): ask the next one rather than retrying the same stale answer
                errors.append(f"{host}:{port}: named {found[0]}:{found[1]}, not a primary")
            else:
                return self.node_url(found[0] or host, found[1])
        what = (f"the primary of Sentinel service {self.service!r}" if self.kind == "sentinel"
                else f"the Cluster node serving slot {key_slot(slot_key.encode())}")
        raise redis_errors.ConnectionError(f"nobody could say where {what} is: "
                                           + "; ".join(errors))

    async def _is_primary(self, addr: tuple[str, int], timeout: float) -> bool:
        client = Redis(host=addr[0], port=addr[1], socket_timeout=timeout,
                       socket_connect_timeout=timeout, ssl=self.tls, username=self.username,
                       password=self.password)
        try:
            role = await asyncio.wait_for(command(client, "ROLE"), timeout)
            return _text(role[0]) == "master"
        except (redis_errors.RedisError, OSError, TimeoutError):
            return False
        finally:
            await client.aclose()

    def _auth_for_hosts(self) -> dict[str, Any]:
        if self.kind == "sentinel":
            return {"username": self.sentinel_username, "password": self.sentinel_password}
        return {"username": self.username, "password": self.password}

    async def _ask(self, client: Redis, slot_key: str) -> tuple[str, int] | None:
        if self.kind == "sentinel":
            addr = await command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            return (_text(addr[0]), int(addr[1])) if addr else None
        slot = key_slot(slot_key.encode())
        for entry in await command(client, "CLUSTER", "SLOTS"):
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            if start <= slot <= end:
                return _text(primary[0]), int(primary[1])
        return None


async def command(client: Redis, *args: Any) -> Any:
    """A raw command (redis-py's `execute_command`, which is untyped)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_hub_url(url: str) -> RedisTarget:
    """Parse a hub URL (see the module docstring); ValueError names what is wrong."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    kind = HUB_SCHEMES.get(scheme)
    shown = redact(url)
    if kind is None:
        raise ValueError(f"hub URL {shown!r}: the scheme must be one of "
                         f"{', '.join(s + '://' for s in HUB_SCHEMES)}")
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - _OPTIONS[kind]) if kind != "server" else []
    if unknown:
        raise ValueError(f"hub URL {shown!r}: unknown option {unknown[0]!r} (known: "
                         f"{', '.join(sorted(_OPTIONS[kind]))})")
    acks = _whole(shown, "replica_acks", options.pop("replica_acks",
                                                     "0" if kind == "server" else "1"))
    if kind == "server":
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in options.items())
        plain = url.partition("?")[0] + (f"?{query}" if query else "")
        try:
            parse_url(plain)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"hub URL {shown!r}: {exc}") from None
        return RedisTarget(kind=kind, url=plain, replica_acks=acks)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts = _hosts(shown, kind, hostlist)
    path = parts.path.strip("/")
    db = _whole(shown, "db", options.get("db", "0"))
    if kind == "sentinel" and (not path or "/" in path):
        raise ValueError(f"hub URL {shown!r}: name the Sentinel service (the primary's name in "
                         "the sentinels' configuration) after the hosts, as in "
                         "redis+sentinel://HOST:26379,HOST:26379/SERVICE")
    if kind == "cluster" and path not in ("", "0"):
        raise ValueError(f"hub URL {shown!r}: a Redis Cluster has only db 0 and no service "
                         "name: redis+cluster://HOST:PORT,HOST:PORT")
    return RedisTarget(
        kind=kind, url=url, hosts=hosts, service=unquote(path) if kind == "sentinel" else "",
        db=db, tls=scheme.startswith("rediss"), username=unquote(user) if user else None,
        password=unquote(password) if userinfo and ":" in userinfo else None,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"), replica_acks=acks)


def _whole(shown: str, name: str, value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"hub URL {shown!r}: {name}={value!r} is not a whole number >= 0")
    return int(value)


def _hosts(shown: str, kind: Kind, hostlist: str) -> tuple[tuple[str, int], ...]:
    what = "sentinel" if kind == "sentinel" else "cluster node"
    if not hostlist.strip(","):
        raise ValueError(f"hub URL {shown!r}: no {what} host; list at least one as "
                         "HOST:PORT,HOST:PORT")
    hosts = []
    for n, item in enumerate(hostlist.split(","), 1):
        host, port = item, str(_DEFAULT_PORT[kind])
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":"):
                port = rest[1:]
        elif ":" in item:
            host, _, port = item.rpartition(":")
        if not host:
            raise ValueError(f"hub URL {shown!r}: {what} {n} ({item!r}) has no host")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"hub URL {shown!r}: the port of {what} {n} ({item!r}) is not a "
                             "number 1-65535")
        hosts.append((host, int(port)))
    return tuple(hosts)
