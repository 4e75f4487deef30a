"""Property tests for the SIP message layer (hypothesis).

1. No input, bytes or text, raises anything but SipParseError from any parser.
2. Generated valid messages round-trip: parse(bytes(m)) == m, also through sloppy-but-legal wire
   forms (bare LF, folding, odd spacing, keepalive CRLFs); and for anything that parses at all,
   parse(bytes(parse(x))) == parse(x).
3. split_list / Address / SipUri / Via / CSeq / quote round-trips.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from webphone.errors import SipParseError
from webphone.sip import (
    Address,
    CSeq,
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    parse_message,
    parse_params,
    quote,
    split_list,
    unquote,
)
from webphone.sip._grammar import split_top

# ~300 examples keeps the file at a few seconds; WEBPHONE_SIP_EXAMPLES=20000 for a deep run.
FAST = settings(
    max_examples=int(os.environ.get("WEBPHONE_SIP_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Whole generated messages are costly to draw and each carries several headers: fewer suffice.
MESSAGES = settings(FAST, max_examples=max(1, FAST.max_examples * 2 // 3))

TOKEN_ALPHABET = string.ascii_letters + string.digits + "-.!%*_+`'~"
COMPACT = list("imelcfsktvorbuxajdyn")

tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
# Any text that can sit in a header value: no CR, LF, NUL, no surrogates (not UTF-8 encodable).
line_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\0"), max_size=30
)
header_values = line_text.map(lambda s: s.strip(" \t"))


# --- URIs, addresses, Via -------------------------------------------------------------------

hostnames = st.lists(
    st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=8),
    min_size=1,
    max_size=4,
).map(".".join)
hosts = st.one_of(
    hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
ports = st.none() | st.integers(0, 65535)
escaped = st.integers(0, 255).map(lambda b: f"%{b:02X}")
users = st.lists(
    st.text(string.ascii_letters + string.digits + "-_.!~*'()&=+$,;/", min_size=1, max_size=1)
    | escaped,
    min_size=1,
    max_size=10,
).map("".join)
uri_param_values = st.text(
    string.ascii_letters + string.digits + "-_.!~*'()[]/:&+$", min_size=1, max_size=10
)
uri_params = st.dictionaries(tokens, st.none() | uri_param_values, max_size=3)
uri_headers = st.dictionaries(
    st.text(string.ascii_letters, min_size=1, max_size=6),
    st.text(string.ascii_letters + string.digits + "-_.%", max_size=8),
    max_size=2,
)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.none() | users)
    password = draw(st.none() | st.text(string.ascii_letters, min_size=1)) if user else None
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=password,
        host=draw(hosts),
        port=draw(ports),
        params=draw(uri_params),
        headers=draw(uri_headers),
    )


opaque_uris = st.one_of(
    st.text(string.digits + "-", min_size=1, max_size=12).map(
        lambda d: SipUri("tel", opaque="+" + d)
    ),
    st.uuids().map(lambda u: SipUri("urn", opaque=f"uuid:{u}")),
)
uris = st.one_of(sip_uris(), opaque_uris)

# Header-parameter values in the forms parse_params stores: a bare token/host or a quoted string.
header_param_values = st.one_of(
    st.none(), tokens, st.ip_addresses(v=6).map(str), line_text.map(quote)
)
header_params = st.dictionaries(tokens, header_param_values, max_size=4)

addresses = st.builds(
    Address,
    uri=uris,
    display_name=st.none() | line_text | st.from_regex(r"[A-Za-z]+( [A-Za-z]+)*", fullmatch=True),
    params=header_params,
)

vias = st.builds(
    Via,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "WS", "WSS"]) | tokens,
    host=hosts,
    port=ports,
    params=st.dictionaries(tokens, st.none() | tokens, max_size=4),
)


# --- messages -----------------------------------------------------------------------------

header_names = st.one_of(
    st.sampled_from(["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Route", "X-Rc-Thing"]),
    st.sampled_from(COMPACT).filter(lambda c: c != "l"),
    tokens,
).filter(lambda n: n.lower() not in ("content-length", "l"))

structured_values: dict[str, st.SearchStrategy[str]] = {
    "via": vias.map(str),
    "from": addresses.map(str),
    "contact": st.lists(addresses.map(str), min_size=1, max_size=2).map(", ".join),
    "cseq": st.builds(CSeq, st.integers(0, 2**32 - 1), tokens).map(str),
}


@st.composite
def header_fields(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(header_names)
    key = {"v": "via", "f": "from", "m": "contact"}.get(name.lower(), name.lower())
    value = draw(structured_values.get(key, header_values))
    return name, value


@st.composite
def messages(draw: st.DrawFn) -> SipMessage:
    """A valid message whose Content-Length (long or compact) matches its body."""
    fields = draw(st.lists(header_fields(), max_size=6))
    body = draw(st.binary(max_size=40) | line_text.map(str.encode))
    position = draw(st.integers(0, len(fields)))
    fields.insert(
        position, (draw(st.sampled_from(["Content-Length", "l", "content-length"])), str(len(body)))
    )
    headers = Headers(fields)
    if draw(st.booleans()):
        return SipRequest(draw(tokens), str(draw(uris)), headers, body)
    reason = draw(header_values)
    return SipResponse(draw(st.integers(100, 699)), reason, headers, body)


def _fold(value: str, draw: st.DrawFn) -> str:
    """Fold `value` at single spaces between non-blank characters (joined back with one space)."""
    spots = [
        i
        for i in range(1, len(value) - 1)
        if value[i] == " " and value[i - 1] not in " \t" and value[i + 1] not in " \t"
    ]
    if not spots:
        return value
    i = draw(st.sampled_from(spots))
    return value[:i] + draw(st.sampled_from(["\r\n ", "\n\t", "\r\n   "])) + value[i + 1 :]


@st.composite
def sloppy_wire(draw: st.DrawFn, msg: SipMessage) -> bytes:
    """A legal but untidy wire form of `msg`: what real servers send."""
    start = bytes(msg).split(b"\r\n", 1)[0].decode()
    lines = [start]
    for name, value in msg.headers:
        before = draw(st.sampled_from(["", " ", "\t "]))
        after = draw(st.sampled_from(["", " ", "  "]))
        lines.append(f"{name}{before}:{after}{_fold(value, draw)}")
    out = draw(st.sampled_from(["", "\r\n", "\r\n\r\n\n"]))
    for line in lines:
        out += line + draw(st.sampled_from(["\r\n", "\n"]))
    out += draw(st.sampled_from(["\r\n", "\n"]))
    return out.encode() + msg.body


# --- 1. never anything but SipParseError ---------------------------------------------------

PARSERS: list[Callable[[str], Any]] = [
    Address.parse,
    SipUri.parse,
    Via.parse,
    CSeq.parse,
    parse_params,
    unquote,
    split_list,
    parse_message,
]

SIP_BITS = [*'<>";,=:@[]\\/? \t\r\n*%', "sip:", "SIP/2.0", "Via:", "l:", "\r\n\r\n", "é"]
sip_alphabet = st.sampled_from(SIP_BITS)
# Raw bytes for mutating wire forms, including ones that are not UTF-8 on their own.
sip_bytes = st.sampled_from([bit.encode() for bit in SIP_BITS] + [b"\xff", b"\xc3", b"\x00"])
sipish_text = st.lists(st.one_of(sip_alphabet, st.text(max_size=3)), max_size=40).map("".join)


def _only_parse_errors(fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return fn(arg)
    except SipParseError:
        return None


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    msg = _only_parse_errors(parse_message, data)
    if msg is not None:
        assert parse_message(bytes(msg)) == msg


@FAST
@given(st.one_of(st.text(max_size=200), sipish_text))
@example("\udc80")
@example("SIP/2.0 200 OK\r\nl: 99999999999999999999999999\r\n\r\n")
@example("INVITE sip:a SIP/2.0\r\nContent-Length: ²\r\n\r\n")
def test_arbitrary_text_raises_only_sip_parse_error(text: str) -> None:
    for parser in PARSERS:
        _only_parse_errors(parser, text)


@MESSAGES
@given(messages(), st.data())
def test_mutated_messages_raise_only_sip_parse_error_and_reparse_stably(
    msg: SipMessage, data: st.DataObject
) -> None:
    wire = bytearray(bytes(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire)))
        if data.draw(st.booleans()) and pos < len(wire):
            del wire[pos : pos + data.draw(st.integers(1, 5))]
        else:
            wire[pos:pos] = data.draw(sip_bytes)
    parsed = _only_parse_errors(parse_message, bytes(wire))
    if parsed is not None:
        assert parse_message(bytes(parsed)) == parsed


# --- 2. round trips ------------------------------------------------------------------------


@MESSAGES
@given(messages())
def test_generated_message_round_trips(msg: SipMessage) -> None:
    assert parse_message(bytes(msg)) == msg
    assert (
        parse_message(str(msg)) == msg
        if msg.body.decode("utf-8", "ignore").encode() == msg.body
        else True
    )


@MESSAGES
@given(messages(), st.data())
def test_sloppy_wire_form_parses_to_the_same_message(msg: SipMessage, data: st.DataObject) -> None:
    assert parse_message(data.draw(sloppy_wire(msg))) == msg


@MESSAGES
@given(messages())
def test_structured_headers_read_back(msg: SipMessage) -> None:
    for value in msg.headers.get_all("Via"):
        assert str(Via.parse(value)) == value
    for value in msg.headers.get_all("Contact"):
        assert str(Address.parse(value)) == value


# --- 3. grammar round trips ----------------------------------------------------------------


@FAST
@given(addresses)
def test_address_round_trips(addr: Address) -> None:
    assert Address.parse(str(addr)) == addr
    tagged = addr.with_tag("abc")
    assert tagged.tag == "abc" and Address.parse(str(tagged)) == tagged


@FAST
@given(uris)
def test_uri_round_trips(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@FAST
@given(vias)
def test_via_round_trips(via: Via) -> None:
    assert Via.parse(str(via)) == via


@FAST
@given(st.lists(st.one_of(tokens, line_text.map(quote), addresses.map(str)), max_size=5))
def test_split_list_round_trips(items: list[str]) -> None:
    assert split_list(", ".join(items)) == items
    assert split_list(",".join(items)) == items


def _split_top_by_character(text: str, sep: str, angle: bool) -> list[str]:
    """The character-by-character scan `split_top` was before its fast paths: the reference."""
    parts, start, in_quote, in_angle, i = [], 0, False, False, 0
    while i < len(text):
        c = text[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif angle and c == "<":
            in_angle = True
        elif angle and c == ">":
            in_angle = False
        elif c == sep and not in_angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    return [*parts, text[start:]]


@FAST
@given(st.text('ab,;"\\<> ', max_size=40), st.sampled_from([",", ";"]), st.booleans())
def test_split_top_matches_a_character_scan(text: str, sep: str, angle: bool) -> None:
    assert split_top(text, sep, angle=angle) == _split_top_by_character(text, sep, angle)


@FAST
@given(line_text)
def test_quote_round_trips(text: str) -> None:
    assert unquote(quote(text)) == text


@FAST
@given(st.one_of(st.text(max_size=60), sipish_text))
def test_anything_that_parses_reparses_to_itself(text: str) -> None:
    for cls in (Address, SipUri, Via, CSeq):
        value = _only_parse_errors(cls.parse, text)
        if value is not None:
            assert cls.parse(str(value)) == value
    params = _only_parse_errors(parse_params, text)
    if params is not None:
        rebuilt = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
        assert parse_params(rebuilt) == params
