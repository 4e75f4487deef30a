"""Dialogs the sandbox proxies, pure: the two legs, and requests it sends in a leg's name.

The sandbox is a proxy, but a RingCentral-like one: it also answers INFO commands itself, ends
a leg after park, and hangs up for a vanished device. For that it sends requests *inside* a
dialog, in the name of the other leg. Each leg's CSeq space must stay increasing for the UA
that receives it, so the sandbox shifts the numbers of the requests it relays from a leg by the
number of requests it sent in that leg's name (`Leg.injected`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from webphone.errors import SipParseError
from webphone.sip import Address, Headers, SipRequest
from webphone.sip.transaction import new_branch

from .rc import RcCall

__all__ = ["Dialog", "Leg", "contact_uri", "rebind_refusal"]


def contact_uri(value: str | None, fallback: str) -> str:
    """The URI of a Contact header value, or `fallback` when absent/unparsable."""
    if not value:
        return fallback
    try:
        return str(Address.parse(value).uri)
    except SipParseError:
        return fallback


@dataclass
class Leg:
    """One side of a dialog.

    `header` is the side's own From/To value (with its tag); `contact` is where requests to
    it go (its remote target); `connection` is the key of its WebSocket (or party);
    `cseq` the highest CSeq it sent; `injected` how many requests the sandbox sent in its name.
    `user` is its extension (or party number); `cln` its authorizationId (RC messages).
    `instance` is the RFC 5626 `+sip.instance` its device registered (None: unknown), which
    lets the same device carry on the dialog over a new connection (`rebind_refusal`).
    """

    connection: Hashable
    tag: str
    header: str
    contact: str
    cseq: int = 0
    injected: int = 0
    user: str | None = None
    cln: str | None = None
    instance: str | None = None

    def shift(self, number: int) -> int:
        """The CSeq number a request of this leg carries once relayed."""
        self.cseq = max(self.cseq, number)
        return number + self.injected


def rebind_refusal(leg: Leg, user: str | None, instance: str | None) -> str | None:
    """Why a request of `leg` arriving over another connection is refused, or None when it
    comes from the leg's own device on a new flow and may carry on the dialog.

    `user` is who that connection authenticated as, `instance` the `+sip.instance` it
    registered. A device is its instance id (RFC 5626 §4.1), not its socket: after a crash or
    a lost WebSocket, the same device (or the process that took over its registration)
    reconnects, registers the same instance, and refreshes the target with a re-INVITE
    (RFC 5626 §4.4, RFC 3261 §12.2.2), as RingCentral's edge allows. Anyone else only knows
    the dialog's Call-ID and tags, which are not a credential.
    """
    if leg.instance is None:
        return "this dialog's device registered no +sip.instance"
    if user is None or user != leg.user:
        return "another user's dialog"
    if instance is None:
        return "this connection has not registered the dialog's +sip.instance"
    if instance != leg.instance:
        return "another device's dialog (+sip.instance differs)"
    return None


@dataclass
class Dialog:
    """A confirmed call between a caller leg and a callee leg.

    `departing`: a leg whose next BYE the sandbox answers itself instead of relaying (after
    park or flip the other leg stays with the server, as on RingCentral). `gone`: legs that left.
    `referred_by`: the leg that transferred the call (its REFER got a 2xx).
    """

    call_id: str
    caller: Leg
    callee: Leg
    rc: RcCall | None = None
    ended: bool = False
    recording: bool = False
    departing: Leg | None = None
    flip_target: str | None = None
    park_extension: str | None = None
    gone: list[Leg] = field(default_factory=list)
    after_ack: list[Callable[[], None]] = field(default_factory=list)
    link: object | None = None  # a bridge.Link once the held leg is joined to someone else
    referred_by: Leg | None = None  # a leg whose REFER the other leg accepted (a transfer)
    # The To-tag of the 183 the caller saw when another device answered (forward, voicemail):
    # the official SDK keeps that tag for its ACK, BYE and re-INVITEs (it takes the remote
    # party from the first response), RingCentral's B2BUA never shows it a second one.
    early_tag: str | None = None

    @property
    def legs(self) -> tuple[Leg, Leg]:
        return self.caller, self.callee

    def leg_with_tag(self, tag: str | None) -> Leg | None:
        """The leg whose own tag is `tag` (the From tag of a request it sent)."""
        for leg in self.legs:
            if tag is not None and leg.tag == tag:
                return leg
        return None

    def other(self, leg: Leg) -> Leg:
        return self.callee if leg is self.caller else self.caller

    def matches(self, tags: tuple[str | None, str | None]) -> bool:
        if set(tags) == {self.caller.tag, self.callee.tag}:
            return True
        return self.early_tag is not None and set(tags) == {self.caller.tag, self.early_tag}

    def request_to(
        self,
        leg: Leg,
        method: str,
        *,
        via_host: str,
        transport: str = "WS",
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """A request to `leg` in the name of the other leg, with the next CSeq of that leg."""
        sender = self.other(leg)
        sender.injected += 1
        number = sender.cseq + sender.injected
        fields = [
            ("Via", f"SIP/2.0/{transport} {via_host};branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", sender.header),
            ("To", leg.header),
            ("Call-ID", self.call_id),
            ("CSeq", f"{number} {method}"),
        ]
        if body and content_type:
            fields.append(("Content-Type", content_type))
        return SipRequest(method, leg.contact, Headers(fields), body)
