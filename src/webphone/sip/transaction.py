"""SIP transactions (RFC 3261 §17), pure: client and server, INVITE and non-INVITE.

Theory of operation. A transaction is one request and its responses. It is keyed by the top-Via
branch and the CSeq method (§17.1.3, §17.2.3): matching on the CSeq number alone, as the
upstream SDK does, lets an unrelated message with an equal number complete the wrong request.
An object here takes messages and `now` (seconds on any monotonic clock) and returns outputs:
`Send(message)` for the shell to put on the wire, and events (`ResponseReceived`,
`TransactionTimeout`) for the transaction user. `next_deadline()` tells the shell when to call
`handle_timeout(now)`. Nothing here awaits, sleeps or reads a clock.

Only the timers that exist on a reliable transport (SIP over WebSocket, RFC 7118) are kept:
Timer A/E/G (request and response retransmission) never run; Timer B/F bound the wait for a
response (64*T1, or what the shell asks for); Timer D, I, J and K are zero, so a completed
transaction terminates at once; Timer H (64*T1) bounds the wait for the ACK of a non-2xx final
response. The 2xx of an INVITE leaves the transaction layer at once (§17.1.1.2, §17.2.1): its
ACK and its retransmission (§13.3.1.4) are the user agent core's job (see `ua.py`).

Every state change goes through one table, `TRANSITIONS[(role, state)][event] -> state`; an
event a state does not accept raises `TransactionStateError` naming the event, role and state.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import WebPhoneError
from .build import ack_for
from .message import SipRequest, SipResponse

__all__ = [
    "T1",
    "T2",
    "T4",
    "TIMER_B",
    "ClientTransaction",
    "ResponseReceived",
    "Role",
    "Send",
    "ServerTransaction",
    "TransactionKey",
    "TransactionState",
    "TransactionStateError",
    "TransactionTimeout",
    "new_branch",
    "new_call_id",
    "new_tag",
    "transaction_key",
]

log = logging.getLogger("webphone.sip.transaction")

MAGIC_COOKIE = "z9hG4bK"

#: RFC 3261 §17.1.1.1: round-trip estimate (s), the unit of every other timer.
T1 = 0.5
#: RFC 3261 §17.1.2.2: the longest interval between retransmissions (s).
T2 = 4.0
#: RFC 3261 §17.1.2.2: how long a message may stay in the network (s).
T4 = 5.0
#: Timer B / F / H (64*T1 = 32 s): how long a transaction waits for an answer.
TIMER_B = 64 * T1

TransactionKey = tuple[str, str]


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 64 random bits)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag."""
    return secrets.token_hex(6)


def new_call_id() -> str:
    """A fresh Call-ID."""
    return secrets.token_hex(12)


def transaction_key(message: SipRequest | SipResponse) -> TransactionKey:
    """(top-Via branch, CSeq method) of a request or response.

    A CANCEL has its own transaction (same branch, method CANCEL); the ACK of a non-2xx final
    response belongs to the INVITE transaction, so it is keyed as INVITE.
    """
    branch = message.branch or ""
    method = message.cseq.method.upper()
    if method == "ACK":
        method = "INVITE"
    return branch, method


class Role(enum.Enum):
    """Which side of a transaction, and which kind."""

    INVITE_CLIENT = "invite-client"
    CLIENT = "non-invite-client"
    INVITE_SERVER = "invite-server"
    SERVER = "non-invite-server"


