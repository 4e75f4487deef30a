"""webphone: a SIP-over-WebSocket phone for asyncio, with WebRTC audio, where many processes of
one extension share one registration.

The public surface is re-exported here (pinned by tests/unit/test_layers.py, listed in
docs/api.md); everything else is internal. Like every library, webphone logs to
``logging.getLogger("webphone")`` and its children and leaves the output to the application: the
package logger has a `logging.NullHandler`.
"""

import logging

from .call import CallSession, InboundCallSession, OutboundCallSession
from .errors import (
    ActionInterruptedError,
    AuthenticationError,
    NoRealPhoneError,
    RegistrationError,
    SipParseError,
    SipTimeoutError,
    TooManyContactsError,
    WebPhoneError,
)
from .phone import WebPhone
from .shared.phone import SharedWebPhone
from .sip_info import SipInfo

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ActionInterruptedError",
    "AuthenticationError",
    "CallSession",
    "InboundCallSession",
    "NoRealPhoneError",
    "OutboundCallSession",
    "RegistrationError",
    "SharedWebPhone",
    "SipInfo",
    "SipParseError",
    "SipTimeoutError",
    "TooManyContactsError",
    "WebPhone",
    "WebPhoneError",
]
__version__ = "0.1.0"
