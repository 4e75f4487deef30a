"""SIP dialogs (RFC 3261 §12), pure: the state two user agents share for one call.

A dialog is identified by Call-ID, local tag and remote tag. It remembers the remote target
(the peer's Contact), the route set (Record-Route, reversed for the caller), and the CSeq counters
in each direction. In-dialog requests are addressed to the remote target through the route set;
the upstream SDK ignored both and sent BYE to `sip:{domain}`, which only works on RingCentral.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SipParseError
from .address import Address
from .message import SipRequest, SipResponse


@dataclass
class Dialog:
    """One confirmed or early dialog."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_address: Address
    remote_address: Address
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None

    @classmethod
    def from_uac(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """The caller's dialog from its INVITE and a 1xx-with-tag or 2xx response."""
        remote_tag = response.to_tag
        if not remote_tag:
            raise SipParseError("response creating a dialog has no To tag")
        local_tag = invite.from_tag or ""
        routes = list(reversed(response.headers.get_all("Record-Route")))
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_address=_without_tag(invite.from_address),
            remote_address=_without_tag(response.to_address),
            remote_target=_contact_uri(response) or invite.uri,
            route_set=routes,
            local_cseq=invite.cseq.number,
        )

    @classmethod
    def from_uas(cls, invite: SipRequest, local_tag: str) -> Dialog:
        """The callee's dialog from an inbound INVITE and the To tag it answers with."""
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_tag or "",
            local_address=_without_tag(invite.to_address),
            remote_address=_without_tag(invite.from_address),
            remote_target=_contact_uri(invite) or str(invite.from_address.uri),
            route_set=list(invite.headers.get_all("Record-Route")),
            local_cseq=0,
            remote_cseq=invite.cseq.number,
        )

    def update_from_response(self, response: SipResponse) -> None:
        """A 2xx to our INVITE fixes the route set and may move the remote target."""
        if response.headers.get_all("Record-Route"):
            self.route_set = list(reversed(response.headers.get_all("Record-Route")))
        target = _contact_uri(response)
        if target:
            self.remote_target = target

    def next_cseq(self) -> int:
        """The CSeq number for the next request we send in this dialog."""
        self.local_cseq += 1
        return self.local_cseq

    def accepts(self, request: SipRequest) -> bool:
        """False for an out-of-order or retransmitted request (CSeq not above the last one)."""
        number = request.cseq.number
        if request.method != "ACK" and self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        if request.method != "ACK":
            self.remote_cseq = number
        return True

    def refresh_target(self, request: SipRequest) -> None:
        """After a 2xx to a target refresh (re-INVITE, UPDATE): the peer's new Contact becomes
        the remote target (RFC 3261 §12.2.2, only once accepted as RFC 6141 clarifies)."""
        target = _contact_uri(request)
        if target:
            self.remote_target = target

    def request_fields(
        self, method: str, cseq: int | None = None
    ) -> tuple[str, list[tuple[str, str]]]:
        """(Request-URI, headers To/From/Call-ID/CSeq/Route) for an in-dialog request."""
        number = self.next_cseq() if cseq is None else cseq
        fields = [
            ("To", str(self.remote_address.with_tag(self.remote_tag))),
            ("From", str(self.local_address.with_tag(self.local_tag))),
            ("Call-ID", self.call_id),
            ("CSeq", f"{number} {method}"),
        ]
        fields += [("Route", route) for route in self.route_set]
        return self.remote_target, fields

    def matches(self, message: SipRequest | SipResponse) -> bool:
        """True when `message` belongs to this dialog (Call-ID and both tags)."""
        if message.call_id != self.call_id:
            return False
        if isinstance(message, SipRequest):
            return message.from_tag == self.remote_tag and message.to_tag == self.local_tag
        return message.from_tag == self.local_tag and message.to_tag == self.remote_tag


def _without_tag(address: Address) -> Address:
    params = {k: v for k, v in address.params.items() if k.lower() != "tag"}
    return Address(address.uri, address.display_name, params)


def _contact_uri(message: SipRequest | SipResponse) -> str | None:
    contacts = message.headers.get_all("Contact")
    if not contacts or contacts[0].strip() == "*":
        return None
    try:
        return str(Address.parse(contacts[0]).uri)
    except SipParseError:
        return None
