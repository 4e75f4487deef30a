"""Remote ICE addresses outside the allowed networks are ignored, peer-reflexive ones included.

`keep_candidates` (in `_interop.py`) drops the peer's SDP candidates outside the allowed
networks, so no check is ever *sent* elsewhere. But a connectivity check can also *arrive*
from elsewhere: a browser on this machine gathers host candidates on every interface and checks
from each of them, and a check from, say, 192.0.2.2 to our 127.0.0.1 candidate makes aioice
learn 192.0.2.2 as a peer-reflexive candidate (RFC 8445 §7.3.1.3), pair it, check it, and
then (it has the higher priority) send media there. With `loopback_only` that breaks the
promise that no packet leaves 127.0.0.0/8.

`ignore_remote_outside(connection, networks)` shadows `request_received` on one aioice
`Connection` *instance* (the class is untouched): a Binding request from an address outside
`networks` is dropped before aioice answers it or learns anything from it. To the sender it is
a lost packet; its checks from allowed addresses go on as usual.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ._interop import Network

log = logging.getLogger("webphone.media")

__all__ = ["allowed_address", "ignore_remote_outside"]


def allowed_address(host: str, networks: Sequence[Network]) -> bool:
    """Whether `host` (an IP literal; an IPv4-mapped IPv6 address counts as IPv4) is inside
    one of `networks`. Anything that is not an IP address is not allowed."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def ignore_remote_outside(connection: Any, networks: Sequence[Network]) -> bool:
    """Drop STUN requests to `connection` (an aioice Connection) from outside `networks`;
    False when this aioice has no `request_received` to guard (nothing is changed then)."""
    original: Callable[..., None] | None = getattr(connection, "request_received", None)
    if original is None:
        log.warning("aioice Connection has no request_received: remote addresses unfiltered")
        return False
    if getattr(connection, "_webphone_networks", None) is not None:
        connection._webphone_networks = list(networks)
        return True
    connection._webphone_networks = list(networks)
    ignored: set[str] = set()

    def request_received(message: Any, addr: tuple[str, int], protocol: Any) -> None:
        if allowed_address(addr[0], connection._webphone_networks):
            original(message, addr, protocol)
        elif addr[0] not in ignored:
            ignored.add(addr[0])
            log.debug("ignoring ICE checks from %s (outside %s)", addr[0],
                      [str(n) for n in connection._webphone_networks])

    connection.request_received = request_received
    return True
