"""A call someone placed to us: ringing, answer (2xx retransmitted until the ACK), CANCEL, and
RingCentral's call-control replies (x-rc/agent MESSAGE commands)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..errors import CallError, SipParseError
from ..sip import SipRequest, session_timer
from ..sip import rc as rcmsg
from ..sip.transaction import TIMER_B
from ..sip.ua import CallCore, CallOutput
from ._base import Direction, PhoneLink
from .session import CallSession

log = logging.getLogger("webphone.call")

#: RFC 3261 §13.3.1.4: the UAS retransmits its 2xx until the ACK comes, for 64*T1 at most.
ACK_WAIT = TIMER_B


class InboundCallSession(CallSession):
    """A call someone placed to us: `answer()`, `decline()`, and RingCentral's replies."""

    direction: Direction = "inbound"

    def __init__(self, phone: PhoneLink, invite: SipRequest) -> None:
        super().__init__(phone, invite.call_id, invite.to_address, invite.from_address)
        self.invite = invite
        # The core owns the INVITE server transaction and the dialog (early until the 2xx).
        self._attach_core(CallCore.uas(self.client.local, invite, self._now(), self.local_tag))
        ids = rcmsg.parse_rc_api_ids(invite.headers.get("p-rc-api-ids"))
        self.party_id, self.session_id = ids.party_id, ids.session_id
        self.p_rc: rcmsg.RcMessage | None = None
        header = invite.headers.get("P-rc")
        if header:
            try:
                self.p_rc = rcmsg.parse_rc_message(header)
            except rcmsg.RcMessageError as exc:
                log.warning("ignoring unreadable P-rc header: %s", exc)
        self._ack_sdp: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def auto_answer_delay(self) -> float | None:
        """Seconds after which the INVITE asks to be answered automatically, else None."""
        headers = self.invite.headers
        return rcmsg.auto_answer_delay(headers.get_all("Alert-Info"), headers.get_all("Call-Info"))

    async def _start(self) -> None:
        """100 Trying, 180 Ringing, and RingCentral's receive confirmation (Cmd 17)."""
        await self._invite_core(lambda core, now: core.ring(now, 100, "Trying"))
        if await self._refuse_short_timer():
            return
        await self._invite_core(lambda core, now: core.ring(now))
        self._set_state("ringing")
        if self.p_rc is not None:
            self._spawn(self._send_rc(rcmsg.confirm_receive(self.p_rc, self._auth_id)))

    @property
    def _auth_id(self) -> str:
        return self.phone.sip_info.authorization_id

    async def answer(self) -> None:
        """Answer: 200 OK with our SDP answer (or offer, for an INVITE without SDP)."""
        self._require("ringing", "init", action="answer")
        media = await self._ensure_media()
        offer = self.invite.body.decode("utf-8", "replace")
        try:
            sdp = await media.create_answer(offer) if offer else await media.create_offer()
        except Exception as exc:  # an offer we cannot use: refuse the call instead of ringing on
            await self._reject(488, "Not Acceptable Here")
            raise CallError(f"answer(): the caller's SDP offer is unusable: {exc}") from exc
        if self.state not in ("ringing", "init"):
            raise CallError(f"answer(): the call was {self.state} meanwhile ({self.end_reason})")
        # The core sends the 200 and retransmits it until the ACK (RFC 3261 §13.3.1.4: T1
        # doubling up to T2); without an ACK for 64*T1 it sends BYE and ends the call.
        timer = self._accepted_timer()
        await self._invite_core(lambda core, now: core.answer(now, sdp, headers=timer.headers))
        self._session_timer = timer.timer
        self._set_state("answered")
        if not offer:
            answer = await asyncio.wait_for(asyncio.shield(self._ack_sdp), ACK_WAIT)
            await media.apply_answer(answer)

    def _accepted_timer(self) -> session_timer.Acceptance:
        try:
            return self._timer_answer(self.invite)
        except SipParseError as exc:  # a broken Session-Expires: answer without a timer
            log.warning("call %s: ignoring the session timer: %s", self.call_id, exc)
            return session_timer.Acceptance(timer=None, headers=[])

    async def _refuse_short_timer(self) -> bool:
        """RFC 4028 §9: a Session-Expires below our minimum gets 422 with our Min-SE."""
        timer = self._accepted_timer()
        if not timer.reject:
            return False
        await self._reject(422, "Session Interval Too Small", timer.headers)
        return True

    async def _invite_core(
        self, action: Callable[[CallCore, float], list[CallOutput]]
    ) -> None:
        """Run one action of the callee on the core and carry out its outputs."""
        core = self.core
        if core is None:
            raise CallError(f"call {self.call_id} has no SIP state")
        try:
            outputs = action(core, self._now())
        except CallError as exc:  # e.g. CANCEL won the race: the INVITE is answered already
            raise CallError(f"call {self.call_id}: {exc}") from exc
        await self._carry_out(outputs)

    def _ack_received(self, request: SipRequest) -> None:
        if request.cseq.number != self.invite.cseq.number:
            super()._ack_received(request)  # the ACK of a re-INVITE
            return
        if not self._ack_sdp.done():
            self._ack_sdp.set_result(request.body.decode("utf-8", "replace"))

    async def decline(self) -> None:
        """Reject the call: RingCentral's Cmd 12 (the server then CANCELs), else 603 Decline."""
        self._require("ringing", "init", action="decline")
        if self.p_rc is not None:
            await self._rc_and_wait_cancel(rcmsg.decline(self.p_rc, self._auth_id))
        else:
            await self._reject(603, "Decline")

    async def to_voicemail(self) -> None:
        """Send the caller to voicemail: Cmd 11 on RingCentral, 486 Busy Here elsewhere
        (standard servers route a busy callee to voicemail)."""
        self._require("ringing", "init", action="to_voicemail")
        if self.p_rc is not None:
            await self._rc_and_wait_cancel(rcmsg.to_voicemail(self.p_rc, self._auth_id))
        else:
            await self._reject(486, "Busy Here")

    async def forward(self, target: str) -> None:
        """Forward the ringing call: Cmd 10 on RingCentral, 302 Moved Temporarily elsewhere."""
        self._require("ringing", "init", action="forward")
        if self.p_rc is not None:
            await self._rc_and_wait_cancel(rcmsg.forward(self.p_rc, self._auth_id, target))
            return
        uri = target if target.startswith("sip:") else f"sip:{target}@{self.phone.sip_info.domain}"
        await self._reject(302, "Moved Temporarily", [("Contact", f"<{uri}>")])

    async def start_reply(self) -> None:
        """Tell the caller to hold on while we pick a reply (RingCentral only, Cmd 13)."""
        self._require("ringing", "init", action="start_reply")
        await self._send_rc(rcmsg.start_reply(self._rc_only("start_reply"), self._auth_id))

    async def reply(
        self, message: str | rcmsg.ReplyOptions | dict[str, Any], timeout: float = 60.0
    ) -> rcmsg.SessionClose:
        """Reply with a text or a structured option (RingCentral only, Cmd 14); returns how the
        caller reacted (SessionClose, Cmd 9)."""
        self._require("ringing", "init", action="reply")
        p_rc = self._rc_only("reply")
        waiter = self.phone.expect_session_close(p_rc.sid)
        try:
            await self._send_rc(rcmsg.reply(p_rc, self._auth_id, message))
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError as exc:
            raise CallError(f"reply(): the caller did not react within {timeout:g} s") from exc
        finally:
            self.phone.forget_session_close(p_rc.sid, waiter)

    def _rc_only(self, action: str) -> rcmsg.RcMessage:
        if self.p_rc is None:
            raise CallError(
                f"{action}() is RingCentral's call control: this INVITE has no P-rc header, "
                "so the server does not support it"
            )
        return self.p_rc

    async def _reject(
        self, code: int, reason: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        await self._invite_core(lambda core, now: core.reject(now, code, reason, headers or ()))
        await self._finish("disposed", f"rejected with {code}")

    async def _rc_and_wait_cancel(self, message: rcmsg.RcMessage, timeout: float = 10.0) -> None:
        self._ended_by_us = f"ended by this phone (RingCentral Cmd {message.cmd})"
        await self._send_rc(message)
        try:
            await asyncio.wait_for(self.wait_closed(), timeout)
        except TimeoutError:
            log.warning(
                "server did not CANCEL %s after Cmd %s; rejecting with 603",
                self.call_id,
                message.cmd,
            )
            await self._reject(603, "Decline")

    async def _send_rc(self, message: rcmsg.RcMessage) -> None:
        uri = rcmsg.request_uri(message)
        request = self.client.new_request(
            "MESSAGE",
            uri,
            to=f"<{uri}>",
            call_id=self.call_id,
            body=message.to_xml().encode(),
            content_type=rcmsg.RC_MESSAGE_CONTENT_TYPE,
        )
        response = await self.client.request(request)
        if not response.is_success:
            raise CallError(f"x-rc/agent Cmd {message.cmd} refused: {response.status_code}")

    async def _end_unanswered(self) -> None:
        await self.decline()
