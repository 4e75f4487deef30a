"""WebPhone: one registered SIP-over-WebSocket phone with its calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._events import EventEmitter
from .call import (
    BaseCallSession,
    CallMedia,
    CallSession,
    CallTimers,
    InboundCallSession,
    OutboundCallSession,
)
from .errors import CallError, SipParseError, TransportError
from .sip import SipRequest, SipResponse
from .sip import rc as rcmsg
from .sip.build import default_reply
from .sip.dialog import CSEQ_ADOPTION_GAP
from .sip.validate import check_callee, check_headers
from .sip_client import DummySipClient, SipClient
from .sip_info import SipInfo

if TYPE_CHECKING:
    from .media import MediaSession

MediaFactory = Callable[["BaseCallSession"], "MediaSession"]

log = logging.getLogger("webphone.phone")


class WebPhone(EventEmitter):
    """A SIP phone registered over WebSocket.

    `instance_id` is the RFC 5626 `+sip.instance` the phone registers with. It defaults to the
    sipInfo's `authorization_id`, like RingCentral's SDK: every phone started with the same id
    holds *one* binding on the server (the newest registration replaces the older one, which
    then stops receiving inbound calls), while phones with distinct ids each hold a binding, up
    to the extension's limit (5 on RingCentral; the 6th gets `TooManyContactsError`). To run
    several processes of one extension, use `SharedWebPhone`, which shares one registration.

    Calls confirm themselves (keyword-only, seconds, None to disable): `media_timeout` (30)
    ends an answered call when no audio has been received for that long while some is expected
    (not while one side holds the other); `redial_timeout` (32) bounds how long an answered call
    may stay unconfirmed after the connection to the SIP server was lost (on reconnect, each
    answered call sends a re-INVITE refreshing its target with the same SDP);
    `session_expires` (1800) is the RFC 4028 session interval asked for (the peer may pick
    another; values below 90 s break RFC 4028 §4 and are for tests).

    `debug=True` logs every SIP message sent and received on the `webphone.sip.trace` logger
    (printed to stderr when the application configured no logging).

    Events: ``inbound_call(session)``, ``outbound_call(session)``, ``registered(expires)``,
    ``disconnected(reason)``, ``reconnected()``, ``inbound_message(msg)``,
    ``outbound_message(msg)``, ``overloaded(session, reason)`` (a call's audio suffers: the
    event loop lags or frames are dropped; see `webphone.media.load`).
    """

    def __init__(
        self,
        sip_info: SipInfo,
        instance_id: str | None = None,
        debug: bool = False,
        sip_client: SipClient | DummySipClient | None = None,
        auto_answer: bool = True,
        *,
        media_factory: MediaFactory | None = None,
        loopback_media: bool = False,
        media_timeout: float | None = 30.0,
        redial_timeout: float | None = 32.0,
        session_expires: int | None = 1800,
        **client_options: Any,
    ) -> None:
        super().__init__()
        self.timers = _call_timers(media_timeout, redial_timeout, session_expires)
        self.media_factory = media_factory
        self.loopback_media = loopback_media
        self._session_closes: dict[str, list[asyncio.Future[rcmsg.SessionClose]]] = {}
        self.sip_info = sip_info
        self.instance_id = instance_id or sip_info.authorization_id
        self.debug = debug
        self.auto_answer = auto_answer
        self.sip_client: SipClient | DummySipClient = sip_client or SipClient(
            sip_info, instance_id=self.instance_id, debug=debug, **client_options
        )
        self.call_sessions: list[CallSession] = []
        self._link = _PhoneLink(self)
        self.disposed = False
        self.sip_client.request_handler = self._handle_request
        for event in (
            "registered",
            "unregistered",
            "disconnected",
            "reconnected",
            "registration_failed",
            "binding_conflict",
            "inbound_message",
            "outbound_message",
        ):
            self.sip_client.on(event, self._relay(event))
        self.sip_client.on("stray_response", self._on_stray_response)
        self.sip_client.on("disconnected", self._on_disconnected)
        self.sip_client.on("reconnected", self._on_reconnected)

    def _on_disconnected(self, reason: str) -> None:
        for session in list(self.call_sessions):
            session._connection_lost()

    def _on_reconnected(self) -> None:
        for session in list(self.call_sessions):
            session._connection_back()

    def _relay(self, event: str) -> Any:
        def relay(*args: Any) -> None:
            self.emit(event, *args)

        return relay

    async def start(self) -> None:
        """Connect and register; raises a `RegistrationError` subclass when refused."""
        await self.sip_client.start()

    async def dispose(self) -> None:
        """End every call (BYE, CANCEL or decline as fits its state), unregister, close."""
        if self.disposed:
            return
        self.disposed = True
        # A copy: sessions remove themselves as they end. Concurrently: a server that never
        # answers a BYE costs one request timeout in all, not one per call.
        sessions = list(self.call_sessions)
        results = await asyncio.gather(*(s.dispose() for s in sessions), return_exceptions=True)
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, Exception):
                log.warning("ending call %s failed: %s", session.call_id, result)
        await self.sip_client.dispose()

    async def __aenter__(self) -> WebPhone:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    # -- calls ------------------------------------------------------------------------------

    async def call(
        self,
        callee: str,
        caller_id: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> OutboundCallSession:
        """Call `callee` (a number, or a sip: URI); return once it rings or answers.

        Raises `CallError` when the call fails before ringing (busy, not found, ...); later
        failures end the session with a ``failed`` event. `caller_id` asks the server to show
        another of your numbers (P-Asserted-Identity); `headers` are added to the INVITE.
        """
        if self.disposed:
            raise CallError("call(): this phone was disposed")
        if isinstance(self.sip_client, DummySipClient):
            raise self.sip_client._refuse("call()")
        extra = check_headers(headers)  # CallError naming the header / the callee
        session = OutboundCallSession(self._link, check_callee(callee))
        self.call_sessions.append(session)
        self.emit("outbound_call", session)
        try:
            await session._start(caller_id, extra)
        except BaseException:
            if session.state not in ("failed", "disposed"):  # failed before the INVITE left
                await asyncio.shield(session._finish("failed", "could not place the call"))
            raise
        return session

    def adopt_call(self, record: Mapping[str, Any], media: CallMedia | None = None, *,
                   gap: int = CSEQ_ADOPTION_GAP) -> CallSession:
        """Continue here an answered call that another process held: `record` is its
        `CallSession.continuity_record()`. Returns the answered session (in `call_sessions`),
        whose next in-dialog requests carry this phone's Contact and a CSeq `gap` above the
        old holder's. `media` becomes `session.media`; then send `session.refresh()` (the
        media did not change: the far party learns our Contact) or `session.renew_media(new)`
        (the old media is gone). `SipParseError` names a wrong field of the record;
        `CallError` if this phone already has the call or was disposed."""
        from .call.adopt import adopted_session

        if self.disposed:
            raise CallError("adopt_call(): this phone was disposed")
        call_id = _record_call_id(record)
        if call_id is not None and self.find_session(call_id) is not None:
            raise CallError(f"adopt_call(): call {call_id} is already one of this phone's")
        session = adopted_session(self._link, dict(record), gap=gap)
        if media is not None:
            session.attach_media(media)
        self.call_sessions.append(session)
        self.emit("call_changed", session)
        return session

    def find_session(self, call_id: str) -> CallSession | None:
        """The live session with this Call-ID, if any."""
        for session in self.call_sessions:
            if session.call_id == call_id:
                return session
        return None

    def resume_media(self, record: Mapping[str, Any]) -> MediaSession:
        """A `MediaSession` continuing the media of `record` (`MediaSession.continuity()` in
        another process, e.g. a media holder that died), with this phone's media options;
        give it to `session.renew_media`. `MediaError` names a bad field of the record."""
        from .media import MediaSession

        return MediaSession.resume(record, stun_servers=self.sip_info.stun_servers,
                                   loopback_only=self.loopback_media)

    async def _new_media(self, session: BaseCallSession) -> MediaSession:
        if self.media_factory is not None:
            media = self.media_factory(session)
        else:
            from .media import MediaSession  # aiortc is heavy: load it on the first call only

            media = MediaSession(
                stun_servers=self.sip_info.stun_servers, loopback_only=self.loopback_media
            )
        # the process cannot keep up with its calls' audio (webphone.media.load): say it here
        media.on("overloaded", lambda reason: self.emit("overloaded", session, reason))
        return media

    async def _handle_request(self, request: SipRequest) -> None:
        """Every inbound request that no client transaction owns comes here."""
        try:
            call_id = request.call_id
        except SipParseError:
            return
        if request.method == "MESSAGE" and _is_rc(request):
            await self._on_rc_message(request)
            return
        session = self.find_session(call_id)
        if session is not None and request.method == "INVITE" and not request.to_tag:
            return  # a retransmitted initial INVITE: the session already answers it
        if session is not None:
            await session._handle_request(request)
        elif request.method == "INVITE" and not request.to_tag:
            await self._on_new_invite(request)
        else:
            await self._default_reply(request)

    def _on_stray_response(self, message: Any) -> None:
        if isinstance(message, SipResponse):
            try:
                session = self.find_session(message.call_id)
            except SipParseError:
                return
            if session is not None:
                session._handle_response(message)

    async def _on_new_invite(self, invite: SipRequest) -> None:
        try:
            replaced = self._replaced_session(invite)
            session = InboundCallSession(self._link, invite)
        except (SipParseError, KeyError) as exc:
            log.warning("refusing a malformed INVITE: %s", exc)
            await self._reply(invite, 400, "Bad Request")
            return
        self.call_sessions.append(session)
        await session._start()
        if session.state in ("failed", "disposed"):
            return  # refused at once (RFC 4028 422): never shown as a call
        self.emit("inbound_call", session)
        if replaced is not None:
            # RFC 3891: the new call takes the place of `replaced`, answered at once.
            await session.answer()
            await replaced.hangup()
            return
        delay = session.auto_answer_delay
        if self.auto_answer and delay is not None:
            session._spawn(self._auto_answer(session, delay))

    async def _auto_answer(self, session: InboundCallSession, delay: float) -> None:
        await asyncio.sleep(delay)  # the server asked for this delay (Answer-After)
        if session.state == "ringing":
            try:
                await session.answer()
            except Exception as exc:
                log.warning("auto-answer of %s failed: %s", session.call_id, exc)

    def _replaced_session(self, invite: SipRequest) -> CallSession | None:
        value = invite.headers.get("Replaces")
        if not value:
            return None
        call_id, *params = [p.strip() for p in value.split(";")]
        tags = dict(p.partition("=")[::2] for p in params)
        for session in self.call_sessions:
            dialog = session.dialog
            if (
                session.call_id == call_id
                and dialog is not None
                and dialog.local_tag == tags.get("to-tag")
                and dialog.remote_tag == tags.get("from-tag")
            ):
                return session
        return None

    async def _on_rc_message(self, request: SipRequest) -> None:
        await self._reply(request, 200, "OK")
        try:
            message = rcmsg.parse_rc_message(request.body)
        except SipParseError as exc:
            log.warning("unreadable x-rc/agent MESSAGE: %s", exc)
            return
        if not rcmsg.is_for_client(message, self.sip_info.authorization_id):
            return  # for another instance of this extension
        close = rcmsg.parse_session_close(message)
        if close is not None:
            for waiter in self._session_closes.get(close.sid or "", []):
                if not waiter.done():
                    waiter.set_result(close)
        self.emit("rc_message", message)

    def _expect_session_close(self, sid: str | None) -> asyncio.Future[rcmsg.SessionClose]:
        waiter: asyncio.Future[rcmsg.SessionClose] = asyncio.get_running_loop().create_future()
        self._session_closes.setdefault(sid or "", []).append(waiter)
        return waiter

    def _forget_session_close(self, sid: str | None, waiter: asyncio.Future[Any]) -> None:
        waiters = self._session_closes.get(sid or "", [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._session_closes.pop(sid or "", None)

    async def _reply(self, request: SipRequest, code: int, reason: str) -> None:
        if isinstance(self.sip_client, SipClient):
            try:
                await self.sip_client.reply(request, code, reason)
            except (TransportError, SipParseError, KeyError) as exc:  # unanswerable request
                log.debug("could not answer %s: %s", request.method, exc)

    async def _default_reply(self, request: SipRequest) -> None:
        answer = default_reply(request)  # the one table, RFC 3261 §12.2.2 / §8.2
        if answer is not None:
            await self._reply(request, *answer)


def _call_timers(media_timeout: float | None, redial_timeout: float | None,
                 session_expires: int | None) -> CallTimers:
    for name, value in (("media_timeout", media_timeout), ("redial_timeout", redial_timeout)):
        if value is not None and not value > 0:
            raise ValueError(f"WebPhone(): {name} must be a positive number of seconds or "
                             f"None (never), got {value!r}")
    if session_expires is not None and session_expires < 1:
        raise ValueError("WebPhone(): session_expires must be a positive number of seconds "
                         f"or None (no RFC 4028 session timer), got {session_expires!r}")
    return CallTimers(media_timeout=media_timeout, redial_timeout=redial_timeout,
                      session_expires=session_expires)


def _record_call_id(record: Mapping[str, Any]) -> str | None:
    """The Call-ID a call record names, if it is where it should be (the record is checked
    field by field when the session is built)."""
    core = record.get("core")
    dialog = core.get("dialog") if isinstance(core, Mapping) else None
    call_id = dialog.get("call_id") if isinstance(dialog, Mapping) else None
    return call_id if isinstance(call_id, str) else None


def _is_rc(request: SipRequest) -> bool:
    content_type = (request.headers.get("Content-Type") or "").lower()
    return content_type.startswith(rcmsg.RC_MESSAGE_CONTENT_TYPE)


class _PhoneLink:
    """What a call session may use of its phone (`webphone.call.PhoneLink`): the session never
    holds the `WebPhone` itself, so it can reach none of its private methods."""

    def __init__(self, phone: WebPhone) -> None:
        self._phone = phone

    @property
    def sip_info(self) -> SipInfo:
        """The phone's account."""
        return self._phone.sip_info

    @property
    def sip_client(self) -> SipClient | DummySipClient:
        """The phone's SIP client."""
        return self._phone.sip_client

    @property
    def timers(self) -> CallTimers:
        """The phone's call timers (media, redial, session)."""
        return self._phone.timers

    def session_changed(self, session: BaseCallSession) -> None:
        """Tell the phone's listeners (``call_changed``)."""
        self._phone.emit("call_changed", session)

    def session_ended(self, session: BaseCallSession) -> None:
        """Drop the session from `WebPhone.call_sessions`."""
        if session in self._phone.call_sessions:
            self._phone.call_sessions.remove(session)

    async def new_media(self, session: BaseCallSession) -> MediaSession:
        """A media session from the phone's factory (aiortc by default)."""
        return await self._phone._new_media(session)

    async def call(
        self,
        callee: str,
        caller_id: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> BaseCallSession:
        """`WebPhone.call()`."""
        return await self._phone.call(callee, caller_id=caller_id, headers=headers)

    def expect_session_close(self, sid: str | None) -> asyncio.Future[rcmsg.SessionClose]:
        """A future for RingCentral's SessionClose of `sid`."""
        return self._phone._expect_session_close(sid)

    def forget_session_close(self, sid: str | None, waiter: asyncio.Future[Any]) -> None:
        """Stop waiting for that SessionClose."""
        self._phone._forget_session_close(sid, waiter)
