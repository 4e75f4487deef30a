"""Unit tests for webphone.sip.message: real-world frames, header semantics, errors."""

# Captured frames are kept verbatim, so some lines are longer than the limit.
# ruff: noqa: E501

from __future__ import annotations

import pytest

from webphone.errors import SipParseError
from webphone.sip import (
    Address,
    Headers,
    SipRequest,
    SipResponse,
    parse_message,
)


def crlf(text: str) -> bytes:
    """Test frames are written with \\n; the wire uses CRLF."""
    return text.replace("\n", "\r\n").encode("utf-8")


# Kamailio spike (sip-test-infrastructure.md §3.4), verbatim apart from line ends.
KAMAILIO_REGISTER = crlf(
    """REGISTER sip:127.0.0.1 SIP/2.0
Via: SIP/2.0/WS bfba10731c6a.invalid;branch=z9hG4bK7172d356e771;rport
Max-Forwards: 70
To: <sip:alice@127.0.0.1>
From: <sip:alice@127.0.0.1>;tag=927d9cbcd3
Call-ID: 49455116cbbd459686b2
CSeq: 2 REGISTER
Contact: <sip:97b12d9e@bfba10731c6a.invalid;transport=ws>;+sip.instance="<urn:uuid:6a4636b0-d8ee-4304-af93-6ca747de431e>";reg-id=1;expires=600
Expires: 600
Supported: path, outbound, gruu
Authorization: Digest username="alice", realm="127.0.0.1", nonce="awJtAWsCa9UmlmrnTZg0evqJ0kFORwL6", uri="sip:127.0.0.1", algorithm=MD5, response="5d826e2ec48189d1b10920abfab0858d", cnonce="1dc0aeef57856ec7", qop=auth, nc=00000001
Content-Length: 0

"""
)

KAMAILIO_401 = crlf(
    """SIP/2.0 401 Unauthorized
Via: SIP/2.0/WS bfba10731c6a.invalid;rport=41758;received=127.0.0.1;branch=z9hG4bK7172d356e771
To: <sip:alice@127.0.0.1>;tag=b27e1a1d33761e85846fc98f5f3a7e58.9d1c
From: <sip:alice@127.0.0.1>;tag=927d9cbcd3
Call-ID: 49455116cbbd459686b2
CSeq: 1 REGISTER
WWW-Authenticate: Digest realm="127.0.0.1", nonce="awJu/GsCbdDhqvik+Hqy30l3/iPT8XeN", qop="auth"
Server: kamailio (5.7.4 (x86_64/linux))
Content-Length: 0

"""
)

KAMAILIO_200 = crlf(
    """SIP/2.0 200 OK
Via: SIP/2.0/WS bfba10731c6a.invalid;rport=41758;received=127.0.0.1;branch=z9hG4bK7172d356e771
To: <sip:alice@127.0.0.1>;tag=b27e1a1d33761e85846fc98f5f3a7e58.1e2f
From: <sip:alice@127.0.0.1>;tag=927d9cbcd3
Call-ID: 49455116cbbd459686b2
CSeq: 2 REGISTER
Contact: <sip:97b12d9e@bfba10731c6a.invalid;transport=ws>;expires=600;received="sip:127.0.0.1:41758;transport=ws";+sip.instance="<urn:uuid:6a4636b0-d8ee-4304-af93-6ca747de431e>";reg-id=1, <sip:e5b9@other.invalid;transport=ws>;expires=321
Server: kamailio (5.7.4 (x86_64/linux))
Content-Length: 0

"""
)

SDP = (
    "v=0\r\n"
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
    "s=Jürgen's call\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 30274 UDP/TLS/RTP/SAVPF 111 0\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
).encode()

INVITE = (
    crlf(
        """INVITE sip:101@sip.ringcentral.com SIP/2.0
Via: SIP/2.0/WSS 7d1c.invalid;branch=z9hG4bK-lt3x1a2b;rport
Via: SIP/2.0/TCP [2001:db8::7]:5061;branch=z9hG4bKp2, SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKp1
Record-Route: <sip:rr1.example.com;lr>
Record-Route: <sip:rr2.example.com;lr>, <sip:[2001:db8::9];lr;transport=tcp>
Max-Forwards: 70
From: "Jürgen Müller" <sip:17203861294*115@sip.ringcentral.com>;tag=8fa7d3
To: "Bob, \\"the builder\\"" <sip:101@sip.ringcentral.com>
Call-ID: a84b4c76e66710@pc33.example.com
CSeq: 314159 INVITE
Contact: <sip:u1@7d1c.invalid;transport=ws;ob>
Content-Type: application/sdp
"""
    )
    + f"Content-Length: {len(SDP)}\r\n\r\n".encode()
    + SDP
)


