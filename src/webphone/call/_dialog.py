"""A call's dialog traffic, both ways, through its pure core (`webphone.sip.ua.CallCore`).

Every message that comes in goes to the core, whose outputs are carried out here: messages
sent, in-dialog requests handed to the handlers below, ACKs to their waiters, the end of the
call to `_finish`. The core's timers (2xx retransmission, RFC 3261 §13.3.1.4) run on one loop
timer. Requests we send (BYE, re-INVITE for hold, REFER, INFO) are built by the core and run by
`SipClient` (digest retry, timeouts); the core learns how they ended (`request_done`)."""

from __future__ import annotations

import asyncio
import logging

from ..errors import CallError, SipParseError, TransportError
from ..sip import SipRequest, SipResponse
from ..sip import sdp as sdplib
from ..sip.transaction import TIMER_B, Send
from ..sip.ua import (
    AckLost,
    AckReceived,
    CallCore,
    CallOutput,
    CallTerminated,
    RequestReceived,
)
from ._base import BaseCallSession

log = logging.getLogger("webphone.call")

#: How long an offerless re-INVITE waits for the ACK carrying the answer (64*T1).
ACK_WAIT = TIMER_B


class DialogSession(BaseCallSession):
    """The session's side of its `CallCore`: requests and responses both ways, timers."""

    #: In-dialog methods we handle; the table, not the method's name, picks the handler, so a
    #: peer cannot reach internal functions by inventing methods.
    HANDLED_METHODS = ("ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY",
                       "OPTIONS", "REFER", "UPDATE")

    # -- the pure call core -----------------------------------------------------------------

    def _attach_core(self, core: CallCore) -> None:
        """Drive `core` (webphone.sip.ua): every message of the call goes through it."""
        self.core = core
        self._arm_core()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _arm_core(self) -> None:
        """(Re)schedule the loop timer at the core's next deadline (2xx retransmission...)."""
        if self._core_timer is not None:
            self._core_timer.cancel()
            self._core_timer = None
        deadline = None if self.core is None else self.core.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._core_timer = loop.call_at(deadline, self._core_timeout)

    def _core_timeout(self) -> None:
        self._core_timer = None
        if self.core is not None:
            self._spawn(self._carry_out(self.core.handle_timeout(self._now())))

    async def _carry_out(self, outputs: list[CallOutput]) -> None:
        """Send what the core says to send; act on its events (requests to answer, the end)."""
        self._arm_core()
        for output in outputs:
            if isinstance(output, Send):
                try:
                    await self.client.send(output.message)
                except TransportError as exc:  # reconnecting: the peer retransmits or times out
                    log.info("call %s could not send %s: %s", self.call_id,
                             _label(output.message), exc)
            elif isinstance(output, RequestReceived):
                await self._dispatch(output.request)
            elif isinstance(output, AckReceived):
                self._ack_received(output.request)
            elif isinstance(output, AckLost):
                self._ack_lost()
            elif isinstance(output, CallTerminated) and self.state not in ("failed", "disposed"):
                await self._finish("disposed", self._ended_by_us or output.reason)

    async def _reply(self, request: SipRequest, code: int, reason: str, *, body: bytes = b"",
                     content_type: str | None = None,
                     headers: list[tuple[str, str]] | None = None) -> None:
        """Answer an in-dialog request through the core's server transaction."""
        if self.core is None:
            await self._reply_safely(request, code, reason, headers)
            return
        try:
            outputs = self.core.reply(request, code, reason, self._now(), body=body,
                                      content_type=content_type, headers=headers or ())
        except CallError as exc:  # already answered (a duplicate), or the call is gone
            log.info("call %s: not answering %s: %s", self.call_id, request.method, exc)
            return
        await self._carry_out(outputs)

    async def _handle_request(self, request: SipRequest) -> None:
        """An inbound request of this call (routed by the phone on Call-ID)."""
        self.emit("inbound_message", request)
        try:
            request.cseq, request.from_address, request.to_address  # noqa: B018
        except SipParseError as exc:
            if request.method != "ACK":
                await self._reply_safely(request, 400, f"Bad Request ({exc})"[:120])
            return
        if request.method not in self.HANDLED_METHODS:
            await self._reply_safely(
                request, 405, "Method Not Allowed",
                headers=[("Allow", ", ".join(self.HANDLED_METHODS))],
            )
            return
        if self.core is None:  # before our INVITE left: nothing of ours to match
            await self._reply_safely(request, 481, "Call/Transaction Does Not Exist")
            return
        # The core answers what the rules decide (BYE, CANCEL, glare, CSeq order, unknown
        # dialog, retransmissions, ACKs) and hands over the rest as RequestReceived.
        await self._carry_out(self.core.receive(request, self._now()))

    async def _dispatch(self, request: SipRequest) -> None:
        handler = {
            "INFO": self._on_info, "INVITE": self._on_invite, "MESSAGE": self._on_message,
            "NOTIFY": self._on_notify, "OPTIONS": self._on_options, "REFER": self._on_refer,
            "UPDATE": self._on_update,
        }.get(request.method)
        if handler is None:  # ACK, BYE and CANCEL never come out of the core as requests
            await self._reply(request, 405, "Method Not Allowed")
            return
        await handler(request)

    async def _reply_safely(self, request: SipRequest, code: int, reason: str,
                            headers: list[tuple[str, str]] | None = None) -> None:
        """Answer outside the core: a request too broken for it, or an unknown method."""
        try:
            await self.client.reply(request, code, reason, headers=headers, to_tag=self.local_tag)
        except (TransportError, SipParseError, KeyError) as exc:
            log.info("could not answer %s with %s: %s", request.method, code, exc)

    async def _on_info(self, request: SipRequest) -> None:
        await self._reply(request, 200, "OK")

    async def _on_notify(self, request: SipRequest) -> None:
        await self._reply(request, 200, "OK")

    async def _on_refer(self, request: SipRequest) -> None:
        await self._reply(request, 405, "Method Not Allowed")

    def _handle_response(self, response: SipResponse) -> None:
        """A response no transaction waited for: a retransmitted 2xx to our INVITE is ACKed
        again, a 2xx from another fork ACKed and ended with BYE (the core decides, §13.2.2.4)."""
        self.emit("inbound_message", response)
        if self.core is not None:
            self._spawn(self._carry_out(self.core.receive(response, self._now())))

    async def _on_invite(self, request: SipRequest) -> None:
        """A re-INVITE: hold/unhold by the peer, or a renegotiation."""
        media = await self._ensure_media()
        offer = request.body.decode("utf-8", "replace")
        if offer:
            # Read the peer's hold from its offer before the answer is made: the media stack
            # shows the new direction while it still finishes the answer.
            was_held = self.remote_held
            self.remote_held = sdplib.get_direction(offer) in ("sendonly", "inactive")
            try:
                sdp = await media.create_answer(offer)
            except Exception as exc:  # unusable SDP: refuse it, keep the call as it was
                log.warning("re-INVITE of %s with unusable SDP: %s", self.call_id, exc)
                self.remote_held = was_held
                await self._reply(request, 488, "Not Acceptable Here")
                return
            self.phone.session_changed(self)
        else:
            # Offerless re-INVITE: our offer goes in the 200, the answer comes in the ACK.
            sdp = await media.create_offer()
            self._reinvite_ack = asyncio.get_running_loop().create_future()
        waiter = self._reinvite_ack
        # The core refreshes the remote target with the 2xx (§12.2.2) and retransmits it
        # until the ACK (§13.3.1.4).
        await self._reply(request, 200, "OK", body=sdp.encode(), content_type="application/sdp")
        if offer or waiter is None:
            return
        try:
            answer = await asyncio.wait_for(waiter, ACK_WAIT)
        except TimeoutError:
            log.warning("no ACK with an answer for the offerless re-INVITE of %s", self.call_id)
            return
        finally:
            if self._reinvite_ack is waiter:  # (a newer re-INVITE may wait for its own)
                self._reinvite_ack = None
        if answer:
            await media.apply_answer(answer)
        elif answer is None:
            log.info("call %s: a newer INVITE came before the ACK of our offer; that offer "
                     "stays unanswered", self.call_id)

    def _ack_received(self, request: SipRequest) -> None:
        waiter = self._reinvite_ack
        if waiter is not None and not waiter.done():
            waiter.set_result(request.body.decode("utf-8", "replace"))

    def _ack_lost(self) -> None:
        """The ACK of our 2xx to a re-INVITE will not come (`AckLost`): an offerless
        re-INVITE waiting for the answer in it stops waiting (its offer stays unanswered)."""
        waiter = self._reinvite_ack
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _on_options(self, request: SipRequest) -> None:
        await self._reply(request, 200, "OK")

    async def _on_update(self, request: SipRequest) -> None:
        await self._reply(request, 200, "OK")

    async def _on_message(self, request: SipRequest) -> None:
        await self._reply(request, 200, "OK")


    async def hold(self) -> None:
        """Put the peer on hold: re-INVITE offering `a=sendonly` (the RingCentral way); the peer
        answers `recvonly` and stops sending to us."""
        await self._set_hold(True)

    async def unhold(self) -> None:
        """Take the peer off hold: re-INVITE with `a=sendrecv`, and resume audio."""
        await self._set_hold(False)

    async def _set_hold(self, hold: bool) -> None:
        self._require("answered", action="hold" if hold else "unhold")
        await self._reoffer("sendonly" if hold else "sendrecv")
        self.held = hold
        self.phone.session_changed(self)
        self.emit("held" if hold else "unheld")

    async def re_invite(self) -> None:
        """Renegotiate the media with a re-INVITE (upstream's recovery after a network change).

        The offer asks for an ICE restart where the media stack supports it; aiortc keeps its
        transport, so with aiortc this refreshes the session on the same path.
        """
        self._require("answered", action="re_invite")
        await self._reoffer("sendonly" if self.held else "sendrecv", ice_restart=True)

    async def _reoffer(self, direction: str, ice_restart: bool = False) -> SipResponse:
        if self.media is None or self.dialog is None:
            raise CallError(f"call {self.call_id} has no negotiated media to re-offer")
        previous = "sendonly" if self.held else "sendrecv"
        self.media.set_direction(direction)
        offer = await self.media.create_offer(ice_restart=ice_restart)
        invite = self._dialog_request("INVITE", body=offer.encode(), content_type="application/sdp")
        response = await self._dialog_send(invite)  # the core ACKs a 2xx (§13.2.2.4)
        if not response.is_success:
            if self.media is not None:
                self.media.set_direction(previous)  # nothing changed on the wire
            raise CallError(f"re-INVITE refused: {response.status_code} {response.reason}")
        if response.body:
            await self.media.apply_answer(response.body.decode("utf-8", "replace"))
        return response

    # -- requests we send in the dialog ------------------------------------------------------

    def _dialog_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> SipRequest:
        """An in-dialog request built by the core (next CSeq, route set, remote target)."""
        if self.core is None:
            raise CallError(f"{method}: call {self.call_id} has no dialog yet")
        return self.core.build_request(method, body=body, content_type=content_type,
                                       headers=headers or ())

    async def _dialog_send(self, request: SipRequest) -> SipResponse:
        """Send an in-dialog request through SipClient (digest retry, timeouts) and tell the
        core how it ended: it ACKs a re-INVITE's 2xx, ends the call on 481/408 (§12.2.1.2)."""
        response: SipResponse | None = None
        try:
            response = await self.client.request(request)
        finally:
            if self.core is not None:
                await self._carry_out(self.core.request_done(request, response, self._now()))
        return response

    async def _bye(self) -> None:
        bye = self._dialog_request("BYE")
        try:
            await self._dialog_send(bye)
        finally:
            await self._finish("disposed", "hung up")


def _label(message: SipRequest | SipResponse) -> str:
    return message.method if isinstance(message, SipRequest) else str(message.status_code)
