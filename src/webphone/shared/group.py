"""Group plumbing shared by `SharedWebPhone` and ``webphone status``: the group's name and
instance id, choosing a transport, member listings, and the fenced SIP client of the real."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

from webphone.errors import HubTimeoutError, RegistrationError, TransportError, WebPhoneError
from webphone.shared.protocol import MAX_ID_CHARS, MemberInfo
from webphone.shared.transports.base import GroupLinkClosed, GroupTransport, HubOptions
from webphone.sip import SipRequest, SipResponse
from webphone.sip_client import SipClient
from webphone.sip_info import SipInfo

__all__ = ["REDIS_SCHEMES", "GroupSipClient", "RealCheck", "as_sip_info", "group_instance_id",
           "group_name", "group_status", "make_transport", "member_dict", "validate_hub"]

#: hub URL schemes of the Redis transport (one server, Sentinel, Cluster; see docs/redis.md)
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://",
                 "redis+cluster://", "rediss+cluster://")

_NAMESPACE = uuid.UUID("8f4b1f0e-4f7e-4c55-9a0c-7b2d3c1e5a60")


def as_sip_info(value: SipInfo | Mapping[str, Any]) -> SipInfo:
    return value if isinstance(value, SipInfo) else SipInfo.from_dict(dict(value))


def group_name(sip_info: SipInfo | Mapping[str, Any]) -> str:
    """The default group of an extension: ``authorizationId@domain`` (hashed if too long)."""
    info = as_sip_info(sip_info)
    name = f"{info.authorization_id}@{info.domain}"
    if len(name) > MAX_ID_CHARS or any(ch < " " for ch in name):
        name = "sha256:" + hashlib.sha256(name.encode()).hexdigest()[:40]
    return name


def group_instance_id(group: str) -> str:
    """The stable RFC 5626 instance id every real of `group` registers with (a UUID)."""
    return str(uuid.uuid5(_NAMESPACE, group))


_memory_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupTransport] = (
    weakref.WeakKeyDictionary()
)


def make_transport(
    hub: str | GroupTransport, options: HubOptions, runtime_dir: str | None, *, spawn: bool = True
) -> GroupTransport:
    if isinstance(hub, GroupTransport):
        return hub
    if hub == "local":
        from webphone.shared.transports.local import LocalTransport

        return LocalTransport(options, runtime_dir=runtime_dir, spawn=spawn)
    if hub == "memory":
        from webphone.shared.transports.memory import MemoryTransport

        loop = asyncio.get_running_loop()
        transport = _memory_transports.get(loop)
        if transport is None:
            transport = _memory_transports[loop] = MemoryTransport(options)
        return transport
    if hub.lower().startswith(REDIS_SCHEMES):
        try:
            module = importlib.import_module("webphone.shared.transports.redis")
        except ImportError as exc:
            raise ValueError(f"hub={hub!r}: the Redis transport is not available ({exc})") from exc
        transport_cls = module.RedisTransport
        made: GroupTransport = transport_cls(hub, options)
        return made
    raise ValueError(f"hub must be 'local', 'memory', a Redis URL ({', '.join(REDIS_SCHEMES)}) "
                     f"or a transport, not {hub!r}")


def validate_hub(hub: str) -> str:
    """`hub` if it is "local", "memory" or a well-formed Redis hub URL; else ValueError saying
    what is wrong (for command lines: checked before anything starts)."""
    if hub in ("local", "memory"):
        return hub
    if not hub.lower().startswith(REDIS_SCHEMES):
        raise ValueError(f"{hub!r}: expected \"local\" or a Redis URL such as "
                         f"redis://10.0.0.5:6379/0 ({', '.join(REDIS_SCHEMES)})")
    try:
        topology = importlib.import_module("webphone.shared.transports.redis_topology")
    except ImportError as exc:
        raise ValueError(f"{hub!r} needs the Redis extra: pip install webphone[redis] "
                         f"({exc})") from None
    topology.parse_hub_url(hub)
    return hub


def member_dict(info: MemberInfo, *, me: str | None = None) -> dict[str, Any]:
    # the hub's times are its monotonic clock (system-wide on Linux): show wall-clock times
    offset = time.time() - time.monotonic()
    return {
        "member_id": info.member_id,
        "pid": info.pid,
        "host": info.host,
        "role": "real" if info.role == "handing_over" else info.role,
        "since": info.role_since + offset,
        "joined": info.joined_at + offset,
        "leaving": info.role == "handing_over",
        "self": info.member_id == me,
    }


async def group_status(
    sip_info_or_group: SipInfo | Mapping[str, Any] | str,
    *,
    hub: str | GroupTransport = "local",
    runtime_dir: str | None = None,
    timeout: float = 2.0,
) -> list[dict[str, Any]]:
    """The members of a group without joining it (for ``webphone status``); [] if no hub runs;
    `HubTimeoutError` if it does not answer within `timeout` s.

    Each member is a dict: member_id, pid, host, role ("real"|"dummy"), since (wall-clock time of
    its last role change), joined, leaving (a real handing over), self (always False here).
    """
    group = (sip_info_or_group if isinstance(sip_info_or_group, str)
             else group_name(sip_info_or_group))
    transport = make_transport(hub, HubOptions(), runtime_dir, spawn=False)
    try:
        infos = await transport.query_members(group, timeout)
    except WebPhoneError:
        raise
    except TimeoutError:
        raise HubTimeoutError(f"the hub of group {group!r} did not answer a status query "
                              f"within {timeout:g} s") from None
    except ConnectionError as exc:
        raise GroupLinkClosed(f"the hub of group {group!r} closed the status query: {exc}") from exc
    return [] if infos is None else [member_dict(m) for m in infos]


# -- the real's SIP client ---------------------------------------------------------------------


class RealCheck(Protocol):
    """What the real's SIP client needs from its group member (`GroupMember` is one)."""

    async def confirm_real(self) -> bool:
        """True if this member is (still) the group's real: asked before every REGISTER."""

    def stalled(self) -> bool:
        """True while our loop stalled (SIGSTOP, a blocked loop) and the hub has not confirmed
        our role since: we may have been deposed meanwhile."""


class GroupSipClient(SipClient):
    """A SipClient that asks the group before every REGISTER (fencing) and goes silent for good
    once fenced: a deposed real neither registers, nor answers, nor unregisters."""

    def __init__(self, sip_info: SipInfo, *, member: RealCheck, **kwargs: Any) -> None:
        super().__init__(sip_info, **kwargs)
        self._member = member

    async def register(self, expires: int | None = None) -> int:
        if expires != 0 and not self._fenced and not await self._member.confirm_real():
            self.fence()
            raise RegistrationError("this member is no longer the group's real phone (fenced)")
        return await super().register(expires)

    async def send(self, message: SipRequest | SipResponse) -> None:
        # Invariant 8: a real that stalled (SIGSTOP past the timeout) may have been replaced
        # and its dialogs adopted: it sends nothing until the hub confirms it is still the real
        # (the hub answers in order, so a pending demotion arrives first and fences us).
        if not self._fenced and self._member.stalled() and not await self._member.confirm_real():
            self.fence()
        if self._fenced:
            raise TransportError("fenced: another member of the group is the real phone now")
        await super().send(message)
