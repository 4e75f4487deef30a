"""SIP messages: `Headers`, `SipRequest`, `SipResponse`, and `parse_message` (one per frame).

Why not the `sipmessage` package (0.7.1, evaluated for this layer): it is typed and its
fuzzing was clean (about 20,000 hypothesis inputs to Address/Via/URI/CSeq/Parameters/Message
raised only ValueError; no slow regexes on 6,000-character inputs), but it mangles exactly the
header that matters to us: a quoted parameter such as `+sip.instance="<urn:uuid:...>"` keeps
its quotes inside the value and is written back percent-encoded
(`%2Bsip.instance=%22%3Curn%3A...`), which breaks RFC 5626 registrations. It also rejects input
we must read: `urn:` URIs, hosts with `_`, a comma-joined Via whose host is one label
(`SIP/2.0/UDP h1;branch=a, SIP/2.0/TCP h2` fails, `h1.com` works); its message parser refuses
bare-LF frames, fails on folded lines with "not enough values to unpack", and rewrites compact
names (`v:` comes back as `Via:`). Its errors are one bare `ValueError("Address is not valid")`
with no position, and its frozen dataclasses with a read-only `Parameters` mapping do not match
the mutable API the rest of webphone is written against. So the grammar is hand-written
(`_grammar.py`, `address.py`, about 550 lines).

Parsing is lenient where real servers are sloppy (bare LF line ends, leading CRLF keepalives,
folded lines, `Via :x`, a missing Content-Length) and strict where sloppiness would be
ambiguous (two Content-Length headers, a Content-Length larger than the frame). Every failure
is a `SipParseError` saying what and where; no other exception escapes for any input.

Invariants: header order and wire names are kept, so `parse(bytes(m)) == m` for a message whose
Content-Length matches its body, and `parse(bytes(parse(x))) == parse(x)` for any `x` that parses.
To make the second hold, a parsed message always carries a canonical Content-Length equal to
`len(body)`: it is normalised in place, or appended when the frame had none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from webphone.errors import SipParseError
from webphone.sip._grammar import has_bare_nul, is_digits, is_token, show, split_list
from webphone.sip.address import Address, CSeq, Via

__all__ = ["Headers", "SipMessage", "SipRequest", "SipResponse", "parse_message"]

COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose comma-separated values are separate elements (RFC 3261 §7.3.1 and extensions).
# Headers not listed here (WWW-Authenticate, Authorization, Date, unknown ones, ...) are never
# split, because a comma inside them is part of one value.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "path", "service-route", "content-encoding", "content-language",
        "in-reply-to", "alert-info", "call-info", "error-info", "warning", "accept-contact",
        "reject-contact", "request-disposition", "p-asserted-identity",
        "p-preferred-identity", "p-associated-uri", "reason", "security-client",
        "security-server", "security-verify", "history-info",
    }
)  # fmt: skip



#: wire name -> lookup key, for the names seen so far: every header lookup compares the key of
#: every field (~45 per message), and a handful of spellings make up nearly all of them.
_KEYS: dict[str, str] = {}
#: bound on `_KEYS`: names a peer makes up are computed each time once it is full
_KEYS_MAX = 1024


def _key(name: str) -> str:
    """Lookup key of a header name: lowercase, compact form expanded."""
    key = _KEYS.get(name)
    if key is None:
        lower = name.lower()
        key = COMPACT_FORMS.get(lower, lower)
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[name] = key
    return key


class Headers:
    """An ordered, multi-valued, case-insensitive list of header fields.

    Fields keep their wire names and order. Lookups ignore case and treat compact forms as
    their long names (`v` is `Via`). `get_all` splits list-valued headers on commas.
    """

    def __init__(self, fields: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        """Build from `(name, value)` pairs or a mapping; raise ValueError on a bad field."""
        self._fields: list[tuple[str, str]] = []
        pairs = fields.items() if isinstance(fields, Mapping) else fields
        for name, value in pairs:
            self.add(name, value)

    @classmethod
    def _trusted(cls, fields: list[tuple[str, str]]) -> Headers:
        """Build without validation, from fields the parser already checked."""
        headers = cls()
        headers._fields = fields
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first field called `name`, or `default`."""
        key = _key(name)
        for field_name, value in self._fields:
            if _key(field_name) == key:
                return value
        return default

    def __getitem__(self, name: str) -> str:
        """Value of the first field called `name`; KeyError if there is none."""
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get_all(self, name: str) -> list[str]:
        """Every value of `name` in order; comma-joined values of list headers are split."""
        key = _key(name)
        values: list[str] = []
        for field_name, value in self._fields:
            if _key(field_name) == key:
                if key in LIST_HEADERS:
                    values.extend(split_list(value))
                else:
                    values.append(value)
        return values

    def add(self, name: str, value: str) -> None:
        """Append a field. Raise ValueError for a name that is not a token or a value with
        CR, LF or NUL (which would let a value inject header lines)."""
        _check_field(name, value)
        self._fields.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every field called `name` with one `name: value`, at the first one's place
        (appended if there was none). The new field is written with the `name` given here."""
        _check_field(name, value)
        key = _key(name)
        out: list[tuple[str, str]] = []
        placed = False
        for field_name, old in self._fields:
            if _key(field_name) != key:
                out.append((field_name, old))
            elif not placed:
                out.append((name, value))
                placed = True
        if not placed:
            out.append((name, value))
        self._fields = out

    def remove(self, name: str) -> int:
        """Remove every field called `name`; return how many were removed."""
        key = _key(name)
        kept = [(n, v) for n, v in self._fields if _key(n) != key]
        removed = len(self._fields) - len(kept)
        self._fields = kept
        return removed

    def __contains__(self, name: object) -> bool:
        """True if a field called `name` exists (any case, compact or long form)."""
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        """Number of fields (not of comma-separated values)."""
        return len(self._fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """`(wire name, value)` pairs in order."""
        return iter(list(self._fields))

    def fields(self) -> list[tuple[str, str]]:
        """A copy of the `(wire name, value)` pairs in order."""
        return list(self._fields)

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers._trusted(list(self._fields))

    def __eq__(self, other: object) -> bool:
        """Equal when the same fields, with the same wire names, are in the same order."""
        if not isinstance(other, Headers):
            return NotImplemented
        return self._fields == other._fields

    def __repr__(self) -> str:
        """`Headers([('Via', '...'), ...])`."""
        return f"Headers({self._fields!r})"


def _check_field(name: str, value: str) -> None:
    if not is_token(name):
        raise ValueError(f"invalid header name {show(name)}: must be a token")
    if "\r" in value or "\n" in value or has_bare_nul(value):
        raise ValueError(f"value of header {name!r} contains CR, LF or NUL")


class _MessageBase:
    """What requests and responses share: serialization and the common header properties."""

    headers: Headers
    body: bytes

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        """Wire form. Content-Length is always `len(body)`: replaced in place, else appended."""
        lines = [self._start_line()]
        length = str(len(self.body))
        has_length = False
        for name, value in self.headers:
            if _key(name) == "content-length":
                if has_length:
                    continue  # a stale duplicate: one Content-Length only
                value, has_length = length, True
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {length}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8") + self.body

    def __str__(self) -> str:
        """The wire form decoded as UTF-8 (undecodable body bytes replaced), for logs."""
        return bytes(self).decode("utf-8", errors="replace")

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"message has no {name} header")
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        value = self._required("Call-ID")
        if not value:
            raise SipParseError("Call-ID header is empty")
        return value

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        return CSeq.parse(self._required("CSeq"))

    @property
    def top_via(self) -> Via:
        """The first (topmost) Via value, parsed."""
        values = self.headers.get_all("Via")
        if not values:
            raise SipParseError("message has no Via header")
        return Via.parse(values[0])

    @property
    def branch(self) -> str | None:
        """The top Via's branch parameter, or None if it has none."""
        return self.top_via.branch

    @property
    def from_address(self) -> Address:
        """The From header, parsed."""
        return Address.parse(self._required("From"))

    @property
    def to_address(self) -> Address:
        """The To header, parsed."""
        return Address.parse(self._required("To"))

    @property
    def from_tag(self) -> str | None:
        """The From tag, or None."""
        return self.from_address.tag

    @property
    def to_tag(self) -> str | None:
        """The To tag, or None (a request outside a dialog)."""
        return self.to_address.tag


