"""In-dialog traffic: relaying between the legs, and what the server answers itself.

Relayed: ACK, BYE, re-INVITE, UPDATE, INFO, REFER, NOTIFY, MESSAGE, ... from one leg to the
other (Request-URI rewritten to the other leg's remote target, CSeq shifted, see `dialogs.py`).

Answered by the server, as RingCentral does (upstream-webphone-sdk.md §2.10b and §6):

* INFO with a JSON `{"request": ...}` body is never relayed: `200 OK`, then an INFO back to the
  sender with `{"response": {..., "result": {"code": 0, ...}}}` (recording start/stop, flip,
  park).
* After park (and flip), the sender's next BYE is answered here and the other leg stays with
  the server, so the other side sees nothing; `bridge.py` then joins it to the flip target,
  or to whoever dials `*{park extension}`.
* BYE relayed from the caller to a RingCentral callee is followed by an x-rc/agent
  ServerFreeResources (Cmd 2) to the callee once it has answered the BYE.
* A leg whose connection closed is hung up for: the other leg gets a BYE in its name.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

from webphone.sip import SipRequest, SipResponse
from webphone.sip.rc import INFO_CONTENT_TYPE, RcCommand
from webphone.sip.transaction import new_tag

from .bridge import Bridger, Link
from .calls import Endpoint
from .connection import Connection
from .dialogs import Dialog, Leg, contact_uri
from .messages import forwarded, relayed, response_to
from .rc import InfoRequest, info_result, parse_info_request

if TYPE_CHECKING:
    from .proxy import Proxy

log = logging.getLogger("webphone.sandbox")

_DROP = ("Route", "Proxy-Authorization")
_OK_LOCALLY = ("INFO", "MESSAGE", "NOTIFY", "OPTIONS", "UPDATE")


class Features:
    """In-dialog routing and the server-side call features of one `Proxy`."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.parked: dict[str, Dialog] = {}
        self._park_numbers = itertools.count(801)
        self.bridger = Bridger(proxy)

    # -- routing ----------------------------------------------------------------------------

    def _legs(self, connection: Connection, request: SipRequest) -> tuple[Dialog, Leg] | None:
        dialog = self.proxy.find_dialog(request.call_id, (request.from_tag, request.to_tag))
        if dialog is None:
            return None
        source = dialog.leg_with_tag(request.from_tag)
        if source is None or source.connection != connection.id:
            return None
        return dialog, source

    def ack(self, connection: Connection, request: SipRequest) -> None:
        """ACK of a 2xx: relay to the other leg. Anything else (ACKs of non-2xx answers,
        which are hop by hop) ends here."""
        found = self._legs(connection, request) if request.to_tag else None
        if found is None:
            return
        dialog, source = found
        target = dialog.other(source)
        target_conn = self._reachable(dialog, target)
        if target_conn is None and isinstance(dialog.link, Link):
            self.bridger.from_held(request, dialog.link)
        if target_conn is not None:
            self.proxy.send(target_conn, self._outgoing(request, source, target))
        callbacks, dialog.after_ack = dialog.after_ack, []
        for callback in callbacks:
            callback()

    def in_dialog(self, connection: Connection, request: SipRequest) -> None:
        """A request with a To tag (anything but ACK and CANCEL)."""
        found = self._legs(connection, request)
        if found is None:
            self._reply(connection, request, 481, "Call/Transaction Does Not Exist")
            return
        dialog, source = found
        if request.method == "INFO":
            info = parse_info_request(request.body)
            if info is not None:
                self._info_command(connection, request, dialog, source, info)
                return
        if request.method == "BYE" and dialog.departing is source:
            self._reply(connection, request, 200, "OK")
            self._leave(dialog, source)
            if dialog.flip_target is not None and not dialog.ended:
                self.bridger.flip(dialog, dialog.other(source), dialog.flip_target)
            return
        target = dialog.other(source)
        target_conn = self._reachable(dialog, target)
        if target_conn is None and isinstance(dialog.link, Link):
            self.bridger.from_held(request, dialog.link)
            return
        if target_conn is None:
            self._answer_alone(connection, request, dialog, source)
            return
        self._relay(connection, request, dialog, source, target, target_conn)

    def _reachable(self, dialog: Dialog, leg: Leg) -> Connection | None:
        if leg in dialog.gone or dialog.ended:
            return None
        connection = self.proxy.leg_connection(leg)
        return None if connection is None or connection.closed else connection

    def _outgoing(self, request: SipRequest, source: Leg, target: Leg) -> SipRequest:
        out = forwarded(request, target.contact, self.proxy.via(), drop=_DROP)
        if request.to_tag != target.tag:  # sent to the dialog's early tag (Dialog.early_tag)
            out.headers.set("To", target.header)
        number = source.shift(request.cseq.number)
        if number != request.cseq.number:
            out.headers.set("CSeq", f"{number} {request.cseq.method}")
        return out

    def _relay(
        self,
        connection: Connection,
        request: SipRequest,
        dialog: Dialog,
        source: Leg,
        target: Leg,
        target_conn: Connection,
    ) -> None:
        method = request.method
        if method in ("INVITE", "UPDATE") and request.headers.get("Contact"):
            source.contact = contact_uri(request.headers.get("Contact"), source.contact)
        if method == "INVITE":
            # A stateful proxy answers every INVITE it forwards with its own 100 Trying (RFC 3261
            # §16.2); RingCentral does for re-INVITEs too (hold-unhold specs: INVITE, 100, 200).
            self._reply(connection, request, 100, "Trying")
        out = self._outgoing(request, source, target)
        original_cseq = request.headers["CSeq"]

        def on_response(response: SipResponse) -> None:
            if response.status_code == 100:
                return  # hop by hop: the far UA's 100 ends here (ours went already)
            back = relayed(response, request)
            if back is None:
                return
            back.headers.set("CSeq", original_cseq)
            if method in ("INVITE", "UPDATE") and 200 <= response.status_code < 300:
                target.contact = contact_uri(response.headers.get("Contact"), target.contact)
            if method == "REFER" and 200 <= response.status_code < 300:
                dialog.referred_by = source
            self.proxy.send(connection, back)
            if method == "BYE" and response.status_code >= 200:
                self._ended(dialog, source)

        def on_failure(why: str) -> None:
            log.info("%s to %s failed: %s", method, target.contact, why)
            self._reply(connection, request, 408, "Request Timeout")
            if method == "BYE":
                self._ended(dialog, source)

        self.proxy.send_request(target_conn, out, on_response=on_response, on_failure=on_failure)

    def _ended(self, dialog: Dialog, by: Leg) -> None:
        """The dialog ended with a BYE from `by`; a RingCentral callee hears Cmd 2."""
        if dialog.ended:
            return
        self.proxy.end_dialog(dialog)
        self._unpark(dialog)
        callee = dialog.callee
        if dialog.referred_by is callee:
            # The callee transferred the call away: the BYE that ends its leg is the transfer's
            # outcome, not a hangup, and RingCentral sends no ServerFreeResources then (cold
            # transfer spec: REFER, 202, NOTIFY, 200, NOTIFY, 200, BYE, 200 and nothing else).
            return
        if dialog.rc is not None and by is dialog.caller and callee.cln:
            connection = self.proxy.leg_connection(callee)
            if connection is not None and callee not in dialog.gone:
                endpoint = Endpoint(connection, callee.contact, callee.user or "", callee.cln)
                self.proxy.send_rc(endpoint, dialog.rc, RcCommand.SERVER_FREE_RESOURCES, {}, None)

    def _answer_alone(
        self, connection: Connection, request: SipRequest, dialog: Dialog, source: Leg
    ) -> None:
        """The other leg left (parked, flipped, vanished): the server answers for it."""
        if request.method == "BYE":
            self._reply(connection, request, 200, "OK")
            self._leave(dialog, source)
        elif request.method in _OK_LOCALLY:
            self._reply(connection, request, 200, "OK")
        elif request.method == "INVITE":
            self._reply(connection, request, 488, "Not Acceptable Here")
        else:
            self._reply(connection, request, 481, "Call/Transaction Does Not Exist")

    def _leave(self, dialog: Dialog, leg: Leg) -> None:
        if leg not in dialog.gone:
            dialog.gone.append(leg)
        if all(x in dialog.gone for x in dialog.legs):
            self.proxy.end_dialog(dialog)
            self._unpark(dialog)

    def leg_vanished(self, dialog: Dialog, connection_id: int) -> None:
        """`connection_id` closed: hang up in the name of its leg (the other gets a BYE)."""
        for leg in dialog.legs:
            if leg.connection != connection_id or leg in dialog.gone:
                continue
            self._leave(dialog, leg)
            if isinstance(dialog.link, Link):
                self.bridger.held_vanished(dialog.link)
                continue
            other = dialog.other(leg)
            other_conn = self._reachable(dialog, other)
            if other_conn is None:
                continue
            bye = dialog.request_to(other, "BYE", via_host=self.proxy.via_host,
                                    transport=self.proxy.transport)

            def ended(_: object, dialog: Dialog = dialog, leg: Leg = leg) -> None:
                self._ended(dialog, leg)

            self.proxy.send_request(other_conn, bye, on_response=ended, on_failure=ended)

    def dialog_from_answer(
        self, connection: Connection, invite: SipRequest, response: SipResponse
    ) -> Dialog:
        """A throw-away dialog with a device that answered too late (to BYE it)."""
        caller = Leg(None, invite.from_tag or "", invite.headers["From"], "",
                     cseq=invite.cseq.number)
        callee = Leg(connection.id, response.to_tag or "", response.headers["To"],
                     contact_uri(response.headers.get("Contact"), invite.uri))
        return Dialog(invite.call_id, caller, callee)

    # -- INFO commands ----------------------------------------------------------------------

    def _info_command(
        self,
        connection: Connection,
        request: SipRequest,
        dialog: Dialog,
        source: Leg,
        info: InfoRequest,
    ) -> None:
        source.shift(request.cseq.number)
        self._reply(connection, request, 200, "OK")
        result = self._run(dialog, source, info)
        body = info_result(info, result)
        answer = dialog.request_to(source, "INFO", via_host=self.proxy.via_host,
                                   transport=self.proxy.transport, body=body,
                                   content_type=INFO_CONTENT_TYPE)
        self.proxy.send_request(connection, answer)

    def _run(self, dialog: Dialog, source: Leg, info: InfoRequest) -> dict[str, Any]:
        ok: dict[str, Any] = {"code": 0, "description": "Succeeded"}
        if info.command in ("startcallrecord", "stopcallrecord"):
            dialog.recording = info.command == "startcallrecord"
            return ok
        if info.command == "callpark":
            number = str(next(self._park_numbers))
            dialog.departing, dialog.park_extension = source, number
            self.parked[number] = dialog
            self.bridger.offer_pickup(number, dialog)
            return {**ok, "park extension": number}
        if info.command == "callflip":
            target = self.proxy.resolve(str(info.args.get("target", "")))
            if target is None:
                return {"code": 1, "description": "Flip target not found"}
            dialog.departing, dialog.flip_target = source, target.number
            return {**ok, "number": target.identity.phone_number,
                    "target": str(info.args.get("target"))}
        return {"code": 1, "description": f"Unsupported command {info.command!r}"}

    def _unpark(self, dialog: Dialog) -> None:
        if dialog.park_extension and self.parked.get(dialog.park_extension) is dialog:
            del self.parked[dialog.park_extension]
            self.bridger.withdraw_pickup(dialog.park_extension)

    def _reply(self, connection: Connection, request: SipRequest, status: int, reason: str) -> None:
        to_tag = None if request.to_tag else new_tag()
        self.proxy.send(connection, response_to(request, status, reason, to_tag=to_tag))
