"""RFC 4475 torture messages the parser must accept (or reject) as the RFC says."""

from __future__ import annotations

import pytest

from webphone.errors import SipParseError
from webphone.sip import Address, SipRequest, parse_message
from webphone.sip._grammar import quote, unquote

# RFC 4475 §3.1.1.3 "intmeth" (the From display name escapes BEL, NUL and DEL), line ends as
# on the wire.
INTMETH = (
    b"!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?"
    b",;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\r\n"
    b'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,;;*'
    b"@example.com>\r\n"
    b"From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
    b'"\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9";tag=_'
    b"token~1'+`*%!-.\r\n"
    b"Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r\n"
    b"CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r\n"
    b"Max-Forwards: 255\r\n"
    b"extensionHeader-!.%*+_`'~: \xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_rfc4475_intmeth_with_an_escaped_nul_in_a_quoted_string_is_accepted() -> None:
    """§3.1.1.3: an escaped NUL is a legal quoted-pair, so the message parses."""
    message = parse_message(INTMETH)
    assert isinstance(message, SipRequest)
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    name = message.headers["To"].partition(" <")[0]
    to = Address.parse(name + " <sip:x@example.com>")  # the URI's own oddities are not §3.1.1.3's
    assert to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert Address.parse(str(to)) == to
    assert parse_message(bytes(message)).headers["To"] == message.headers["To"]


def test_a_bare_nul_outside_a_quoted_pair_is_still_refused() -> None:
    """A NUL anywhere but escaped in a quoted string is not SIP."""
    with pytest.raises(SipParseError, match="NUL"):
        parse_message(INTMETH.replace(b"Max-Forwards: 255", b"Max-Forwards: 2\x0055"))
    with pytest.raises(SipParseError, match="NUL"):
        parse_message(INTMETH.replace(b"DEL:\\\x7f", b"DEL:\x00"))


def test_quote_escapes_nul_and_round_trips() -> None:
    """A display name with NUL is written as a quoted-pair and read back unchanged."""
    assert quote("a\x00b") == '"a\\\x00b"'
    assert unquote(quote("a\x00b")) == "a\x00b"
    with pytest.raises(ValueError, match="CR or LF"):
        quote("a\nb")
