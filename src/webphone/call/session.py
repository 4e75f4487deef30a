"""Call sessions: one SIP dialog and its media.

`OutboundCallSession` (outbound.py) is created by `WebPhone.call()`, `InboundCallSession`
(inbound.py) by an inbound INVITE.
Both share `CallSession`: state, ids, in-dialog requests (BYE, re-INVITE for hold, REFER, INFO
commands, DTMF) and the media. Flows follow RFC 3261 where the upstream SDK is fragile: every
non-2xx final response is ACKed, provisional responses stay provisional, in-dialog requests go to
the peer's Contact through the Record-Route set, a CANCEL is answered with 200 and the INVITE
with 487, and a BYE may arrive before the ACK.

States: ``init`` → ``ringing`` → ``answered`` → ``disposed``; ``failed`` when the call never
connected. Events: ``ringing``, ``answered``, ``failed(reason)``, ``disposed``, ``held``,
``unheld``, ``dtmf(digit)``, ``inbound_message(msg)``, ``transferred(new_session)``,
``refreshed(response)`` (the dialog was confirmed again by `refresh()`, e.g. after a
reconnect), ``media_moved(media)`` (`renew_media` brought the audio back on `media`),
``adopted()`` (this process took the call over from another). An answered call ends by
itself (``disposed`` with `end_reason`) when it cannot be confirmed: see `_liveness.py`.
"""

from __future__ import annotations

from ._base import BaseCallSession, CallState, Direction, PhoneLink
from ._renew import MediaMoves
from .actions import WarmTransfer

__all__ = ["BaseCallSession", "CallSession", "CallState", "Direction", "PhoneLink",
           "WarmTransfer"]


class CallSession(MediaMoves):
    """One call. See the module docstring for states and events."""