class TestRealWorld:
    def test_kamailio_register(self) -> None:
        msg = parse_message(KAMAILIO_REGISTER)
        assert isinstance(msg, SipRequest)
        assert (msg.method, msg.uri) == ("REGISTER", "sip:127.0.0.1")
        assert msg.call_id == "49455116cbbd459686b2"
        assert (msg.cseq.number, msg.cseq.method) == (2, "REGISTER")
        assert msg.branch == "z9hG4bK7172d356e771"
        assert msg.top_via.transport == "WS"
        assert msg.from_tag == "927d9cbcd3"
        assert msg.to_tag is None
        assert msg.headers.get_all("Supported") == ["path", "outbound", "gruu"]
        # Authorization is never split on its commas.
        assert len(msg.headers.get_all("Authorization")) == 1
        contact = Address.parse(msg.headers["Contact"])
        assert (
            contact.params["+sip.instance"] == '"<urn:uuid:6a4636b0-d8ee-4304-af93-6ca747de431e>"'
        )
        assert bytes(msg) == KAMAILIO_REGISTER

    def test_kamailio_401(self) -> None:
        msg = parse_message(KAMAILIO_401)
        assert isinstance(msg, SipResponse)
        assert (msg.status_code, msg.reason) == (401, "Unauthorized")
        assert not msg.is_success and msg.is_final and not msg.is_provisional
        challenge = msg.headers.get_all("www-authenticate")
        assert challenge == [
            'Digest realm="127.0.0.1", nonce="awJu/GsCbdDhqvik+Hqy30l3/iPT8XeN", qop="auth"'
        ]
        assert msg.top_via.params["rport"] == "41758"
        assert msg.to_tag == "b27e1a1d33761e85846fc98f5f3a7e58.9d1c"
        assert bytes(msg) == KAMAILIO_401

    def test_kamailio_200_with_two_contacts(self) -> None:
        msg = parse_message(KAMAILIO_200)
        assert isinstance(msg, SipResponse) and msg.is_success
        contacts = [Address.parse(c) for c in msg.headers.get_all("m")]
        assert [c.uri.user for c in contacts] == ["97b12d9e", "e5b9"]
        assert contacts[0].params["received"] == '"sip:127.0.0.1:41758;transport=ws"'
        assert contacts[1].params["expires"] == "321"
        assert bytes(msg) == KAMAILIO_200

    def test_invite_with_sdp_and_utf8(self) -> None:
        msg = parse_message(INVITE)
        assert isinstance(msg, SipRequest)
        assert msg.body == SDP
        assert int(msg.headers["l"]) == len(SDP) > len(SDP.decode())  # bytes, not characters
        assert msg.from_address.display_name == "Jürgen Müller"
        assert msg.from_address.uri.user == "17203861294*115"
        assert msg.to_address.display_name == 'Bob, "the builder"'
        vias = msg.headers.get_all("Via")
        assert [v.split(";")[0] for v in vias] == [
            "SIP/2.0/WSS 7d1c.invalid",
            "SIP/2.0/TCP [2001:db8::7]:5061",
            "SIP/2.0/UDP 10.0.0.1:5060",
        ]
        routes = [Address.parse(r).uri.host for r in msg.headers.get_all("Record-Route")]
        assert routes == ["rr1.example.com", "rr2.example.com", "2001:db8::9"]
        assert bytes(msg) == INVITE

    def test_ringcentral_headers_are_kept_whole(self) -> None:
        raw = crlf(
            """INVITE sip:u@h.invalid;transport=ws SIP/2.0
Via: SIP/2.0/WSS 10.13.22.251:8083;branch=z9hG4bK1a2b
From: "WIRELESS CALLER" <sip:+16505550100@sip.ringcentral.com>;tag=10.13.22.251-5070-1
To: "Tyler Liu" <sip:17203861294*115@50.237.72.154>
Call-Id: 9a2c1e6f-77a3
CSeq: 1 INVITE
Alert-Info: Auto Answer
P-rc: <Msg><Hdr SID="35221" Req="{A2D3}" From="#22@sip" To="1720" Cmd="6"/><Bdy Phn="+16505550100" Nm="WIRELESS, CALLER" ToPhn="+17203861294"/></Msg>
p-rc-api-ids: party-id=p-a0d1;session-id=s-a0d1

"""
        )
        msg = parse_message(raw)
        assert msg.call_id == "9a2c1e6f-77a3"
        assert msg.headers.get("alert-info") == "Auto Answer"
        assert msg.headers.get_all("P-rc") == [msg.headers["p-rc"]]
        assert 'Nm="WIRELESS, CALLER"' in msg.headers["P-RC"]
        assert msg.to_address.uri.user == "17203861294*115"
        assert msg.to_tag is None

    def test_content_length_counts_bytes_when_building(self) -> None:
        req = SipRequest("MESSAGE", "sip:a@b", Headers([("To", "<sip:a@b>")]), "héllo €".encode())
        wire = bytes(req)
        assert b"\r\nContent-Length: 10\r\n\r\nh\xc3\xa9llo \xe2\x82\xac" in wire
        assert parse_message(wire).body == "héllo €".encode()


