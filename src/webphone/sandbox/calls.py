"""One inbound call being set up: the caller's INVITE forked to every device of the callee.

A `ProxyCall` is a stateful-proxy INVITE transaction (RFC 3261 §16) with RingCentral's habits:

* the first ringing device is shown to the caller as `183 Session Progress`, once (the upstream
  SDK treats any later response with the same CSeq as final);
* the first 2xx wins: it goes to the caller, the other devices get CANCEL and then an x-rc/agent
  `AlreadyProcessed` (Cmd 7), the answering device gets its Cmd 7 after the ACK;
* non-2xx answers of devices are ACKed here (hop by hop); the caller gets the best one when
  every device is done, `487` after its CANCEL;
* the callee's x-rc/agent commands: decline (12) and voicemail (11) and forward (10) send a
  SessionClose (Cmd 9) and then CANCEL the ringing devices; reply (14) CANCELs first and sends
  the SessionClose afterwards; voicemail and forward then ring the new target.

A device that never answers a CANCEL with 487 (the upstream SDK does not) counts as done once
its CANCEL is answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from webphone.sip import SipRequest, SipResponse
from webphone.sip.rc import RcCommand, RcMessage
from webphone.sip.transaction import new_tag

from .config import SandboxConfig
from .connection import Connection, Sender
from .dialogs import Dialog, Leg, contact_uri
from .messages import ack_for, cancel_for, forwarded, relayed, response_to
from .rc import Identity, RcCall

log = logging.getLogger("webphone.sandbox")

ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


@dataclass(frozen=True)
class Target:
    """Who is called: a user (rings its devices) or a built-in party."""

    number: str
    identity: Identity
    kind: str  # "user" | "party"


@dataclass(frozen=True)
class Endpoint:
    """One device to ring: its connection, its Contact, its authorizationId (RC Cln), and
    its RFC 5626 instance id when it registered one."""

    connection: Connection
    contact: str
    user: str
    cln: str | None
    instance: str | None = None


@dataclass
class Fork:
    """The INVITE sent to one device."""

    endpoint: Endpoint
    request: SipRequest
    target: Target
    state: str = "calling"  # calling | ringing | answered | done
    cancelled: bool = False
    confirmed: bool = False
    on_done: list[Callable[[], None]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.state in ("calling", "ringing")

    def finish(self) -> None:
        if self.state == "done":
            return
        self.state = "done"
        callbacks, self.on_done = self.on_done, []
        for callback in callbacks:
            callback()


class CallServices(Protocol):
    """What calls and in-dialog features both need of the proxy: its settings and timers,
    numbers, devices' instance ids, and RingCentral's x-rc/agent messages."""

    @property
    def config(self) -> SandboxConfig: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle: ...
    def resolve(self, number: str) -> Target | None: ...
    def instance_of(self, connection: Connection) -> str | None: ...

    def send_rc(
        self,
        endpoint: Endpoint,
        rc: RcCall,
        cmd: RcCommand,
        extra: dict[str, str],
        then: Callable[[SipResponse | None], None] | None,
    ) -> None: ...


class CallRouter(Sender, CallServices, Protocol):
    """What a call being set up needs of the proxy (`proxy.Proxy` is one)."""

    @property
    def domain(self) -> str: ...
    @property
    def record_route(self) -> str: ...

    def endpoints(self, target: Target) -> list[Endpoint]: ...
    def voicemail_target(self) -> Target | None: ...
    def add_dialog(self, dialog: Dialog) -> None: ...
    def forget_later(self, request: SipRequest, delay: float = 32.0) -> None: ...
    def call_finished(self, call: ProxyCall) -> None: ...

    def hang_up_late_answer(
        self, connection: Connection, invite: SipRequest, response: SipResponse
    ) -> None: ...


class ProxyCall:
    """The caller's INVITE and its forks, until the caller has a final answer."""

    def __init__(
        self,
        proxy: CallRouter,
        caller_conn: Connection,
        invite: SipRequest,
        caller: Identity,
        target: Target | None,
    ) -> None:
        self.proxy = proxy
        self.caller_conn = caller_conn
        self.invite = invite
        self.caller = caller
        self.target = target
        self.local_tag = new_tag()
        self.rc = RcCall.new(proxy.domain)
        self.forks: list[Fork] = []
        self.state = "ringing"  # ringing | answered | cancelled | ended
        self.mode: str | None = None  # declined | voicemail | forwarded | replied | timeout
        self.provisional_sent = False
        self.early_tag: str | None = None  # To-tag of the provisional the caller saw
        self.final_sent = False
        self.responses: list[SipResponse] = []
        self.dialog: Dialog | None = None
        self._timers = [proxy.call_later(proxy.config.ring_timeout, self._ring_timeout)]

    @property
    def key(self) -> tuple[str, str]:
        return self.invite.call_id, self.invite.branch or ""

    # -- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.target is None:
            # RingCentral's answer to a number that does not exist (invalid-number.spec.ts)
            self._respond(183, "Session Progress", final=False)
            self._respond(486, "Busy Here", [("Warning", '399 sandbox "no such number"')])
            return
        if self.ring(self.target) == 0:
            self._respond(480, "Temporarily Unavailable", [("Warning", '399 sandbox "offline"')])

    def ring(self, target: Target) -> int:
        """Send the INVITE to every live device of `target`; return how many."""
        endpoints = self.proxy.endpoints(target)
        for endpoint in endpoints:
            add = self.rc.headers(self.caller, target.identity) if target.kind == "user" else []
            request = forwarded(
                self.invite,
                endpoint.contact,
                self.proxy.via(),
                record_route=self.proxy.record_route,
                add=add,
            )
            fork = Fork(endpoint, request, target)
            self.forks.append(fork)
            self._send_fork(fork)
        return len(endpoints)

    def _send_fork(self, fork: Fork) -> None:
        def on_response(response: SipResponse) -> None:
            self._on_fork_response(fork, response)

        def on_failure(why: str) -> None:
            self._on_fork_failure(fork, why)

        self.proxy.send_request(fork.endpoint.connection, fork.request, on_response=on_response,
                                on_failure=on_failure, timeout=None)

    # -- answers from devices -----------------------------------------------------------------

    def _on_fork_response(self, fork: Fork, response: SipResponse) -> None:
        status = response.status_code
        if status == 100:
            return
        if status < 200:
            if fork.state == "calling":
                fork.state = "ringing"
            if self.state == "ringing" and not self.provisional_sent:
                self.provisional_sent = True
                self.early_tag = response.to_tag
                self._relay(response, 183, "Session Progress")
            return
        if 200 <= status < 300:
            self._on_fork_answered(fork, response)
            return
        self.proxy.send(fork.endpoint.connection, ack_for(fork.request, response))
        if not fork.live and fork.state == "done":
            return
        self.responses.append(response)
        fork.finish()
        if status >= 600 and self.state == "ringing":
            self.cancel_forks()
        self._check_done()

    def _on_fork_failure(self, fork: Fork, why: str) -> None:
        log.info("fork to %s failed: %s", fork.endpoint.contact, why)
        fork.finish()
        self._check_done()

    def _on_fork_answered(self, fork: Fork, response: SipResponse) -> None:
        if self.state != "ringing" or self.final_sent:
            # Too late (answered elsewhere, cancelled, timed out): take the call and hang up.
            self.proxy.hang_up_late_answer(fork.endpoint.connection, fork.request, response)
            fork.finish()
            return
        self.state = "answered"
        fork.state = "answered"
        self._relay(response)
        self.final_sent = True
        self.dialog = self._make_dialog(fork, response)
        if self.early_tag != self.dialog.callee.tag:  # answered by another device (forward)
            self.dialog.early_tag = self.early_tag
        self.proxy.add_dialog(self.dialog)
        if fork.target.kind == "user" and fork.endpoint.cln:
            self.dialog.after_ack.append(lambda: self._already_processed(fork))
        for other in self.forks:
            if other is not fork and other.live:
                other.on_done.append(self._notifier(other))
                self._cancel_fork(other, ANSWERED_ELSEWHERE)
        self._finish()

    def _make_dialog(self, fork: Fork, response: SipResponse) -> Dialog:
        invite = self.invite
        caller = Leg(
            connection=self.caller_conn.id,
            tag=invite.from_tag or "",
            header=invite.headers["From"],
            contact=contact_uri(invite.headers.get("Contact"), str(invite.from_address.uri)),
            cseq=invite.cseq.number,
            user=self.caller.extension,
            instance=self.proxy.instance_of(self.caller_conn),
        )
        callee = Leg(
            connection=fork.endpoint.connection.id,
            tag=response.to_tag or "",
            header=response.headers["To"],
            contact=contact_uri(response.headers.get("Contact"), fork.endpoint.contact),
            user=fork.endpoint.user,
            cln=fork.endpoint.cln,
            instance=fork.endpoint.instance,
        )
        rc = self.rc if fork.target.kind == "user" else None
        return Dialog(invite.call_id, caller, callee, rc=rc)

    def _check_done(self) -> None:
        if self.final_sent:
            self._forget_when_quiet()
            return
        if any(f.live for f in self.forks):
            return
        if self.state == "cancelled":
            self._respond(487, "Request Terminated")
        elif self.mode in ("declined", "replied"):
            # RingCentral lets the caller hear ringback, then "no one is available".
            delay = self.proxy.config.reject_delay
            self._timers.append(self.proxy.call_later(delay, self._unavailable))
        elif self.responses:
            best = min(self.responses, key=_rank)
            self._relay(best)
            self.final_sent = True
            self._finish()
        else:
            self._unavailable()

    def _unavailable(self) -> None:
        if not self.final_sent:
            self._respond(480, "Temporarily Unavailable")

    # -- the caller -------------------------------------------------------------------------

    def cancel(self) -> None:
        """The caller sent CANCEL (already answered 200 by the proxy)."""
        if self.state != "ringing" or self.final_sent:
            return
        self.state = "cancelled"
        self.cancel_forks()
        self._check_done()

    def caller_gone(self) -> None:
        """The caller's connection closed while its call was being set up."""
        if self.state == "ringing":
            self.state = "cancelled"
            self.final_sent = True  # nobody to answer
            self.cancel_forks()
            self._finish()

    def _ring_timeout(self) -> None:
        if self.state == "ringing" and not self.final_sent:
            self.mode = "timeout"
            self.cancel_forks()
            self._respond(480, "Temporarily Unavailable", [("Warning", '399 sandbox "no answer"')])

    # -- RingCentral commands from a ringing device ---------------------------------------------

    def on_rc_command(self, fork: Fork, message: RcMessage) -> None:
        """An x-rc/agent MESSAGE from the device `fork` rings (already answered 200)."""
        cmd = message.cmd
        if cmd == RcCommand.CLIENT_RECEIVE_CONFIRM:
            fork.confirmed = True
            return
        if self.state != "ringing" or self.final_sent or self.mode is not None:
            return
        if cmd == RcCommand.CLIENT_REJECT:
            self._close_ringing(fork, "declined", None)
        elif cmd == RcCommand.CLIENT_VOICEMAIL:
            self._close_ringing(fork, "voicemail", self.proxy.voicemail_target())
        elif cmd == RcCommand.CLIENT_FORWARD:
            number = message.body.get("Phn", "")
            self._close_ringing(fork, "forwarded", self.proxy.resolve(number))
        elif cmd == RcCommand.CLIENT_REPLY:
            self._reply(fork)

    def _close_ringing(self, fork: Fork, mode: str, next_target: Target | None) -> None:
        """SessionClose to the device, then CANCEL every device, then ring `next_target`."""
        self.mode = mode

        def then(_: SipResponse | None = None) -> None:
            self.cancel_forks()
            if next_target is None or self.ring(next_target) == 0:
                self.mode = "declined"  # nobody to hand the call to: as if declined
            self._check_done()

        self._session_close(fork, {}, then)

    def _reply(self, fork: Fork) -> None:
        """Cmd 14: CANCEL first; the SessionClose (the caller's keypad answer) comes after."""
        self.mode = "replied"
        result = dict(self.proxy.config.reply_result)
        fork.on_done.append(lambda: self._session_close(fork, result, None))
        self.cancel_forks()
        self._check_done()

    def _session_close(
        self,
        fork: Fork,
        extra: dict[str, str],
        then: Callable[[SipResponse | None], None] | None,
    ) -> None:
        body = {**extra, "Phn": self.caller.phone_number, "Nm": self.caller.name}
        self.proxy.send_rc(fork.endpoint, self.rc, RcCommand.SESSION_CLOSE, body, then)

    def _notifier(self, fork: Fork) -> Callable[[], None]:
        return lambda: self._already_processed(fork)

    def _already_processed(self, fork: Fork) -> None:
        self.proxy.send_rc(fork.endpoint, self.rc, RcCommand.ALREADY_PROCESSED, {}, None)

    # -- helpers ----------------------------------------------------------------------------

    def cancel_forks(self, reason: str | None = None) -> None:
        for fork in self.forks:
            self._cancel_fork(fork, reason)

    def _cancel_fork(self, fork: Fork, reason: str | None) -> None:
        if not fork.live or fork.cancelled:
            return
        fork.cancelled = True

        def done(_: object = None) -> None:
            # The device may never send 487 (the upstream SDK does not): done all the same.
            self.proxy.forget_later(fork.request)
            fork.finish()
            self._check_done()

        self.proxy.send_request(
            fork.endpoint.connection,
            cancel_for(fork.request, reason),
            on_response=done,
            on_failure=done,
            timeout=2.0,
        )

    def fork_for(self, connection: Connection) -> Fork | None:
        """The (latest) fork ringing on `connection`."""
        for fork in reversed(self.forks):
            if fork.endpoint.connection is connection:
                return fork
        return None

    def _relay(self, response: SipResponse, status: int | None = None, reason: str = "") -> None:
        out = relayed(response, self.invite)
        if out is None:
            return
        if status is not None:
            out.status_code, out.reason = status, reason
        self.proxy.send(self.caller_conn, out)

    def _respond(
        self, status: int, reason: str, headers: list[tuple[str, str]] | None = None,
        *, final: bool = True,
    ) -> None:
        response = response_to(self.invite, status, reason, to_tag=self.local_tag,
                               headers=headers or ())
        self.proxy.send(self.caller_conn, response)
        if final:
            self.final_sent = True
            self._finish()

    def _finish(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._forget_when_quiet()

    def _forget_when_quiet(self) -> None:
        # Devices still being cancelled may yet send x-rc/agent MESSAGEs or answers: keep the
        # call findable until every one of them is done.
        if self.final_sent and not any(f.live for f in self.forks):
            self.proxy.call_finished(self)


def _rank(response: SipResponse) -> tuple[int, int]:
    """RFC 3261 §16.7: a 6xx wins, then the lowest class; 408/480/503 lose to real answers."""
    status = response.status_code
    if status >= 600:
        return 0, status
    weak = status in (408, 480, 503)
    return status // 100 + (1 if weak else 0), status
