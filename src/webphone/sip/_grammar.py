"""Low-level SIP text helpers shared by `address` and `message`: tokens, quoting, lists, params.

Everything here is pure string work. Parse helpers raise `SipParseError` with what was wrong and
where; they never raise anything else, whatever the input.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from webphone.errors import SipParseError

# RFC 3261 §25.1 token characters.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Display names written without quotes: tokens separated by single spaces.
_TOKEN_WORDS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?: [A-Za-z0-9\-.!%*_+`'~]+)*")
_DIGITS_RE = re.compile(r"[0-9]+")  # str.isdigit() accepts "²" and other digits int() rejects
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?")  # "_" seen in the wild

# Characters that end or break an unquoted parameter name/value (a value holding any of them must
# be written as a quoted string). "?" is here because it starts the header part of a URI.
_PARAM_STOP = frozenset(' \t;,"<>?\r\n\0')
_PARAM_NAME_STOP = _PARAM_STOP | {"="}
_FORBIDDEN_IN_TEXT = ("\r", "\n", "\0")
# RFC 3261 §25.1: quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F): NUL may be escaped, CR and LF
# never (RFC 4475 §3.1.1.3 "intmeth" carries an escaped NUL in a display name).
_NOT_ESCAPABLE = ("\r", "\n")


def show(text: str, limit: int = 60) -> str:
    """`repr` of `text`, cut to `limit` characters, for error messages."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def is_token(text: str) -> bool:
    """True if `text` is a non-empty RFC 3261 token (method names, header names, ...)."""
    return _TOKEN_RE.fullmatch(text) is not None


def is_token_words(text: str) -> bool:
    """True if `text` is tokens separated by single spaces (a display name needing no quotes)."""
    return _TOKEN_WORDS_RE.fullmatch(text) is not None


def is_digits(text: str) -> bool:
    """True if `text` is one or more ASCII digits."""
    return _DIGITS_RE.fullmatch(text) is not None


def quote(value: str) -> str:
    """Return `value` as a SIP quoted-string: wrapped in double quotes, `"` and `\\` escaped.

    NUL is written as a quoted-pair (RFC 3261 §25.1). Raises ValueError if `value` contains CR or
    LF, which no quoted-string can carry (they would let a display name inject a header line).
    """
    if any(c in value for c in _NOT_ESCAPABLE):
        raise ValueError(f"cannot quote {show(value)}: it contains CR or LF")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\0", "\\\0")
    return '"' + escaped + '"'


def unquote(value: str) -> str:
    """Return the content of quoted-string `value` with escapes resolved.

    A value that does not start with `"` is returned unchanged, so token-or-quoted parameter
    values can be passed through without checking first. Raises SipParseError for an
    unterminated string, text after the closing quote, or CR/LF/NUL inside.
    """
    if not value.startswith('"'):
        return value
    out: list[str] = []
    i, n = 1, len(value)
    while i < n:
        c = value[i]
        if c == "\\" and i + 1 < n and value[i + 1] not in _NOT_ESCAPABLE:
            out.append(value[i + 1])
            i += 2
            continue
        if c == '"':
            if i != n - 1:
                raise SipParseError(f"text after the closing quote in {show(value)}")
            return "".join(out)
        if c in _FORBIDDEN_IN_TEXT or c == "\\":
            raise SipParseError(f"bad character {c!r} at offset {i} in quoted string {show(value)}")
        out.append(c)
        i += 1
    raise SipParseError(f"unterminated quoted string {show(value)}")


def has_bare_nul(text: str) -> bool:
    """True if `text` holds a NUL that is not the escaped character of a quoted-pair inside a
    quoted string (RFC 3261 §25.1 allows only that one). One linear pass."""
    if "\0" not in text:
        return False
    in_quote = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\0":
            return True
        if in_quote and c == "\\":
            i += 1  # the escaped character, NUL included
        elif c == '"':
            in_quote = not in_quote
        i += 1
    return False


def split_top(text: str, sep: str, *, angle: bool = True) -> list[str]:
    """Split `text` on `sep` where it is outside "quoted strings" (and outside <...> if `angle`).

    Never raises: an unterminated quote or `<` swallows the rest of the text, so the malformed
    piece comes out whole and fails in whichever parser looks at it next.

    Every SIP header goes through here; text without quotes or angle brackets (most of it) is
    a plain `str.split`, and other text is scanned from one special character to the next
    (a loop over every character cost ~0.25 us each: ~20 us of a Via).
    """
    if '"' not in text and (not angle or "<" not in text):
        return text.split(sep)
    parts: list[str] = []
    start = skip = 0
    in_quote = in_angle = False
    for match in _specials(sep, angle).finditer(text):
        i = match.start()
        if i < skip:
            continue  # the character escaped by a backslash inside a quoted string
        c = match.group()
        if in_quote:
            if c == "\\":
                skip = i + 2
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == sep and not in_angle:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@functools.cache
def _specials(sep: str, angle: bool) -> re.Pattern[str]:
    """The characters `split_top` acts on (a handful of `sep`s exist: the cache stays small)."""
    return re.compile("[" + re.escape('"\\' + sep + ("<>" if angle else "")) + "]")


