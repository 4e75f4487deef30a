"""Checks of what a program hands to `WebPhone.call()`: the callee and the custom headers. Pure.

Both end up in the INVITE, so they are checked where they enter, with errors that name the field
and say what to do, instead of failing later in the SIP layer (or at the server):

* the callee is a number or user name made of RFC 3261 §25.1 `user` characters (unreserved and
  user-unreserved, no escapes), or a whole ``sip:``/``sips:`` URI whose user part is the same;
  anything else (``📞900``, spaces, ``;``) is refused rather than sent as a URI the server
  cannot route;
* custom headers are RFC 3261 tokens for names, text without controls (but HT) for values,
  never one of the headers the stack itself writes (a second Call-ID or Via would make the
  request invalid),
  and bounded: `MAX_HEADERS` headers, `MAX_HEADER_VALUE_CHARS` per value and
  `MAX_HEADERS_CHARS` in all. A SIP server closes the whole WebSocket on a frame above its limit
  (Kamailio: 64 KiB by default, code 1009), which drops the registration with the call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from webphone.errors import CallError, SipParseError
from webphone.sip._grammar import is_token, show
from webphone.sip.address import SipUri

__all__ = [
    "MAX_CALLEE_CHARS",
    "MAX_HEADERS",
    "MAX_HEADERS_CHARS",
    "MAX_HEADER_VALUE_CHARS",
    "STACK_HEADERS",
    "check_callee",
    "check_headers",
]

MAX_CALLEE_CHARS = 256
MAX_HEADERS = 32
MAX_HEADER_VALUE_CHARS = 1024
#: all custom headers together: an INVITE with its SDP stays far below 64 KiB
MAX_HEADERS_CHARS = 8192

#: headers the stack writes itself (lowercase, compact forms included, RFC 3261 §7.3.3)
STACK_HEADERS = frozenset({
    "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "max-forwards", "contact", "m",
    "content-length", "l", "content-type", "c", "route", "record-route", "authorization",
    "proxy-authorization", "expires", "allow", "supported", "k", "user-agent",
})

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ), without ";" and "?"
# (they would start URI parameters or headers) and without escapes.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,/#]+")


def check_callee(callee: object) -> str:
    """`callee` itself if it is a number, user name or sip:/sips: URI that can be called;
    `CallError` naming what is wrong otherwise."""
    if not isinstance(callee, str):
        raise CallError(f"callee: expected a number or a sip: URI, got {type(callee).__name__}")
    if not callee:
        raise CallError("callee: empty; give a number such as 101 or a sip: URI")
    if len(callee) > MAX_CALLEE_CHARS:
        raise CallError(f"callee: {len(callee)} characters, at most {MAX_CALLEE_CHARS}")
    if callee.startswith(("sip:", "sips:")):
        try:
            uri = SipUri.parse(callee)
        except SipParseError as exc:
            raise CallError(f"callee: {exc}") from None
        if uri.user is not None and not _USER.fullmatch(uri.user):
            raise CallError(f"callee: the user part {show(uri.user)} of {show(callee)} has "
                            "characters a SIP user part cannot carry")
        return callee
    if not _USER.fullmatch(callee):
        raise CallError(f"callee: {show(callee)} is not a number or user name (digits, letters "
                        "and - _ . ! ~ * ' ( ) & = + $ , / #), nor a sip: URI")
    return callee


def check_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    """The custom headers as (name, value) pairs, checked (see the module docstring);
    `CallError` naming the header and what is wrong otherwise."""
    if headers is None:
        return []
    if isinstance(headers, str | bytes):
        raise CallError("headers: expected a mapping of name -> value or (name, value) pairs, "
                        f"got {type(headers).__name__}")
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, str]] = []
    total = 0
    for item in items:
        if len(out) == MAX_HEADERS:
            raise CallError(f"headers: more than {MAX_HEADERS} custom headers")
        name, value = _pair(item)
        _check_header(name, value)
        total += len(name) + len(value)
        if total > MAX_HEADERS_CHARS:
            raise CallError(f"headers: more than {MAX_HEADERS_CHARS} characters in all")
        out.append((name, value))
    return out


def _pair(item: object) -> tuple[str, str]:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise CallError(f"headers: expected (name, value) pairs, got {show(repr(item))}")
    name, value = item
    if not isinstance(name, str):
        raise CallError(f"headers: a header name must be a string, got {type(name).__name__}")
    if not isinstance(value, str):
        raise CallError(f"header {show(name)}: the value must be a string, got "
                        f"{type(value).__name__} (write str(value))")
    return name, value


def _check_header(name: str, value: str) -> None:
    if not is_token(name) or len(name) > 64:
        raise CallError(f"header {show(name)}: not a header name (1-64 letters, digits and "
                        "-.!%*_+`'~)")
    if name.lower() in STACK_HEADERS:
        raise CallError(f"header {name!r}: written by webphone itself; it cannot be set")
    if _CONTROL.search(value):  # RFC 3261 §25.1: TEXT-UTF8 has no controls but HT
        raise CallError(f"header {name!r}: the value contains control characters (CR, LF, "
                        "NUL, ...)")
    if len(value) > MAX_HEADER_VALUE_CHARS:
        raise CallError(f"header {name!r}: the value has {len(value)} characters, at most "
                        f"{MAX_HEADER_VALUE_CHARS}")
