"""The core of every call session: state, ids, media, in-dialog requests.

A session talks to its phone only through `PhoneLink`, declared here (the aiortc way: the child
names what it needs; `WebPhone` hands each session an adapter). So this package never imports
`webphone.phone`, and the phone's private methods stay private.

Dialog state (`webphone.sip.dialog.Dialog`: tags, CSeq, route set, target, early/confirmed/
terminated) and every message built by rule (`webphone.sip.build`) come from the pure core.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .._events import EventEmitter
from ..errors import (
    CallError,
    NotRealPhoneError,
    SipTimeoutError,
    TransportError,
)
from ..sip import Address, SipRequest
from ..sip import rc as rcmsg
from ..sip.dialog import Dialog
from ..sip.transaction import new_tag
from ..sip.ua import CallCore
from ..sip_client import DummySipClient, SipClient
from ..sip_info import SipInfo

if TYPE_CHECKING:
    from ..media import MediaSession, MediaStats

log = logging.getLogger("webphone.call")

CallState = Literal["init", "ringing", "answered", "failed", "disposed"]
Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True, kw_only=True)
class CallTimers:
    """How long a call may go unconfirmed before it ends by itself (seconds; None: never).

    `media_timeout`: no audio (RTP) received while the call expects some. `redial_timeout`:
    after the SIP connection was lost, the bound for confirming the call again (reconnect,
    re-register, target-refresh re-INVITE); RingCentral's softphone gives up after 32 s.
    `session_expires`: the RFC 4028 session interval we ask for (None: no session timer).
    """

    media_timeout: float | None = 30.0
    redial_timeout: float | None = 32.0
    session_expires: int | None = 1800


class CallMedia(Protocol):
    """What a call uses of its media (declared on the call's side): a `MediaSession` in this
    process, or anything with these methods, such as the group's `RemoteMedia` whose media
    lives on another member (then `stats` is None: that member watches its own audio)."""

    @property
    def local_sdp(self) -> str | None:
        """Our last offer or answer."""

    @property
    def remote_sdp(self) -> str | None:
        """The far party's last offer or answer."""

    @property
    def negotiated_direction(self) -> str | None:
        """Our direction as last negotiated (None before any)."""

    @property
    def closed(self) -> bool:
        """True once closed."""

    @property
    def stats(self) -> MediaStats | None:
        """Counters of received audio (None: not watched here)."""

    async def create_offer(self, ice_restart: bool = False, renew: bool = False) -> str:
        """An SDP offer (`renew`: from a new endpoint)."""

    async def create_answer(self, offer_sdp: str) -> str:
        """Apply the far party's offer; our SDP answer."""

    async def apply_answer(self, answer_sdp: str) -> None:
        """Apply the far party's answer to our last offer."""

    def set_direction(self, direction: str) -> None:
        """The direction of our next offer or answer (hold)."""

    def mute(self) -> None:
        """Stop sending audio."""

    def unmute(self) -> None:
        """Send audio again."""

    async def send_dtmf(self, tones: str, duration: float = 0.1, gap: float = 0.07,
                        timeout: float | None = None) -> None:
        """RFC 4733 telephone events."""

    async def wait_first_audio(self, timeout: float) -> float:
        """Until the far party is heard on the current endpoint; `CallError` after `timeout`."""

    def continuity(self) -> dict[str, Any]:
        """The JSON record another process resumes this media from."""

    async def close(self) -> None:
        """Stop and release everything."""

    def on(self, event: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Listen to an event ("dtmf", "renegotiation_needed", ...)."""


class PhoneLink(Protocol):
    """What a call session needs from its phone (declared on the call's side)."""

    @property
    def timers(self) -> CallTimers:
        """The phone's call timers (`CallTimers`)."""

    @property
    def sip_info(self) -> SipInfo:
        """The account the phone is registered with."""

    @property
    def sip_client(self) -> SipClient | DummySipClient:
        """The phone's SIP client."""

    def session_changed(self, session: BaseCallSession) -> None:
        """Something a UI shows changed (state, hold, mute)."""

    def session_ended(self, session: BaseCallSession) -> None:
        """The session is over: drop it from the phone's list."""

    def new_media(self, session: BaseCallSession) -> Awaitable[MediaSession]:
        """A media session for this call."""

    def call(
        self,
        callee: str,
        caller_id: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> Awaitable[BaseCallSession]:
        """Place a new call (transfers and warm transfers need one)."""

    def expect_session_close(self, sid: str | None) -> asyncio.Future[rcmsg.SessionClose]:
        """A future for RingCentral's SessionClose (Cmd 9) of `sid`."""

    def forget_session_close(self, sid: str | None, waiter: asyncio.Future[Any]) -> None:
        """Stop waiting for that SessionClose."""


class BaseCallSession(EventEmitter):
    """State, ids, media and in-dialog handling shared by every call."""

    direction: Direction

    def __init__(self, phone: PhoneLink, call_id: str, local: Address, remote: Address) -> None:
        super().__init__()
        self.phone = phone
        if not isinstance(phone.sip_client, SipClient):
            raise NotRealPhoneError("a call needs a phone with a real SipClient")
        self.client: SipClient = phone.sip_client
        self.call_id = call_id
        self.state: CallState = "init"
        self.local_tag = new_tag()
        self.local_address = local
        self.remote_address = remote
        self.core: CallCore | None = None
        self._core_timer: asyncio.TimerHandle | None = None
        self.session_id: str | None = None
        self.party_id: str | None = None
        self.held = False
        self.muted = False
        self.remote_held = False
        self.started_at = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.media: CallMedia | None = None
        self._reinvite_ack: asyncio.Future[str | None] | None = None
        self._call_tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        #: why the call ends when WE asked the server to end it (e.g. RingCentral's decline):
        #: the server's CANCEL then says "caller cancelled", which is not what happened
        self._ended_by_us: str | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def dialog(self) -> Dialog | None:
        """The call's dialog (the core's: one object for the shell and the state machine)."""
        return None if self.core is None else self.core.dialog

    @dialog.setter
    def dialog(self, dialog: Dialog | None) -> None:
        if self.core is None:
            raise CallError(f"call {self.call_id}: a dialog needs the call's INVITE first")
        self.core.dialog = dialog

    @property
    def remote_number(self) -> str:
        """The other party's number (user part of its URI)."""
        return self.remote_address.uri.user or self.remote_address.uri.host

    @property
    def local_number(self) -> str:
        """Our number (user part of our URI)."""
        return self.local_address.uri.user or self.phone.sip_info.username

    @property
    def remote_name(self) -> str | None:
        """The other party's display name, when it sent one."""
        return self.remote_address.display_name

    @property
    def local_name(self) -> str | None:
        """Our display name in this call, when there is one."""
        return self.local_address.display_name

    @property
    def remote_tag(self) -> str | None:
        """The peer's dialog tag once known."""
        return self.dialog.remote_tag if self.dialog else None

    def to_dict(self) -> dict[str, Any]:
        """What a UI needs, as plain JSON (a group snapshot carries it): no SIP, SDP or secret."""
        return {
            "call_id": self.call_id,
            "direction": self.direction,
            "state": self.state,
            "remote_number": self.remote_number,
            "remote_name": self.remote_name,
            "local_number": self.local_number,
            "local_name": self.local_name,
            "held": self.held,
            "muted": self.muted,
            "remote_held": self.remote_held,
            "started_at": self.started_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "session_id": self.session_id,
            "party_id": self.party_id,
        }

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.call_id} {self.direction} {self.state} "
            f"remote={self.remote_number}>"
        )

    # -- state ------------------------------------------------------------------------------

    def _set_state(self, state: CallState, *args: Any) -> None:
        if self.state == state or self.state in ("disposed", "failed"):
            return
        self.state = state
        if state == "answered":
            self.answered_at = time.time()
        self.phone.session_changed(self)
        self.emit(state, *args)

    async def _finish(self, state: Literal["failed", "disposed"], reason: str) -> None:
        """End the session once: close media, leave the phone's list, emit the event."""
        if self.state in ("failed", "disposed"):
            return
        self.end_reason = reason
        self.ended_at = time.time()
        if self._core_timer is not None:
            self._core_timer.cancel()
            self._core_timer = None
        if self.core is not None:
            self.core.end(reason)  # no 2xx retransmission or timer outlives the session
        self._on_end(CallError(f"call ended: {reason}"))
        media, self.media = self.media, None
        if media is not None:
            try:
                await media.close()
            except Exception:
                log.exception("closing media of %s failed", self.call_id)
        self.phone.session_ended(self)
        self._set_state(state, reason)
        self._closed.set()
        for task in list(self._call_tasks):
            if task is not asyncio.current_task():
                task.cancel()

    def _on_end(self, error: Exception) -> None:
        """Hook for subclasses: fail whatever waits on this call."""

    async def wait_closed(self) -> None:
        """Wait until the call is disposed or failed."""
        await self._closed.wait()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)
        return task

    def _require(self, *states: str, action: str) -> None:
        if self.state not in states:
            raise CallError(
                f"{action}() needs the call to be {' or '.join(states)}, but call "
                f"{self.call_id} is {self.state}"
            )

    # -- media ------------------------------------------------------------------------------

    async def _ensure_media(self) -> CallMedia:
        if self.media is None:
            self._attach_media(await self.phone.new_media(self))
        assert self.media is not None
        return self.media

    def _attach_media(self, media: CallMedia) -> None:
        """Make `media` the call's media and listen to it (DTMF, the far end moving)."""
        self.media = media
        media.on("dtmf", lambda digit: self.emit("dtmf", digit) if self.media is media else None)
        media.on("renegotiation_needed", lambda: self._renegotiation_needed(media))

    def _renegotiation_needed(self, media: CallMedia) -> None:
        """Hook: `media` saw the far end answer from a new endpoint (it needs a new offer)."""

    # -- public: common actions -------------------------------------------------------------

    async def hangup(self) -> None:
        """End the call: BYE when answered, CANCEL or decline while ringing."""
        if self.state == "answered":
            await self._bye()
        elif self.state in ("init", "ringing"):
            await self._end_unanswered()
        else:
            raise CallError(f"hangup(): call {self.call_id} already {self.state}")

    async def dispose(self) -> None:
        """End the call whatever its state (used by `WebPhone.dispose()`)."""
        if self.state in ("failed", "disposed"):
            return
        try:
            await self.hangup()
        except (CallError, TransportError, SipTimeoutError) as exc:
            log.info("ending %s: %s", self.call_id, exc)
        await self._finish("disposed", "disposed")

    async def _end_unanswered(self) -> None:
        raise NotImplementedError

    async def mute(self) -> None:
        """Stop sending audio (the far end hears silence); no SIP traffic."""
        self.muted = True
        if self.media is not None:
            self.media.mute()
        self.phone.session_changed(self)

    async def unmute(self) -> None:
        """Resume sending audio."""
        self.muted = False
        if self.media is not None:
            self.media.unmute()
        self.phone.session_changed(self)

    async def send_dtmf(self, digits: str, duration: float = 0.1, gap: float = 0.07) -> None:
        """Send DTMF as RFC 4733 telephone-events in the audio stream."""
        self._require("answered", action="send_dtmf")
        bad = [d for d in digits if d.upper() not in "0123456789*#ABCD"]
        if bad:
            raise CallError(f"send_dtmf(): {bad[0]!r} is not a DTMF digit (0-9, *, #, A-D)")
        media = await self._ensure_media()
        await media.send_dtmf(digits, duration=duration, gap=gap)

    async def _bye(self) -> None:
        raise NotImplementedError

    _invite: SipRequest | None = None
