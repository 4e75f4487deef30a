"""Messages a user agent builds by rule, pure: responses, CANCEL, the ACK of a failed INVITE, and
the one table of default replies for requests no dialog or transaction owns.

Each rule has exactly one implementation here; the phone, the call classes and the sandbox's
proxy all build these messages through it (they used to carry two or three copies that drifted:
two default-reply tables disagreed on an unowned INVITE).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import SipParseError
from .message import Headers, SipRequest, SipResponse

__all__ = ["ack_for", "cancel_for", "default_reply", "response_to"]

#: RFC 3261 §12.1.1: the dialog-creating methods whose 101-299 responses carry Record-Route and
#: Contact back to the caller.
DIALOG_FORMING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "UPDATE"})


def response_to(
    request: SipRequest,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    contact: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response to `request` (RFC 3261 §8.2.6): every Via, From, To (+ `to_tag` when the To has
    none and this is not a 100), Call-ID and CSeq copied as received; `headers` appended.

    With `contact`, a 101-299 response to a dialog-forming request also returns the Record-Route
    set and our Contact (§12.1.1). Header values are copied verbatim, so a 400 can still echo a
    CSeq we could not parse; a missing one is written empty.
    """
    fields = [("Via", v) for v in request.headers.get_all("Via")]
    fields.append(("From", request.headers.get("From") or ""))
    to_value = request.headers.get("To") or ""
    if to_tag and status > 100 and not _has_tag(to_value):
        to_value = f"{to_value};tag={to_tag}"
    fields.append(("To", to_value))
    fields += [(name, request.headers.get(name) or "") for name in ("Call-ID", "CSeq")]
    if contact is not None and request.method in DIALOG_FORMING and 100 < status < 300:
        fields += [("Record-Route", r) for r in request.headers.get_all("Record-Route")]
        fields.append(("Contact", contact))
    fields.extend(headers)
    if body and content_type:
        fields.append(("Content-Type", content_type))
    return SipResponse(status, reason, Headers(fields), body)


def _to_tag(request: SipRequest) -> bool:
    try:
        return bool(request.to_tag)
    except SipParseError:  # an unreadable To cannot name a dialog of ours either
        return _has_tag(request.headers.get("To") or "")


def _has_tag(value: str) -> bool:
    return ";tag=" in value.replace(" ", "").lower()


def cancel_for(invite: SipRequest, reason: str | None = None) -> SipRequest:
    """The CANCEL of an INVITE we sent (RFC 3261 §9.1): same Request-URI, top Via (so the same
    branch), From, To, Call-ID and CSeq number, and the INVITE's Route headers. `reason` becomes
    a `Reason` header (RFC 3326)."""
    fields = [
        ("Via", invite.headers.get_all("Via")[0]),
        ("Max-Forwards", "70"),
        ("From", invite.headers["From"]),
        ("To", invite.headers["To"]),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} CANCEL"),
    ]
    fields += [("Route", r) for r in invite.headers.get_all("Route")]
    if reason:
        fields.append(("Reason", reason))
    return SipRequest("CANCEL", invite.uri, Headers(fields))


def ack_for(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK of a non-2xx final response to an INVITE we sent (RFC 3261 §17.1.1.3): the
    INVITE's top Via, From, Call-ID, CSeq number and Routes, the To of the response (its tag)."""
    fields = [
        ("Via", invite.headers.get_all("Via")[0]),
        ("Max-Forwards", "70"),
        ("From", invite.headers["From"]),
        ("To", response.headers.get("To") or invite.headers["To"]),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} ACK"),
    ]
    fields += [("Route", r) for r in invite.headers.get_all("Route")]
    return SipRequest("ACK", invite.uri, Headers(fields))


#: Requests outside any dialog that a phone answers by itself (RFC 3261 §11.2: OPTIONS is
#: answered as an INVITE would be, here "200, we are alive"; MESSAGE and NOTIFY are accepted).
_ANSWERED_OUT_OF_DIALOG = {"OPTIONS": (200, "OK"), "MESSAGE": (200, "OK"), "NOTIFY": (200, "OK")}


def default_reply(request: SipRequest) -> tuple[int, str] | None:
    """The reply to a request that no transaction, dialog or call owns; None for an ACK.

    The one table (two used to disagree):

    - ACK: never answered (RFC 3261 §17.2.3: an ACK matching nothing goes to the core, which
      drops it).
    - OPTIONS, MESSAGE, NOTIFY: 200, with or without a To tag. Kept from before on purpose: a
      481 to an in-dialog OPTIONS keep-alive makes a proxy tear down the dialog, and in a group
      that dialog may be held by another member.
    - Any other request with a To tag claims a dialog we do not have: 481 Call/Transaction Does
      Not Exist (RFC 3261 §12.2.2), INVITE included.
    - A CANCEL that matches no transaction: 481 (§9.2). A BYE outside a dialog: 481 (§15.1.2).
    - A new INVITE (no To tag) that nobody takes: 480 Temporarily Unavailable (§21.4.18: the
      callee was reached but cannot take the call now; a user agent with no call handler is
      exactly that, and 481 would wrongly claim a dialog was expected).
    - Any other method without a To tag: 481 as well, since every other method we know (INFO,
      UPDATE, PRACK, REFER, SUBSCRIBE here) only makes sense inside a dialog we would own.
    """
    method = request.method.upper()
    if method == "ACK":
        return None
    if method in _ANSWERED_OUT_OF_DIALOG:
        return _ANSWERED_OUT_OF_DIALOG[method]
    if _to_tag(request):
        return 481, "Call/Transaction Does Not Exist"
    if method == "INVITE":
        return 480, "Temporarily Unavailable"
    return 481, "Call/Transaction Does Not Exist"