@dataclass(eq=True)
class SipRequest(_MessageBase):
    """A SIP request: `METHOD uri SIP/2.0`, headers, body."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def copy(self) -> SipRequest:
        """A copy with its own Headers."""
        return SipRequest(self.method, self.uri, self.headers.copy(), self.body)


@dataclass(eq=True)
class SipResponse(_MessageBase):
    """A SIP response: `SIP/2.0 code reason`, headers, body."""

    status_code: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status_code} {self.reason}"

    def copy(self) -> SipResponse:
        """A copy with its own Headers."""
        return SipResponse(self.status_code, self.reason, self.headers.copy(), self.body)

    @property
    def is_provisional(self) -> bool:
        """1xx."""
        return 100 <= self.status_code < 200

    @property
    def is_success(self) -> bool:
        """2xx."""
        return 200 <= self.status_code < 300

    @property
    def is_final(self) -> bool:
        """2xx-6xx: ends the client transaction."""
        return self.status_code >= 200


SipMessage: TypeAlias = SipRequest | SipResponse

_STATUS_RE = re.compile(r"([^ \t]+)[ \t]+([^ \t]+)(?:[ \t]+(.*))?")
_REQUEST_RE = re.compile(r"([^ \t]+)[ \t]+([^ \t]+)[ \t]+([^ \t]+)")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^ \t]+")


def parse_message(data: bytes | str) -> SipMessage:
    """Parse one SIP message (one WebSocket frame); raise SipParseError saying what and where."""
    full = _to_bytes(data)
    raw = full.lstrip(b"\r\n")
    if not raw:
        raise SipParseError("empty message (nothing but line breaks)")
    skipped = len(full) - len(raw)  # so offsets in errors point into the frame as received
    head, body = _split_head(raw)
    lines = _decode_lines(head, skipped)
    fields = _parse_fields(lines[1:])
    body = _apply_content_length(fields, body, len(full) - len(body))
    return _build(lines[0], Headers._trusted(fields), body)


def _to_bytes(data: bytes | str) -> bytes:
    if isinstance(data, bytes):
        return data
    try:
        return data.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SipParseError(f"message text cannot be encoded as UTF-8 at index {e.start}") from None


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line (CRLF or bare LF); no empty line means no body."""
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end == -1:
            return raw, b""
        if raw[pos:end] in (b"", b"\r"):
            return raw[:pos], raw[end + 1 :]
        pos = end + 1


