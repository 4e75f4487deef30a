"""Flip and park pickup: the sandbox joins a leg it holds with a new call (third-party control).

After park or flip the departing device hangs up, and RingCentral keeps the other side. Here
that side (the *held* leg) stays in its dialog with the sandbox, and the `Bridger`, a small
user agent inside the sandbox, connects it to someone else:

* **flip**: it calls the flip target through the proxy (forking, P-rc, ringing as any call)
  with an INVITE without SDP; the target's offer goes to the held leg in a re-INVITE, the held
  leg's answer comes back in the ACK (RFC 3725 flow I);
* **pickup**: dialling `*801` (the park extension with a star) reaches the Bridger, which
  re-INVITEs the parked leg with the caller's offer and answers with the parked leg's SDP.

Then it relays in-dialog requests between the two dialogs (re-INVITE, INFO, MESSAGE, BYE, ...),
rewriting Call-ID, tags and CSeq, like a back-to-back user agent. Unlike RingCentral, which
anchors the media, the held leg does see the re-INVITE that moves its audio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from webphone.errors import SipParseError
from webphone.sip import Address, Headers, SipRequest, SipResponse
from webphone.sip.transaction import (
    TransactionKey,
    new_branch,
    new_call_id,
    new_tag,
    transaction_key,
)

from .config import PartyEntry
from .connection import Connection, LocalConnection, Sender, TxFailure
from .dialogs import Dialog, Leg, contact_uri
from .messages import ack_for, answer_unanswered, content_type, response_to, uri_user
from .rc import Identity
from .users import UserTable

log = logging.getLogger("webphone.sandbox")

__all__ = ["Bridger", "Link"]

# Headers that mean something end to end and go across with a relayed request.
_ACROSS = ("Event", "Subscription-State", "Refer-To", "Referred-By", "Reason", "Info-Package",
           "Content-Disposition", "Allow-Events")
SDP = "application/sdp"


@dataclass
class Link:
    """A held leg (in `held`) joined to the far party of the Bridger's own dialog."""

    held: Dialog
    held_leg: Leg
    call_id: str
    local: str  # our From/To value in our dialog, with our tag
    remote: str = ""  # the far party's, with its tag
    target: str = ""  # the far party's Contact
    cseq: int = 0
    state: str = "setting-up"  # setting-up | connected | ended
    invite: SipRequest | None = None
    ack_held: Callable[[bytes], None] | None = None  # waiting for the far ACK's answer
    ack_far: Callable[[bytes], None] | None = None  # waiting for the held ACK's answer


class BridgeRouter(Sender, Protocol):
    """What the bridge needs of the proxy: sending, its names, the leg connections, the
    parties table (a parked call's pickup number is one), and a way in for its own UA."""

    @property
    def domain(self) -> str: ...
    @property
    def via_host(self) -> str: ...
    @property
    def transport(self) -> str: ...
    @property
    def users(self) -> UserTable: ...
    @property
    def parties(self) -> dict[str, PartyEntry]: ...
    @property
    def caller_ids(self) -> dict[str, Identity]: ...

    def handle(self, connection: Connection, message: SipRequest | SipResponse) -> None: ...
    def connection_opened(self, connection: Connection) -> None: ...
    def leg_connection(self, leg: Leg) -> Connection | None: ...
    def end_dialog(self, dialog: Dialog) -> None: ...


