"""A local SIP-over-WebSocket server that behaves like RingCentral's, for development and CI.

    from webphone.sandbox import Sandbox

    async with Sandbox() as sb:                 # ws://127.0.0.1:<free port>, users 101..105
        phone = WebPhone(SipInfo.from_dict(sb.sip_info("101")))

What it enforces and answers like RingCentral: digest auth (401 for REGISTER, 407 for calls),
at most 5 live registrations per extension (the 6th gets `603 Too Many Contacts`), instance
replacement, 60 s bindings, P-rc / p-rc-api-ids / p-rc-api-call-info on inbound INVITEs,
x-rc/agent commands (decline, voicemail, forward, reply) and INFO JSON commands (recording,
flip, park; `*801`... picks a parked call up). Built-in parties: 900 echo, 901 tone,
902 busy, 903 voicemail.
Command line: `webphone sandbox` / `python -m webphone.sandbox` (see `cli.py`).
"""

from .config import MessageRecord, SandboxConfig
from .parties import PARTY_NUMBERS, PartyCall, PartyCallError, VoicemailMessage
from .sandbox import Sandbox
from .users import User, generate_users, load_users

__all__ = [
    "PARTY_NUMBERS",
    "MessageRecord",
    "PartyCall",
    "PartyCallError",
    "Sandbox",
    "SandboxConfig",
    "User",
    "VoicemailMessage",
    "generate_users",
    "load_users",
]