def _decode_lines(head: bytes, skipped: int) -> list[str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = head.count(b"\n", 0, e.start) + 1
        raise SipParseError(
            f"line {line_no}: header section is not valid UTF-8 at byte offset {e.start + skipped}"
        ) from None
    lines = text.split("\n")  # not splitlines(): it also splits on \x0b, \x1c, \u2028, ...
    if lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    for number, line in enumerate(lines, start=1):
        # RFC 3261 §25.1: a NUL may only appear escaped in a quoted string (RFC 4475 §3.1.1.3)
        if "\r" in line or has_bare_nul(line):
            raise SipParseError(f"line {number}: stray CR or NUL character")
    return lines


def _parse_fields(lines: list[str]) -> list[tuple[str, str]]:
    parts: list[tuple[str, list[str]]] = []  # pieces joined once at the end: no quadratic +=
    for number, line in enumerate(lines, start=2):
        if line[:1] in (" ", "\t"):  # folded continuation of the previous header
            if not parts:
                raise SipParseError(f"line {number}: continuation line before any header")
            parts[-1][1].append(line.strip(" \t"))
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"line {number}: header line without ':': {show(line)}")
        name = name.rstrip(" \t")
        if not is_token(name):
            raise SipParseError(f"line {number}: invalid header name {show(name)}")
        parts.append((name, [value.strip(" \t")]))
    return [(name, " ".join(p for p in pieces if p)) for name, pieces in parts]


def _apply_content_length(fields: list[tuple[str, str]], body: bytes, offset: int) -> bytes:
    """Check Content-Length against the body and make it canonical; append it if missing."""
    found = [i for i, (name, _) in enumerate(fields) if _key(name) == "content-length"]
    if not found:
        fields.append(("Content-Length", str(len(body))))
        return body
    if len(found) > 1:
        raise SipParseError(f"{len(found)} Content-Length headers; exactly one is allowed")
    name, value = fields[found[0]]
    if not is_digits(value):
        raise SipParseError(f"Content-Length {show(value)} is not a non-negative integer")
    if len(value) > 12 or int(value) > len(body):
        raise SipParseError(
            f"Content-Length {show(value)} is larger than the {len(body)} body bytes "
            f"available after offset {offset}"
        )
    body = body[: int(value)]
    fields[found[0]] = (name, str(len(body)))
    return body


def _build(start: str, headers: Headers, body: bytes) -> SipMessage:
    if start[:4].upper() == "SIP/":
        return _build_response(start, headers, body)
    m = _REQUEST_RE.fullmatch(start)
    if m is None:
        raise SipParseError(f"line 1: not a request or status line: {show(start)}")
    method, uri, version = m.groups()
    if not is_token(method):
        raise SipParseError(f"line 1: invalid method {show(method)}")
    if not _URI_RE.fullmatch(uri):
        raise SipParseError(f"line 1: Request-URI {show(uri)} has no scheme")
    _check_version(version)
    return SipRequest(method, uri, headers, body)


def _build_response(start: str, headers: Headers, body: bytes) -> SipResponse:
    m = _STATUS_RE.fullmatch(start)
    if m is None:
        raise SipParseError(f"line 1: malformed status line {show(start)}")
    version, code, reason = m.groups()
    _check_version(version)
    if not is_digits(code) or len(code) != 3 or not 100 <= int(code) <= 699:
        raise SipParseError(f"line 1: status code {show(code)} is not 100-699")
    return SipResponse(int(code), (reason or "").strip(" \t"), headers, body)


def _check_version(version: str) -> None:
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"line 1: unsupported protocol version {show(version)}")
