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
* A leg whose connection closed is hung up for: the other leg gets a BYE in its name. When
  the connection was lost (no WebSocket close frame) and the leg's device registered a
  `+sip.instance`, the BYE waits `rebind_grace`: the same device (the same instance on a new
  connection, e.g. the process that took over a crashed one's registration) may carry on
  with an in-dialog request, typically a re-INVITE refreshing the target; the dialog then
  follows it both ways. In-dialog requests from any other connection get 403.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from typing import Any, Protocol

from webphone.sip import SipRequest, SipResponse
from webphone.sip.rc import INFO_CONTENT_TYPE, RcCommand
from webphone.sip.transaction import new_tag

from .bridge import Bridger, BridgeRouter, Link
from .calls import CallServices, Endpoint
from .connection import Connection, TxFailure
from .dialogs import Dialog, Leg, contact_uri, rebind_refusal
from .messages import answer_unanswered, forwarded, relayed, response_to
from .rc import InfoRequest, info_result, parse_info_request

log = logging.getLogger("webphone.sandbox")

_DROP = ("Route", "Proxy-Authorization")
_OK_LOCALLY = ("INFO", "MESSAGE", "NOTIFY", "OPTIONS", "UPDATE")


class _Refused(Exception):
    """A request for a dialog leg from a connection that is not that leg's device (403)."""


class FeaturesRouter(BridgeRouter, CallServices, Protocol):
    """What in-dialog routing needs of the proxy (`proxy.Proxy` is one), the bridge's needs
    included (it hands itself to the `Bridger`)."""

    def find_dialog(self, call_id: str, tags: tuple[str | None, str | None]) -> Dialog | None: ...

    def device_registered(self, user: str | None, instance: str) -> bool: ...


class Features:
    """In-dialog routing and the server-side call features of one proxy."""

    def __init__(self, proxy: FeaturesRouter) -> None:
        self.proxy = proxy
        self.parked: dict[str, Dialog] = {}
        self._park_numbers = itertools.count(801)
        self.bridger = Bridger(proxy, self.parked)
        self._orphans: dict[int, asyncio.TimerHandle] = {}  # id(leg) -> its rebind deadline

    # -- routing ----------------------------------------------------------------------------

    def _legs(self, connection: Connection, request: SipRequest) -> tuple[Dialog, Leg] | None:
        """The dialog and the leg that sent `request`, or None (481). A leg's device arriving
        over a new connection takes the leg there; anyone else gets `_Refused` (403)."""
        dialog = self.proxy.find_dialog(request.call_id, (request.from_tag, request.to_tag))
        if dialog is None:
            return None
        source = dialog.leg_with_tag(request.from_tag)
        if source is None:
            return None
        if source.connection != connection.id:
            if source in dialog.gone:
                return None  # hung up for already: too late to come back
            self._rebind(connection, request, dialog, source)
        return dialog, source

    def _rebind(self, connection: Connection, request: SipRequest, dialog: Dialog,
                leg: Leg) -> None:
        """The leg's device on a new connection: the dialog follows it from now on, both ways
        (its requests, the far side's requests, the answers). RFC 5626 §4.4: a device whose
        flow failed recovers on a new one; its re-INVITE then refreshes the target (the
        Contact, RFC 3261 §12.2.2, taken in `_relay`)."""
        why = rebind_refusal(leg, connection.user, self.proxy.instance_of(connection))
        if why is not None:
            log.info("%s for dialog %s from %r refused: %s", request.method, dialog.call_id,
                     connection, why)
            raise _Refused(why)
        log.info("dialog %s: leg %s moves to %r (same +sip.instance)", dialog.call_id,
                 leg.user, connection)
        leg.connection = connection.id
        timer = self._orphans.pop(id(leg), None)
        if timer is not None:
            timer.cancel()

    def ack(self, connection: Connection, request: SipRequest) -> None:
        """ACK of a 2xx: relay to the other leg. Anything else (ACKs of non-2xx answers,
        which are hop by hop) ends here."""
        try:
            found = self._legs(connection, request) if request.to_tag else None
        except _Refused:
            return  # an ACK never gets a response (RFC 3261 §17.1.1.3): dropped
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
        try:
            found = self._legs(connection, request)
        except _Refused as refused:
            self._reply(connection, request, 403, f"Forbidden - {refused}")
            return
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
        if target_conn is None and id(target) in self._orphans:
            self._answer_orphaned(connection, request, dialog)
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

        def on_failure(why: TxFailure) -> None:
            # RFC 3261 §16.9: a connection that closed under the request is a 503 from that
            # branch, answered as 500 (§16.7 step 6), which leaves the dialog up for a device
            # that comes back (`_rebind`); only a timeout is a 408 that ends it (§12.2.1.2).
            log.info("%s to %s failed: %s", method, target.contact, why)
            self.proxy.send(connection, answer_unanswered(request, [why]))
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

    def leg_vanished(self, dialog: Dialog, connection_id: int, *, lost: bool = False) -> None:
        """`connection_id` closed: hang up in the name of its leg (the other gets a BYE).
        `lost` (no goodbye), or a clean close while the leg's device (its instance id) is
        registered over another connection: the leg waits `rebind_grace` for that device to
        carry the dialog on over a new connection (`_rebind`) first."""
        grace = self.proxy.config.rebind_grace
        for leg in dialog.legs:
            if leg.connection != connection_id or leg in dialog.gone:
                continue
            # RFC 5626 §4.4/§5.3: a device is its instance, not one flow. One whose flow closed
            # cleanly while it is registered over another (a group hand-over, make-before-break:
            # the successor registered first) is still there: it refreshes the target on the new
            # flow, so its legs wait like a lost connection's instead of hanging up.
            away = lost or (leg.instance is not None
                            and self.proxy.device_registered(leg.user, leg.instance))
            if away and grace > 0 and leg.instance is not None and dialog.link is None:
                log.info("dialog %s: %s's connection was lost; waiting %.0f s for its device",
                         dialog.call_id, leg.user, grace)
                self._orphans[id(leg)] = self.proxy.call_later(
                    grace, functools.partial(self._orphan_expired, dialog, leg))
                continue
            self._hang_up_for(dialog, leg)

    def _orphan_expired(self, dialog: Dialog, leg: Leg) -> None:
        self._orphans.pop(id(leg), None)
        if not dialog.ended and leg not in dialog.gone:
            log.info("dialog %s: %s's device did not come back; hanging up for it",
                     dialog.call_id, leg.user)
            self._hang_up_for(dialog, leg)

    def _answer_orphaned(self, connection: Connection, request: SipRequest,
                         dialog: Dialog) -> None:
        """The other leg's device is away (its connection was lost) and may come back: a
        BYE ends the dialog for both (its device then gets 481); a re-offer cannot be
        delivered now (480 with Retry-After; the dialog stays, RFC 3261 §14.1)."""
        if request.method == "BYE":
            self._reply(connection, request, 200, "OK")
            for leg in dialog.legs:
                timer = self._orphans.pop(id(leg), None)
                if timer is not None:
                    timer.cancel()
                self._leave(dialog, leg)
        elif request.method in _OK_LOCALLY:
            self._reply(connection, request, 200, "OK")
        else:
            # RFC 3261 §21.4.18: 480 with a Retry-After; the device may be back by then.
            retry = str(max(1, round(self.proxy.config.rebind_grace)))
            self._reply(connection, request, 480, "Temporarily Unavailable",
                        (("Retry-After", retry),))

    def _hang_up_for(self, dialog: Dialog, leg: Leg) -> None:
        self._leave(dialog, leg)
        if isinstance(dialog.link, Link):
            self.bridger.held_vanished(dialog.link)
            return
        other = dialog.other(leg)
        other_conn = self._reachable(dialog, other)
        if other_conn is None:
            return
        bye = dialog.request_to(other, "BYE", via_host=self.proxy.via_host,
                                transport=self.proxy.transport)

        def ended(_: object) -> None:
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

    def _reply(self, connection: Connection, request: SipRequest, status: int, reason: str,
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        to_tag = None if request.to_tag else new_tag()
        self.proxy.send(connection, response_to(request, status, reason, to_tag=to_tag,
                                                headers=headers))
