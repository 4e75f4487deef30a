"""SIP header grammar: URIs, name-addr addresses, Via, CSeq, and list/param helpers.

Pure string work. Every `parse` raises `SipParseError` (never anything else) naming what was
wrong. Parameters keep their names and values exactly as written (quoted values keep their
quotes), so `str(X.parse(s))` reproduces the parameters byte for byte; see `parse_params`.
Why this is hand-written rather than built on the `sipmessage` package: see `message.py`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from webphone.errors import SipParseError
from webphone.sip._grammar import (
    find_top,
    format_host,
    format_params,
    get_param,
    is_token,
    is_token_words,
    parse_hostport,
    parse_params,
    quote,
    set_param,
    show,
    split_list,
    unquote,
)

__all__ = [
    "Address",
    "CSeq",
    "SipUri",
    "Via",
    "parse_params",
    "quote",
    "split_list",
    "unquote",
]

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_BAD_URI_CHARS = frozenset(' \t\r\n\0<>"')
_VIA_RE = re.compile(
    r"[ \t]*([^/ \t]+)[ \t]*/[ \t]*([^/ \t]+)[ \t]*/[ \t]*([^ \t;]+)[ \t]+(.*)", re.DOTALL
)
_CSEQ_RE = re.compile(r"[ \t]*([0-9]+)[ \t]+([^ \t]+)[ \t]*")
_MAX_CSEQ = 2**32 - 1


@dataclass
class SipUri:
    """A `sip:`/`sips:` URI split into parts, or any other URI (`tel:`, `urn:`, ...) kept opaque.

    `user` and `password` are kept percent-escaped as written. `host` holds IPv6 addresses
    without brackets (`str()` adds them). For other schemes only `scheme` and `opaque` (all the
    text after `scheme:`) are set. The scheme is stored lowercase.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI such as `sip:alice@example.com:5060;transport=ws?Subject=hi`."""
        text = text.strip(" \t")
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME_RE.fullmatch(scheme):
            raise SipParseError(f"URI {show(text)} has no scheme")
        if not rest:
            raise SipParseError(f"URI {show(text)} is empty after the scheme")
        if any(c in _BAD_URI_CHARS for c in rest):
            raise SipParseError(f"URI {show(text)} contains whitespace, quotes or <>")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, opaque=rest)
        return cls._parse_sip(scheme, rest, text)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str, text: str) -> SipUri:
        what = f"URI {show(text)}"
        user = password = None
        at, qmark = rest.find("@"), rest.find("?")
        if at != -1 and (qmark == -1 or at < qmark):  # an "@" after "?" is inside a header
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, colon, secret = userinfo.partition(":")
            password = secret if colon else None
            if not user:
                raise SipParseError(f"{what}: empty user part before '@'")
        rest, qmark_found, header_text = rest.partition("?")
        hostport, _, param_text = rest.partition(";")
        host, port = parse_hostport(hostport, what)
        params = parse_params(param_text)
        headers = _parse_uri_headers(header_text, what) if qmark_found else {}
        return cls(scheme, user, password, host, port, params, headers)

    def __str__(self) -> str:
        """The URI as text; IPv6 hosts in brackets."""
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.opaque or ''}"
        text = f"{self.scheme}:"
        if self.user is not None:
            text += self.user
            if self.password is not None:
                text += f":{self.password}"
            text += "@"
        text += format_host(self.host)
        if self.port is not None:
            text += f":{self.port}"
        text += format_params(self.params)
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return text

    def with_params(self, **params: str | None) -> SipUri:
        """Copy with URI parameters set (None = a flag such as `;lr`). Names are Python
        identifiers here; for others (`+sip.instance`) use `dataclasses.replace`."""
        merged = dict(self.params)
        for name, value in params.items():
            merged = set_param(merged, name, value)
        return dataclasses.replace(self, params=merged)


def _parse_uri_headers(text: str, what: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if not name:
            raise SipParseError(f"{what}: URI header with no name in {show(part)}")
        headers[name] = value
    return headers


@dataclass
class Address:
    """A name-addr (`"Alice" <sip:a@x>;tag=1`) or addr-spec (`sip:a@x;tag=1`) header value.

    As RFC 3261 §20.10 says, with an addr-spec the `;params` after the URI are header
    parameters, not URI parameters. `str()` always writes the `<uri>` form; the display name
    is quoted unless it is plain tokens.
    """

    uri: SipUri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse one address (use `split_list` first for a multi-valued Contact/Route)."""
        stripped = text.strip(" \t")
        if not stripped:
            raise SipParseError("empty address")
        if stripped == "*":
            raise SipParseError("'*' (the Contact wildcard) is not an address")
        lt = find_top(stripped, "<")
        if lt == -1:
            return cls._parse_addr_spec(stripped)
        display = _parse_display_name(stripped[:lt], stripped)
        gt = stripped.find(">", lt)
        if gt == -1:
            raise SipParseError(f"address {show(stripped)} has '<' without '>'")
        uri = SipUri.parse(stripped[lt + 1 : gt])
        rest = stripped[gt + 1 :].strip(" \t")
        if rest and not rest.startswith(";"):
            raise SipParseError(f"unexpected {show(rest)} after '>' in address {show(stripped)}")
        return cls(uri, display, parse_params(rest))

    @classmethod
    def _parse_addr_spec(cls, text: str) -> Address:
        uri_text, _, param_text = text.partition(";")
        return cls(SipUri.parse(uri_text), None, parse_params(param_text))

    def __str__(self) -> str:
        """`"Name" <uri>;params` (or `<uri>;params` with no display name)."""
        prefix = ""
        if self.display_name is not None:
            name = self.display_name
            prefix = (name if is_token_words(name) else quote(name)) + " "
        return f"{prefix}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The `tag` parameter (From/To), or None."""
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> Address:
        """Copy with the `tag` parameter set to `tag`."""
        return dataclasses.replace(self, params=set_param(self.params, "tag", tag))