class TransactionState(enum.Enum):
    """RFC 3261 §17 transaction states."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


CALLING = TransactionState.CALLING
TRYING = TransactionState.TRYING
PROCEEDING = TransactionState.PROCEEDING
COMPLETED = TransactionState.COMPLETED
CONFIRMED = TransactionState.CONFIRMED
TERMINATED = TransactionState.TERMINATED

#: (role, state) -> {event: next state}. Events: "1xx", "2xx", "final" (300-699), "timeout",
#: "ack", "timer" (a zero-length Timer D/I/J/K, or H). Figures 5-8 of RFC 3261, reliable
#: transport, with the 2xx of an INVITE ending the transaction (§17.1.1.2, §17.2.1).
TRANSITIONS: dict[tuple[Role, TransactionState], dict[str, TransactionState]] = {
    (Role.INVITE_CLIENT, CALLING): {
        "1xx": PROCEEDING, "2xx": TERMINATED, "final": COMPLETED, "timeout": TERMINATED,
    },
    (Role.INVITE_CLIENT, PROCEEDING): {
        "1xx": PROCEEDING, "2xx": TERMINATED, "final": COMPLETED, "timeout": TERMINATED,
    },
    (Role.INVITE_CLIENT, COMPLETED): {"final": COMPLETED, "timer": TERMINATED},
    (Role.CLIENT, TRYING): {
        "1xx": PROCEEDING, "2xx": COMPLETED, "final": COMPLETED, "timeout": TERMINATED,
    },
    (Role.CLIENT, PROCEEDING): {
        "1xx": PROCEEDING, "2xx": COMPLETED, "final": COMPLETED, "timeout": TERMINATED,
    },
    (Role.CLIENT, COMPLETED): {"timer": TERMINATED},
    (Role.INVITE_SERVER, PROCEEDING): {
        "1xx": PROCEEDING, "2xx": TERMINATED, "final": COMPLETED,
    },
    (Role.INVITE_SERVER, COMPLETED): {"ack": CONFIRMED, "timeout": TERMINATED},
    (Role.INVITE_SERVER, CONFIRMED): {"timer": TERMINATED},
    (Role.SERVER, TRYING): {"1xx": PROCEEDING, "2xx": COMPLETED, "final": COMPLETED},
    (Role.SERVER, PROCEEDING): {"1xx": PROCEEDING, "2xx": COMPLETED, "final": COMPLETED},
    (Role.SERVER, COMPLETED): {"timer": TERMINATED},
}  # fmt: skip


class TransactionStateError(WebPhoneError, RuntimeError):
    """An event the transaction's current state does not accept (a bug in the caller)."""

    def __init__(self, event: str, role: Role, state: TransactionState) -> None:
        super().__init__(f"event {event!r} is not allowed for a {role.value} transaction in "
                         f"state {state.value}")
        self.event, self.role, self.state = event, role, state


@dataclass(frozen=True, kw_only=True)
class Send:
    """Output: put `message` on the wire."""

    message: SipRequest | SipResponse


@dataclass(frozen=True, kw_only=True)
class ResponseReceived:
    """Output of a client transaction: a response for the transaction user."""

    key: TransactionKey
    response: SipResponse

    @property
    def final(self) -> bool:
        """True for 2xx-6xx."""
        return self.response.status_code >= 200


@dataclass(frozen=True, kw_only=True)
class TransactionTimeout:
    """Output: Timer B/F (no answer) or H (no ACK) fired; the transaction is terminated."""

    key: TransactionKey
    method: str
    timer: str


Output = Send | ResponseReceived | TransactionTimeout


class _RfcDefault(enum.Enum):
    RFC_DEFAULT = "rfc-default"


#: `final_timeout` default: RFC 3261's bound for the request's kind.
RFC_DEFAULT = _RfcDefault.RFC_DEFAULT


def _event_of(status: int) -> str:
    if status < 200:
        return "1xx"
    return "2xx" if status < 300 else "final"


class _Transaction:
    role: Role
    key: TransactionKey

    def __init__(self, state: TransactionState) -> None:
        self.state = state
        self._deadline: float | None = None

    @property
    def terminated(self) -> bool:
        """True once the transaction is over."""
        return self.state is TERMINATED

    def next_deadline(self) -> float | None:
        """When `handle_timeout` must next be called, or None."""
        return None if self.terminated else self._deadline

    def _set_state(self, event: str) -> TransactionState:
        allowed = TRANSITIONS.get((self.role, self.state), {})
        if event not in allowed:
            raise TransactionStateError(event, self.role, self.state)
        new = allowed[event]
        if new is not self.state:
            log.debug("%s %s: %s -> %s", self.role.value, self.key, self.state.value, new.value)
            self.state = new
        return new