def find_top(text: str, char: str) -> int:
    """Index of the first `char` outside quoted strings, or -1."""
    in_quote = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == char:
            return i
        i += 1
    return -1


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value into its elements, stripped of SP/HT.

    Commas inside "quoted strings" (with \\-escapes) and inside <...> do not split. Empty
    elements ("a, , b") are dropped. Never raises.
    """
    items = (part.strip(" \t") for part in split_top(value, ","))
    return [item for item in items if item]


def parse_params(text: str) -> dict[str, str | None]:
    """Parse `;name=value;flag;q="x y"` into an ordered dict.

    The leading `;` is optional and whitespace around `;` and `=` is ignored. Names and values
    are kept exactly as written: names keep their case (look up lowercase names with
    `get_param`, which is case-insensitive), and quoted values keep their quotes, so
    `+sip.instance="<urn:uuid:...>"` is written back byte for byte (`unquote()` gives the
    content). A flag without `=` maps to None. A repeated name keeps its first position and last
    value. Empty segments (`;;`) are skipped.
    """
    body = text.strip(" \t")
    if body.startswith(";"):
        body = body[1:]
    params: dict[str, str | None] = {}
    for segment in split_top(body, ";", angle=False):
        segment = segment.strip(" \t")
        if segment:
            name, value = _parse_param(segment)
            params[name] = value
    return params


def _parse_param(segment: str) -> tuple[str, str | None]:
    name, eq, value = segment.partition("=")
    name = name.strip(" \t")
    if not name or not _PARAM_NAME_STOP.isdisjoint(name):
        raise SipParseError(f"invalid parameter name {show(name)} in {show(segment)}")
    if not eq:
        return name, None
    value = value.strip(" \t")
    if value.startswith('"'):
        unquote(value)  # validates: complete string, nothing after it
    elif not _PARAM_STOP.isdisjoint(value):
        raise SipParseError(f"invalid value {show(value)} for parameter {name!r}")
    return name, value


def format_params(params: dict[str, str | None]) -> str:
    """Write params as `;name=value;flag`. Values are written as stored; a value that could not
    be read back unquoted (spaces, `<`, `;`, ...) is quoted, so setting
    `params["+sip.instance"] = "<urn:uuid:...>"` yields a valid header."""
    out: list[str] = []
    for name, value in params.items():
        if value is None:
            out.append(f";{name}")
        elif _needs_quotes(value):
            out.append(f";{name}={quote(value)}")
        else:
            out.append(f";{name}={value}")
    return "".join(out)


def _needs_quotes(value: str) -> bool:
    if value.startswith('"'):
        try:
            unquote(value)
        except SipParseError:
            return True
        return False
    return not _PARAM_STOP.isdisjoint(value)


def get_param(params: dict[str, str | None], name: str) -> str | None:
    """Value of parameter `name`, matched case-insensitively; None if absent or a flag."""
    if name in params:
        return params[name]
    lower = name.lower()
    for key, value in params.items():
        if key.lower() == lower:
            return value
    return None


def set_param(params: dict[str, str | None], name: str, value: str | None) -> dict[str, str | None]:
    """Copy of `params` with `name` (any case) set to `value`, in the old position if present."""
    lower = name.lower()
    out: dict[str, str | None] = {}
    done = False
    for key, old in params.items():
        if key.lower() != lower:
            out[key] = old
        elif not done:
            out[name] = value
            done = True
    if not done:
        out[name] = value
    return out


def parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    """Parse `host[:port]`; IPv6 references come as `[addr]` and are returned without brackets."""
    text = text.strip(" \t")
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise SipParseError(f"{what}: unterminated IPv6 reference in {show(text)}")
        host, rest = text[1:end], text[end + 1 :]
        _check_ipv6(host, what)
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        host = host.rstrip(" \t")
        if not _HOSTNAME_RE.fullmatch(host):
            raise SipParseError(f"{what}: invalid host {show(host)}")
    rest = rest.strip(" \t")
    if not rest:
        return host, None
    if not rest.startswith(":"):
        raise SipParseError(f"{what}: unexpected {show(rest)} after host {host!r}")
    return host, parse_port(rest[1:].strip(" \t"), what)


def _check_ipv6(host: str, what: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise SipParseError(f"{what}: invalid IPv6 address {show(host)}") from None


def parse_port(text: str, what: str) -> int:
    """Parse a port number 0-65535."""
    if not is_digits(text) or len(text) > 5 or int(text) > 65535:
        raise SipParseError(f"{what}: invalid port {show(text)}")
    return int(text)


def format_host(host: str) -> str:
    """Host as written in a URI or Via: IPv6 addresses go in brackets."""
    return f"[{host}]" if ":" in host else host
