"""A caller's CallCore talking to a callee's CallCore in memory (like h11's ConnectionPair).

Time moves only when a test says so. Messages are serialised and parsed on the way, as on a
wire, so what the cores produce must be valid SIP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from webphone.sip import SipRequest, SipResponse, parse_message
from webphone.sip.transaction import Send, new_branch, new_call_id, new_tag
from webphone.sip.ua import CallCore, CallOutput, Local

CALLER = Local(via="SIP/2.0/WS caller.invalid", contact="<sip:a@caller.invalid;transport=ws>")
CALLEE = Local(via="SIP/2.0/WS callee.invalid", contact="<sip:b@callee.invalid;transport=ws>")
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
ANSWER = OFFER.replace("o=- 1 1", "o=- 2 2")


def make_invite(*, body: str = OFFER, cseq: int = 1, headers: list[tuple[str, str]] = ()
                ) -> SipRequest:
    """An INVITE from a@example.com to b@example.com with a fresh branch, tag and Call-ID."""
    fields = [
        ("Via", f"{CALLER.via};branch={new_branch()}"),
        ("Max-Forwards", "70"),
        ("To", "<sip:b@example.com>"),
        ("From", f"<sip:a@example.com>;tag={new_tag()}"),
        ("Call-ID", new_call_id()),
        ("CSeq", f"{cseq} INVITE"),
        ("Contact", CALLER.contact),
        *headers,
    ]
    if body:
        fields.append(("Content-Type", "application/sdp"))
    request = SipRequest("INVITE", "sip:b@example.com", body=body.encode())
    for name, value in fields:
        request.headers.add(name, value)
    return request


def wire(message: SipRequest | SipResponse) -> SipRequest | SipResponse:
    """The message as the other side parses it."""
    return parse_message(bytes(message))


def sends(outputs: list[CallOutput]) -> list[SipRequest | SipResponse]:
    """The messages among `outputs`."""
    return [o.message for o in outputs if isinstance(o, Send)]


def events(outputs: list[CallOutput]) -> list[CallOutput]:
    """The outputs that are not `Send`."""
    return [o for o in outputs if not isinstance(o, Send)]


def short(message: SipRequest | SipResponse) -> str:
    """'INVITE' or '180' (for traces)."""
    return message.method if isinstance(message, SipRequest) else str(message.status_code)


@dataclass
class Pair:
    """A caller and a callee; `uas` exists once the INVITE was delivered."""

    now: float = 0.0
    uac: CallCore | None = None
    uas: CallCore | None = None
    to_uas: list[SipRequest | SipResponse] = field(default_factory=list)
    to_uac: list[SipRequest | SipResponse] = field(default_factory=list)
    uac_events: list[CallOutput] = field(default_factory=list)
    uas_events: list[CallOutput] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)

    def call(self, invite: SipRequest | None = None) -> Pair:
        """The caller sends an INVITE; the callee receives it (no response yet)."""
        invite = invite or make_invite()
        self.uac, out = CallCore.uac(CALLER, invite, self.now)
        self._from_uac(out)
        first = self.to_uas.pop(0)
        assert isinstance(first, SipRequest)
        self.trace.append("> INVITE")
        self.uas = CallCore.uas(CALLEE, first, self.now, new_tag())
        return self

    def _from_uac(self, out: list[CallOutput]) -> None:
        self.to_uas += [wire(m) for m in sends(out)]
        self.uac_events += events(out)

    def _from_uas(self, out: list[CallOutput]) -> None:
        self.to_uac += [wire(m) for m in sends(out)]
        self.uas_events += events(out)

    def on_uac(self, out: list[CallOutput]) -> Pair:
        """Outputs of an action of the caller."""
        self._from_uac(out)
        return self

    def on_uas(self, out: list[CallOutput]) -> Pair:
        """Outputs of an action of the callee."""
        self._from_uas(out)
        return self

    def flush(self, limit: int = 100) -> Pair:
        """Deliver every queued message both ways until both queues are empty."""
        assert self.uac is not None and self.uas is not None
        for _ in range(limit):
            if self.to_uas:
                message = self.to_uas.pop(0)
                self.trace.append(f"> {short(message)}")
                self._from_uas(self.uas.receive(message, self.now))
            elif self.to_uac:
                message = self.to_uac.pop(0)
                self.trace.append(f"< {short(message)}")
                self._from_uac(self.uac.receive(message, self.now))
            else:
                return self
        raise AssertionError("messages kept flowing: a loop between the cores")

    def advance(self, seconds: float) -> Pair:
        """Move time on and fire both cores' timers (without delivering)."""
        assert self.uac is not None and self.uas is not None
        self.now += seconds
        self._from_uac(self.uac.handle_timeout(self.now))
        self._from_uas(self.uas.handle_timeout(self.now))
        return self

    def answered(self) -> Pair:
        """INVITE, 180, 200, ACK: both sides answered."""
        assert self.uas is not None
        self.on_uas(self.uas.ring(self.now)).flush()
        self.on_uas(self.uas.answer(self.now, ANSWER)).flush()
        return self
