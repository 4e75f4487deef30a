"""Transports: how a group member reaches its group's coordinator (see `base` for the contract).

`local` (default): a hub process per group on a Unix socket, same OS user only.
`memory`: a hub object in this process (tests, several phones in one program).
`redis` (issue 7): no hub process; leadership by lease with fencing epochs, across hosts.
"""

from __future__ import annotations

from webphone.shared.transports.base import (
    GroupLink,
    GroupLinkClosed,
    GroupTransport,
    GroupTransportError,
    HubOptions,
)

__all__ = ["GroupLink", "GroupLinkClosed", "GroupTransport", "GroupTransportError", "HubOptions"]
