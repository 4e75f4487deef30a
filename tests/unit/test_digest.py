"""Digest authentication: RingCentral's exact form and RFC 7616 qop=auth."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone.errors import SipParseError
from webphone.sip import SipResponse, parse_message
from webphone.sip.digest import (
    NonceReuse,
    authorization,
    digest_response,
    parse_challenge,
    pick_challenge,
    rc_authorization,
    refuses_reuse,
    rejection,
)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_ringcentral_register_vector() -> None:
    challenge = parse_challenge('Digest realm="sip.ringcentral.com", nonce="NONCE"')
    value = authorization(
        challenge,
        method="REGISTER",
        uri="sip:sip.ringcentral.com",
        username="8021",
        password="pw",
        domain="sip.ringcentral.com",
    )
    assert value == (
        'Digest algorithm="MD5", username="8021", realm="sip.ringcentral.com", nonce="NONCE", '
        'uri="sip:sip.ringcentral.com", response="3aa38d0f03c16b625d1039be4d600e24"'
    )


def test_ringcentral_invite_vector_uses_domain_as_digest_uri() -> None:
    challenge = parse_challenge('Digest realm="sip.ringcentral.com", nonce="NONCE"')
    value = authorization(
        challenge,
        method="INVITE",
        uri="sip:101@sip.ringcentral.com",
        username="8021",
        password="pw",
        domain="sip.ringcentral.com",
    )
    assert 'response="b162c3d21a0f4c1327332058f7bb4825"' in value
    assert 'uri="sip:sip.ringcentral.com"' in value


def test_qop_auth_follows_rfc_7616() -> None:
    challenge = parse_challenge(
        'Digest realm="example.org", nonce="abc", qop="auth,auth-int", opaque="op", algorithm=MD5'
    )
    value = authorization(
        challenge,
        method="INVITE",
        uri="sip:bob@example.org",
        username="alice",
        password="secret",
        domain="sip.test",
        cnonce="c0ffee",
        nc=1,
    )
    ha1 = md5("alice:example.org:secret")
    ha2 = md5("INVITE:sip:bob@example.org")
    expected = md5(f"{ha1}:abc:00000001:c0ffee:auth:{ha2}")
    assert f'response="{expected}"' in value
    assert 'realm="example.org"' in value  # the challenge's realm wins over the domain
    assert 'opaque="op"' in value and "nc=00000001" in value and "qop=auth" in value


def test_md5_sess() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess')
    value = authorization(
        challenge,
        method="REGISTER",
        uri="sip:r",
        username="u",
        password="p",
        domain="r",
        cnonce="cn",
    )
    ha1 = md5(md5("u:r:p") + ":n:cn")
    ha2 = md5("REGISTER:sip:r")
    expected = md5(f"{ha1}:n:00000001:cn:auth:{ha2}")
    assert f'response="{expected}"' in value


def test_rc_authorization_matches_vector_directly() -> None:
    assert "3aa38d0f03c16b625d1039be4d600e24" in rc_authorization(
        "REGISTER", "sip.ringcentral.com", "8021", "pw", "NONCE", "sip.ringcentral.com"
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('Basic realm="x"', "only Digest"),
        ('Digest realm="x"', "no nonce"),
        ('Digest realm="x", nonce="n", algorithm=AKAv1-MD5', "not supported"),
        ('Digest realm="x" nonce', "malformed"),
    ],
)
def test_bad_challenges_say_what_is_wrong(value: str, fragment: str) -> None:
    with pytest.raises(SipParseError, match=fragment):
        parse_challenge(value)


@given(st.text(max_size=200))
def test_any_challenge_text_raises_only_sip_parse_error(value: str) -> None:
    with contextlib.suppress(SipParseError):
        parse_challenge(value)


def test_password_never_in_output() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    value = authorization(
        challenge,
        method="REGISTER",
        uri="sip:r",
        username="u",
        password="hunter2-secret",
        domain="r",
    )
    assert "hunter2-secret" not in value


def test_nonce_reuse_counts_up_and_skips_challenges_without_qop() -> None:
    reuse = NonceReuse()
    kwargs = {"method": "REGISTER", "uri": "sip:sip.test", "username": "alice",
              "password": "secret", "domain": "sip.test"}
    assert reuse.next(**kwargs) is None  # nothing answered yet
    reuse.remember(parse_challenge('Digest realm="sip.test", nonce="n1", qop="auth"'))
    second, third = reuse.next(**kwargs), reuse.next(**kwargs)
    assert second is not None and 'nonce="n1"' in second and "nc=00000002" in second
    assert third is not None and "nc=00000003" in third
    reuse.remember(parse_challenge('Digest realm="sip.test", nonce="n2", qop="auth"'))
    again = reuse.next(**kwargs)
    assert again is not None and 'nonce="n2"' in again and "nc=00000002" in again
    # RFC 2069 (RingCentral's form) has no nonce count: a reuse would look like a replay
    reuse.remember(parse_challenge('Digest realm="sip.ringcentral.com", nonce="n3"'))
    assert reuse.next(**kwargs) is None
    reuse.remember(parse_challenge('Digest realm="sip.test", nonce="n4", qop="auth"'))
    reuse.forget()
    assert reuse.next(**kwargs) is None


@pytest.mark.parametrize(("status", "stale", "refused"), [
    (200, False, False),  # accepted
    (401, True, False),  # RFC 7616 §3.3: right answer, the nonce expired: reuse stays on
    (401, False, True),  # the reused credentials themselves were refused
    (407, False, False),  # a proxy's own challenge: says nothing of the registrar's nonce
    (403, False, True),
    (400, False, True),
    (404, False, False), (423, False, False), (500, False, False), (503, False, False),
])
def test_which_answers_refuse_a_reused_nonce(status: int, stale: bool, refused: bool) -> None:
    assert refuses_reuse(status, stale=stale) is refused


@given(st.integers(100, 699), st.booleans())
def test_only_client_errors_refuse_and_stale_never_does(status: int, stale: bool) -> None:
    if refuses_reuse(status, stale=stale):
        assert 400 <= status < 500 and status != 407
        assert not (status == 401 and stale)


# one operation on a NonceReuse: connect to server 0..2, remember a qop or no-qop challenge,
# take the next credentials, or be refused
_OPS = st.lists(st.one_of(
    st.tuples(st.just("connected"), st.integers(0, 2)),
    st.tuples(st.just("remember"), st.booleans()),
    st.tuples(st.just("next"), st.none()),
    st.tuples(st.just("refused"), st.none()),
), max_size=40)
_ARGS = {"method": "REGISTER", "uri": "sip:sip.test", "username": "alice",
         "password": "hunter2-secret", "domain": "sip.test"}


@given(_OPS)
def test_nonce_reuse_stops_for_good_with_a_server_that_refused_it(
    ops: list[tuple[str, object]]
) -> None:
    """Against a model: credentials only for a remembered qop challenge on this connection,
    from a server that never refused reuse; each one with the next nonce count (from 2)."""
    reuse = NonceReuse()
    server, refused_by, cached, count = "", set(), None, 0
    for step, (op, arg) in enumerate(ops):
        if op == "connected":
            server, cached = f"ws://server-{arg}", None
            reuse.connected(server)
        elif op == "remember":
            qop = ', qop="auth"' if arg else ""
            reuse.remember(parse_challenge(f'Digest realm="r", nonce="n{step}"{qop}'))
            cached, count = (f"n{step}" if arg and server not in refused_by else None), 1
        elif op == "refused":
            reuse.refused()
            refused_by.add(server)
            cached = None
        else:
            value = reuse.next(**_ARGS)
            if cached is None:
                assert value is None
                continue
            count += 1
            assert value is not None and f'nonce="{cached}"' in value
            assert f"nc={count:08x}" in value and "hunter2-secret" not in value
        assert reuse.enabled is (server not in refused_by)


# RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256
_RFC7616 = {"username": "Mufasa", "realm": "http-auth@example.org",
            "password": "Circle of Life", "method": "GET", "uri": "/dir/index.html",
            "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "qop": "auth",
            "nc": "00000001", "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"}


@pytest.mark.parametrize(("algorithm", "response"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_vectors(algorithm: str, response: str) -> None:
    assert digest_response(algorithm=algorithm, **_RFC7616) == response


@pytest.mark.parametrize("algorithm", ["SHA-256", "SHA-256-sess", "SHA-512-256",
                                       "SHA-512-256-sess"])
def test_rfc8760_algorithms_are_answered_with_their_hash(algorithm: str) -> None:
    challenge = parse_challenge(f'Digest realm="r", nonce="n", qop="auth", algorithm={algorithm}')
    value = authorization(challenge, method="REGISTER", uri="sip:r", username="u",
                          password="p", domain="r", cnonce="cn")
    name = "sha256" if algorithm.startswith("SHA-256") else "sha512_256"

    def h(text: str) -> str:
        return hashlib.new(name, text.encode()).hexdigest()

    ha1 = h("u:r:p")
    if algorithm.endswith("-sess"):
        ha1 = h(f"{ha1}:n:cn")
    expected = h(f"{ha1}:n:00000001:cn:auth:{h('REGISTER:sip:r')}")
    assert f'response="{expected}"' in value and f"algorithm={algorithm}," in value
    without_qop = parse_challenge(f'Digest realm="r", nonce="n", algorithm={algorithm}')
    with pytest.raises(SipParseError, match="without qop=auth"):
        authorization(without_qop, method="REGISTER", uri="sip:r", username="u", password="p",
                      domain="r")


def test_the_first_supported_challenge_is_answered() -> None:
    """RFC 7616 §3.7 / RFC 8760 §2.4: several challenges, the server's preferred first."""
    offered = ['Digest realm="r", nonce="a", algorithm=AKAv1-MD5',
               'Basic realm="r"',
               'Digest realm="r", nonce="b", qop="auth", algorithm=SHA-256',
               'Digest realm="r", nonce="c", qop="auth", algorithm=MD5']
    assert pick_challenge(offered).nonce == "b"
    assert pick_challenge(offered[3:]).algorithm == "MD5"
    with pytest.raises(SipParseError, match="'AKAv1-MD5' is not supported"):
        pick_challenge(offered[:2])
    with pytest.raises(SipParseError, match="no Digest challenge"):
        pick_challenge([])


