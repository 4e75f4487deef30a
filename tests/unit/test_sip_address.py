"""Unit tests for webphone.sip.address: URIs, name-addr, Via, CSeq, lists, params, quoting."""

from __future__ import annotations

import dataclasses

import pytest

from webphone.errors import SipParseError
from webphone.sip import (
    Address,
    CSeq,
    SipUri,
    Via,
    parse_params,
    quote,
    split_list,
    unquote,
)


class TestSipUri:
    def test_full_sip_uri(self) -> None:
        uri = SipUri.parse("sips:alice:secret@Example.COM:5061;transport=tls;lr?Subject=hi&X=%20")
        assert uri == SipUri(
            scheme="sips",
            user="alice",
            password="secret",
            host="Example.COM",
            port=5061,
            params={"transport": "tls", "lr": None},
            headers={"Subject": "hi", "X": "%20"},
        )
        assert str(uri) == "sips:alice:secret@Example.COM:5061;transport=tls;lr?Subject=hi&X=%20"

    def test_ringcentral_user_and_plain_host(self) -> None:
        uri = SipUri.parse("sip:17203861294*115@50.237.72.154")
        assert (uri.user, uri.host, uri.port) == ("17203861294*115", "50.237.72.154", None)

    def test_user_with_params_and_no_user(self) -> None:
        uri = SipUri.parse("sip:+15551234;phone-context=x.com@gw.example.com;user=phone")
        assert uri.user == "+15551234;phone-context=x.com" and uri.params == {"user": "phone"}
        assert SipUri.parse("sip:sip.ringcentral.com").user is None

    def test_ipv6_host(self) -> None:
        uri = SipUri.parse("sip:bob@[2001:db8::1]:5060;maddr=[2001:db8::2]")
        assert (uri.host, uri.port) == ("2001:db8::1", 5060)
        assert uri.params == {"maddr": "[2001:db8::2]"}
        assert str(uri) == "sip:bob@[2001:db8::1]:5060;maddr=[2001:db8::2]"
        assert str(SipUri("sip", host="::1")) == "sip:[::1]"

    def test_scheme_is_lowercased(self) -> None:
        assert SipUri.parse("SIP:a@b").scheme == "sip"

    @pytest.mark.parametrize(
        ("text", "opaque"),
        [
            (
                "tel:+1-212-555-0101;phone-context=example.com",
                "+1-212-555-0101;phone-context=example.com",
            ),
            (
                "urn:uuid:6a4636b0-d8ee-4304-af93-6ca747de431e",
                "uuid:6a4636b0-d8ee-4304-af93-6ca747de431e",
            ),
            ("http://example.com/x?y=1", "//example.com/x?y=1"),
        ],
    )
    def test_other_schemes_are_opaque(self, text: str, opaque: str) -> None:
        uri = SipUri.parse(text)
        assert uri.opaque == opaque and uri.host == "" and str(uri) == text

    def test_with_params(self) -> None:
        uri = SipUri.parse("sip:a@b;Transport=udp")
        assert str(uri.with_params(transport="ws", lr=None)) == "sip:a@b;transport=ws;lr"
        assert uri.params == {"Transport": "udp"}

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("", "has no scheme"),
            ("alice@example.com", "has no scheme"),
            ("1sip:a@b", "has no scheme"),
            ("sip:", "empty after the scheme"),
            ("sip:a b@c", "whitespace"),
            ("sip:<a>", "whitespace, quotes or <>"),
            ("sip:@host", "empty user part"),
            ("sip:a@", "invalid host ''"),
            ("sip:a@b@c", "invalid host 'b@c'"),
            ("sip:a@ho$t", "invalid host"),
            ("sip:a@[2001:db8::1", "unterminated IPv6"),
            ("sip:a@[zz::1]", "invalid IPv6 address"),
            ("sip:a@b:99999", "invalid port '99999'"),
            ("sip:a@b:5o60", "invalid port"),
            ("sip:a@[::1]x", "unexpected 'x' after host"),
            ("sip:a@b;=x", "invalid parameter name"),
            ("sip:a@b?=x", "URI header with no name"),
        ],
    )
    def test_errors(self, text: str, fragment: str) -> None:
        with pytest.raises(SipParseError, match=fragment.replace("[", r"\[").replace("$", r"\$")):
            SipUri.parse(text)


