"""A call that confirms itself: target refresh after a reconnect, RTP inactivity, RFC 4028.

An answered call must never stay `answered` once nobody is at the other end. Three things
check it, each ending the call with a reason (and a BYE where the dialog may still exist):

- after the SIP connection was lost and restored, `refresh()` sends an in-dialog re-INVITE
  with our (new-connection) Contact and the SDP we last sent, unchanged (RFC 3264 §8: same
  o= version, so the far party's media goes on as it was). 2xx: the call goes on
  (``refreshed``); 481/408 (RFC 3261 §12.2.1.2), no answer, or no confirmation within
  `redial_timeout`: the call ends;
- no RTP received for `media_timeout` while the call expects audio;
- RFC 4028 session timers, when the peer supports them (`webphone.sip.session_timer`).

Media runs on its own (aiortc's ICE/DTLS do not depend on the SIP connection), so a call whose
signalling path came back never loses audio.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from ..errors import CallError, SipParseError, SipTimeoutError, TransportError
from ..sip import SipRequest, SipResponse
from ..sip import session_timer as st
from ._base import CallState
from .actions import CallActions

log = logging.getLogger("webphone.call")

#: RFC 3261 §14.1: after a 491 the caller of the dialog (Call-ID owner) waits 2.1-4 s.
GLARE_WAIT = (2.1, 4.0)
#: How often a re-INVITE refused for another reason is tried again within the bound.
RETRY_WAIT = 2.0
#: Checks of the media counters per `media_timeout` (so it ends within 1.25 x the timeout).
MEDIA_CHECKS = 4


class LiveSession(CallActions):
    """Keeps an answered call confirmed; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # not None from a lost connection until a refresh confirms the call (then it is set)
        self._confirmed: asyncio.Event | None = None
        self._session_timer: st.SessionTimer | None = None
        self._timer_changed = asyncio.Event()
        self._timer_task: asyncio.Task[Any] | None = None
        # True while renew_media negotiates new media: no audio is expected before that
        # offer/answer ends (renew_media bounds it and ends the call if it fails)
        self._renewing = False

    # -- state ------------------------------------------------------------------------------

    def _set_state(self, state: CallState, *args: Any) -> None:
        was = self.state
        super()._set_state(state, *args)
        if state == "answered" and was != "answered" and self.state == "answered":
            timeout = self.phone.timers.media_timeout
            if timeout is not None:
                self._spawn(self._watch_media(timeout))
            if self._session_timer is not None:
                self._arm_session_timer()

    async def _give_up(self, reason: str) -> None:
        """End an answered call by our own decision: the session ends at once (event with
        `reason`), then a BYE tells the far party, if the dialog may still be alive there."""
        if self.state != "answered":
            return
        request = self._dialog_request("BYE") if self.dialog is not None else None
        log.warning("call %s ends: %s", self.call_id, reason)
        await self._finish("disposed", reason)
        if request is None:
            return
        try:
            await self.client.request(request)
        except (TransportError, SipTimeoutError) as exc:
            log.info("BYE of %s not answered: %s", self.call_id, exc)

    # -- target refresh ---------------------------------------------------------------------

    async def refresh(self, sdp: str | None = None,
                      headers: list[tuple[str, str]] | None = None) -> SipResponse:
        """Refresh this dialog's target with an in-dialog re-INVITE carrying our current
        Contact and `sdp` (default: the SDP we last sent, unchanged, so nothing changes for
        the media: RFC 3264 §8). Returns the 2xx (its SDP is the far party's answer, for a
        caller that offered new media) and emits ``refreshed(response)``.

        A 481 or 408 (RFC 3261 §12.2.1.2) or no answer at all ends the call (``disposed``
        with the reason) and raises `CallError`; another refusal (491 glare, 5xx) leaves the
        call as it was (§14.1) and raises `CallError`; a lost connection raises
        `TransportError` (the call goes on: the next reconnect tries again).
        """
        self._require("answered", action="refresh")
        body = sdp if sdp is not None else self._current_sdp()
        extra = list(headers or []) + self._timer_headers()
        try:
            invite = self._dialog_request("INVITE", body=body.encode(),
                                          content_type="application/sdp", headers=extra)
        except CallError as exc:  # a re-INVITE in progress either way: like a 491
            raise CallError(f"refresh(): {exc}") from exc
        try:
            response = await self._dialog_send(invite)  # the core ACKs a 2xx, ends on 481/408
        except SipTimeoutError as exc:
            await self._give_up(f"no answer to the re-INVITE that refreshes the call ({exc})")
            raise CallError(f"refresh(): {exc}; the call ended") from exc
        if not response.is_success:
            state = "ended" if self.state != "answered" else "goes on unchanged"
            raise CallError(f"refresh(): re-INVITE answered {response.status_code} "
                            f"{response.reason}; the call {state}")
        if self._confirmed is not None:
            self._confirmed.set()
            self._confirmed = None
        self._timer_refreshed_by_response(response)
        self.emit("refreshed", response)
        return response

    def _current_sdp(self) -> str:
        media = self.media.local_sdp if self.media is not None else None
        sdp = media or (self.core.local_sdp if self.core is not None else None)
        if not sdp:
            raise CallError(f"refresh(): call {self.call_id} has no local SDP to send again")
        return sdp

    def _connection_lost(self) -> None:
        """The phone's SIP connection is gone: the call must be confirmed again in time."""
        if self.state != "answered" or self._confirmed is not None:
            return
        self._confirmed = asyncio.Event()
        bound = self.phone.timers.redial_timeout
        if bound is not None:
            self._spawn(self._confirm_within(self._confirmed, bound))

    def _connection_back(self) -> None:
        """Reconnected and registered again: send the target refresh."""
        if self.state == "answered" and self._confirmed is not None:
            self._spawn(self._redial(self._confirmed))

    async def _confirm_within(self, confirmed: asyncio.Event, bound: float) -> None:
        try:
            await asyncio.wait_for(confirmed.wait(), bound)
        except TimeoutError:
            await self._give_up(f"the call could not be confirmed within {bound:g} s after the "
                                "connection to the SIP server was lost")

    async def _redial(self, confirmed: asyncio.Event) -> None:
        """Refresh until confirmed, the call ends, or the connection drops again (the next
        reconnect starts another round); `_confirm_within` bounds it all."""
        while self.state == "answered" and not confirmed.is_set():
            try:
                await self.refresh()
                return
            except TransportError as exc:
                log.info("refresh of %s waits for the next reconnect: %s", self.call_id, exc)
                return
            except CallError as exc:
                if self.state != "answered":
                    return
                log.info("refresh of %s: %s; trying again", self.call_id, exc)
                glare = " 491 " in str(exc) or "in progress" in str(exc)
            # §14.1: after glare wait 2.1-4 s (we cannot tell who owns the Call-ID's side
            # cheaply, so the longer range); other refusals: a fixed back-off
            await asyncio.sleep(random.uniform(*GLARE_WAIT) if glare else RETRY_WAIT)

    # -- RTP inactivity ---------------------------------------------------------------------

    def _media_heard(self) -> int | None:
        """A counter that moves while audio arrives, or None when none is expected now (we
        hold the peer, it holds us with `inactive`, or `renew_media` is still negotiating the
        call's new media: RFC 3264 §8, the new session starts once its offer/answer is done)."""
        media = self.media
        if media is None:
            return 0
        if self._renewing:
            return None
        if media.negotiated_direction not in (None, "sendrecv", "recvonly"):
            return None
        stats = media.stats
        if stats is None:
            return None  # media held by another member, which watches its own audio
        return stats.frames_received + stats.dtmf_received

    async def _watch_media(self, timeout: float) -> None:
        """End the call once no audio has come for `timeout` s while some was expected."""
        loop = asyncio.get_running_loop()
        last, since = self._media_heard(), loop.time()
        while self.state == "answered":
            await asyncio.sleep(timeout / MEDIA_CHECKS)  # a periodic check of counters
            heard = self._media_heard()
            if heard is None or heard != last:
                last, since = heard, loop.time()
            elif loop.time() - since >= timeout:
                await self._give_up(f"no audio received for {timeout:g} s (media timeout)")
                return

    # -- RFC 4028 session timers ------------------------------------------------------------

    @property
    def session_timer(self) -> st.SessionTimer | None:
        """The negotiated RFC 4028 session timer (interval, who refreshes), or None."""
        return self._session_timer

    def _timer_headers(self) -> list[tuple[str, str]]:
        """Session-timer headers for a request that sets or refreshes the timer (§7.1)."""
        timer = self._session_timer
        expires = timer.interval if timer is not None else self.phone.timers.session_expires
        if expires is None:
            return []
        return st.offer_headers(expires, min(st.MIN_SE, expires))

    def _timer_from_response(self, response: SipResponse) -> None:
        """The 2xx to our INVITE sets the session timer (§7.2), if it names one."""
        try:
            self._session_timer = st.from_response(response, self._now())
        except SipParseError as exc:
            log.warning("call %s: ignoring the session timer: %s", self.call_id, exc)

    def _timer_refreshed_by_response(self, response: SipResponse) -> None:
        if self._session_timer is None:
            # A re-INVITE's 2xx may set the timer too (RFC 4028 §7.2): an adopted call, whose
            # timer did not travel with it, gets it back with its first refresh.
            self._timer_from_response(response)
            if self._session_timer is not None and self.state == "answered":
                self._arm_session_timer()
            return
        timer = st.from_response(response, self._now())
        self._session_timer = timer or self._session_timer.refreshed(self._now())
        self._timer_changed.set()

    def _timer_answer(self, request: SipRequest) -> st.Acceptance:
        """What our 2xx to `request` (INVITE or UPDATE of the peer) says about the timer."""
        expires = self.phone.timers.session_expires
        if expires is None:
            return st.Acceptance(timer=None, headers=[])
        return st.accept_request(request, self._now(), min_se=min(st.MIN_SE, expires))

    async def _reply(self, request: SipRequest, code: int, reason: str, *, body: bytes = b"",
                     content_type: str | None = None,
                     headers: list[tuple[str, str]] | None = None) -> None:
        """A 2xx to the peer's re-INVITE/UPDATE refreshes the session timer (§9, §10)."""
        if (request.method in ("INVITE", "UPDATE") and 200 <= code < 300
                and self.state == "answered" and self._session_timer is not None):
            try:
                answer = self._timer_answer(request)
            except SipParseError as exc:
                log.warning("call %s: bad Session-Expires in %s: %s", self.call_id,
                            request.method, exc)
            else:
                # A too-short interval here comes with an offer already answered: keep our
                # interval rather than refuse the media change (422 is for new sessions).
                if not answer.reject:
                    headers = [*(headers or []), *answer.headers]
                now = self._now()
                self._session_timer = answer.timer or self._session_timer.refreshed(now)
                self._timer_changed.set()
        await super()._reply(request, code, reason, body=body, content_type=content_type,
                             headers=headers)

    def _arm_session_timer(self) -> None:
        if self._timer_task is None or self._timer_task.done():
            self._timer_task = self._spawn(self._run_session_timer())

    async def _run_session_timer(self) -> None:
        """Refresh at half the interval when we are the refresher; BYE when the peer's
        refresh does not come in time (§10)."""
        loop = asyncio.get_running_loop()
        while self.state == "answered" and self._session_timer is not None:
            timer = self._session_timer
            self._timer_changed.clear()
            try:
                await asyncio.wait_for(self._timer_changed.wait(),
                                       max(0.0, timer.deadline() - loop.time()))
                continue  # refreshed or renegotiated meanwhile
            except TimeoutError:
                pass
            if not timer.we_refresh:
                await self._give_up(f"session timer expired: no refresh within {timer.interval}"
                                    " s (RFC 4028 §10)")
                return
            try:
                await self.refresh()
            except (CallError, TransportError) as exc:
                log.info("session refresh of %s failed: %s", self.call_id, exc)
                if loop.time() >= timer.expires_at():
                    await self._give_up(f"session timer expired: refresh failed ({exc})")
                    return
                await asyncio.sleep(RETRY_WAIT)  # back-off before the next refresh attempt
