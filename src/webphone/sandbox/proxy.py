"""The sandbox's SIP brain: registrar, authentication, and a stateful record-routing proxy.

It is a synchronous event handler: `receive(connection, frame)` decides and queues what to
send (`Connection.send` never blocks), timers come from the running loop. No socket is touched
here; `server.py` feeds WebSocket frames in and `parties.py` plugs built-in UAs in.

Routing: out-of-dialog requests go by the Request-URI user (an extension, a phone number, or a
party number) to every live binding; in-dialog requests go by Call-ID and tags to the other
leg's connection, whatever their Request-URI says (RingCentral's SDK sends in-dialog requests
to `sip:{domain}`). Responses go back by our Via branch. See `registration.py` for REGISTER and
digest challenges, `calls.py` for the INVITE forks, `fanout.py` for other requests to users,
and `features.py` for in-dialog relaying and what the server answers itself (INFO, park, flip).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from webphone.errors import SipParseError
from webphone.sip import Headers, SipRequest, SipResponse, parse_message
from webphone.sip.rc import RC_MESSAGE_CONTENT_TYPE, RcCommand, RcMessageError, parse_rc_message
from webphone.sip.transaction import TransactionKey, new_call_id, new_tag, transaction_key

from .auth import DigestAuthenticator
from .calls import Endpoint, ProxyCall, Target
from .config import MessageRecord, PartyEntry, SandboxConfig
from .connection import Connection, FailureHandler, ResponseHandler, TxFailure
from .dialogs import Dialog, Leg
from .fanout import Fanout
from .features import Features
from .messages import ack_for, content_type, new_branch, response_to, salvage_response, uri_user
from .rc import Identity, RcCall, server_message
from .registrar import Registrar
from .registration import authenticate, register
from .users import UserTable

log = logging.getLogger("webphone.sandbox")

SipMessage = SipRequest | SipResponse


@dataclass
class _ClientTx:
    key: TransactionKey
    connection: Connection
    on_response: ResponseHandler | None
    on_failure: FailureHandler | None
    timer: asyncio.TimerHandle | None = None


class Proxy:
    """Registrar + authentication + proxy over a set of connections (see module docstring)."""

    def __init__(
        self,
        config: SandboxConfig,
        users: UserTable,
        *,
        recorder: Callable[[MessageRecord], None] | None = None,
    ) -> None:
        self.config = config
        self.users = users
        self.domain = config.domain
        self.registrar = Registrar(config.max_contacts, config.max_expires, config.min_expires)
        self.auth = DigestAuthenticator(config.domain, nonce_ttl=config.nonce_ttl,
                                        single_use=config.refuse_reused_nonce is not None)
        self.recorder = recorder
        self.via_host = "sandbox.invalid"
        self.transport = "WS"
        self.connections: dict[int, Connection] = {}
        self.parties: dict[str, PartyEntry] = {}
        self.caller_ids: dict[str, Identity] = {}  # Call-ID -> who a trusted local UA calls as
        self._loop = asyncio.get_running_loop()
        self._txns: dict[TransactionKey, _ClientTx] = {}
        self._calls: dict[tuple[str, str], ProxyCall] = {}
        self._calls_by_sid: dict[str, ProxyCall] = {}
        self._dialogs: dict[str, list[Dialog]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self.features = Features(self)

    # -- plumbing ---------------------------------------------------------------------------

    def now(self) -> float:
        return self._loop.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """A timer that `close()` cancels; exceptions in `callback` are logged, not raised."""

        def run() -> None:
            self._timers.discard(handle)
            try:
                callback()
            except Exception:
                log.exception("sandbox timer failed")

        handle = self._loop.call_later(delay, run)
        self._timers.add(handle)
        return handle

    def via(self) -> str:
        """A fresh Via value of ours."""
        return f"SIP/2.0/{self.transport} {self.via_host};branch={new_branch()}"

    @property
    def record_route(self) -> str:
        return f"<sip:{self.via_host};transport={self.transport.lower()};lr>"

    def send(self, connection: Connection, message: SipMessage) -> None:
        """Record and queue `message` on `connection`."""
        if connection.closed:
            return
        self._record("out", connection, message)
        connection.send(message)

    def send_request(
        self,
        connection: Connection,
        request: SipRequest,
        *,
        on_response: ResponseHandler | None = None,
        on_failure: FailureHandler | None = None,
        timeout: float | None = -1.0,
    ) -> None:
        """Send a request of ours; responses (provisional and final) go to `on_response`,
        a timeout or the connection closing to `on_failure`. `timeout=None`: wait forever."""
        key = transaction_key(request)
        tx = _ClientTx(key, connection, on_response, on_failure)
        if request.method != "ACK":
            self._txns[key] = tx
            wait = self.config.transaction_timeout if timeout == -1.0 else timeout
            if wait is not None:
                tx.timer = self.call_later(wait, lambda: self._fail_tx(tx, TxFailure.TIMED_OUT))
        if connection.closed:
            self._fail_tx(tx, TxFailure.CONNECTION_CLOSED)
            return
        self.send(connection, request)

    def forget_later(self, request: SipRequest, delay: float = 32.0) -> None:
        """Drop our transaction of `request` after `delay` s (RFC 3261 Timer B) unless it ends
        first: for an INVITE whose device may never send a final answer after CANCEL."""
        tx = self._txns.get(transaction_key(request))
        if tx is not None and tx.timer is None:
            tx.on_failure = None
            tx.timer = self.call_later(delay, lambda: self._fail_tx(tx, TxFailure.FORGOTTEN))

    def _fail_tx(self, tx: _ClientTx, why: TxFailure) -> None:
        if self._txns.get(tx.key) is not tx:
            return
        del self._txns[tx.key]
        if tx.timer is not None:
            tx.timer.cancel()
        if tx.on_failure is not None:
            tx.on_failure(why)

    def _record(self, direction: str, connection: Connection, message: SipMessage) -> None:
        if self.recorder is not None:
            user = connection.user or _claimed_user(message)
            self.recorder(MessageRecord(self.now(), direction, connection.id, user, message))

    # -- connections ------------------------------------------------------------------------

    def connection_opened(self, connection: Connection) -> None:
        self.connections[connection.id] = connection

    def connection_closed(self, connection: Connection) -> None:
        """Drop its bindings at once, fail its transactions, end its calls (or, when it was
        lost rather than closed, give its devices `rebind_grace` to take them over)."""
        connection.close()
        self.connections.pop(connection.id, None)
        for binding in self.registrar.remove_connection(connection.id):
            log.info("binding %s of %s removed: its connection closed", binding.contact,
                     binding.aor)
        for tx in [t for t in self._txns.values() if t.connection is connection]:
            self._fail_tx(tx, TxFailure.CONNECTION_CLOSED)
        for call in [c for c in self._calls.values() if c.caller_conn is connection]:
            call.caller_gone()
        for dialogs in list(self._dialogs.values()):
            for dialog in list(dialogs):
                self.features.leg_vanished(dialog, connection.id, lost=connection.lost)

    def instance_of(self, connection: Connection) -> str | None:
        """The `+sip.instance` that `connection` registered for its user (None: none)."""
        if connection.user is None:
            return None
        for binding in self.registrar.lookup(connection.user, self.now()):
            if binding.connection == connection.id:
                return binding.instance
        return None

    def device_registered(self, user: str | None, instance: str) -> bool:
        """Whether device `instance` of `user` has a live binding (over any connection)."""
        if user is None:
            return False
        return any(b.instance == instance for b in self.registrar.lookup(user, self.now()))

    def connection(self, key: object) -> Connection | None:
        return self.connections.get(key) if isinstance(key, int) else None

    def expire(self) -> None:
        """Drop expired bindings (a timer calls this every second)."""
        for binding in self.registrar.expire(self.now()):
            log.info("binding %s of %s expired", binding.contact, binding.aor)

    def close(self) -> None:
        self.features.bridger.connection.close()
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()
        self._txns.clear()

    # -- receiving --------------------------------------------------------------------------

    def receive(self, connection: Connection, data: str | bytes) -> None:
        """One frame from `connection`. Never raises: a bad message gets a 400 or a log line."""
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._bad_frame(connection, data, str(exc))
            return
        self.handle(connection, message)

    def handle(self, connection: Connection, message: SipMessage) -> None:
        """One parsed message from `connection`."""
        self._record("in", connection, message)
        try:
            if isinstance(message, SipResponse):
                self._on_response(connection, message)
            elif self._check_request(connection, message):
                self._on_request(connection, message)
        except Exception:
            log.exception("sandbox failed handling %s from %r", _first_line(message), connection)
            if isinstance(message, SipRequest) and message.method != "ACK":
                self.reply(connection, message, 500, "Server Internal Error")

    def _bad_frame(self, connection: Connection, data: str | bytes, why: str) -> None:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        if not text.strip():
            return  # CRLF keepalive
        response = salvage_response(text, 400, f"Bad Request - {why}"[:120])
        if response is None:
            log.warning("dropping unparsable frame from %r: %s (%r)", connection, why, text[:120])
            return
        log.warning("answering an unparsable request from %r with 400: %s", connection, why)
        self._record("out", connection, response)
        connection.send(response)

    def _check_request(self, connection: Connection, request: SipRequest) -> bool:
        try:
            request.top_via  # noqa: B018  (parses it)
        except SipParseError as exc:
            log.warning("dropping request without a usable Via from %r: %s", connection, exc)
            return False
        try:
            cseq = request.cseq
            request.from_address  # noqa: B018
            request.to_address  # noqa: B018
            request.call_id  # noqa: B018
            if cseq.method.upper() != request.method.upper():
                raise SipParseError(f"CSeq method {cseq.method} is not {request.method}")
        except SipParseError as exc:
            if request.method != "ACK":
                self.reply(connection, request, 400, f"Bad Request - {exc}"[:120])
            return False
        return True

    def _on_response(self, connection: Connection, response: SipResponse) -> None:
        try:
            key = transaction_key(response)
        except SipParseError:
            return
        tx = self._txns.get(key)
        if tx is None or tx.connection is not connection:
            log.debug("stray response %s from %r", _first_line(response), connection)
            return
        if response.status_code >= 200:
            del self._txns[key]
            if tx.timer is not None:
                tx.timer.cancel()
        if tx.on_response is not None:
            tx.on_response(response)

    def _on_request(self, connection: Connection, request: SipRequest) -> None:
        method = request.method.upper()
        if method == "ACK":
            self.features.ack(connection, request)
            return
        max_forwards = (request.headers.get("Max-Forwards") or "70").strip()
        if max_forwards == "0":
            self.reply(connection, request, 483, "Too Many Hops")
        elif method == "CANCEL":
            self._on_cancel(connection, request)
        elif method == "REGISTER":
            register(self, connection, request)
        elif request.to_tag:
            self.features.in_dialog(connection, request)
        elif method == "MESSAGE" and content_type(request) == RC_MESSAGE_CONTENT_TYPE:
            self._on_rc_message(connection, request)
        elif method == "OPTIONS" and uri_user(request.uri) is None:
            self.reply(connection, request, 200, "OK")
        elif method == "INVITE":
            self._on_invite(connection, request)
        else:
            self._on_out_of_dialog(connection, request)

    def reply(
        self,
        connection: Connection,
        request: SipRequest,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        **kwargs: Any,
    ) -> None:
        self.send(connection, response_to(request, status, reason, to_tag=new_tag(),
                                          headers=headers, **kwargs))

    # -- INVITE / CANCEL --------------------------------------------------------------------

    def _caller(self, connection: Connection, request: SipRequest) -> Identity | None:
        """Who is calling: a party (trusted connection) or an authenticated user."""
        if connection.trusted:
            known = self.caller_ids.get(request.call_id)
            if known is not None:
                return known
            party = self.parties.get(connection.user or "")
            if party is not None:
                return party.identity
            return Identity(connection.user or "sandbox", connection.user or "Sandbox", "")
        user = authenticate(self, connection, request)
        if user is None:
            return None
        return Identity(user.extension, user.name, user.phone_number)

    def _on_invite(self, connection: Connection, request: SipRequest) -> None:
        if (request.call_id, request.branch or "") in self._calls:
            return  # a retransmission of an INVITE in progress
        self.reply(connection, request, 100, "Trying")
        caller = self._caller(connection, request)
        if caller is None:
            return
        target = self.resolve(uri_user(request.uri) or "")
        call = ProxyCall(self, connection, request, caller, target)
        self._calls[call.key] = call
        self._calls_by_sid[call.rc.sid] = call
        call.start()

    def _on_cancel(self, connection: Connection, request: SipRequest) -> None:
        call = self._calls.get((request.call_id, request.branch or ""))
        if call is None or call.caller_conn is not connection:
            self.reply(connection, request, 481, "Call/Transaction Does Not Exist")
            return
        self.send(connection, response_to(request, 200, "OK", to_tag=call.local_tag))
        call.cancel()

    def call_finished(self, call: ProxyCall) -> None:
        if self._calls.get(call.key) is call:
            del self._calls[call.key]
        if self._calls_by_sid.get(call.rc.sid) is call:
            del self._calls_by_sid[call.rc.sid]

    def hang_up_late_answer(
        self, connection: Connection, invite: SipRequest, response: SipResponse
    ) -> None:
        """A device answered after the call was decided: ACK its 2xx, then BYE it."""
        ack = ack_for(invite, response)
        ack.headers.set("Via", self.via())
        self.send(connection, ack)
        dialog = self.features.dialog_from_answer(connection, invite, response)
        bye = dialog.request_to(dialog.callee, "BYE", via_host=self.via_host,
                                transport=self.transport)
        self.send_request(connection, bye)

    # -- routing ----------------------------------------------------------------------------

    def resolve(self, number: str) -> Target | None:
        """Who `number` reaches: a party, or a user by extension / phone number."""
        party = self.parties.get(number)
        if party is not None:
            return Target(party.number, party.identity, "party")
        user = self.users.by_number(number) if number else None
        if user is None:
            return None
        return Target(user.extension, Identity(user.extension, user.name, user.phone_number),
                      "user")

    def voicemail_target(self) -> Target | None:
        return self.resolve(self.config.voicemail_number) if self.config.voicemail_number else None

    def endpoints(self, target: Target) -> list[Endpoint]:
        """The devices that ring for `target`: live bindings on open connections."""
        if target.kind == "party":
            party = self.parties[target.number]
            if party.connection.closed:
                return []
            return [Endpoint(party.connection, party.contact, party.number, None)]
        user = self.users[target.number]
        endpoints = []
        for binding in self.registrar.lookup(user.extension, self.now()):
            connection = self.connection(binding.connection)
            if connection is not None and not connection.closed:
                endpoints.append(Endpoint(connection, binding.contact, user.extension,
                                          user.authorization_id, binding.instance))
        return endpoints

    def _on_out_of_dialog(self, connection: Connection, request: SipRequest) -> None:
        """MESSAGE, OPTIONS, SUBSCRIBE, ... to a user: to every device, first 2xx wins."""
        if self._caller(connection, request) is None:
            return
        target = self.resolve(uri_user(request.uri) or "")
        if target is None:
            self.reply(connection, request, 404, "Not Found")
            return
        endpoints = self.endpoints(target)
        if not endpoints:
            self.reply(connection, request, 480, "Temporarily Unavailable")
            return
        Fanout(self, connection, request, endpoints).start()

    # -- RingCentral x-rc/agent ---------------------------------------------------------------

    def _on_rc_message(self, connection: Connection, request: SipRequest) -> None:
        self.reply(connection, request, 100, "Trying")
        try:
            message = parse_rc_message(request.body)
        except RcMessageError as exc:
            self.reply(connection, request, 400, f"Bad Request - {exc}"[:120])
            return
        call = self._calls_by_sid.get(message.sid or "")
        if call is None:
            call = next((c for c in self._calls.values() if c.invite.call_id == request.call_id),
                        None)
        fork = call.fork_for(connection) if call is not None else None
        if call is None or fork is None:
            self.reply(connection, request, 481, "Call/Transaction Does Not Exist")
            return
        self.reply(connection, request, 200, "OK")
        call.on_rc_command(fork, message)

    def send_rc(
        self,
        endpoint: Endpoint,
        rc: RcCall,
        cmd: RcCommand,
        extra: dict[str, str],
        then: Callable[[SipResponse | None], None] | None,
    ) -> None:
        """A server x-rc/agent MESSAGE to one device; `then` runs after its final answer."""
        body = server_message(rc, cmd, to_user=endpoint.user, domain=self.domain,
                              cln=endpoint.cln or endpoint.user, extra=extra)
        agent = rc.agent_user.replace("#", "%23")
        fields = [
            ("Via", self.via()),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{agent}@{self.domain}>;tag={new_tag()}"),
            ("To", f"<sip:{endpoint.user}@{self.domain}>"),
            ("Call-ID", new_call_id()),
            ("CSeq", "1 MESSAGE"),
            ("Content-Type", RC_MESSAGE_CONTENT_TYPE),
        ]
        request = SipRequest("MESSAGE", endpoint.contact, Headers(fields), body)

        def done(response: SipResponse | None) -> None:
            if then is not None and (response is None or response.status_code >= 200):
                then(response)

        self.send_request(endpoint.connection, request, on_response=done,
                          on_failure=lambda _: done(None), timeout=5.0)

    # -- dialogs ----------------------------------------------------------------------------

    def add_dialog(self, dialog: Dialog) -> None:
        self._dialogs.setdefault(dialog.call_id, []).append(dialog)

    def find_dialog(self, call_id: str, tags: tuple[str | None, str | None]) -> Dialog | None:
        for dialog in self._dialogs.get(call_id, []):
            if dialog.matches(tags):
                return dialog
        return None

    def end_dialog(self, dialog: Dialog) -> None:
        dialog.ended = True
        dialogs = self._dialogs.get(dialog.call_id, [])
        if dialog in dialogs:
            dialogs.remove(dialog)
        if not dialogs:
            self._dialogs.pop(dialog.call_id, None)

    def dialogs(self) -> list[Dialog]:
        return [d for ds in self._dialogs.values() for d in ds]

    def leg_connection(self, leg: Leg) -> Connection | None:
        return self.connection(leg.connection)


def _first_line(message: SipMessage) -> str:
    return str(message).split("\r\n", 1)[0]


def _claimed_user(message: SipMessage) -> str | None:
    """The From user of a message on a connection that has not authenticated yet."""
    try:
        return message.from_address.uri.user
    except SipParseError:
        return None
