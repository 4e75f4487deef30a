"""The SIP user agent core: one WebSocket, registration, client transactions.

`SipClient` is the real one: it connects, REGISTERs (RFC 5626 instance id), refreshes before the
binding expires, answers digest challenges, matches responses to requests by Via branch + CSeq
method, fails every pending request cleanly on timeout or disconnect, and reconnects with backoff.
`DummySipClient` opens nothing and sends nothing: it is what a dummy member of a group uses.

Transactions are the pure core's (`webphone.sip.transaction.ClientTransaction`): this module
keeps their deadlines on the loop's clock and carries out their outputs. It stays one module
over ~500 lines because the connection, the registration and the transactions share one
socket's lifetime (a lost socket fails every pending transaction and restarts registration);
everything without I/O already lives in `webphone.sip`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ._backoff import backoff
from ._events import EventEmitter
from ._refresh import longer_expiry, refresh_delay
from .errors import (
    AuthenticationError,
    NotRealPhoneError,
    RegistrationError,
    SipParseError,
    SipTimeoutError,
    TooManyContactsError,
    TransportError,
    WebPhoneError,
)
from .sip import Address, CSeq, Headers, SipRequest, SipResponse, SipUri, parse_message
from .sip.bindings import check_binding, granted_expires
from .sip.build import default_reply, response_to
from .sip.digest import NonceReuse, authorization, pick_challenge, refuses_reuse, rejection
from .sip.transaction import (
    ClientTransaction,
    Output,
    ResponseReceived,
    Send,
    TransactionKey,
    new_branch,
    new_call_id,
    new_tag,
    transaction_key,
)
from .sip.ua import Local
from .sip_info import SipInfo
from .transport import WebSocketTransport

log = logging.getLogger("webphone.sip")
trace = logging.getLogger("webphone.sip.trace")

USER_AGENT = "webphone-python/0.1"
RequestHandler = Callable[[SipRequest], Awaitable[None] | None]
ProvisionalHandler = Callable[[SipResponse], object]


@dataclass
class _Pending:
    """A client transaction of the pure core and what its asyncio caller waits on."""

    txn: ClientTransaction
    future: asyncio.Future[SipResponse]
    on_provisional: ProvisionalHandler | None = None
    #: the wait for the first response (s), for the timeout's message
    first_wait: float = 0.0
    #: the loop timer that fires the transaction's next deadline (Timer B/F, final wait)
    timer: asyncio.TimerHandle | None = field(default=None)


class SipClient(EventEmitter):
    """A registered SIP-over-WebSocket user agent.

    Events: ``inbound_message(msg)`` and ``outbound_message(msg)`` for every SIP message;
    ``registered(expires)``, ``unregistered()``, ``disconnected(reason)``, ``reconnected()``,
    ``registration_failed(error)``. Requests that no transaction owns go to `request_handler`.

    `register_expires` is what we ask for (60 s, like RingCentral's SDK); the binding is
    refreshed at a random time in [0.6, 1] x (granted expiry - 6 s), spread so that many phones
    do not refresh at once (`_refresh.refresh_delay`), which leaves room for one no-reply detection
    (`request_timeout`, 5 s) inside the binding's lifetime.

    After a lost connection (of a client that was registered) it reconnects and registers
    again: the first try at once, then `reconnect_delay[0]` seconds (1 s), doubling up to
    `reconnect_delay[1]` (30 s), jittered (`webphone._backoff`), each counted from the start of
    the previous try.
    """

    def __init__(
        self,
        sip_info: SipInfo,
        *,
        instance_id: str | None = None,
        debug: bool = False,
        register_expires: int = 60,
        request_timeout: float = 5.0,
        use_backup_proxy: bool = False,
        reconnect: bool = True,
        reconnect_delay: tuple[float, float] = (1.0, 30.0),
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        super().__init__()
        self.sip_info = sip_info
        self.instance_id = instance_id or sip_info.authorization_id
        self.debug = debug
        self.register_expires = register_expires
        self.request_timeout = request_timeout
        self.use_backup_proxy = use_backup_proxy
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.user_agent = user_agent
        self.request_handler: RequestHandler | None = None
        self._ssl = ssl_context
        self._transport: WebSocketTransport | None = None
        self._pending: dict[TransactionKey, _Pending] = {}
        self._local_host = f"{secrets.token_hex(6)}.invalid"
        self._contact_user = secrets.token_hex(4)
        self._reg_call_id = new_call_id()
        self._reg_from_tag = new_tag()
        self._cseq = random.randint(1, 10000)
        self._refresh: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._registered = False
        self._ever_registered = False
        self._fenced = False
        self._check_binding = False  # set by the refresh timer: fetch the bindings first
        self._min_expires = 0  # a registrar's Min-Expires (423), kept for every refresh
        # the registrar's last qop=auth challenge: a refresh (its binding fetch and the REGISTER)
        # then takes one round trip each instead of two (REGISTER, 401, REGISTER, 200)
        self._register_nonce = NonceReuse()
        self._disposed = False
        if debug:
            _enable_trace_output()

    # -- identity ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The WebSocket URL in use (outbound proxy, or the backup one)."""
        return self.sip_info.websocket_url(backup=self.use_backup_proxy)

    @property
    def via_transport(self) -> str:
        """`WSS` or `WS`, as written in Via and Contact."""
        return "WSS" if self.url.startswith("wss://") else "WS"

    @property
    def aor(self) -> Address:
        """Our address of record: sip:username@domain."""
        return Address(SipUri("sip", user=self.sip_info.username, host=self.sip_info.domain))

    @property
    def contact(self) -> str:
        """Our Contact header value, with the RFC 5626 instance id and reg-id."""
        return (
            f"<sip:{self._contact_user}@{self._local_host};transport={self.via_transport.lower()}>"
            f';+sip.instance="<urn:uuid:{self.instance_id}>";reg-id=1'
        )

    @property
    def local(self) -> Local:
        """How this client writes itself into messages (Via sent-by, Contact, User-Agent), for
        the pure call core (`webphone.sip.ua.CallCore`)."""
        return Local(
            via=f"SIP/2.0/{self.via_transport} {self._local_host}",
            contact=self.contact,
            user_agent=self.user_agent,
        )

    @property
    def registered(self) -> bool:
        """True while the server holds our binding (as far as we know)."""
        return self._registered

    @property
    def connected(self) -> bool:
        """True while the WebSocket is open."""
        return self._transport is not None and self._transport.is_open

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and REGISTER. Calling it again opens a new socket and closes the old one."""
        if self._disposed:
            raise RegistrationError("this SipClient was disposed; create a new one")
        self._cancel_reconnect()
        await self._close_transport()
        await self._connect()
        await self.register()

    async def dispose(self, *, unregister: bool = True) -> None:
        """Unregister (expires 0) unless fenced or `unregister` is False, then close."""
        if self._disposed:
            return
        self._disposed = True
        self._cancel_refresh()
        self._cancel_reconnect()
        if unregister and self._registered and not self._fenced and self.connected:
            try:
                await self.register(expires=0)
            except Exception as exc:
                log.warning("unregister failed, closing anyway: %s", exc)
        self._registered = False
        await self._close_transport()
        self._fail_pending(TransportError("SipClient disposed"))
        for task in list(self._tasks):
            task.cancel()

    def fence(self) -> None:
        """Never REGISTER again (refresh nor unregister): another process owns the binding now.

        Used by a group member that learns it was deposed; its successor registered with the
        same instance id, and an unregister from here would delete the successor's binding.
        """
        self._fenced = True
        self._registered = False
        self._cancel_refresh()

    # -- registration -----------------------------------------------------------------------

    async def register(self, expires: int | None = None) -> int:
        """Send REGISTER (refresh with `expires`=None, remove with 0); return the granted expiry."""
        if self._fenced:
            raise RegistrationError("this client is fenced: another group member owns the binding")
        requested = max(self.register_expires, self._min_expires) if expires is None else expires
        if expires is None and self._check_binding:  # a timer refresh: is it still ours?
            self._check_binding = False
            with contextlib.suppress(WebPhoneError):  # advice only; the refresh goes on
                if others := await check_binding(self, call_id=self._reg_call_id,
                                                 from_tag=self._reg_from_tag,
                                                 timeout=self.request_timeout):
                    self.emit("binding_conflict", others)
        self._cancel_refresh()
        response = await self._send_register(requested)
        longer = longer_expiry(response.status_code, response.headers.get("Min-Expires"),
                               requested)
        if longer is not None:
            # RFC 3261 §10.2.8: once more with the registrar's minimum, which refreshes keep
            log.info("the registrar wants bindings of at least %d s (%d %s), not %d s: "
                     "registering for %d s", longer, response.status_code, response.reason,
                     requested, longer)
            self._min_expires = requested = longer
            response = await self._send_register(requested)
        if response.status_code == 603:
            raise TooManyContactsError(f"{response.status_code} {response.reason}")
        if response.status_code in (401, 403, 407):
            raise AuthenticationError(rejection(
                response, f"REGISTER for {self.sip_info.username}@{self.sip_info.domain}"))
        if not 200 <= response.status_code < 300:
            raise RegistrationError(f"REGISTER failed: {response.status_code} {response.reason}")
        if requested == 0:
            self._registered = False
            self.emit("unregistered")
            return 0
        granted = granted_expires(response, (f"urn:uuid:{self.instance_id}", self._local_host),
                                  requested)
        if granted == 0:  # a 200 whose binding of ours lasts 0 s: nothing is registered
            raise RegistrationError(f"REGISTER got {response.status_code} {response.reason} "
                                    "but the registrar lists our binding with expires 0")
        self._registered = self._ever_registered = True
        self._schedule_refresh(granted)
        self.emit("registered", granted)
        return granted

    async def _send_register(self, requested: int) -> SipResponse:
        """One REGISTER asking for `requested` seconds, answered (digest included); a timeout
        drops the socket, to reconnect with backoff."""
        req = self.new_request(
            "REGISTER",
            f"sip:{self.sip_info.domain}",
            to=self.aor,
            from_tag=self._reg_from_tag,
            call_id=self._reg_call_id,
            headers=[("Expires", str(requested)), ("Supported", "path, outbound, gruu")],
            contact=f"{self.contact};expires={requested}",
        )
        transport = self._transport
        try:
            return await self.request(req, timeout=self.request_timeout)
        except SipTimeoutError:
            self._registered = False  # we can no longer vouch for the binding
            if requested != 0 and not self._disposed:
                # A registrar that stopped answering: drop this socket and reconnect with backoff.
                self._run_soon(self._lost("REGISTER got no answer", transport))
            raise

    def _schedule_refresh(self, granted: int) -> None:
        delay = refresh_delay(granted)  # spread: a random point late in the interval
        loop = asyncio.get_running_loop()
        self._refresh = loop.call_later(delay, lambda: self._run_soon(self._refresh_now()))

    async def _refresh_now(self) -> None:
        self._check_binding = True
        try:
            await self.register()
        except (SipTimeoutError, TransportError):
            pass  # register() or the close handler already started a reconnect
        except RegistrationError as exc:
            if self._fenced or self._disposed:
                return
            log.error("registration refresh failed: %s", exc)
            self._registered = False
            self.emit("registration_failed", exc)
            await self._lost(f"REGISTER refresh failed: {exc}", self._transport)

    def _cancel_refresh(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None

    # -- building messages ------------------------------------------------------------------

    def next_cseq(self) -> int:
        """A fresh CSeq number for a request outside any dialog."""
        self._cseq += 1
        return self._cseq

    def new_request(
        self,
        method: str,
        uri: str,
        *,
        to: Address | str | None = None,
        from_address: Address | str | None = None,
        from_tag: str | None = None,
        call_id: str | None = None,
        cseq: int | None = None,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        contact: str | None = None,
        route: Iterable[str] = (),
    ) -> SipRequest:
        """A request with a fresh Via branch, our From (tag) and Contact where it belongs."""
        to_value = str(to) if to is not None else f"<{uri}>"
        sender = str(from_address) if from_address is not None else str(self.aor)
        fields: list[tuple[str, str]] = [
            ("Via", f"SIP/2.0/{self.via_transport} {self._local_host};branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("To", to_value),
            ("From", f"{sender};tag={from_tag or new_tag()}"),
            ("Call-ID", call_id or new_call_id()),
            ("CSeq", f"{cseq if cseq is not None else self.next_cseq()} {method}"),
        ]
        fields.extend(("Route", r) for r in route)
        if contact is not None or method in ("INVITE", "SUBSCRIBE", "REFER", "NOTIFY", "UPDATE"):
            fields.append(("Contact", contact or self.contact))
        fields.append(("User-Agent", self.user_agent))
        if headers:
            fields.extend(headers.items() if isinstance(headers, Mapping) else headers)
        if body and content_type:
            fields.append(("Content-Type", content_type))
        return SipRequest(method, uri, Headers(fields), body)

    def new_response(
        self,
        request: SipRequest,
        status_code: int,
        reason: str,
        *,
        headers: Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
    ) -> SipResponse:
        """A response to `request` (`webphone.sip.build.response_to`, RFC 3261 §8.2.6): Via,
        From, To (+tag), Call-ID, CSeq copied; our Contact on a dialog-forming 1xx/2xx."""
        return response_to(
            request, status_code, reason, to_tag=to_tag, contact=self.contact,
            headers=[("User-Agent", self.user_agent), *(headers or ())], body=body,
            content_type=content_type,
        )

    # -- sending ----------------------------------------------------------------------------

    async def send(self, message: SipRequest | SipResponse) -> None:
        """Send a message without waiting for anything (ACK, responses)."""
        transport = self._transport
        if transport is None or not transport.is_open:
            raise TransportError("not connected to the SIP server")
        text = str(message)
        if self.debug:
            trace.info("Sending to %s:\n%s", self.url, text)
        await transport.send(text)
        self.emit("outbound_message", message)

    async def reply(
        self,
        request: SipRequest,
        status_code: int,
        reason: str,
        **kwargs: object,
    ) -> SipResponse:
        """Build (see `new_response`) and send a response to `request`; return it."""
        response = self.new_response(request, status_code, reason, **kwargs)  # type: ignore[arg-type]
        await self.send(response)
        return response

    async def request(
        self,
        request: SipRequest,
        *,
        on_provisional: ProvisionalHandler | None = None,
        timeout: float | None = None,
        final_timeout: float | None = 180.0,
        auth: bool = True,
    ) -> SipResponse:
        """Send `request` and return its final response.

        A 401/407 is answered once with digest credentials (an INVITE's 407 is ACKed first).
        Every non-2xx final response to an INVITE is ACKed here. `timeout` (default
        `request_timeout`) bounds the wait for the first response; once a provisional response
        has come, an INVITE waits up to `final_timeout` for the final one.

        A REGISTER carries the registrar's last challenge answered again (`_preauthorize`); if
        the registrar refuses that (`refuses_reuse`: 403, 400, 401 without stale) it is sent
        once more without credentials, so that the registrar's fresh challenge decides, and
        the client reuses no nonce of that registrar again.
        """
        reused = auth and request.method == "REGISTER" and self._preauthorize(request)
        response = await self._transact(request, on_provisional, timeout, final_timeout)
        if reused and self._reuse_refused(response) and response.status_code != 401:
            # a 401 carries its fresh challenge (answered below); a 403/400 carries none
            request = self._next_attempt(request)
            request.headers.remove("Authorization")
            response = await self._transact(request, on_provisional, timeout, final_timeout)
        if auth and response.status_code in (401, 407):
            try:
                request = self.authenticated(request, response)
            except SipParseError as exc:
                log.warning("cannot answer the %s challenge: %s", response.status_code, exc)
                return response
            response = await self._transact(request, on_provisional, timeout, final_timeout)
        return response

    def authenticated(self, request: SipRequest, response: SipResponse) -> SipRequest:
        """`request` again with credentials for the challenge in `response` (401 or 407):
        a new Via branch and the next CSeq number. `SipParseError` if there is no usable
        challenge."""
        challenge_header = (
            "WWW-Authenticate" if response.status_code == 401 else "Proxy-Authenticate"
        )
        values = response.headers.get_all(challenge_header)
        if not values:
            raise SipParseError(f"{response.status_code} without {challenge_header}")
        challenge = pick_challenge(values)
        retry = self._next_attempt(request)
        header = "Proxy-Authorization"
        if challenge_header == "WWW-Authenticate":
            header = "Authorization"
        retry.headers.set(
            header,
            authorization(
                challenge,
                method=request.method,
                uri=request.uri,
                username=self.sip_info.authorization_id,
                password=self.sip_info.password,
                domain=self.sip_info.domain,
            ),
        )
        if request.method == "REGISTER" and header == "Authorization":
            self._register_nonce.remember(challenge)
        return retry

    def _next_attempt(self, request: SipRequest) -> SipRequest:
        """A copy of `request` to send as a new transaction: a new Via branch and the next CSeq
        number (RFC 3261 §8.1.3.5, §10.2)."""
        retry = request.copy()
        via = retry.top_via
        via.params["branch"] = new_branch()
        retry.headers.set("Via", str(via))
        cseq = request.cseq
        number = cseq.number + 1
        self._cseq = max(self._cseq, number)  # keep the client's counter ahead of every use
        retry.headers.set("CSeq", str(CSeq(number, cseq.method)))
        return retry

    def _preauthorize(self, request: SipRequest) -> bool:
        """Add credentials answering the registrar's last challenge again (next nonce count) to
        `request`, a REGISTER not sent yet; False when there is none to reuse. What a refusal
        leads to: `request`."""
        value = self._register_nonce.next(
            method=request.method, uri=request.uri, username=self.sip_info.authorization_id,
            password=self.sip_info.password, domain=self.sip_info.domain)
        if value is not None:
            request.headers.set("Authorization", value)
        return value is not None

    def _reuse_refused(self, response: SipResponse) -> bool:
        """True, and no nonce reuse with this registrar any more, when `response` refused the
        credentials `_preauthorize` reused (see `refuses_reuse`)."""
        stale = False
        if response.status_code == 401:
            with contextlib.suppress(SipParseError):  # unparsable: not stale; answered below
                stale = pick_challenge(response.headers.get_all("WWW-Authenticate")).stale
        if not refuses_reuse(response.status_code, stale=stale):
            return False
        self._register_nonce.refused()
        # never the credentials: the response hash is as good as the password to a cracker
        log.debug("%s refused a reused nonce (%d %s): registering with a fresh challenge; no "
                  "nonce reuse with this registrar from now on", self.url, response.status_code,
                  response.reason)
        return True

    async def _transact(
        self,
        request: SipRequest,
        on_provisional: ProvisionalHandler | None,
        timeout: float | None,
        final_timeout: float | None,
    ) -> SipResponse:
        """Run one client transaction of the core (`ClientTransaction`): its timers on the
        loop's clock, its outputs sent here (the ACK of a non-2xx final, RFC 3261 §17.1.1.3)."""
        loop = asyncio.get_running_loop()
        first_wait = self.request_timeout if timeout is None else timeout
        txn = ClientTransaction(
            request, loop.time(), timeout=first_wait, final_timeout=final_timeout
        )
        pending = _Pending(txn, loop.create_future(), on_provisional, first_wait)
        self._pending[txn.key] = pending
        try:
            await self.send(request)
            self._arm(pending)
            return await pending.future
        finally:
            if pending.timer is not None:
                pending.timer.cancel()
            if self._pending.get(txn.key) is pending:
                del self._pending[txn.key]

    def _arm(self, pending: _Pending) -> None:
        """(Re)schedule the loop timer at the transaction's next deadline."""
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        deadline = pending.txn.next_deadline()
        if deadline is not None and not pending.future.done():
            loop = asyncio.get_running_loop()
            pending.timer = loop.call_at(deadline, self._fire, pending)

    def _fire(self, pending: _Pending) -> None:
        pending.timer = None
        self._apply(pending, pending.txn.handle_timeout(asyncio.get_running_loop().time()))

    def _apply(self, pending: _Pending, outputs: list[Output]) -> None:
        """Carry out a transaction's outputs: send, hand responses over, fail on timeout."""
        txn = pending.txn
        for output in outputs:
            if isinstance(output, Send):
                self._run_soon(self._send_quietly(output.message))
            elif isinstance(output, ResponseReceived) and not output.final:
                if pending.on_provisional is not None:
                    try:
                        pending.on_provisional(output.response)
                    except Exception:
                        log.exception("provisional-response handler raised")
            elif isinstance(output, ResponseReceived):
                if not pending.future.done():
                    pending.future.set_result(output.response)
            elif not pending.future.done():
                request = txn.request
                if txn.answered:
                    wait = txn.final_timeout or 0.0
                    text = f"no final answer to {request.method} within {wait:g} s"
                else:
                    first = pending.first_wait
                    text = f"no answer to {request.method} {request.uri} within {first:g} s"
                pending.future.set_exception(SipTimeoutError(text))
                pending.future.exception()  # mark retrieved: the waiter may already be gone
        self._arm(pending)

    async def _send_quietly(self, message: SipRequest | SipResponse) -> None:
        with contextlib.suppress(TransportError):
            await self.send(message)

    # -- receiving --------------------------------------------------------------------------

    def _on_frame(self, frame: str | bytes) -> None:
        try:
            message = parse_message(frame)
        except SipParseError as exc:
            # One bad message from the server must never take the connection down.
            head = frame[:200]
            preview = head if isinstance(head, str) else head.decode("utf-8", "replace")
            if preview.strip():
                log.warning("dropping unparsable message from server: %s (%r)", exc, preview)
            return
        if self.debug:
            trace.info("Received from %s:\n%s", self.url, message)
        self.emit("inbound_message", message)
        if isinstance(message, SipResponse):
            self._on_response(message)
        else:
            self._run_soon(self._on_request(message))

    def _on_response(self, response: SipResponse) -> None:
        try:
            key = transaction_key(response)
        except SipParseError as exc:
            log.warning("dropping response without usable Via/CSeq: %s", exc)
            return
        pending = self._pending.get(key)
        if pending is None or pending.future.done() or pending.txn.terminated:
            # A retransmitted or forked 2xx to an INVITE already finished: the dialog layer
            # must ACK it again (RFC 3261 §13.2.2.4).
            self.emit("stray_response", response)
            return
        self._apply(pending, pending.txn.receive(response, asyncio.get_running_loop().time()))

    async def _on_request(self, request: SipRequest) -> None:
        handler = self.request_handler
        if handler is None:
            await self.default_reply(request)
            return
        try:
            result = handler(request)
            if result is not None:
                await result
        except Exception:
            log.exception("handler for inbound %s raised", request.method)

    async def default_reply(self, request: SipRequest) -> None:
        """Answer a request nobody owns by the one table (`webphone.sip.build.default_reply`)."""
        answer = default_reply(request)
        if answer is None:
            return
        try:
            await self.reply(request, *answer)
        except (TransportError, SipParseError, ValueError) as exc:
            log.debug("could not answer %s: %s", request.method, exc)

    # -- connection -------------------------------------------------------------------------

    async def _connect(self) -> None:
        self._register_nonce.connected(self.url)  # may reach another server of a pool
        transport = WebSocketTransport(
            self.url,
            on_frame=self._on_frame,
            on_close=lambda reason: self._on_close(transport, reason),
            ssl_context=self._ssl,
        )
        await transport.connect()
        self._transport = transport

    async def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()
        self._fail_pending(TransportError("connection closed"))

    def _on_close(self, transport: WebSocketTransport, reason: str) -> None:
        self._run_soon(self._lost(reason, transport))

    async def _lost(self, reason: str, transport: WebSocketTransport | None) -> None:
        # Only the loss of the *current* socket matters; a late report about an old one is moot.
        if self._disposed or transport is None or transport is not self._transport:
            return
        self._registered = False
        self._cancel_refresh()
        await self._close_transport()
        self.emit("disconnected", reason)
        log.warning("SIP connection lost: %s", reason)
        # Reconnect only a client that has been registered: a failed start() is the caller's.
        if self.reconnect and not self._fenced and self._ever_registered:
            self._start_reconnect()

    def _start_reconnect(self) -> None:
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(self._reconnect_loop())

    def _cancel_reconnect(self) -> None:
        task, self._reconnecting = self._reconnecting, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _reconnect_loop(self) -> None:
        # at once, then reconnect_delay[0], doubling up to reconnect_delay[1] (see _backoff),
        # counted from the start of the previous attempt: an attempt that took its whole open
        # or request timeout against a silent server is followed by the next one promptly
        initial, cap = self.reconnect_delay
        delays = backoff(initial=initial, cap=max(cap, initial))
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self._disposed and not self._fenced:
            await asyncio.sleep(max(0.0, started + next(delays) - loop.time()))  # backoff
            started = loop.time()
            try:
                await self._close_transport()
                await self._connect()
                await self.register()
            except (TransportError, SipTimeoutError, RegistrationError) as exc:
                log.info("reconnect failed (%s); trying again with backoff", exc)
                if isinstance(exc, RegistrationError):
                    self.emit("registration_failed", exc)
                continue
            self._reconnecting = None
            self.emit("reconnected")
            return

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if item.timer is not None:
                item.timer.cancel()
            if not item.future.done():
                item.future.set_exception(error)
                item.future.exception()  # mark retrieved: the waiter may already be gone

    def _run_soon(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class DummySipClient(EventEmitter):
    """A SIP client that opens nothing and sends nothing.

    A phone built on it (a dummy group member) shows state but cannot do SIP work; every attempt
    raises `NotRealPhoneError` at once instead of hanging.
    """

    def __init__(self, sip_info: SipInfo | None = None, *, instance_id: str | None = None) -> None:
        super().__init__()
        self.sip_info = sip_info
        self.instance_id = instance_id
        self.request_handler: RequestHandler | None = None
        self.registered = False
        self.connected = False

    async def start(self) -> None:
        """Do nothing: a dummy never connects."""

    async def dispose(self, *, unregister: bool = True) -> None:
        """Do nothing: a dummy holds no registration."""

    def fence(self) -> None:
        """Do nothing: a dummy never registers."""

    def _refuse(self, what: str) -> NotRealPhoneError:
        return NotRealPhoneError(
            f"{what} needs a SIP connection, but this phone uses DummySipClient; in a "
            "SharedWebPhone group, call the method on the shared phone: it forwards to the real one"
        )

    async def register(self, expires: int | None = None) -> int:
        """Refuse: a dummy never registers."""
        raise self._refuse("REGISTER")

    async def request(self, request: SipRequest, **kwargs: object) -> SipResponse:
        """Refuse at once."""
        raise self._refuse(f"sending {request.method}")

    async def send(self, message: SipRequest | SipResponse) -> None:
        """Refuse at once."""
        raise self._refuse("sending a SIP message")

    def new_request(self, method: str, uri: str, **kwargs: object) -> SipRequest:
        """Refuse at once."""
        raise self._refuse(f"building {method}")


def _enable_trace_output() -> None:
    """debug=True must print even when the application configured no logging."""
    trace.setLevel(logging.INFO)
    if not trace.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        trace.addHandler(handler)