class ClientTransaction(_Transaction):
    """One request we sent (RFC 3261 §17.1).

    `timeout` is Timer B (INVITE) or F (others): how long to wait for the first response.
    `final_timeout` bounds the wait for the final response once a provisional one came; None
    means no bound. Its default is RFC 3261's: none for an INVITE (Proceeding waits; the
    transaction user ends a call that rings too long with CANCEL), Timer F's 64*T1 for others.
    """

    def __init__(
        self,
        request: SipRequest,
        now: float,
        *,
        timeout: float | None = TIMER_B,
        final_timeout: float | _RfcDefault | None = RFC_DEFAULT,
    ) -> None:
        invite = request.method == "INVITE"
        if isinstance(final_timeout, _RfcDefault):
            final_timeout = None if invite else TIMER_B
        super().__init__(CALLING if invite else TRYING)
        self.role = Role.INVITE_CLIENT if invite else Role.CLIENT
        self.request = request
        self.key = transaction_key(request)
        self.final_timeout = final_timeout
        self.response: SipResponse | None = None
        self._deadline = None if timeout is None else now + timeout

    def start(self) -> list[Output]:
        """The request to send first."""
        return [Send(message=self.request)]

    @property
    def answered(self) -> bool:
        """True once any response (provisional included) has come."""
        return self.response is not None

    def receive(self, response: SipResponse, now: float) -> list[Output]:
        """A response whose key matched this transaction."""
        if self.terminated or (self.state is COMPLETED and self.role is Role.CLIENT):
            return []  # a retransmission after the end: absorbed (§17.1.2.2)
        event = _event_of(response.status_code)
        if self.state is COMPLETED:
            # §17.1.1.2: a retransmitted final response in Completed is ACKed again.
            self._set_state(event)
            return [Send(message=ack_for(self.request, response))]
        self._set_state(event)
        self.response = response
        out: list[Output] = []
        if event == "1xx":
            self._deadline = None if self.final_timeout is None else now + self.final_timeout
        elif event == "final" and self.role is Role.INVITE_CLIENT:
            out.append(Send(message=ack_for(self.request, response)))  # §17.1.1.3
        out.append(ResponseReceived(key=self.key, response=response))
        if self.state is COMPLETED:
            self._set_state("timer")  # Timer D / K = 0 on a reliable transport
        return out

    def handle_timeout(self, now: float) -> list[Output]:
        """Fire Timer B/F when its deadline has passed."""
        if self._deadline is None or now < self._deadline or self.terminated:
            return []
        self._set_state("timeout")
        timer = "B" if self.role is Role.INVITE_CLIENT else "F"
        return [TransactionTimeout(key=self.key, method=self.request.method, timer=timer)]


class ServerTransaction(_Transaction):
    """One request we received (RFC 3261 §17.2): absorbs retransmissions of the request,
    answers them with the last response, and (INVITE) waits for the ACK of a non-2xx final
    response for Timer H."""

    def __init__(self, request: SipRequest, now: float, *, timer_h: float = TIMER_B) -> None:
        invite = request.method == "INVITE"
        # §17.2.1: an INVITE server transaction starts in Proceeding; a non-INVITE one in Trying.
        super().__init__(PROCEEDING if invite else TRYING)
        self.role = Role.INVITE_SERVER if invite else Role.SERVER
        self.request = request
        self.key = transaction_key(request)
        self.timer_h = timer_h
        self.response: SipResponse | None = None

    def respond(self, response: SipResponse, now: float) -> list[Output]:
        """Send `response` through the transaction."""
        event = _event_of(response.status_code)
        self._set_state(event)
        self.response = response
        if self.state is COMPLETED and self.role is Role.INVITE_SERVER:
            self._deadline = now + self.timer_h  # Timer H: wait for the ACK
        elif self.state is COMPLETED:
            self._set_state("timer")  # Timer J = 0 on a reliable transport
        return [Send(message=response)]

    def receive(self, request: SipRequest, now: float) -> list[Output]:
        """A request whose key matched: a retransmission, or the ACK of our non-2xx final."""
        if request.method == "ACK":
            if self.state is COMPLETED:
                self._set_state("ack")
                self._set_state("timer")  # Timer I = 0 on a reliable transport
            return []
        if self.response is not None and not self.terminated:
            return [Send(message=self.response)]  # §17.2.1 / §17.2.2: answer again
        return []

    def handle_timeout(self, now: float) -> list[Output]:
        """Fire Timer H when no ACK came."""
        if self._deadline is None or now < self._deadline or self.state is not COMPLETED:
            return []
        self._set_state("timeout")
        return [TransactionTimeout(key=self.key, method=self.request.method, timer="H")]


def earliest(deadlines: Sequence[float | None]) -> float | None:
    """The smallest of `deadlines` that is not None, or None."""
    present = [d for d in deadlines if d is not None]
    return min(present) if present else None
