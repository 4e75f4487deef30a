"""Plain data shared by the sandbox's modules: configuration, message records, party entries."""

from __future__ import annotations

from dataclasses import dataclass, field

from webphone.sip import SipRequest, SipResponse

from .connection import Connection
from .rc import Identity

__all__ = ["REUSED_NONCE_REFUSALS", "MessageRecord", "PartyEntry", "SandboxConfig"]

#: What `SandboxConfig.refuse_reused_nonce` may be: accept (None), challenge again, forbid, or
#: call the request bad (what registrars with single-use nonces answer, depending on their setup).
REUSED_NONCE_REFUSALS: tuple[int | None, ...] = (None, 401, 403, 400)

SipMessage = SipRequest | SipResponse


@dataclass
class SandboxConfig:
    """Behaviour knobs, defaults as RingCentral.

    `max_expires`: the longest binding granted (RingCentral: 60 s). `ring_timeout`: seconds
    before an unanswered call gives up (480). `reject_delay`: after decline/reply the caller
    keeps hearing ringback this long before its 480. `reply_result`: the SessionClose body of a
    reply (Cmd 14): the caller's keypad answer the sandbox pretends to have heard
    (`{"Sts": "0", "Resp": "1"}` = "yes"; `"3"` with `"ExtNfo"` = urgent with a callback number).
    `rebind_grace`: how long a call leg whose connection was lost (no close frame) waits for
    its device (same `+sip.instance`) to come back on a new connection and re-INVITE before
    the other leg gets a BYE; 0 hangs up at once. 32 s: RingCentral's softphone gives up
    reconciling its calls after a reconnect then (RFC 3261 Timer B). `refuse_reused_nonce`:
    None accepts a nonce answered again with the next nonce count (RFC 7616 §3.4, like
    RingCentral and Kamailio's defaults); 401 (407 for requests other than REGISTER), 403 or
    400 refuse a nonce accepted once before with that status, like registrars with single-use
    nonces do (for testing clients that reuse nonces).
    """

    domain: str = "sandbox.webphone"
    max_contacts: int = 5
    max_expires: int = 60
    min_expires: int = 1
    nonce_ttl: float = 300.0
    refuse_reused_nonce: int | None = None
    ring_timeout: float = 60.0
    reject_delay: float = 1.0
    transaction_timeout: float = 32.0
    rebind_grace: float = 32.0
    voicemail_number: str = "903"
    reply_result: dict[str, str] = field(default_factory=lambda: {"Sts": "0", "Resp": "1"})

    def __post_init__(self) -> None:
        if self.refuse_reused_nonce not in REUSED_NONCE_REFUSALS:
            choices = ", ".join(str(c) for c in REUSED_NONCE_REFUSALS)
            raise ValueError(f"refuse_reused_nonce is {self.refuse_reused_nonce!r}: use one of "
                             f"{choices} (None accepts reused nonces)")


@dataclass(frozen=True)
class MessageRecord:
    """One SIP message the sandbox received ("in") or sent ("out") on a connection."""

    time: float
    direction: str
    connection: int
    user: str | None
    message: SipMessage

    @property
    def first_line(self) -> str:
        """`INVITE sip:...` or `SIP/2.0 200 OK`."""
        return str(self.message).split("\r\n", 1)[0]


@dataclass
class PartyEntry:
    """A built-in party reachable by number."""

    number: str
    identity: Identity
    connection: Connection
    contact: str
    kind: str