class TestAddress:
    def test_name_addr_with_params(self) -> None:
        addr = Address.parse('"Alice Smith" <sip:alice@example.com;transport=ws>;tag=1928301774')
        assert addr.display_name == "Alice Smith"
        assert addr.uri.params == {"transport": "ws"}
        assert addr.tag == "1928301774"
        assert str(addr) == "Alice Smith <sip:alice@example.com;transport=ws>;tag=1928301774"

    def test_addr_spec_params_are_header_params(self) -> None:
        addr = Address.parse("sip:alice@example.com;tag=5;transport=ws")
        assert addr.uri.params == {} and addr.params == {"tag": "5", "transport": "ws"}
        assert str(addr) == "<sip:alice@example.com>;tag=5;transport=ws"

    def test_token_display_name(self) -> None:
        addr = Address.parse("Bob   <sip:bob@b>")
        assert addr.display_name == "Bob"

    def test_display_names_quoted_when_needed(self) -> None:
        uri = SipUri("sip", "a", host="b")
        assert str(Address(uri, "Bob")) == "Bob <sip:a@b>"
        assert str(Address(uri, "Müller")) == '"Müller" <sip:a@b>'
        assert str(Address(uri, 'Bob "B" \\o/')) == '"Bob \\"B\\" \\\\o/" <sip:a@b>'
        assert str(Address(uri, "")) == '"" <sip:a@b>'
        assert str(Address(uri, "a,b")) == '"a,b" <sip:a@b>'

    def test_escaped_quotes_and_angle_in_display_name(self) -> None:
        addr = Address.parse('"x <y> \\"z\\"" <sip:a@b>')
        assert addr.display_name == 'x <y> "z"'

    def test_quoted_params_keep_quotes_and_round_trip(self) -> None:
        text = '<sip:u@h.invalid;transport=ws>;+sip.instance="<urn:uuid:6a46>";reg-id=1;expires=600'
        addr = Address.parse(text)
        assert addr.params["+sip.instance"] == '"<urn:uuid:6a46>"'
        assert unquote(addr.params["+sip.instance"] or "") == "<urn:uuid:6a46>"
        assert str(addr) == text

    def test_unquoted_value_set_by_caller_gets_quoted(self) -> None:
        addr = Address(SipUri("sip", "u", host="h"), params={"+sip.instance": "<urn:uuid:1>"})
        assert str(addr) == '<sip:u@h>;+sip.instance="<urn:uuid:1>"'

    def test_tag_lookup_and_with_tag(self) -> None:
        addr = Address.parse("<sip:a@b>;TAG=x;foo")
        assert addr.tag == "x"
        tagged = addr.with_tag("y")
        assert tagged.params == {"tag": "y", "foo": None} and addr.tag == "x"
        assert Address.parse("<sip:a@b>").with_tag("z").tag == "z"
        assert Address.parse("<sip:a@b>;tag").tag is None

    def test_tel_and_urn(self) -> None:
        assert Address.parse("<tel:+15551234>").uri.opaque == "+15551234"
        assert Address.parse("tel:+15551234;tag=9").params == {"tag": "9"}

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("", "empty address"),
            ("*", "wildcard"),
            ("<sip:a@b", "without '>'"),
            ('"unterminated <sip:a@b>', "has no scheme|whitespace"),
            ('"a" b <sip:a@b>', "text after the closing quote"),
            ('a"b <sip:a@b>', "has no scheme"),  # unbalanced quote: no '<' outside quotes
            ('a"b" <sip:a@b>', "malformed display name"),
            ("<sip:a@b> junk", "unexpected 'junk' after '>'"),
            ("<sip:a@b>;tag=a b", "invalid value"),
            ('<sip:a@b>;p="x', "unterminated quoted string"),
            ("<nonsense>", "has no scheme"),
        ],
    )
    def test_errors(self, text: str, fragment: str) -> None:
        with pytest.raises(SipParseError, match=fragment):
            Address.parse(text)


