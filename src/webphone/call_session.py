"""Call sessions, importable from here as before: the classes live in `webphone.call`."""

from __future__ import annotations

from .call import (
    CallSession,
    CallState,
    Direction,
    InboundCallSession,
    OutboundCallSession,
    WarmTransfer,
)

__all__ = [
    "CallSession",
    "CallState",
    "Direction",
    "InboundCallSession",
    "OutboundCallSession",
    "WarmTransfer",
]
