"""RFC 4028 session timers, pure: negotiation from headers, and when to refresh or give up.

A dialog with a session timer must be refreshed (re-INVITE or UPDATE) by the negotiated
*refresher* before `interval` seconds pass; otherwise either side ends it with BYE (§10). It is
how a call whose far party vanished without a BYE ends on its own.

Who refreshes is written relative to each refresh transaction: ``refresher=uac`` means the one
that sent the request that set the timer, ``uas`` the one that answered it. This module turns
that into `we_refresh` for the dialog. Nothing here reads a clock: every method takes `now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import SipParseError
from ._grammar import is_digits
from .message import SipRequest, SipResponse

__all__ = [
    "MIN_SE",
    "Acceptance",
    "SessionTimer",
    "accept_request",
    "from_response",
    "offer_headers",
    "parse_session_expires",
    "retry_expires",
    "supports_timer",
]

#: §4: no Session-Expires or Min-SE may be below 90 s.
MIN_SE = 90
Refresher = Literal["uac", "uas"]


def parse_session_expires(value: str) -> tuple[int, Refresher | None]:
    """`Session-Expires: 1800;refresher=uac` -> (1800, "uac"); SipParseError when malformed."""
    head, *params = (part.strip() for part in value.split(";"))
    if not is_digits(head):  # ASCII: str.isdigit() also takes "²", which int() refuses
        raise SipParseError(f"Session-Expires {value!r}: the interval must be whole seconds")
    refresher: Refresher | None = None
    for param in params:
        name, _, arg = param.partition("=")
        if name.strip().lower() != "refresher":
            continue
        arg = arg.strip().lower()
        if arg not in ("uac", "uas"):
            raise SipParseError(f"Session-Expires {value!r}: refresher must be uac or uas")
        refresher = "uac" if arg == "uac" else "uas"
    return int(head), refresher


def supports_timer(message: SipRequest | SipResponse) -> bool:
    """True when the message lists `timer` in Supported or Require (§7.1, §9)."""
    tokens = ",".join(message.headers.get_all("Supported") + message.headers.get_all("Require"))
    return "timer" in {token.strip().lower() for token in tokens.split(",")}


def _min_se(message: SipRequest | SipResponse) -> int:
    value = (message.headers.get("Min-SE") or "").split(";")[0].strip()
    return int(value) if is_digits(value) else MIN_SE


def offer_headers(expires: int, min_se: int = MIN_SE) -> list[tuple[str, str]]:
    """What a request that sets or refreshes the timer carries (§7.1): `timer` supported, the
    interval we ask for, our minimum. The refresher is left to the answerer (§7.1: a UAC MAY
    omit it), which picks us when we support timers and it prefers not to refresh."""
    if not 1 <= min_se <= expires:
        raise ValueError(f"Session-Expires {expires} must be at least Min-SE {min_se} (>= 1 s)")
    return [("Supported", "timer"), ("Session-Expires", str(expires)),
            ("Min-SE", str(min_se))]


@dataclass(frozen=True, kw_only=True)
class SessionTimer:
    """A negotiated session timer: its `interval` (s), and whether we are the refresher."""

    interval: int
    we_refresh: bool
    refreshed_at: float

    def refresh_at(self) -> float:
        """When the refresher sends its refresh: half the interval (§10's recommendation)."""
        return self.refreshed_at + self.interval / 2

    def expires_at(self) -> float:
        """When the other side gives up and sends BYE: the interval minus the smaller of 32 s
        and a third of it (§10), so a refresh in flight still beats it."""
        return self.refreshed_at + self.interval - min(32.0, self.interval / 3)

    def deadline(self) -> float:
        """The next moment something is due: our refresh, or the peer's refresh's end."""
        return self.refresh_at() if self.we_refresh else self.expires_at()

    def refreshed(self, now: float, *, interval: int | None = None,
                  we_refresh: bool | None = None) -> SessionTimer:
        """The timer after a successful refresh at `now` (possibly renegotiated)."""
        return SessionTimer(
            interval=self.interval if interval is None else interval,
            we_refresh=self.we_refresh if we_refresh is None else we_refresh,
            refreshed_at=now,
        )


def from_response(response: SipResponse, now: float) -> SessionTimer | None:
    """The timer set by a 2xx to a request of ours (§7.2): the interval and refresher it names.
    None when it names none (the session does not expire). A 2xx without `refresher` (not
    allowed by §9) is taken as asking us, the requester, to refresh: the safe side."""
    value = response.headers.get("Session-Expires")
    if not value:
        return None
    interval, refresher = parse_session_expires(value)
    return SessionTimer(interval=interval, we_refresh=refresher != "uas", refreshed_at=now)


@dataclass(frozen=True, kw_only=True)
class Acceptance:
    """What to answer a request that may set a timer: `reject` (422 + its headers) or the
    2xx's extra `headers` and the resulting `timer` (None: no session timer)."""

    timer: SessionTimer | None
    headers: list[tuple[str, str]]
    reject: bool = False


def accept_request(request: SipRequest, now: float, *, min_se: int = MIN_SE) -> Acceptance:
    """The UAS side (§9) for an INVITE or UPDATE: 422 when its interval is below our Min-SE;
    else the timer it asks for, refresher as named, or the requester when it supports timers
    (it asked for the timer), or us when it does not (then `Require: timer` is not sent)."""
    value = request.headers.get("Session-Expires")
    if not value:
        return Acceptance(timer=None, headers=[])
    interval, refresher = parse_session_expires(value)
    if interval < min_se:
        return Acceptance(timer=None, headers=[("Min-SE", str(min_se))], reject=True)
    if refresher is None:
        refresher = "uac" if supports_timer(request) else "uas"
    headers: list[tuple[str, str]] = [("Session-Expires", f"{interval};refresher={refresher}")]
    if refresher == "uac":
        headers.append(("Require", "timer"))  # §9: the UAC must know it is the refresher
    timer = SessionTimer(interval=interval, we_refresh=refresher == "uas", refreshed_at=now)
    return Acceptance(timer=timer, headers=headers)


def retry_expires(response: SipResponse, asked: int) -> int | None:
    """After a 422 (§7.3): the interval to ask for next (the Min-SE it names, at least what we
    asked), or None when the 422 gives nothing higher (do not loop)."""
    wanted = _min_se(response)
    return wanted if wanted > asked else None