class TestVia:
    def test_webphone_via(self) -> None:
        via = Via.parse("SIP/2.0/WSS 7d1c.invalid;branch=z9hG4bK-lt3x;rport")
        assert via == Via("WSS", "7d1c.invalid", None, {"branch": "z9hG4bK-lt3x", "rport": None})
        assert via.branch == "z9hG4bK-lt3x"
        assert str(via) == "SIP/2.0/WSS 7d1c.invalid;branch=z9hG4bK-lt3x;rport"

    def test_spaces_in_sent_protocol_and_ipv6(self) -> None:
        via = Via.parse("SIP / 2.0 / UDP [2001:db8::1] : 5060 ; received=2001:db8::9;Branch=z9")
        assert (via.host, via.port, via.protocol) == ("2001:db8::1", 5060, "SIP/2.0")
        assert via.branch == "z9" and via.params["received"] == "2001:db8::9"
        assert str(via) == "SIP/2.0/UDP [2001:db8::1]:5060;received=2001:db8::9;Branch=z9"

    def test_no_branch(self) -> None:
        assert Via.parse("SIP/2.0/UDP host").branch is None

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("", "expected 'SIP/2.0/<transport> <host>'"),
            ("SIP/2.0/UDP", "expected"),
            ("SIP/2.0 host", "expected"),
            (
                "SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b",
                "invalid value '1, SIP/2.0/UDP b' for parameter 'branch'",
            ),
            ("SIP/2.0/UDP h:port", "invalid port"),
            ("SIP/2.0/U(P h", "invalid sent-protocol"),
        ],
    )
    def test_errors(self, text: str, fragment: str) -> None:
        with pytest.raises(SipParseError, match=fragment.replace("(", r"\(")):
            Via.parse(text)


class TestCSeq:
    def test_parse_and_str(self) -> None:
        assert CSeq.parse("  314159   INVITE ") == CSeq(314159, "INVITE")
        assert str(CSeq(2, "REGISTER")) == "2 REGISTER"
        assert CSeq.parse("4294967295 X") == CSeq(2**32 - 1, "X")

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("INVITE", "expected '<number> <METHOD>'"),
            ("1", "expected"),
            ("-1 INVITE", "expected"),
            ("4294967296 INVITE", "out of range"),
            ("1 INV(TE", "invalid method"),
            ("1 INVITE extra", "expected"),
        ],
    )
    def test_errors(self, text: str, fragment: str) -> None:
        with pytest.raises(SipParseError, match=fragment.replace("(", r"\(")):
            CSeq.parse(text)


class TestHelpers:
    def test_split_list(self) -> None:
        assert split_list(' a , "b,c" ,<d,e>;x="f,\\"g", , ') == ["a", '"b,c"', '<d,e>;x="f,\\"g"']
        assert split_list("") == [] and split_list("*") == ["*"]
        assert split_list('"unterminated, x') == ['"unterminated, x']

    def test_parse_params(self) -> None:
        assert parse_params(';a=b;c;d="x y"') == {"a": "b", "c": None, "d": '"x y"'}
        assert parse_params(" ; A = 1 ;; lr ") == {"A": "1", "lr": None}
        assert parse_params("x=1;x=2") == {"x": "2"}
        assert parse_params('p="a;b";q=1') == {"p": '"a;b"', "q": "1"}
        assert parse_params("") == {}

    def test_quote_unquote(self) -> None:
        assert quote('say "hi" \\') == '"say \\"hi\\" \\\\"'
        assert unquote('"say \\"hi\\" \\\\"') == 'say "hi" \\'
        assert unquote("token") == "token"
        assert unquote('"\\a"') == "a"
        with pytest.raises(ValueError, match="CR or LF"):
            quote("a\r\nb")

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ('"abc', "unterminated"),
            ('"a"b', "text after the closing quote"),
            ('"a\\', "bad character"),
            ('"a\nb"', "bad character"),
        ],
    )
    def test_unquote_errors(self, text: str, fragment: str) -> None:
        with pytest.raises(SipParseError, match=fragment):
            unquote(text)

    def test_dataclasses_replace_works(self) -> None:
        addr = Address.parse("<sip:a@b>")
        moved = dataclasses.replace(addr, uri=dataclasses.replace(addr.uri, port=5070))
        assert str(moved) == "<sip:a@b:5070>"