def _parse_display_name(part: str, whole: str) -> str | None:
    part = part.strip(" \t")
    if not part:
        return None
    if part.startswith('"'):
        return unquote(part)
    if '"' in part or any(c in part for c in "\r\n\0"):
        raise SipParseError(f"malformed display name {show(part)} in address {show(whole)}")
    return part


@dataclass
class Via:
    """One Via header value: `SIP/2.0/WSS host:port;branch=z9hG4bK...;rport`.

    `host` holds IPv6 addresses without brackets; `protocol` is name/version (`SIP/2.0`).
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse ONE Via value (split a comma-joined header with `split_list` first)."""
        m = _VIA_RE.fullmatch(text)
        if m is None:
            raise SipParseError(f"invalid Via {show(text)}: expected 'SIP/2.0/<transport> <host>'")
        name, version, transport, rest = m.groups()
        if not (is_token(name) and is_token(version) and is_token(transport)):
            raise SipParseError(f"invalid sent-protocol in Via {show(text)}")
        sent_by, _, param_text = rest.partition(";")
        host, port = parse_hostport(sent_by, f"Via {show(text)}")
        return cls(transport, host, port, parse_params(param_text), f"{name}/{version}")

    def __str__(self) -> str:
        """`SIP/2.0/WSS host;branch=...;rport`."""
        port = f":{self.port}" if self.port is not None else ""
        host = format_host(self.host)
        return f"{self.protocol}/{self.transport} {host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """The `branch` parameter (the transaction id), or None."""
        return get_param(self.params, "branch")


@dataclass
class CSeq:
    """A CSeq value: sequence number and method, `12 INVITE`."""

    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse `<number> <METHOD>`; the number must fit in 32 bits."""
        m = _CSEQ_RE.fullmatch(text)
        if m is None:
            raise SipParseError(f"invalid CSeq {show(text)}: expected '<number> <METHOD>'")
        digits, method = m.groups()
        if len(digits) > 10 or int(digits) > _MAX_CSEQ:
            raise SipParseError(f"CSeq number {show(digits)} is out of range")
        if not is_token(method):
            raise SipParseError(f"invalid method {show(method)} in CSeq")
        return cls(int(digits), method)

    def __str__(self) -> str:
        """`12 INVITE`."""
        return f"{self.number} {self.method}"
