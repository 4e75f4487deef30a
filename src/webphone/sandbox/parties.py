"""Built-in parties: small SIP user agents inside the sandbox, with real WebRTC audio.

| number | kind      | behaviour                                                            |
|--------|-----------|----------------------------------------------------------------------|
| 900    | echo      | answers, plays back what it hears                                     |
| 901    | tone      | answers, plays a continuous tone (440 Hz unless configured)           |
| 902    | busy      | `486 Busy Here`                                                       |
| 903    | voicemail | answers, beeps once, records the caller (where "to voicemail" goes)  |

Parties talk to the proxy over a `LocalConnection` (no socket, no authentication) and are
reached like users: `INVITE sip:900@domain`. `Party.call(user)` makes one call a user, with or
without the auto-answer headers. Media is `webphone.media.MediaSession` with ICE restricted to
127.0.0.1. The SIP here is deliberately small: INVITE (with or without an offer), ACK, BYE,
CANCEL, and 200 for anything else in a dialog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from webphone.sip import Headers, SipRequest, SipResponse
from webphone.sip.transaction import new_branch, new_call_id, new_tag

from .config import PartyEntry
from .connection import Connection, LocalConnection
from .dialogs import contact_uri
from .messages import ack_for, cancel_for, response_to
from .rc import Identity

if TYPE_CHECKING:
    from webphone.media import MediaSession

log = logging.getLogger("webphone.sandbox.parties")

PARTY_NUMBERS = {"900": "echo", "901": "tone", "902": "busy", "903": "voicemail"}
PARTY_NAMES = {"echo": "Echo", "tone": "Tone", "busy": "Busy", "voicemail": "Voicemail"}
AUTO_ANSWER_HEADERS = (("Alert-Info", "Auto Answer"),)


class PartyRouter(Protocol):
    """What a party needs of the proxy: a way in for its messages and a listing by number."""

    @property
    def domain(self) -> str: ...
    @property
    def parties(self) -> dict[str, PartyEntry]: ...

    def handle(self, connection: Connection, message: SipRequest | SipResponse) -> None: ...
    def connection_opened(self, connection: Connection) -> None: ...


class PartyCallError(Exception):
    """A party call that could not be made or ended before being answered."""


@dataclass
class VoicemailMessage:
    """What the voicemail party recorded: who called, and how much audio arrived."""

    caller: str
    call_id: str
    frames: int = 0


class PartyCall:
    """One call of a party: its SIP state, its media, and events to await.

    `state`: "calling" -> "ringing" -> "answered" -> "ended" (or "ended" directly).
    `status`: the final SIP status of an outgoing call's INVITE (None while pending).
    `await call` waits until it ends. `await call.hangup()` ends it (CANCEL or BYE).
    """

    def __init__(self, party: Party, call_id: str, direction: str, remote: str) -> None:
        self.party = party
        self.call_id = call_id
        self.direction = direction
        self.remote = remote
        self.state = "calling"
        self.status: int | None = None
        self.reason = ""
        self.media: MediaSession | None = None
        self.local_tag = new_tag()
        self.remote_tag: str | None = None
        self.local_address = ""
        self.remote_address = ""
        self.remote_target = ""
        self.route: list[str] = []
        self.cseq = 0
        self.invite: SipRequest | None = None
        self.ringing = asyncio.Event()
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def frames_received(self) -> int:
        """Audio frames received from the far end so far."""
        return self.media.stats.frames_received if self.media is not None else 0

    async def wait_answered(self, timeout: float | None = None) -> None:
        """Until answered; `PartyCallError` if the call ends first."""
        waiter = asyncio.ensure_future(self.answered.wait())
        ender = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait_for(
                asyncio.wait({waiter, ender}, return_when=asyncio.FIRST_COMPLETED), timeout
            )
        finally:
            waiter.cancel()
            ender.cancel()
        if not self.answered.is_set():
            raise PartyCallError(f"call to {self.remote} ended unanswered: {self.reason}")

    async def wait_ended(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)

    def __await__(self) -> Any:
        return self.ended.wait().__await__()

    async def hangup(self) -> None:
        """CANCEL while ringing, BYE once answered; returns when the call has ended."""
        if self.state == "ended":
            return
        if self.state == "answered":
            self.party.send_in_dialog(self, "BYE")
            await self.party.end(self, "hung up")
        elif self.invite is not None and self.direction == "outbound":
            self.party.send_cancel(self)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ended.wait(), 5.0)
            await self.party.end(self, "cancelled")
        else:
            if self.invite is not None:
                self.party.reject(self)
            await self.party.end(self, "rejected")

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __repr__(self) -> str:
        return f"<PartyCall {self.party.number}->{self.remote} {self.direction} {self.state}>"


class Party:
    """A built-in user agent; `kind` is echo, tone, busy or voicemail."""

    def __init__(
        self, proxy: PartyRouter, number: str, kind: str, *, tone_hz: float = 440.0
    ) -> None:
        self.proxy = proxy
        self.number = number
        self.kind = kind
        self.tone_hz = tone_hz
        self.name = PARTY_NAMES.get(kind, kind.title())
        self.identity = Identity(number, self.name, "")
        self.connection = LocalConnection(number, self._receive)
        self.contact = f"sip:{number}@{kind}.party.invalid;transport=ws"
        self.calls: dict[str, PartyCall] = {}
        self.voicemails: list[VoicemailMessage] = []
        self._pending: dict[tuple[str, str], PartyCall] = {}
        proxy.connection_opened(self.connection)
        proxy.parties[number] = PartyEntry(number, self.identity, self.connection,
                                           self.contact, kind)

    @property
    def address(self) -> str:
        return f'"{self.name}" <sip:{self.number}@{self.proxy.domain}>'

    # -- sending ----------------------------------------------------------------------------

    def _send(self, message: SipRequest | SipResponse) -> None:
        # Through the loop, so the proxy is never re-entered from inside its own handler.
        asyncio.get_running_loop().call_soon(self.proxy.handle, self.connection, message)

    def _via(self) -> str:
        return f"SIP/2.0/WS {self.kind}.party.invalid;branch={new_branch()}"

    def send_in_dialog(self, call: PartyCall, method: str, body: bytes = b"",
                       content_type: str | None = None) -> SipRequest:
        call.cseq += 1
        fields = [("Via", self._via()), ("Max-Forwards", "70")]
        fields += [("Route", route) for route in call.route]
        fields += [
            ("From", f"{call.local_address};tag={call.local_tag}"),
            ("To", call.remote_address),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call.cseq} {method}"),
        ]
        if body and content_type:
            fields.append(("Content-Type", content_type))
        request = SipRequest(method, call.remote_target, Headers(fields), body)
        self._send(request)
        return request

    def send_cancel(self, call: PartyCall) -> None:
        assert call.invite is not None
        self._send(cancel_for(call.invite))

    def reject(self, call: PartyCall) -> None:
        """Refuse an inbound call still ringing (603 Decline)."""
        if call.invite is not None:
            self._reply(call.invite, 603, "Decline", tag=call.local_tag)

    def _reply(self, request: SipRequest, status: int, reason: str, *, tag: str | None = None,
               body: bytes = b"", sdp: bool = False) -> None:
        headers = [("Contact", f"<{self.contact}>")] if request.method == "INVITE" else []
        self._send(response_to(request, status, reason, to_tag=tag, headers=headers, body=body,
                               content_type="application/sdp" if sdp else None))

    # -- receiving --------------------------------------------------------------------------

    def _receive(self, message: SipRequest | SipResponse) -> None:
        if isinstance(message, SipResponse):
            self._on_response(message)
            return
        method = message.method
        call = self.calls.get(message.call_id)
        if method == "INVITE" and message.to_tag is None:
            self._on_invite(message)
        elif method == "ACK":
            if call is not None and message.body and call.media is not None:
                call.spawn(self._apply_answer(call, message.body))
        elif method == "CANCEL":
            self._on_cancel(message, call)
        elif call is None:
            if method != "ACK":
                self._reply(message, 481, "Call/Transaction Does Not Exist", tag=new_tag())
        elif method == "BYE":
            self._reply(message, 200, "OK")
            call.spawn(self.end(call, "remote hung up"))
        elif method == "INVITE":
            call.spawn(self._reinvite(call, message))  # hold/unhold or a renegotiation
        else:
            self._reply(message, 200, "OK")

    def _on_cancel(self, request: SipRequest, call: PartyCall | None) -> None:
        self._reply(request, 200, "OK", tag=call.local_tag if call else new_tag())
        if call is not None and call.state != "answered" and call.invite is not None:
            self._reply(call.invite, 487, "Request Terminated", tag=call.local_tag)
            call.spawn(self.end(call, "cancelled"))

    # -- answering --------------------------------------------------------------------------

    def _on_invite(self, invite: SipRequest) -> None:
        if self.kind == "busy":
            self._reply(invite, 486, "Busy Here", tag=new_tag())
            return
        remote = invite.from_address.uri.user or "?"
        call = PartyCall(self, invite.call_id, "inbound", remote)
        call.invite = invite
        call.remote_tag = invite.from_tag
        call.local_address = invite.headers["To"]
        call.remote_address = invite.headers["From"]
        fallback = str(invite.from_address.uri)
        call.remote_target = contact_uri(invite.headers.get("Contact"), fallback)
        call.route = list(invite.headers.get_all("Record-Route"))
        call.cseq = 0
        self.calls[call.call_id] = call
        self._reply(invite, 180, "Ringing", tag=call.local_tag)
        call.state = "ringing"
        call.ringing.set()
        call.spawn(self._answer(call, invite))

    async def _answer(self, call: PartyCall, invite: SipRequest) -> None:
        try:
            media = call.media = self._new_media()
            if invite.body:
                sdp = await media.create_answer(invite.body.decode("utf-8", "replace"))
            else:
                sdp = await media.create_offer()
        except Exception as exc:
            log.exception("party %s could not answer", self.number)
            if call.state != "ended":
                self._reply(invite, 488, "Not Acceptable Here", tag=call.local_tag)
                await self.end(call, f"media failed: {exc}")
            return
        if call.state == "ended":
            return
        self._reply(invite, 200, "OK", tag=call.local_tag, body=sdp.encode(), sdp=True)
        call.state = "answered"
        call.answered.set()
        call.spawn(self._play(call))

    async def _reinvite(self, call: PartyCall, invite: SipRequest) -> None:
        """Answer a re-INVITE like a phone: renegotiate the media (hold, unhold, refresh)."""
        media = call.media
        if media is None or media.closed:
            self._reply(invite, 488, "Not Acceptable Here", tag=call.local_tag)
            return
        try:
            if invite.body:
                sdp = await media.create_answer(invite.body.decode("utf-8", "replace"))
            else:
                sdp = await media.create_offer()  # the answer comes in the ACK
        except Exception as exc:
            log.warning("party %s refused a re-INVITE: %s", self.number, exc)
            self._reply(invite, 488, "Not Acceptable Here", tag=call.local_tag)
            return
        self._reply(invite, 200, "OK", tag=call.local_tag, body=sdp.encode(), sdp=True)

    async def _apply_answer(self, call: PartyCall, body: bytes) -> None:
        if call.media is not None:
            with contextlib.suppress(Exception):
                await call.media.apply_answer(body.decode("utf-8", "replace"))

    async def _play(self, call: PartyCall) -> None:
        media = call.media
        if media is None:
            return
        if self.kind == "tone":
            while call.state == "answered" and not media.closed:
                if not await media.play_tone(self.tone_hz, 3600.0):
                    break
        elif self.kind == "echo":
            # At the send rate (no resampling either way) and live: each frame goes back as
            # soon as it is decoded, never behind a growing backlog.
            await media.play_pcm(_pcm(media.received_audio(max_frames=25)),
                                 media.receive_sample_rate, live=True)
        elif self.kind == "voicemail":
            message = VoicemailMessage(call.remote, call.call_id)
            self.voicemails.append(message)
            media.on("audio", lambda _frame: _count(message))
            await media.play_tone(1000.0, 0.3)

    def _new_media(self) -> MediaSession:
        from webphone.media import MediaSession

        rate = 48000 if self.kind == "echo" else 16000  # the echo sends back what it decodes
        return MediaSession(loopback_only=True, receive_sample_rate=rate)

    # -- calling out ------------------------------------------------------------------------

    async def call(
        self,
        user: str,
        *,
        auto_answer: bool = False,
        headers: Iterable[tuple[str, str]] = (),
    ) -> PartyCall:
        """INVITE `user` (an extension or number); returns once the INVITE is sent."""
        call = PartyCall(self, new_call_id(), "outbound", user)
        call.local_address = self.address
        call.remote_address = f"<sip:{user}@{self.proxy.domain}>"
        call.remote_target = f"sip:{user}@{self.proxy.domain}"
        media = call.media = self._new_media()
        offer = await media.create_offer()
        call.cseq = 1
        fields = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", f"{call.local_address};tag={call.local_tag}"),
            ("To", call.remote_address),
            ("Call-ID", call.call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{self.contact}>"),
        ]
        if auto_answer:
            fields += [*AUTO_ANSWER_HEADERS,
                       ("Call-Info", f"<sip:{self.proxy.domain}>;purpose=info;Answer-After=0")]
        fields += list(headers)
        fields.append(("Content-Type", "application/sdp"))
        invite = SipRequest("INVITE", call.remote_target, Headers(fields), offer.encode())
        call.invite = invite
        self.calls[call.call_id] = call
        self._pending[(invite.branch or "", "INVITE")] = call
        self._send(invite)
        return call

    def _on_response(self, response: SipResponse) -> None:
        call = self._pending.get((response.branch or "", response.cseq.method))
        if call is None:
            return
        status = response.status_code
        if status < 200:
            if status > 100 and call.state == "calling":
                call.state = "ringing"
                call.ringing.set()
            return
        del self._pending[(response.branch or "", response.cseq.method)]
        call.status = status
        assert call.invite is not None
        if status >= 300:
            self._send(ack_for(call.invite, response))  # RFC 3261 §17.1.1.3
            call.spawn(self.end(call, f"{status} {response.reason}"))
            return
        call.remote_tag = response.to_tag
        call.remote_address = response.headers["To"]
        call.remote_target = contact_uri(response.headers.get("Contact"), call.remote_target)
        call.route = list(reversed(response.headers.get_all("Record-Route")))
        self._ack(call, response, self._via())
        call.spawn(self._answered(call, response))

    def _ack(self, call: PartyCall, response: SipResponse, via: str) -> None:
        """The ACK of a 2xx (RFC 3261 §13.2.2.4): a new transaction along the route set."""
        assert call.invite is not None
        fields = [("Via", via), ("Max-Forwards", "70")]
        fields += [("Route", route) for route in call.route]
        fields += [
            ("From", call.invite.headers["From"]),
            ("To", response.headers["To"]),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call.invite.cseq.number} ACK"),
        ]
        self._send(SipRequest("ACK", call.remote_target, Headers(fields)))

    async def _answered(self, call: PartyCall, response: SipResponse) -> None:
        if call.media is not None and response.body:
            await call.media.apply_answer(response.body.decode("utf-8", "replace"))
        call.state = "answered"
        call.ringing.set()  # an answer without a 180 still passed "ringing"
        call.answered.set()
        await self._play(call)

    async def end(self, call: PartyCall, reason: str) -> None:
        if call.state == "ended":
            return
        call.state, call.reason = "ended", reason
        self.calls.pop(call.call_id, None)
        for key in [k for k, c in self._pending.items() if c is call]:
            del self._pending[key]
        call.ended.set()
        if call.media is not None:
            with contextlib.suppress(Exception):
                await call.media.close()

    async def close(self) -> None:
        for call in list(self.calls.values()):
            if call.state == "answered":
                self.send_in_dialog(call, "BYE")
            await self.end(call, "sandbox closing")
        self.connection.close()
        self.proxy.parties.pop(self.number, None)


def _count(message: VoicemailMessage) -> None:
    message.frames += 1


async def _pcm(stream: Any) -> AsyncIterator[bytes]:
    async for frame in stream:
        yield frame.pcm
