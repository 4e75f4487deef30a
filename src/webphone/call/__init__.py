"""Call sessions: one SIP dialog and its media (the asyncio shell over the pure SIP core).

`session.py` has `CallSession` (state, ids, in-dialog requests from `_base.py`, transfers from
`actions.py`, RingCentral INFO commands from `rc_actions.py`); `outbound.py` and `inbound.py`
the two kinds of call. A session reaches its phone only through `PhoneLink`.
"""

from __future__ import annotations

from ._base import BaseCallSession, CallMedia, CallState, CallTimers, Direction, PhoneLink
from ._renew import RenewFailed
from .actions import WarmTransfer
from .inbound import InboundCallSession
from .outbound import OutboundCallSession
from .session import CallSession

__all__ = [
    "BaseCallSession",
    "CallMedia",
    "CallSession",
    "CallState",
    "CallTimers",
    "Direction",
    "InboundCallSession",
    "OutboundCallSession",
    "PhoneLink",
    "RenewFailed",
    "WarmTransfer",
]