class Bridger:
    """The sandbox's back-to-back user agent for flip and park pickup. `parked`: the calls
    waiting for a pickup, by park extension (shared with `Features`)."""

    def __init__(self, proxy: BridgeRouter, parked: dict[str, Dialog]) -> None:
        self.proxy = proxy
        self.parked = parked
        self.connection = LocalConnection("bridge", self._receive)
        self.contact = "sip:bridge@bridge.invalid;transport=ws"
        self.links: dict[str, Link] = {}
        self._pending: dict[TransactionKey, Callable[[SipResponse], None]] = {}
        proxy.connection_opened(self.connection)

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, message: SipRequest | SipResponse) -> None:
        asyncio.get_running_loop().call_soon(self.proxy.handle, self.connection, message)

    def _request(self, link: Link, method: str, *, body: bytes = b"", ctype: str | None = None,
                 extra: list[tuple[str, str]] | None = None,
                 on_response: Callable[[SipResponse], None] | None = None) -> SipRequest:
        """A request in our dialog with the far party, sent through the proxy."""
        link.cseq += 1
        fields = [
            ("Via", f"SIP/2.0/WS bridge.invalid;branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", link.local),
            ("To", link.remote),
            ("Call-ID", link.call_id),
            ("CSeq", f"{link.cseq} {method}"),
            ("Contact", f"<{self.contact}>"),
            *(extra or []),
        ]
        if body and ctype:
            fields.append(("Content-Type", ctype))
        request = SipRequest(method, link.target, Headers(fields), body)
        if on_response is not None:
            self._pending[transaction_key(request)] = on_response
        self._send(request)
        return request

    def _ack_far(self, link: Link, number: int, body: bytes = b"") -> None:
        fields = [
            ("Via", f"SIP/2.0/WS bridge.invalid;branch={new_branch()}"),
            ("Max-Forwards", "70"), ("From", link.local), ("To", link.remote),
            ("Call-ID", link.call_id), ("CSeq", f"{number} ACK"),
        ]
        if body:
            fields.append(("Content-Type", SDP))
        self._send(SipRequest("ACK", link.target, Headers(fields), body))

    def _to_held(self, link: Link, method: str, body: bytes, ctype: str | None,
                 extra: list[tuple[str, str]], on_response: Callable[[SipResponse], None]
                 ) -> SipRequest | None:
        """A request to the held leg, in the name of the leg that left."""
        connection = self.proxy.leg_connection(link.held_leg)
        if connection is None or connection.closed:
            return None
        request = link.held.request_to(link.held_leg, method, via_host=self.proxy.via_host,
                                       transport=self.proxy.transport, body=body,
                                       content_type=ctype)
        for name, value in [*extra, ("Contact", f"<{self.contact}>")]:
            request.headers.add(name, value)
        self.proxy.send_request(connection, request, on_response=on_response,
                                on_failure=lambda why: on_response(_failed(request, why)))
        return request

    def _ack_held(self, link: Link, invite: SipRequest, response: SipResponse,
                  body: bytes = b"") -> None:
        connection = self.proxy.leg_connection(link.held_leg)
        if connection is None or connection.closed:
            return
        if response.status_code >= 300:
            self.proxy.send(connection, ack_for(invite, response))
            return
        ack = SipRequest("ACK", link.held_leg.contact, Headers([
            ("Via", self.proxy.via()), ("Max-Forwards", "70"),
            ("From", invite.headers["From"]), ("To", invite.headers["To"]),
            ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.number} ACK"),
            *([("Content-Type", SDP)] if body else []),
        ]), body)
        self.proxy.send(connection, ack)

    # -- flip -------------------------------------------------------------------------------

    def flip(self, held: Dialog, leg: Leg, number: str) -> None:
        """Call `number` and move the held leg to it once it answers."""
        call_id = new_call_id()
        local = _with_tag(leg.header, new_tag())
        link = Link(held, leg, call_id, local, remote=f"<sip:{number}@{self.proxy.domain}>",
                    target=f"sip:{number}@{self.proxy.domain}")
        self.links[call_id] = link
        self.proxy.caller_ids[call_id] = self._identity(leg)
        link.invite = self._request(link, "INVITE", on_response=lambda r: self._flipped(link, r))

    def _flipped(self, link: Link, response: SipResponse) -> None:
        if response.status_code < 200:
            return
        invite = link.invite
        assert invite is not None
        if response.status_code >= 300 or not response.body:
            log.info("flip target did not take the call: %s", response.status_code)
            if 200 <= response.status_code < 300:
                self._ack_far(link, invite.cseq.number)
                self._request(link, "BYE")
            self._end(link, hang_up_held=True)
            return
        link.remote = response.headers["To"]
        link.target = contact_uri(response.headers.get("Contact"), link.target)
        sent = self._to_held(link, "INVITE", response.body, SDP, [],
                             lambda r: self._held_moved(link, sent, invite, r))
        if sent is None:
            self._ack_far(link, invite.cseq.number)
            self._request(link, "BYE")
            self._end(link)

    def _held_moved(self, link: Link, reinvite: SipRequest | None, invite: SipRequest,
                    response: SipResponse) -> None:
        if response.status_code < 200 or reinvite is None:
            return
        self._ack_held(link, reinvite, response)
        if response.status_code >= 300:
            self._ack_far(link, invite.cseq.number)
            self._request(link, "BYE")
            self._end(link, hang_up_held=True)
            return
        self._ack_far(link, invite.cseq.number, response.body)
        self._connected(link)

    # -- park pickup ------------------------------------------------------------------------

    def offer_pickup(self, extension: str, held: Dialog) -> None:
        """Make `*{extension}` reach this parked call."""
        number = f"*{extension}"
        self.proxy.parties[number] = PartyEntry(
            number, Identity(number, f"Park {extension}", ""), self.connection,
            f"sip:park{extension}@bridge.invalid;transport=ws", "park")

    def withdraw_pickup(self, extension: str) -> None:
        self.proxy.parties.pop(f"*{extension}", None)

    def _pickup(self, invite: SipRequest) -> None:
        extension = (uri_user(invite.uri) or "").removeprefix("park")
        held = self.parked.pop(extension, None)
        self.withdraw_pickup(extension)
        if held is None or held.departing is None:
            self._send(response_to(invite, 404, "Not Found", to_tag=new_tag()))
            return
        leg = held.other(held.departing)
        held.park_extension = None
        link = Link(held, leg, invite.call_id, _with_tag(invite.headers["To"], new_tag()),
                    remote=invite.headers["From"], invite=invite,
                    target=contact_uri(invite.headers.get("Contact"), invite.uri))
        self.links[link.call_id] = link
        sent = self._to_held(link, "INVITE", invite.body, SDP if invite.body else None, [],
                             lambda r: self._picked_up(link, sent, r))
        if sent is None:
            self._send(response_to(invite, 480, "Temporarily Unavailable", to_tag=new_tag()))
            self._end(link)

    def _picked_up(self, link: Link, reinvite: SipRequest | None, response: SipResponse) -> None:
        invite = link.invite
        if response.status_code < 200 or reinvite is None or invite is None:
            return
        tag = Address.parse(link.local).tag
        if response.status_code >= 300:
            self._ack_held(link, reinvite, response)
            self._send(response_to(invite, 480, "Temporarily Unavailable", to_tag=tag))
            self._end(link)
            return
        if invite.body:
            self._ack_held(link, reinvite, response)
        else:  # the picker sent no offer: the held leg's offer goes out, the answer comes back
            link.ack_held = lambda body: self._ack_held(link, reinvite, response, body)
        self._send(response_to(invite, 200, "OK", to_tag=tag, body=response.body,
                               content_type=SDP, headers=[("Contact", f"<{self.contact}>")]))
        self._connected(link)

    # -- relaying once connected --------------------------------------------------------------

    def _connected(self, link: Link) -> None:
        link.state = "connected"
        link.held.link = link

    def from_held(self, request: SipRequest, link: Link) -> None:
        """A request of the held leg (its dialog partner is gone): to the far party."""
        held_conn = self.proxy.leg_connection(link.held_leg)
        if request.method == "ACK":
            if link.ack_far is not None:
                callback, link.ack_far = link.ack_far, None
                callback(request.body)
            return
        if held_conn is None:
            return
        if request.method == "BYE":
            self.proxy.send(held_conn, response_to(request, 200, "OK"))
            self._request(link, "BYE")
            self._end(link)
            return

        def answered(response: SipResponse) -> None:
            if response.status_code == 100:
                return
            extra = [("Contact", f"<{self.contact}>")] if request.method == "INVITE" else []
            self.proxy.send(held_conn, _relayed(request, response, extra))
            if request.method == "INVITE" and 200 <= response.status_code < 300:
                number = out.cseq.number
                if request.body:
                    self._ack_far(link, number)
                else:
                    link.ack_far = lambda body: self._ack_far(link, number, body)

        out = self._request(link, request.method, body=request.body,
                            ctype=request.headers.get("Content-Type"),
                            extra=_across(request), on_response=answered)

    def _receive(self, message: SipRequest | SipResponse) -> None:
        if isinstance(message, SipResponse):
            try:
                handler = self._pending.get(transaction_key(message))
            except SipParseError:
                return
            if handler is not None:
                if message.status_code >= 200:
                    del self._pending[transaction_key(message)]
                handler(message)
            return
        link = self.links.get(message.call_id)
        if message.method == "INVITE" and message.to_tag is None:
            self._pickup(message)
        elif link is None or link.state == "ended":
            if message.method != "ACK":
                self._send(response_to(message, 481, "Call/Transaction Does Not Exist"))
        else:
            self._from_far(message, link)

    def _from_far(self, request: SipRequest, link: Link) -> None:
        """A request of the far party in our dialog: to the held leg."""
        if request.method == "ACK":
            if link.ack_held is not None:
                callback, link.ack_held = link.ack_held, None
                callback(request.body)
            return
        if request.method in ("BYE", "CANCEL"):
            self._send(response_to(request, 200, "OK"))
            if request.method == "BYE":
                self._to_held(link, "BYE", b"", None, [], lambda _r: None)
                self._end(link)
            return

        def answered(response: SipResponse) -> None:
            if response.status_code == 100:
                return
            extra = [("Contact", f"<{self.contact}>")] if request.method == "INVITE" else []
            self._send(_relayed(request, response, extra))
            if request.method == "INVITE" and 200 <= response.status_code < 300 and sent:
                invite = sent
                if request.body:
                    self._ack_held(link, invite, response)
                else:
                    link.ack_held = lambda body: self._ack_held(link, invite, response, body)

        sent = self._to_held(link, request.method, request.body,
                             request.headers.get("Content-Type"), _across(request), answered)
        if sent is None:
            self._send(response_to(request, 481, "Call/Transaction Does Not Exist"))

    def held_vanished(self, link: Link) -> None:
        """The held leg's connection closed: hang up the far party."""
        if link.state == "connected":
            self._request(link, "BYE")
        self._end(link)

    def _end(self, link: Link, *, hang_up_held: bool = False) -> None:
        if hang_up_held:
            self._to_held(link, "BYE", b"", None, [], lambda _r: None)
        link.state = "ended"
        self.links.pop(link.call_id, None)
        self.proxy.caller_ids.pop(link.call_id, None)
        if link.held.link is link or hang_up_held:
            link.held.link = None
            self.proxy.end_dialog(link.held)

    def _identity(self, leg: Leg) -> Identity:
        user = self.proxy.users.get(leg.user or "")
        if user is not None:
            return Identity(user.extension, user.name, user.phone_number)
        party = self.proxy.parties.get(leg.user or "")
        return party.identity if party is not None else Identity(leg.user or "", "", "")


def _with_tag(header: str, tag: str) -> str:
    address = Address.parse(header)
    address.params = {k: v for k, v in address.params.items() if k.lower() != "tag"}
    return str(address.with_tag(tag))


def _across(request: SipRequest) -> list[tuple[str, str]]:
    return [(name, value) for name in _ACROSS for value in request.headers.get_all(name)]


def _relayed(request: SipRequest, response: SipResponse,
             extra: list[tuple[str, str]]) -> SipResponse:
    """`response` (from the other dialog) re-issued as the answer to `request`."""
    ctype = response.headers.get("Content-Type") if content_type(response) else None
    return response_to(request, response.status_code, response.reason,
                       headers=extra if response.status_code < 300 else [],
                       body=response.body, content_type=ctype)


def _failed(request: SipRequest, why: TxFailure) -> SipResponse:
    """The answer the held leg did not give (RFC 3261 §16.9, §16.7 step 6: see
    `messages.answer_unanswered`): a closed connection is a 500, a timeout a 408."""
    return answer_unanswered(request, [why])