def _response(status: str, *headers: str) -> SipResponse:
    text = (f"SIP/2.0 {status}\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bKa\r\n"
            "From: <sip:101@sip.test>;tag=a\r\nTo: <sip:101@sip.test>\r\nCall-ID: c\r\n"
            "CSeq: 2 REGISTER\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n")
    response = parse_message(text)
    assert isinstance(response, SipResponse)
    return response


@pytest.mark.parametrize(("status", "headers", "says"), [
    ("403 Forbidden", (), "rejected with 403 Forbidden: check authorizationId and password"),
    ("401 Unauthorized", ('WWW-Authenticate: Digest realm="r", nonce="n", qop="auth"',),
     "rejected with 401 Unauthorized: check authorizationId and password"),
    ("401 Unauthorized", ('WWW-Authenticate: Digest realm="r", nonce="n", algorithm=AKAv1-MD5',),
     "challenged with 401 Unauthorized and the challenge cannot be answered: Digest algorithm "
     "'AKAv1-MD5' is not supported"),
    ("407 Proxy Authentication Required", (),
     "cannot be answered: no Digest challenge to answer"),
])
def test_a_rejection_says_whether_the_password_or_the_challenge_is_the_problem(
    status: str, headers: tuple[str, ...], says: str
) -> None:
    text = rejection(_response(status, *headers), "REGISTER for 101@sip.test")
    assert text.startswith("REGISTER for 101@sip.test ") and says in text
