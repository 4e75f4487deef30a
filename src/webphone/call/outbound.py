"""A call we place: INVITE (with a digest retry), provisional and final responses, CANCEL."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..errors import CallError, SipTimeoutError, TransportError
from ..sip import Address, SipRequest, SipResponse, SipUri, session_timer
from ..sip import rc as rcmsg
from ..sip.build import cancel_for
from ..sip.transaction import TIMER_B, new_branch, new_call_id
from ..sip.ua import CallCore, CallState
from ._base import Direction, PhoneLink
from .session import CallSession

log = logging.getLogger("webphone.call")

#: How long cancel() waits for the 487 (RFC 3261 Timer B, 64*T1).
CANCEL_WAIT = TIMER_B


class OutboundCallSession(CallSession):
    """A call we placed. `cancel()` while it rings."""

    direction: Direction = "outbound"

    def __init__(self, phone: PhoneLink, callee: str) -> None:
        info = phone.sip_info
        uri = callee if callee.startswith(("sip:", "sips:")) else f"sip:{callee}@{info.domain}"
        remote = Address(SipUri.parse(uri))
        local = Address(SipUri("sip", user=info.username, host=info.domain))
        super().__init__(phone, new_call_id(), local, remote)
        self.callee = callee
        self.target_uri = uri
        self._got_provisional = False
        self._cancel_requested = False
        self._progress: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def _start(self, caller_id: str | None, headers: list[tuple[str, str]]) -> None:
        """Send the INVITE; return once the call rings, answers or fails (raising then)."""
        media = await self._ensure_media()
        offer = await media.create_offer()
        extra = list(headers) + self._timer_headers()
        if caller_id:
            extra.insert(
                0, ("P-Asserted-Identity", f"sip:{caller_id}@{self.phone.sip_info.domain}")
            )
        self._invite = self.client.new_request(
            "INVITE",
            self.target_uri,
            to=self.remote_address,
            from_tag=self.local_tag,
            call_id=self.call_id,
            headers=extra,
            body=offer.encode(),
            content_type="application/sdp",
        )
        # The core keeps the call and dialog state; SipClient runs the INVITE's transaction
        # (digest retry, ACK of a failure) and hands the responses over.
        self._attach_core(CallCore(local=self.client.local, outbound=True, invite=self._invite))
        self._spawn(self._run_invite())
        await asyncio.shield(self._progress)

    async def _run_invite(self) -> None:
        assert self._invite is not None
        try:
            response = await self._send_invite()
            retried: set[int] = set()  # one digest answer, one 422 retry (in either order)
            while not self._cancel_requested:
                code = 407 if response.status_code == 401 else response.status_code
                if code in retried:
                    break
                retried.add(code)
                if code == 407:
                    self._retry_with(self.client.authenticated(self._invite, response))
                elif (retry := self._longer_timer(response)) is not None:
                    self._retry_with(retry)  # RFC 4028 §7.3: 422 names the Min-SE
                else:
                    break
                response = await self._send_invite()
        except (SipTimeoutError, TransportError) as exc:
            await self._fail(str(exc), exc)
            return
        except Exception as exc:  # a malformed answer must end the call, never strand it
            log.warning("call %s failed on a malformed response: %s", self.call_id, exc)
            await self._fail(f"malformed response: {exc}", CallError(f"call failed: {exc}"))
            return
        if response.is_success:
            try:
                await self._on_answered(response)
            except Exception as exc:  # e.g. unusable SDP in the 200: ACK was sent, so BYE
                log.warning("answer of %s unusable: %s", self.call_id, exc)
                if self.dialog is not None and self.state != "disposed":
                    with contextlib.suppress(Exception):
                        await self._bye()
                await self._fail(f"unusable answer: {exc}", CallError(f"call failed: {exc}"))
        else:
            reason = f"{response.status_code} {response.reason}"
            await self._fail(reason, CallError(f"call to {self.callee} failed: {reason}"))

    async def _send_invite(self) -> SipResponse:
        assert self._invite is not None
        return await self.client.request(
            self._invite, on_provisional=self._on_provisional, auth=False, final_timeout=None
        )

    def _retry_with(self, invite: SipRequest) -> None:
        self._invite = invite
        if self.core is not None:
            self.core.invite = invite

    def _longer_timer(self, response: SipResponse) -> SipRequest | None:
        """After 422 Session Interval Too Small: the INVITE again (new branch, next CSeq) asking
        for the Min-SE it names; None for any other response or a 422 naming nothing higher."""
        asked = self.phone.timers.session_expires
        if response.status_code != 422 or self._invite is None or asked is None:
            return None
        wanted = session_timer.retry_expires(response, asked)
        if wanted is None:
            return None
        retry = self._invite.copy()
        for name, value in session_timer.offer_headers(wanted, wanted):
            retry.headers.set(name, value)
        via = retry.top_via
        via.params["branch"] = new_branch()
        retry.headers.set("Via", str(via))
        retry.headers.set("CSeq", f"{retry.cseq.number + 1} INVITE")
        return retry

    def _on_provisional(self, response: SipResponse) -> None:
        self.emit("inbound_message", response)
        self._got_provisional = True  # any provisional, 100 included, allows a CANCEL (§9.1)
        if self._cancel_requested and response.status_code == 100:
            self._spawn(self._send_cancel())
        if response.status_code == 100:
            return
        if self.core is not None:  # an early dialog from a 1xx with a To tag (RFC 3261 §12.1.2)
            self._spawn(self._carry_out(self.core.invite_response(response, self._now())))
        self._read_rc_ids(response)
        if self._cancel_requested:
            self._spawn(self._send_cancel())
        self._set_state("ringing")
        self._progressed()

    async def _on_answered(self, response: SipResponse) -> None:
        assert self._invite is not None and self.core is not None
        self._read_rc_ids(response)
        # The core confirms the dialog (route set and target from the 2xx) and ACKs it.
        await self._carry_out(self.core.invite_response(response, self._now()))
        if self._cancel_requested:
            if self.core.state is not CallState.TERMINATED:  # else the core sent the BYE
                await self._bye()
            self._progressed()
            return
        if response.body and self.media is not None:
            await self.media.apply_answer(response.body.decode("utf-8", "replace"))
        self._timer_from_response(response)
        self._set_state("answered")
        self._progressed()

    def _read_rc_ids(self, response: SipResponse) -> None:
        ids = rcmsg.parse_rc_api_ids(response.headers.get("p-rc-api-ids"))
        self.party_id = ids.party_id or self.party_id
        self.session_id = ids.session_id or self.session_id

    async def _fail(self, reason: str, error: Exception) -> None:
        await self._finish("disposed" if self._cancel_requested else "failed", reason)
        if not self._progress.done():  # after _finish: call() raises on a clean phone
            self._progress.set_exception(error)
            self._progress.exception()

    def _progressed(self) -> None:
        if not self._progress.done():
            self._progress.set_result(None)

    async def cancel(self) -> None:
        """Stop calling: CANCEL the INVITE (sent once the callee has answered provisionally)."""
        self._require("init", "ringing", action="cancel")
        self._cancel_requested = True
        if self._got_provisional:
            await self._send_cancel()
        try:  # the 487 normally ends it; never wait past Timer B for a silent server
            await asyncio.wait_for(self.wait_closed(), CANCEL_WAIT)
        except TimeoutError:
            await self._finish("disposed", "cancelled (no answer to the CANCEL)")

    async def _end_unanswered(self) -> None:
        await self.cancel()

    async def _send_cancel(self) -> None:
        invite = self._invite
        if invite is None:
            return
        cancel = cancel_for(invite)
        try:
            await self.client.request(cancel, auth=False)
        except (SipTimeoutError, TransportError) as exc:
            log.warning("CANCEL of %s got no answer: %s", self.call_id, exc)
