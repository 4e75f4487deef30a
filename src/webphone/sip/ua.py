"""The call state machine of a SIP user agent (RFC 3261 §12-§15), pure, in the h11 way.

Theory of operation. `CallCore` is one call: the INVITE that opens it, its dialog, and the
transactions inside it. The shell feeds it every message of the call (`receive(message, now)`),
asks it to act (`ring`, `answer`, `reject`, `cancel`, `hangup`, `request`, `reply`), and calls
`handle_timeout(now)` at `next_deadline()`. Every method returns a list of outputs: `Send`
(a message for the wire) and events (`CallRinging`, `CallAnswered`, `AckReceived`, `AckLost`,
`RequestReceived`, `ResponseReceived`, `CallTerminated`, `TransactionTimeout`). Nothing here
awaits, sleeps or reads a clock; media and SDP negotiation are the shell's.

Call states: init -> ringing (early dialog) -> answered (confirmed dialog) -> terminated; init
or ringing -> terminated when the call never connects. The rules the core enforces:

- CANCEL (§9.1) only after a provisional response; asked for earlier, it waits for one. A 2xx
  that crosses our CANCEL is ACKed and ended with BYE. Received CANCEL (§9.2): 200, then 487 to
  the INVITE while it is unanswered.
- The caller ACKs every 2xx (§13.2.2.4), retransmissions included; a 2xx from a second fork is
  ACKed and its dialog ended with BYE at once; so is a 2xx whose callee's BYE overtook it (that
  BYE got 481: no dialog yet, §15.1.2).
- The callee retransmits its 2xx until the ACK comes (§13.3.1.4: T1 doubling up to T2) and gives
  up after 64*T1 with a BYE. A newer INVITE of the peer before that ACK means it was lost
  (§14.1: the peer's INVITE was over): `AckLost`, no more retransmission, no BYE.
- A re-INVITE received while ours is pending gets 491 (§14.1). The remote target moves only once
  a target refresh was accepted with 2xx (§12.2.2, RFC 6141).
- A re-INVITE of ours without SDP (an offerless re-INVITE, RFC 3264 §4) whose 2xx carries the
  far party's offer is not ACKed at once: the answer belongs in the ACK (§13.2.2.4), so the core
  reports `AnswerNeeded` and the shell sends `ack_answer(sdp)`; until then the INVITE counts as
  in progress (§14.1) and a retransmitted 2xx is not ACKed empty. A retransmitted 2xx of a
  re-INVITE already ACKed gets the same ACK again.
- An in-dialog request with a CSeq not above the last one gets 500 (§12.2.2); a 481 or 408, or
  no answer at all, to our in-dialog request ends the call (§12.2.1.2).
- BYE ends the call both ways, also before the ACK of the 2xx (§15.1.2).

`to_dict()`/`from_dict()` write the call down as plain JSON types (versioned): dialog, state,
negotiated SDP, the INVITE's CSeq and RingCentral ids. Transactions in flight are not carried
over: a process adopting a call continues the dialog (`Dialog.adopt` moves the CSeq on).

The module is longer than ~500 lines on purpose: it is one state machine, and splitting the
caller's rules from the callee's would spread the transitions of one call over two files.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import CallError, SipParseError
from .build import cancel_for, response_to
from .dialog import Dialog
from .message import Headers, SipRequest, SipResponse
from .rc import parse_rc_api_ids
from .transaction import (
    T1,
    T2,
    TIMER_B,
    ClientTransaction,
    Output,
    ResponseReceived,
    Send,
    ServerTransaction,
    TransactionKey,
    TransactionTimeout,
    earliest,
    new_branch,
    transaction_key,
)

__all__ = [
    "CALL_STATE_VERSION",
    "AckLost",
    "AckReceived",
    "AnswerNeeded",
    "CallAnswered",
    "CallCore",
    "CallRinging",
    "CallState",
    "CallTerminated",
    "Local",
    "RequestReceived",
]

log = logging.getLogger("webphone.sip.ua")

#: Version of `CallCore.to_dict()`; `from_dict()` refuses any other.
CALL_STATE_VERSION = 1
#: Methods whose request carries our Contact (they create or refresh a dialog's target).
_CONTACT_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "REFER", "NOTIFY"})


class CallState(enum.Enum):
    """The call as a user sees it."""

    INIT = "init"
    RINGING = "ringing"
    ANSWERED = "answered"
    TERMINATED = "terminated"


INIT, RINGING, ANSWERED, TERMINATED = (
    CallState.INIT, CallState.RINGING, CallState.ANSWERED, CallState.TERMINATED,
)  # fmt: skip

#: state -> states it may move to; `_set_state` refuses anything else.
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    INIT: frozenset({RINGING, ANSWERED, TERMINATED}),
    RINGING: frozenset({ANSWERED, TERMINATED}),
    ANSWERED: frozenset({TERMINATED}),
    TERMINATED: frozenset(),
}


@dataclass(frozen=True, kw_only=True)
class Local:
    """How this user agent writes itself into messages: Via sent-by, Contact, User-Agent."""

    via: str  # "SIP/2.0/WSS abc.invalid"; the branch is added per request
    contact: str
    user_agent: str = "webphone-python/0.1"


@dataclass(frozen=True, kw_only=True)
class CallRinging:
    """The call rings: we sent a 1xx (callee) or received one (caller, not 100)."""

    response: SipResponse


@dataclass(frozen=True, kw_only=True)
class CallAnswered:
    """The call is answered: we sent the 2xx (callee) or received and ACKed it (caller)."""

    response: SipResponse


@dataclass(frozen=True, kw_only=True)
class AckReceived:
    """The peer ACKed a 2xx of ours (`request.body` holds the answer to an offerless INVITE)."""

    request: SipRequest


@dataclass(frozen=True, kw_only=True)
class AckLost:
    """The ACK of our 2xx to the peer's INVITE of CSeq `cseq` will not come: a newer INVITE of
    the peer came first (§14.1). An offer of ours in that 2xx got no answer."""

    cseq: int


@dataclass(frozen=True, kw_only=True)
class AnswerNeeded:
    """The 2xx to our offerless re-INVITE carries the far party's offer (RFC 3264 §4): the
    shell makes the answer and sends it in the ACK with `CallCore.ack_answer`."""

    response: SipResponse
    offer: str


@dataclass(frozen=True, kw_only=True)
class RequestReceived:
    """An in-dialog request the shell must answer with `reply()` (re-INVITE, INFO, REFER...)."""

    request: SipRequest


@dataclass(frozen=True, kw_only=True)
class CallTerminated:
    """The call is over. `failed`: it never connected. `status`: the final response, if any."""

    reason: str
    status: int | None = None
    failed: bool = False
    by_peer: bool = False


Event = (CallRinging | CallAnswered | AckReceived | AckLost | AnswerNeeded | RequestReceived
         | CallTerminated)
CallOutput = Output | Event


@dataclass(kw_only=True)
class _PendingOk:
    """A 2xx to an INVITE of the peer, retransmitted until its ACK (§13.3.1.4)."""

    response: SipResponse
    interval: float
    next_at: float
    give_up_at: float


class CallCore:
    """One call's SIP state: INVITE, dialog, transactions. See the module docstring."""

    def __init__(self, *, local: Local, outbound: bool, invite: SipRequest) -> None:
        self.local = local
        self.outbound = outbound
        self.invite = invite
        self.state = INIT
        self.dialog: Dialog | None = None
        self.local_tag = (invite.from_tag or "") if outbound else ""
        self.local_sdp: str | None = None
        self.remote_sdp: str | None = None
        self.session_id: str | None = None
        self.party_id: str | None = None
        self.cancel_requested = False
        self._clients: dict[TransactionKey, ClientTransaction] = {}
        self._servers: dict[TransactionKey, ServerTransaction] = {}
        self._oks: dict[int, _PendingOk] = {}
        self._hung_up_tags: set[str] = set()  # callees whose BYE came before their 2xx
        self._invite_key = transaction_key(invite)
        self._reinvite_key: TransactionKey | None = None
        self._cancel_deadline: float | None = None
        self._last_invite_response: SipResponse | None = None
        self._cancel_sent = False
        self._bye_on_ack = False
        #: the 2xx to our offerless re-INVITE whose ACK waits for the shell's answer
        self._answer_due: SipResponse | None = None
        #: the ACK of our last re-INVITE's 2xx, sent again for a retransmitted 2xx (§13.2.2.4)
        self._reinvite_ack: SipRequest | None = None
        self._read_rc_ids(invite)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def uac(
        cls, local: Local, invite: SipRequest, now: float, *, timeout: float | None = TIMER_B
    ) -> tuple[CallCore, list[CallOutput]]:
        """A call we place with `invite` (built by the shell); returns it and the INVITE to
        send. `timeout` is Timer B, the wait for the first response."""
        core = cls(local=local, outbound=True, invite=invite)
        core.local_sdp = _sdp(invite)
        txn = ClientTransaction(invite, now, timeout=timeout, final_timeout=None)
        core._clients[txn.key] = txn
        return core, list(txn.start())

    @classmethod
    def uas(cls, local: Local, invite: SipRequest, now: float, local_tag: str) -> CallCore:
        """A call the peer placed with `invite`; answer it with `ring`/`answer`/`reject`."""
        core = cls(local=local, outbound=False, invite=invite)
        core.local_tag = local_tag
        core.remote_sdp = _sdp(invite)
        core.dialog = Dialog.from_uas(invite, local_tag, local.contact)
        txn = ServerTransaction(invite, now)
        core._servers[txn.key] = txn
        return core

    # -- state ------------------------------------------------------------------------------

    def _set_state(self, state: CallState) -> bool:
        if state is self.state:
            return False
        if state not in TRANSITIONS[self.state]:
            raise CallError(f"call {self.invite.call_id}: {self.state.value} -> {state.value} "
                            "is not a call transition")
        log.debug("call %s: %s -> %s", self.invite.call_id, self.state.value, state.value)
        self.state = state
        return True

    def _terminate(self, reason: str, *, keep_oks: bool = False, **kwargs: Any
                   ) -> list[CallOutput]:
        if self.state is TERMINATED:
            return []
        self._set_state(TERMINATED)
        if not keep_oks:
            self._oks.clear()
        self._cancel_deadline = None
        if self.dialog is not None:
            self.dialog.terminate()
        return [CallTerminated(reason=reason, **kwargs)]

    def end(self, reason: str) -> list[CallOutput]:
        """The shell ended the call by its own means (its own BYE, a failure): stop every timer
        of the call (2xx retransmission included) and report the end once."""
        return self._terminate(reason)

    @property
    def call_id(self) -> str:
        """The Call-ID of the call."""
        return self.invite.call_id

    # -- timers -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `handle_timeout` must next be called, or None."""
        times = [t.next_deadline() for t in (*self._clients.values(), *self._servers.values())]
        times += [min(ok.next_at, ok.give_up_at) for ok in self._oks.values()]
        times.append(self._cancel_deadline)
        return earliest(times)

    def handle_timeout(self, now: float) -> list[CallOutput]:
        """Fire every timer due at `now`: transaction timers, 2xx retransmission, CANCEL wait."""
        out: list[CallOutput] = []
        for key, txn in list(self._clients.items()):
            for item in txn.handle_timeout(now):
                out += self._on_client_output(txn, item, now)
            self._forget(key, txn)
        for key, server in list(self._servers.items()):
            out += server.handle_timeout(now)
            if server.terminated:
                self._servers.pop(key, None)
        for number, ok in list(self._oks.items()):
            if now >= ok.give_up_at:
                # §13.3.1.4: no ACK within 64*T1: confirm the dialog, then end it with BYE.
                del self._oks[number]
                log.warning("call %s: no ACK for the 2xx of CSeq %s", self.call_id, number)
                out += self._bye(now, force=True)
                out += self._terminate("no ACK for the 200 OK")
            elif now >= ok.next_at:
                out.append(Send(message=ok.response))
                ok.interval = min(ok.interval * 2, T2)
                ok.next_at = now + ok.interval
        if self._cancel_deadline is not None and now >= self._cancel_deadline:
            out += self._terminate("cancelled (no answer to the CANCEL)")
        return out

    def _forget(self, key: TransactionKey, txn: ClientTransaction) -> None:
        if txn.terminated and self._clients.get(key) is txn:
            del self._clients[key]

    # -- input ------------------------------------------------------------------------------

    def receive(self, message: SipRequest | SipResponse, now: float) -> list[CallOutput]:
        """A message of this call (same Call-ID), as received."""
        if isinstance(message, SipResponse):
            return self._on_response(message, now)
        return self._on_request(message, now)

    def _on_response(self, response: SipResponse, now: float) -> list[CallOutput]:
        key = transaction_key(response)
        txn = self._clients.get(key)
        if txn is None:
            return self._stray_response(response, now)
        out: list[CallOutput] = []
        for item in txn.receive(response, now):
            out += self._on_client_output(txn, item, now)
        self._forget(key, txn)
        return out

    def _on_client_output(
        self, txn: ClientTransaction, item: Output, now: float
    ) -> list[CallOutput]:
        if isinstance(item, Send):
            return [item]
        if isinstance(item, TransactionTimeout):
            if txn.key == self._invite_key:
                return [item, *self._terminate(f"no answer to INVITE (Timer {item.timer})",
                                               failed=not self.cancel_requested)]
            if txn.key == self._reinvite_key:
                self._reinvite_key = None
            if self.state is ANSWERED and item.method != "BYE":
                # §12.2.1.2: no answer at all to an in-dialog request ends the dialog.
                return [item, *self._bye(now), *self._terminate(f"no answer to {item.method}")]
            return [item]
        assert isinstance(item, ResponseReceived)
        if txn.key == self._invite_key:
            return self._on_invite_response(item.response, now)
        return self._on_dialog_response(txn, item, now)

    def _on_invite_response(self, response: SipResponse, now: float) -> list[CallOutput]:
        self._read_rc_ids(response)
        out: list[CallOutput] = []
        if response.status_code < 200:
            if self.cancel_requested and not self._cancel_sent and self.state is not TERMINATED:
                out += self._send_cancel(now)  # §9.1: now that a provisional came
            if response.status_code == 100:
                return out
            if response.to_tag and self.dialog is None:
                self.dialog = Dialog.from_uac(self.invite, response)  # early dialog
            if self.state is INIT and not self.cancel_requested:
                self._set_state(RINGING)
                out.append(CallRinging(response=response))
            return out
        if response.status_code >= 300:
            cancelled = self.cancel_requested or response.status_code == 487
            return self._terminate(f"{response.status_code} {response.reason}",
                                   status=response.status_code, failed=not cancelled,
                                   by_peer=True)
        return self._on_invite_success(response, now)

    def _on_invite_success(self, response: SipResponse, now: float) -> list[CallOutput]:
        dialog = Dialog.from_uac(self.invite, response)
        if self.dialog is not None:
            # Requests sent in the early dialog used CSeq numbers: never reuse one (§12.2.1.1).
            dialog.local_cseq = max(dialog.local_cseq, self.dialog.local_cseq)
            if self.dialog.remote_tag == dialog.remote_tag:
                dialog.remote_cseq = self.dialog.remote_cseq
        self.dialog = dialog
        self.remote_sdp = _sdp(response) or self.remote_sdp
        out: list[CallOutput] = [self._ack(dialog, response)]
        if response.to_tag in self._hung_up_tags:
            # The callee's BYE overtook this 2xx (see `_note_early_bye`): the call is over there.
            out += self._bye(now, force=True)
            out += self._terminate("remote hung up before its answer arrived", by_peer=True)
            return out
        if self.cancel_requested or self.state is TERMINATED:
            # §9.1: the 2xx crossed our CANCEL; the call is up at the far end, so BYE it.
            self._cancel_deadline = None
            out += self._bye(now, force=True)
            out += self._terminate("cancelled (answered meanwhile)", status=response.status_code)
            return out
        self._set_state(ANSWERED)
        out.append(CallAnswered(response=response))
        return out

    def _on_dialog_response(
        self, txn: ClientTransaction, item: ResponseReceived, now: float
    ) -> list[CallOutput]:
        response = item.response
        out: list[CallOutput] = [item]
        if txn.request.method == "INVITE" and response.status_code >= 200:
            self._reinvite_key = None
            if response.is_success:
                out[:0] = self._reinvite_success(txn.request, response)
        if response.status_code in (408, 481) and self.state is ANSWERED:
            # §12.2.1.2: the dialog is gone at the far end.
            out += self._terminate(f"dialog lost ({response.status_code})", by_peer=True)
        return out

    def _stray_response(self, response: SipResponse, now: float) -> list[CallOutput]:
        """A response no transaction waits for: a retransmitted or forked 2xx to our INVITE."""
        if not (response.is_success and response.cseq.method == "INVITE") or self.dialog is None:
            return []
        ack = self._reinvite_ack
        if ack is not None and response.cseq.number == ack.cseq.number \
                and response.to_tag == self.dialog.remote_tag:
            return [Send(message=ack)]  # §13.2.2.4: our re-INVITE's ACK was lost
        if not self.outbound or response.cseq.number != self.invite.cseq.number:
            return []  # (a 2xx whose offer waits for our answer is ACKed by `ack_answer`)
        if response.to_tag == self.dialog.remote_tag:
            return [self._ack(self.dialog, response)]  # §13.2.2.4: our ACK was lost
        # A second fork answered too: ACK it, and end that dialog at once (§13.2.2.4).
        fork = Dialog.from_uac(self.invite, response)
        return [self._ack(fork, response), Send(message=self._build(fork, "BYE"))]

    def _on_request(self, request: SipRequest, now: float) -> list[CallOutput]:
        key = transaction_key(request)
        server = self._servers.get(key)
        if request.method == "CANCEL":
            return self._on_cancel(request, now)
        if server is not None:
            out = server.receive(request, now)  # a retransmission, or the ACK of our non-2xx
            if server.terminated:
                self._servers.pop(key, None)
            return list(out)
        if request.method == "ACK":
            return self._on_ack(request, now)
        if self.dialog is None or self.state is TERMINATED or not self.dialog.matches(request):
            self._note_early_bye(request)
            return self._refuse(request, now, 481, "Call/Transaction Does Not Exist")
        if not self.dialog.accepts(request):
            # §12.2.2: a lower CSeq is out of order: 500 with Retry-After.
            return self._refuse(request, now, 500, "Server Internal Error",
                                [("Retry-After", "1")])
        if request.method == "BYE":
            ended = self._reply_new(request, now, 200, "OK")
            return ended + self._terminate("remote hung up", by_peer=True)
        if request.method == "INVITE" and (self._reinvite_key is not None
                                           or self._answer_due is not None):
            return self._refuse(request, now, 491, "Request Pending")  # §14.1 glare
        lost = self._superseded(request) if request.method == "INVITE" else []
        server = ServerTransaction(request, now)
        self._servers[server.key] = server
        return [*lost, RequestReceived(request=request)]

    def _note_early_bye(self, request: SipRequest) -> None:
        """A BYE for our INVITE from a callee whose 2xx has not reached us: the callee gave up
        waiting for our ACK (§13.3.1.4: its 2xx went unacknowledged for 64*T1) and hung up, and
        its BYE overtook the 2xx. It gets 481 (§15.1.2: no dialog matches yet); the tag is kept
        so that when the 2xx does arrive, the dialog it makes is ACKed and ended at once
        instead of staying up at our end alone."""
        if (self.outbound and request.method == "BYE" and self.state is not TERMINATED
                and request.from_tag and request.to_tag == self.invite.from_tag):
            self._hung_up_tags.add(request.from_tag)

    def _superseded(self, invite: SipRequest) -> list[CallOutput]:
        """A new INVITE of the peer (a higher CSeq: `accepts` checked it) while 2xx responses
        of ours to its earlier INVITEs still wait for their ACK. §14.1: a UAC starts no INVITE
        while another is in progress, so the earlier ones are over at the peer and their ACKs
        were lost (or whoever sent them died: a group's real taking a call over, #15); waiting
        on would block our own re-INVITEs and, at 64*T1, end the call with a BYE (§13.3.1.4)
        the peer never earned. The 2xx are taken as ACKed without an answer."""
        lost = [number for number in self._oks if number < invite.cseq.number]
        for number in lost:
            del self._oks[number]
            log.info("call %s: INVITE CSeq %s came before the ACK of our 2xx to CSeq %s; "
                     "taking that ACK as lost", self.call_id, invite.cseq.number, number)
        # (a BYE held back for that ACK, §15.1.1, is not released here: having hung up, we
        # refuse the INVITE with 481 before this point, and the BYE leaves at 64*T1)
        return [AckLost(cseq=number) for number in lost]

    def _refuse(self, request: SipRequest, now: float, code: int, reason: str,
                headers: Iterable[tuple[str, str]] = ()) -> list[CallOutput]:
        return self._reply_new(request, now, code, reason, headers)

    def _reply_new(self, request: SipRequest, now: float, code: int, reason: str,
                   headers: Iterable[tuple[str, str]] = ()) -> list[CallOutput]:
        server = ServerTransaction(request, now)
        out = server.respond(self._response(request, code, reason, headers=headers), now)
        if not server.terminated:
            self._servers[server.key] = server
        return list(out)

    def _on_cancel(self, request: SipRequest, now: float) -> list[CallOutput]:
        """§9.2: answer the CANCEL with 200; an INVITE still unanswered gets 487."""
        out = self._reply_new(request, now, 200, "OK")
        invite_txn = self._servers.get(self._invite_key)
        if self.outbound or invite_txn is None or (invite_txn.response is not None and \
                invite_txn.response.status_code >= 200):
            return out
        out += self._respond_invite(487, "Request Terminated", now)
        return out + self._terminate("caller cancelled", status=487, by_peer=True)

    def _on_ack(self, request: SipRequest, now: float) -> list[CallOutput]:
        ok = self._oks.pop(request.cseq.number, None)
        if ok is None:
            return []  # a duplicate ACK, or one for a 2xx we stopped caring about
        if request.body:
            self.remote_sdp = _sdp(request) or self.remote_sdp
        out: list[CallOutput] = [AckReceived(request=request)]
        if self._bye_on_ack and not self._oks:
            self._bye_on_ack = False
            out += self._bye(now, force=True)  # §15.1.1: the BYE we held back
        return out

    # -- actions: the callee ----------------------------------------------------------------

    def ring(self, now: float, code: int = 180, reason: str = "Ringing") -> list[CallOutput]:
        """Send a provisional response (100 keeps the call in init)."""
        self._require_uas("ring", INIT, RINGING)
        out = self._respond_invite(code, reason, now)
        if code > 100 and self._set_state(RINGING):
            response = self._last_invite_response
            assert response is not None
            out.append(CallRinging(response=response))
        return out

    def answer(self, now: float, sdp: str, *, headers: Iterable[tuple[str, str]] = ()
               ) -> list[CallOutput]:
        """Send the 2xx with our SDP and retransmit it until the ACK (§13.3.1.4)."""
        self._require_uas("answer", INIT, RINGING)
        out = self._respond_invite(200, "OK", now, body=sdp.encode(), headers=headers)
        response = self._last_invite_response
        assert response is not None and self.dialog is not None
        self.local_sdp = sdp
        self.dialog.confirm()
        self._oks[self.invite.cseq.number] = _PendingOk(
            response=response, interval=T1, next_at=now + T1, give_up_at=now + TIMER_B
        )
        self._set_state(ANSWERED)
        return [*out, CallAnswered(response=response)]

    def reject(self, now: float, code: int, reason: str,
               headers: Iterable[tuple[str, str]] = ()) -> list[CallOutput]:
        """Refuse the call with a final response 300-699."""
        self._require_uas("reject", INIT, RINGING)
        if not 300 <= code < 700:
            raise CallError(f"reject(): {code} is not a final failure status (300-699)")
        out = self._respond_invite(code, reason, now, headers=headers)
        return out + self._terminate(f"rejected with {code}", status=code)

    def _respond_invite(self, code: int, reason: str, now: float, *, body: bytes = b"",
                        headers: Iterable[tuple[str, str]] = ()) -> list[CallOutput]:
        txn = self._servers[self._invite_key]
        response = self._response(self.invite, code, reason, body=body, headers=headers)
        self._last_invite_response = response
        out: list[CallOutput] = list(txn.respond(response, now))
        if txn.terminated:
            self._servers.pop(self._invite_key, None)
        return out

    def _require_uas(self, action: str, *states: CallState) -> None:
        if self.outbound or self.state not in states:
            side = "outbound" if self.outbound else "inbound"
            raise CallError(f"{action}(): call {self.call_id} is an {side} call in state "
                            f"{self.state.value}")

    # -- actions: the caller ----------------------------------------------------------------

    def cancel(self, now: float, timeout: float = TIMER_B) -> list[CallOutput]:
        """Stop calling (§9.1). The CANCEL leaves once a provisional response has come; the call
        ends on the 487, or after `timeout` (Timer B) without one."""
        if not self.outbound or self.state not in (INIT, RINGING):
            raise CallError(f"cancel(): call {self.call_id} is not an unanswered outbound call")
        if self.cancel_requested:
            return []
        self.cancel_requested = True
        txn = self._clients.get(self._invite_key)
        if txn is None:
            return self._terminate("cancelled")
        if txn.answered:
            return self._send_cancel(now, timeout)
        return []

    def _send_cancel(self, now: float, timeout: float = TIMER_B) -> list[CallOutput]:
        cancel = cancel_for(self.invite)
        self._cancel_sent = True
        txn = ClientTransaction(cancel, now, timeout=timeout)
        self._clients[txn.key] = txn
        self._cancel_deadline = now + timeout
        return list(txn.start())

    def invite_response(self, response: SipResponse, now: float) -> list[CallOutput]:
        """A response to our INVITE when the shell runs the INVITE's transaction itself (its
        SIP client answers digest challenges and ACKs failures): a 1xx with a tag makes the
        early dialog and rings, a 2xx confirms the dialog and is ACKed here (§13.2.2.4)."""
        if not self.outbound:
            raise CallError(f"invite_response(): call {self.call_id} is an inbound call")
        return self._on_invite_response(response, now)

    def retry_invite(self, invite: SipRequest, now: float, *, timeout: float | None = TIMER_B
                     ) -> list[CallOutput]:
        """Send the INVITE again (with credentials after a 401/407, built by the shell)."""
        if not self.outbound or self.state is not INIT:
            raise CallError(f"retry_invite(): call {self.call_id} is not an outbound call in init")
        self.invite = invite
        self._invite_key = transaction_key(invite)
        txn = ClientTransaction(invite, now, timeout=timeout, final_timeout=None)
        self._clients[txn.key] = txn
        self._set_state(INIT)
        return list(txn.start())

    # -- actions: both ----------------------------------------------------------------------

    def hangup(self, now: float) -> list[CallOutput]:
        """End an answered call with BYE (an unanswered one: `cancel` or `reject`)."""
        if self.state is not ANSWERED:
            raise CallError(f"hangup(): call {self.call_id} is {self.state.value}, not answered")
        if self._oks:
            # §15.1.1: the callee must not send BYE before the ACK of its 2xx (or the give-up
            # time): a BYE overtaking our 2xx would reach a caller without a dialog. The call
            # is over for the user now; the BYE leaves with the ACK.
            self._bye_on_ack = True
            return self._terminate("hung up", keep_oks=True)
        return self._bye(now) + self._terminate("hung up")

    def _bye(self, now: float, *, force: bool = False) -> list[CallOutput]:
        if self.dialog is None or (self.state is TERMINATED and not force):
            return []
        bye = self._build(self.dialog, "BYE")
        txn = ClientTransaction(bye, now)
        self._clients[txn.key] = txn
        return list(txn.start())

    def request(
        self,
        method: str,
        now: float,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        timeout: float | None = TIMER_B,
    ) -> tuple[SipRequest, list[CallOutput]]:
        """Send an in-dialog request (re-INVITE, INFO, REFER, NOTIFY...); its response comes
        back as a `ResponseReceived` event (a 2xx to a re-INVITE is ACKed here)."""
        if self.state is TERMINATED:
            raise CallError(f"{method}: call {self.call_id} has no dialog")
        request = self.build_request(method, body=body, content_type=content_type,
                                     headers=headers)
        txn = ClientTransaction(request, now, timeout=timeout, final_timeout=timeout)
        self._clients[txn.key] = txn
        return request, list(txn.start())

    def build_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """An in-dialog request with the dialog's next CSeq, for a shell that runs the
        transaction itself (its client answers digest challenges); report the outcome with
        `request_done`. A re-INVITE counts as in progress until then (§14.1 glare)."""
        if self.dialog is None:
            raise CallError(f"{method}: call {self.call_id} has no dialog")
        if method == "INVITE" and self._invite_in_progress():
            # §14.1: no new INVITE while another is in progress in either direction (ours
            # unanswered, theirs unanswered, or a 2xx of ours still waiting for its ACK).
            raise CallError(f"re-INVITE: call {self.call_id} already has one in progress")
        request = self._build(self.dialog, method, body=body, content_type=content_type,
                              headers=headers)
        if method == "INVITE":
            self._reinvite_key = transaction_key(request)
            self.local_sdp = _sdp(request) or self.local_sdp
        return request

    def request_done(
        self, request: SipRequest, response: SipResponse | None, now: float
    ) -> list[CallOutput]:
        """The final response (None: none came) to a request from `build_request`: a 2xx to
        a re-INVITE is ACKed and refreshes the target, a 481/408 ends the call (§12.2.1.2),
        and the local CSeq stays above a digest retry's."""
        if request.method == "INVITE":
            self._reinvite_key = None
        if response is None:
            return []
        if self.dialog is not None:
            self.dialog.local_cseq = max(self.dialog.local_cseq, response.cseq.number)
        out: list[CallOutput] = []
        if request.method == "INVITE" and response.is_success:
            out += self._reinvite_success(request, response)
        if response.status_code in (408, 481) and self.state is ANSWERED:
            out += self._terminate(f"dialog lost ({response.status_code})", by_peer=True)
        return out

    def reply(
        self,
        request: SipRequest,
        code: int,
        reason: str,
        now: float,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> list[CallOutput]:
        """Answer an in-dialog request delivered as `RequestReceived`."""
        key = transaction_key(request)
        server = self._servers.get(key)
        if server is None:
            raise CallError(f"reply(): no pending {request.method} with branch {key[0]}")
        response = self._response(request, code, reason, body=body, headers=headers,
                                  content_type=content_type)
        out: list[CallOutput] = list(server.respond(response, now))
        if server.terminated:
            self._servers.pop(key, None)
        if request.method in ("INVITE", "UPDATE") and 200 <= code < 300 and self.dialog:
            self.dialog.refresh_target(request)  # §12.2.2: only once the refresh is accepted
            self.remote_sdp = _sdp(request) or self.remote_sdp
            self.local_sdp = body.decode("utf-8", "replace") if body else self.local_sdp
        if request.method == "INVITE" and 200 <= code < 300:
            self._oks[request.cseq.number] = _PendingOk(
                response=response, interval=T1, next_at=now + T1, give_up_at=now + TIMER_B
            )
        return out

    def _invite_in_progress(self) -> bool:
        # §14.1 also waits for the ACK of a non-2xx we sent; on a reliable transport that ACK
        # is hop-by-hop and carries nothing, so only an unanswered INVITE counts (as does our
        # 2xx waiting for its ACK: the offer/answer is not complete before it).
        theirs = any(key[1] == "INVITE" and (txn.response is None or txn.response.status_code
                                             < 200) for key, txn in self._servers.items())
        return (self._reinvite_key is not None or self._answer_due is not None or theirs
                or bool(self._oks))

    def _reinvite_success(self, request: SipRequest, response: SipResponse) -> list[CallOutput]:
        """The 2xx to our re-INVITE: it refreshes the target (§12.2.1.2) and is ACKed, at once,
        or, when our INVITE had no SDP and the 2xx has the offer, once the shell has the
        answer (RFC 3264 §4, RFC 3261 §13.2.2.4: the answer goes in the ACK)."""
        if self.dialog is None:
            return []
        self.dialog.refresh_target(response)
        offer = _sdp(response)
        self.remote_sdp = offer or self.remote_sdp
        if offer is not None and _sdp(request) is None:
            self._answer_due = response
            return [AnswerNeeded(response=response, offer=offer)]
        return [self._ack_reinvite(self.dialog, response)]

    @property
    def offer_awaiting_answer(self) -> str | None:
        """The far party's offer from the 2xx that `AnswerNeeded` reported, until
        `ack_answer`; else None."""
        return None if self._answer_due is None else _sdp(self._answer_due)

    def ack_answer(self, sdp: str | None) -> list[CallOutput]:
        """Send the ACK of the 2xx that `AnswerNeeded` reported, carrying `sdp`, our answer
        to the far party's offer (RFC 3264 §4). `None`: an ACK without a body, when the offer
        was unusable; §13.2.2.4 then wants the call ended with a BYE (the shell's `hangup`)."""
        response, self._answer_due = self._answer_due, None
        if response is None or self.dialog is None:
            raise CallError(f"ack_answer(): call {self.call_id} has no 2xx waiting for an answer")
        if sdp is not None:
            self.local_sdp = sdp
        return [self._ack_reinvite(self.dialog, response,
                                   body=b"" if sdp is None else sdp.encode())]

    def _ack_reinvite(self, dialog: Dialog, response: SipResponse, *, body: bytes = b""
                      ) -> Send:
        ack = self._ack(dialog, response, body=body)
        self._reinvite_ack = ack.message if isinstance(ack.message, SipRequest) else None
        return ack

    # -- building ---------------------------------------------------------------------------

    def _build(self, dialog: Dialog, method: str, *, cseq: int | None = None, body: bytes = b"",
               content_type: str | None = None, headers: Iterable[tuple[str, str]] = ()
               ) -> SipRequest:
        uri, fields = dialog.request_fields(method, cseq)
        head = [("Via", f"{self.local.via};branch={new_branch()}"), ("Max-Forwards", "70")]
        if method in _CONTACT_METHODS:
            fields.append(("Contact", self.local.contact))
        fields.append(("User-Agent", self.local.user_agent))
        fields.extend(headers)
        if body:
            fields.append(("Content-Type", content_type or "application/sdp"))
        return SipRequest(method, uri, Headers(head + fields), body)

    def _ack(self, dialog: Dialog, response: SipResponse, *, body: bytes = b"") -> Send:
        # §13.2.2.4: the ACK of a 2xx is a new transaction with the INVITE's CSeq number.
        return Send(message=self._build(dialog, "ACK", cseq=response.cseq.number, body=body))

    def _response(self, request: SipRequest, code: int, reason: str, *, body: bytes = b"",
                  headers: Iterable[tuple[str, str]] = (), content_type: str | None = None
                  ) -> SipResponse:
        extra = [("User-Agent", self.local.user_agent), *headers]
        kind = content_type or ("application/sdp" if body else None)
        return response_to(request, code, reason, to_tag=self.local_tag or None,
                           contact=self.local.contact, headers=extra, body=body,
                           content_type=kind)

    def _read_rc_ids(self, message: SipRequest | SipResponse) -> None:
        ids = parse_rc_api_ids(message.headers.get("p-rc-api-ids"))
        self.party_id = ids.party_id or self.party_id
        self.session_id = ids.session_id or self.session_id

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The call as plain JSON types, versioned: what another process needs to adopt it."""
        return {
            "version": CALL_STATE_VERSION,
            "direction": "outbound" if self.outbound else "inbound",
            "state": self.state.value,
            "invite": str(self.invite),
            "local_tag": self.local_tag,
            "dialog": None if self.dialog is None else self.dialog.to_dict(),
            "local_sdp": self.local_sdp,
            "remote_sdp": self.remote_sdp,
            "session_id": self.session_id,
            "party_id": self.party_id,
            "cancel_requested": self.cancel_requested,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], local: Local) -> CallCore:
        """A call from `to_dict()` output, for a process that adopts it (see `Dialog.adopt`)."""
        from .message import parse_message

        if data.get("version") != CALL_STATE_VERSION:
            raise SipParseError(
                f"call.version is {data.get('version')!r}, expected {CALL_STATE_VERSION}"
            )
        invite = parse_message(_text(data, "invite"))
        if not isinstance(invite, SipRequest):
            raise SipParseError("call.invite is a response, expected the INVITE request")
        direction = _text(data, "direction")
        if direction not in ("inbound", "outbound"):
            raise SipParseError(f"call.direction {direction!r} is not inbound or outbound")
        core = cls(local=local, outbound=direction == "outbound", invite=invite)
        try:
            core.state = CallState(_text(data, "state"))
        except ValueError as exc:
            raise SipParseError(f"call.state {data.get('state')!r} is not a call state") from exc
        core.local_tag = _text(data, "local_tag")
        dialog = data.get("dialog")
        core.dialog = None if dialog is None else Dialog.from_dict(_mapping(dialog))
        for name in ("local_sdp", "remote_sdp", "session_id", "party_id"):
            setattr(core, name, _text(data, name, optional=True))
        core.cancel_requested = bool(data.get("cancel_requested", False))
        return core


def _text(data: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise SipParseError(f"call.{name} must be a string, got {type(value).__name__}")
    return value


def _mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SipParseError(f"call.dialog must be an object, got {type(value).__name__}")
    return value


def _sdp(message: SipRequest | SipResponse) -> str | None:
    kind = (message.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if not message.body or kind != "application/sdp":
        return None
    return message.body.decode("utf-8", "replace")