class TestLenientParsing:
    def test_bare_lf_line_ends(self) -> None:
        msg = parse_message(b"OPTIONS sip:a@b SIP/2.0\nCall-ID: x\nContent-Length: 2\n\nhi")
        assert msg.call_id == "x" and msg.body == b"hi"

    def test_leading_crlf_keepalives_are_skipped(self) -> None:
        msg = parse_message(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n")
        assert isinstance(msg, SipRequest) and msg.method == "OPTIONS"

    def test_folded_header_is_joined_with_one_space(self) -> None:
        msg = parse_message(
            crlf("MESSAGE sip:a@b SIP/2.0\nSubject: I know you're\n  there,\n\tpick up\n\n")
        )
        assert msg.headers["s"] == "I know you're there, pick up"

    def test_many_continuation_lines(self) -> None:
        raw = b"OPTIONS sip:a@b SIP/2.0\r\nX: a\r\n" + b" b\r\n" * 1000 + b"\t\r\n\r\n"
        assert parse_message(raw).headers["X"] == "a" + " b" * 1000

    def test_whitespace_around_colon(self) -> None:
        msg = parse_message(
            crlf("OPTIONS sip:a@b SIP/2.0\nVia :SIP/2.0/UDP h;branch=z\nCall-ID:abc\n\n")
        )
        assert msg.branch == "z" and msg.call_id == "abc"
        assert msg.headers.fields()[0] == ("Via", "SIP/2.0/UDP h;branch=z")

    def test_compact_forms(self) -> None:
        msg = parse_message(
            crlf(
                "INVITE sip:a@b SIP/2.0\nv: SIP/2.0/UDP h;branch=z9\ni: cid\nf: <sip:x@y>;tag=1\n"
                "t: <sip:a@b>\nm: <sip:x@h>\nk: timer\nc: text/plain\nl: 0\nCSeq: 1 INVITE\n\n"
            )
        )
        assert msg.call_id == "cid" and msg.branch == "z9" and msg.from_tag == "1"
        assert msg.headers["Content-Type"] == "text/plain"
        assert msg.headers.get_all("Supported") == ["timer"]
        assert "CONTACT" in msg.headers and "contact" in msg.headers
        assert bytes(msg).startswith(b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9\r\n")
        assert b"\r\nl: 0\r\n" in bytes(msg)

    def test_response_with_empty_reason(self) -> None:
        for raw in (b"SIP/2.0 200 \r\n\r\n", b"SIP/2.0 200\r\n\r\n"):
            msg = parse_message(raw)
            assert isinstance(msg, SipResponse)
            assert (msg.status_code, msg.reason) == (200, "")
            assert bytes(msg) == b"SIP/2.0 200 \r\nContent-Length: 0\r\n\r\n"

    def test_reason_with_spaces(self) -> None:
        msg = parse_message(b"SIP/2.0 603 Too Many Contacts\r\n\r\n")
        assert isinstance(msg, SipResponse) and msg.reason == "Too Many Contacts"

    def test_contact_star(self) -> None:
        msg = parse_message(b"REGISTER sip:d SIP/2.0\r\nContact: *\r\nExpires: 0\r\n\r\n")
        assert msg.headers.get_all("Contact") == ["*"]
        with pytest.raises(SipParseError, match="wildcard"):
            Address.parse("*")

    def test_extension_method(self) -> None:
        msg = parse_message(b"X-RC-PING sip:a@b SIP/2.0\r\n\r\n")
        assert isinstance(msg, SipRequest) and msg.method == "X-RC-PING"

    def test_missing_content_length_takes_rest_and_is_added(self) -> None:
        msg = parse_message(b"MESSAGE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\nhello")
        assert msg.body == b"hello"
        assert msg.headers.fields()[-1] == ("Content-Length", "5")

    def test_extra_bytes_beyond_content_length_are_dropped(self) -> None:
        msg = parse_message(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nhello")
        assert msg.body == b"hel"

    def test_content_length_is_canonicalised(self) -> None:
        msg = parse_message(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 003\r\n\r\nabc")
        assert msg.headers["Content-Length"] == "3"

    def test_no_blank_line_means_no_body(self) -> None:
        msg = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x")
        assert msg.call_id == "x" and msg.body == b""

    def test_str_input(self) -> None:
        msg = parse_message("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\né")
        assert msg.body == "é".encode()

    def test_str_of_message_replaces_undecodable_body(self) -> None:
        msg = SipRequest("MESSAGE", "sip:a@b", body=b"\xff")
        assert str(msg).endswith("\r\n\r\n\ufffd")


class TestErrors:
    @pytest.mark.parametrize(
        ("raw", "fragment"),
        [
            (b"", "empty message"),
            (b"\r\n\r\n", "empty message"),
            (b"INVITE sip:a@b\r\n\r\n", "line 1: not a request or status line"),
            (b"INVITE sip:a@b SIP/3.0\r\n\r\n", "unsupported protocol version"),
            (b"INV(TE sip:a@b SIP/2.0\r\n\r\n", "invalid method"),
            (b"INVITE nowhere SIP/2.0\r\n\r\n", "has no scheme"),
            (b"SIP/2.0 20 OK\r\n\r\n", "status code '20' is not 100-699"),
            (b"SIP/2.0 700 Huh\r\n\r\n", "is not 100-699"),
            (b"SIP/2.0 2x0 OK\r\n\r\n", "is not 100-699"),
            (b"SIP/2.0\r\n\r\n", "malformed status line"),
            (b"OPTIONS sip:a@b SIP/2.0\r\nVia\r\n\r\n", "line 2: header line without ':'"),
            (b"OPTIONS sip:a@b SIP/2.0\r\nVi a: x\r\n\r\n", "line 2: invalid header name"),
            (b"OPTIONS sip:a@b SIP/2.0\r\n: x\r\n\r\n", "invalid header name ''"),
            (b"OPTIONS sip:a@b SIP/2.0\r\n folded\r\n\r\n", "continuation line before any header"),
            (b"OPTIONS sip:a@b SIP/2.0\r\nX: a\rb\r\n\r\n", "line 2: stray CR"),
            (b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n", "line 2: .* UTF-8 at byte offset 28"),
            (b"\r\nOPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n", "UTF-8 at byte offset 30"),
            (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n", "not a non-negative"),
            (b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\xd9\xa3\r\n\r\n", "not a non-negative"),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 9\r\n\r\nabc",
                "larger than the 3 body bytes available after offset 46",
            ),
            (b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nl: 1\r\n\r\nx", "2 Content-Length headers"),
        ],
    )
    def test_bad_input(self, raw: bytes, fragment: str) -> None:
        with pytest.raises(SipParseError, match=fragment.replace("(", r"\(")):
            parse_message(raw)

    def test_unencodable_str(self) -> None:
        with pytest.raises(SipParseError, match="cannot be encoded as UTF-8"):
            parse_message("OPTIONS sip:a@b SIP/2.0\r\nX: \udc80\r\n\r\n")

    def test_missing_headers_in_properties(self) -> None:
        msg = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n")
        for prop, fragment in [
            ("call_id", "no Call-ID"),
            ("cseq", "no CSeq"),
            ("top_via", "no Via"),
            ("branch", "no Via"),
            ("from_tag", "no From"),
            ("to_address", "no To"),
        ]:
            with pytest.raises(SipParseError, match=fragment):
                getattr(msg, prop)

    def test_malformed_headers_in_properties(self) -> None:
        msg = parse_message(
            b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: one OPTIONS\r\nVia: nonsense\r\nFrom: <sip:a@b\r\n\r\n"
        )
        with pytest.raises(SipParseError, match="invalid CSeq"):
            _ = msg.cseq
        with pytest.raises(SipParseError, match="invalid Via"):
            _ = msg.top_via
        with pytest.raises(SipParseError, match="without '>'"):
            _ = msg.from_address


class TestHeaders:
    def test_case_insensitive_and_compact(self) -> None:
        h = Headers([("Call-ID", "1"), ("i", "2"), ("CALL-ID", "3")])
        assert h.get("call-id") == "1" and h["I"] == "1"
        assert h.get_all("Call-Id") == ["1", "2", "3"]
        assert len(h) == 3

    def test_get_all_splits_list_headers_only(self) -> None:
        h = Headers(
            [
                ("Allow", "INVITE, ACK,BYE"),
                ("Allow", "INFO"),
                ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
                ("X-Custom", "a, b"),
                ("Proxy-Authenticate", 'Digest realm="x", nonce="y"'),
                ("Contact", '"Doe, John" <sip:j@d;x=",">;p="a,b", <sip:k@d>'),
            ]
        )
        assert h.get_all("allow") == ["INVITE", "ACK", "BYE", "INFO"]
        assert h.get_all("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
        assert h.get_all("x-custom") == ["a, b"]
        assert len(h.get_all("Proxy-Authenticate")) == 1
        assert h.get_all("m") == ['"Doe, John" <sip:j@d;x=",">;p="a,b"', "<sip:k@d>"]

    def test_set_replaces_all_at_first_position(self) -> None:
        h = Headers([("A", "1"), ("Route", "r1"), ("B", "2"), ("route", "r2")])
        h.set("Route", "r3")
        assert h.fields() == [("A", "1"), ("Route", "r3"), ("B", "2")]
        h.set("C", "3")
        assert h.fields()[-1] == ("C", "3")

    def test_remove_add_contains(self) -> None:
        h = Headers({"Via": "a", "Max-Forwards": "70"})
        h.add("v", "b")
        assert h.remove("VIA") == 2 and h.remove("Via") == 0
        assert "Via" not in h and "max-forwards" in h and 5 not in h
        with pytest.raises(KeyError):
            h["Via"]

    def test_equality_copy_iter_repr(self) -> None:
        h = Headers([("To", "x")])
        c = h.copy()
        assert c == h and c is not h
        c.add("From", "y")
        assert c != h and h.fields() == [("To", "x")]
        assert list(c) == [("To", "x"), ("From", "y")]
        assert repr(h) == "Headers([('To', 'x')])"
        assert h != [("To", "x")]

    @pytest.mark.parametrize(
        ("name", "value"), [("Bad Name", "x"), ("", "x"), ("X", "a\r\nInjected: 1"), ("X", "a\0")]
    )
    def test_add_rejects_injection(self, name: str, value: str) -> None:
        with pytest.raises(ValueError):
            Headers().add(name, value)
        with pytest.raises(ValueError):
            Headers().set(name, value)


class TestBuilding:
    def test_content_length_replaced_in_place_and_duplicates_dropped(self) -> None:
        req = SipRequest(
            "MESSAGE",
            "sip:a@b",
            Headers([("l", "99"), ("To", "<sip:a@b>"), ("Content-Length", "7")]),
            b"abc",
        )
        assert bytes(req) == b"MESSAGE sip:a@b SIP/2.0\r\nl: 3\r\nTo: <sip:a@b>\r\n\r\nabc"

    def test_copy_is_independent(self) -> None:
        resp = SipResponse(180, "Ringing", Headers([("To", "<sip:a@b>")]))
        dup = resp.copy()
        assert dup == resp
        dup.headers.set("To", "<sip:a@b>;tag=1")
        assert dup != resp and resp.to_tag is None and dup.to_tag == "1"
        assert resp.is_provisional and not resp.is_final

    def test_request_and_response_are_not_equal(self) -> None:
        request: object = SipRequest("A", "sip:x")
        assert request != SipResponse(200, "OK")
