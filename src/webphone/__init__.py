"""webphone: a SIP-over-WebSocket phone for asyncio, with WebRTC audio, where many processes of
one extension share one registration.

The public surface is re-exported here; everything else is internal.
"""

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

__all__ = [
    "ActionInterruptedError",
    "AuthenticationError",
    "NoRealPhoneError",
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
