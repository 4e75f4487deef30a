"""Message surgery a proxy does, pure: responses, Via push/pop, forwarding, CANCEL, ACK.

Everything here takes messages and returns new ones (inputs are never modified), so the proxy
shell stays a list of decisions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote as percent_decode

from webphone.errors import SipParseError
from webphone.sip import Headers, SipRequest, SipResponse, SipUri, build, split_list
from webphone.sip.transaction import new_branch, new_tag

from .connection import TxFailure

__all__ = [
    "SERVER_NAME",
    "ack_for",
    "answer_unanswered",
    "cancel_for",
    "content_type",
    "forwarded",
    "new_branch",
    "pop_via",
    "relayed",
    "response_to",
    "salvage_response",
    "uri_user",
]

SERVER_NAME = "webphone-sandbox"

def response_to(
    request: SipRequest,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response generated here: the user agent rule (`webphone.sip.build.response_to`) plus
    our Server header."""
    return build.response_to(
        request, status, reason, to_tag=to_tag, headers=[("Server", SERVER_NAME), *headers],
        body=body, content_type=content_type,
    )


def answer_unanswered(request: SipRequest, failures: Iterable[TxFailure]) -> SipResponse:
    """What a proxy answers upstream for `request` when no branch it was forwarded to gave a
    final response, each ending with one of `failures` (RFC 3261 §16.7 step 6, best response).

    A branch that timed out counts as a 408 (§16.8), one whose connection closed as a 503
    (§16.9: a transport error); the lowest class wins, so any timeout gives 408. A 503 as the
    best response is not forwarded but answered as 500 (§16.7 step 6: a 503 upstream would say
    this proxy serves nothing at all). The difference matters in a dialog: a 408 (or 481) to
    an in-dialog request ends the dialog at the sender (§12.2.1.2), a 500 fails only that
    transaction (RFC 5057 §5.1), so a device that lost its connection can still come back
    (RFC 5626 §4.4) and carry the dialog on.
    """
    seen = set(failures)
    if seen and seen <= {TxFailure.CONNECTION_CLOSED}:
        return response_to(request, 500, "Server Internal Error", to_tag=_tag_for(request),
                           headers=[("Warning", '399 sandbox "next hop connection closed"')])
    return response_to(request, 408, "Request Timeout", to_tag=_tag_for(request))


def _tag_for(request: SipRequest) -> str | None:
    """A To tag for a response generated here to an out-of-dialog request (RFC 3261 §8.2.6.2)."""
    return None if request.to_tag else new_tag()


def pop_via(response: SipResponse) -> SipResponse | None:
    """A copy without the topmost Via value (ours), or None when no Via would be left."""
    fields = response.headers.fields()
    for index, (name, value) in enumerate(fields):
        if name.lower() not in ("via", "v"):
            continue
        rest = split_list(value)[1:]
        if rest:
            fields[index] = (name, ", ".join(rest))
        else:
            del fields[index]
        break
    out = SipResponse(response.status_code, response.reason, Headers(fields), response.body)
    return out if out.headers.get_all("Via") else None


def relayed(response: SipResponse, request: SipRequest) -> SipResponse | None:
    """A device's response as it goes back upstream: its Vias (ours only, see `forwarded`)
    replaced by those of the `request` it answers; None when that request had none."""
    vias = request.headers.get_all("Via")
    if not vias:
        return None
    fields = response.headers.fields()
    at = next((i for i, (name, _) in enumerate(fields) if name.lower() in ("via", "v")), 0)
    rest = [(name, value) for name, value in fields if name.lower() not in ("via", "v")]
    fields = rest[:at] + [("Via", via) for via in vias] + rest[at:]
    return SipResponse(response.status_code, response.reason, Headers(fields), response.body)


def forwarded(
    request: SipRequest,
    uri: str,
    via: str,
    *,
    record_route: str | None = None,
    drop: Iterable[str] = ("Proxy-Authorization", "Route"),
    add: Iterable[tuple[str, str]] = (),
) -> SipRequest:
    """The request as a proxy sends it on: new Request-URI, ONE Via (ours), Max-Forwards - 1,
    our Record-Route on top (when given), credentials and Routes for us removed, `add` appended.

    Devices see one Via, as behind RingCentral's edge, a B2BUA toward devices (it sends the
    caller 200 OK before the callee rings; media is anchored on its servers). The official Web
    Phone SDK keeps only the last of repeated headers and works there, but with the caller's
    Via below ours its responses would carry the caller's branch and be lost. The upstream
    Vias come back from the request (`relayed`).
    """
    dropped = {name.lower() for name in drop} | {"via", "v"}
    fields: list[tuple[str, str]] = [("Via", via)]
    if record_route:
        fields.append(("Record-Route", record_route))
    for name, value in request.headers:
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == "max-forwards":
            value = str(max(0, _int(value, 70) - 1))
        fields.append((name, value))
    if "Max-Forwards" not in request.headers:
        fields.insert(1, ("Max-Forwards", "69"))
    fields.extend(add)
    return SipRequest(request.method, uri, Headers(fields), request.body)


def _int(text: str, default: int) -> int:
    text = text.strip()
    # ASCII only: str.isdigit() also accepts "²", which int() refuses
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else default


cancel_for = build.cancel_for
ack_for = build.ack_for


def uri_user(uri: str) -> str | None:
    """The user part of a sip: URI (percent-escapes decoded), or None."""
    try:
        parsed = SipUri.parse(uri)
    except SipParseError:
        return None
    return None if parsed.user is None else percent_decode(parsed.user)


def content_type(message: SipRequest | SipResponse) -> str:
    """The media type, lowercase, without parameters ("" when there is none)."""
    value = message.headers.get("Content-Type") or ""
    return value.split(";", 1)[0].strip().lower()


_REQUEST_LINE = re.compile(r"([A-Za-z]+) +(\S+) +SIP/2\.0")
_SALVAGED = {
    "via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
    "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq",
}  # fmt: skip


def salvage_response(text: str, status: int, reason: str) -> SipResponse | None:
    """A response to a request too broken to parse, when enough of it is readable.

    Needs a request line (not ACK) and at least one Via; copies Via, From, To, Call-ID and
    CSeq lines as they are. Returns None when there is nothing to answer to.
    """
    lines = [line.rstrip("\r") for line in text.lstrip("\r\n").split("\n")]
    match = _REQUEST_LINE.fullmatch(lines[0].strip()) if lines else None
    if match is None or match.group(1).upper() == "ACK":
        return None
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            break
        name, colon, value = line.partition(":")
        canonical = _SALVAGED.get(name.strip().lower())
        if colon and canonical:
            fields.append((canonical, value.strip()))
    if not any(name == "Via" for name, _ in fields):
        return None
    fields.append(("Server", SERVER_NAME))
    try:
        return SipResponse(status, " ".join(reason.split()), Headers(fields))
    except ValueError:
        return None
