"""WebPhone: one registered SIP-over-WebSocket phone with its calls."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from ._events import EventEmitter
from .errors import TransportError
from .sip import SipRequest
from .sip_client import DummySipClient, SipClient
from .sip_info import SipInfo

log = logging.getLogger("webphone.phone")


class WebPhone(EventEmitter):
    """A SIP phone registered over WebSocket.

    `instance_id` is the RFC 5626 `+sip.instance` the phone registers with. It defaults to the
    sipInfo's `authorization_id`, like RingCentral's SDK: every phone started with the same id
    holds *one* binding on the server (the newest registration replaces the older one, which
    then stops receiving inbound calls), while phones with distinct ids each hold a binding, up
    to the extension's limit (5 on RingCentral; the 6th gets `TooManyContactsError`). To run
    several processes of one extension, use `SharedWebPhone`, which shares one registration.

    `debug=True` logs every SIP message sent and received on the `webphone.sip.trace` logger
    (printed to stderr when the application configured no logging).

    Events: ``inbound_call(session)``, ``outbound_call(session)``, ``registered(expires)``,
    ``disconnected(reason)``, ``reconnected()``, ``inbound_message(msg)``,
    ``outbound_message(msg)``.
    """

    def __init__(
        self,
        sip_info: SipInfo,
        instance_id: str | None = None,
        debug: bool = False,
        sip_client: SipClient | DummySipClient | None = None,
        auto_answer: bool = True,
        **client_options: Any,
    ) -> None:
        super().__init__()
        self.sip_info = sip_info
        self.instance_id = instance_id or sip_info.authorization_id
        self.debug = debug
        self.auto_answer = auto_answer
        self.sip_client: SipClient | DummySipClient = sip_client or SipClient(
            sip_info, instance_id=self.instance_id, debug=debug, **client_options
        )
        self.call_sessions: list[Any] = []  # CallSession objects (call_session.py)
        self.disposed = False
        self.sip_client.request_handler = self._handle_request
        for event in ("registered", "unregistered", "disconnected", "reconnected",
                      "registration_failed", "inbound_message", "outbound_message"):
            self.sip_client.on(event, self._relay(event))

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
        for session in list(self.call_sessions):  # sessions remove themselves as they end
            try:
                await session.dispose()
            except Exception as exc:
                log.warning("ending call %s failed: %s", session.call_id, exc)
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

    async def _handle_request(self, request: SipRequest) -> None:
        """Every inbound request that no client transaction owns comes here."""
        await self._default_reply(request)

    async def _default_reply(self, request: SipRequest) -> None:
        if request.method == "ACK" or not isinstance(self.sip_client, SipClient):
            return
        code, reason = {
            "OPTIONS": (200, "OK"),
            "MESSAGE": (200, "OK"),
            "INVITE": (486, "Busy Here"),
        }.get(request.method, (481, "Call/Transaction Does Not Exist"))
        try:
            await self.sip_client.reply(request, code, reason)
        except TransportError as exc:
            log.debug("could not answer %s: %s", request.method, exc)
