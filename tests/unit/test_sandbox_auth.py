"""Sandbox digest server side: challenges, both answer forms, stale nonces, forged nonces."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from webphone.sandbox.auth import DigestAuthenticator, parse_credentials
from webphone.sip.digest import authorization, parse_challenge, rc_authorization

REALM = "sandbox.webphone"
USERS = {"101": "pw101", "102": "pw102"}


def answer(auth: DigestAuthenticator, now: float, method: str = "REGISTER", **kw: str) -> str:
    challenge = parse_challenge(auth.challenge(now))
    return authorization(
        challenge,
        method=method,
        uri=kw.get("uri", f"sip:{REALM}"),
        username=kw.get("username", "101"),
        password=kw.get("password", "pw101"),
        domain=REALM,
    )


def test_challenge_offers_qop_auth_and_parses_with_the_client_parser() -> None:
    auth = DigestAuthenticator(REALM)
    challenge = parse_challenge(auth.challenge(10.0))
    assert challenge.realm == REALM
    assert challenge.qop == ("auth",)
    assert not challenge.stale
    assert parse_challenge(auth.challenge(10.0, stale=True)).stale


def test_qop_answer_from_our_client_is_accepted() -> None:
    auth = DigestAuthenticator(REALM)
    value = answer(auth, 5.0, method="INVITE", uri="sip:102@sandbox.webphone")
    verdict = auth.verify(value, method="INVITE", password_for=USERS.get, now=6.0)
    assert verdict.ok and verdict.username == "101"


def test_ringcentral_form_without_qop_is_accepted() -> None:
    auth = DigestAuthenticator(REALM)
    nonce = parse_challenge(auth.challenge(1.0)).nonce
    value = rc_authorization("REGISTER", REALM, "101", "pw101", nonce, REALM)
    assert auth.verify(value, method="REGISTER", password_for=USERS.get, now=2.0).ok


def test_wrong_password_method_or_user_is_refused() -> None:
    auth = DigestAuthenticator(REALM)
    bad = answer(auth, 1.0, password="nope")
    verdict = auth.verify(bad, method="REGISTER", password_for=USERS.get, now=1.0)
    assert not verdict.ok and verdict.reason == "wrong password" and not verdict.stale
    good = answer(auth, 1.0)
    assert not auth.verify(good, method="INVITE", password_for=USERS.get, now=1.0).ok
    other = answer(auth, 1.0, username="999")
    assert auth.verify(other, method="REGISTER", password_for=USERS.get, now=1.0).reason == (
        "unknown user"
    )


def test_expired_nonce_is_stale_only_when_the_answer_is_right() -> None:
    auth = DigestAuthenticator(REALM, nonce_ttl=30)
    good = answer(auth, 100.0)
    assert auth.verify(good, method="REGISTER", password_for=USERS.get, now=129.0).ok
    late = auth.verify(good, method="REGISTER", password_for=USERS.get, now=131.0)
    assert not late.ok and late.stale
    bad = answer(auth, 100.0, password="nope")
    assert not auth.verify(bad, method="REGISTER", password_for=USERS.get, now=131.0).stale


def test_nonce_of_another_server_is_refused() -> None:
    ours, theirs = DigestAuthenticator(REALM), DigestAuthenticator(REALM)
    value = answer(theirs, 1.0)
    verdict = ours.verify(value, method="REGISTER", password_for=USERS.get, now=1.0)
    assert not verdict.ok and "nonce" in verdict.reason


def test_missing_and_malformed_credentials() -> None:
    auth = DigestAuthenticator(REALM)
    assert auth.verify(None, method="REGISTER", password_for=USERS.get, now=0).reason == (
        "no credentials"
    )
    assert not auth.verify("Basic abc", method="REGISTER", password_for=USERS.get, now=0).ok
    cut = 'Digest username="x'
    assert not auth.verify(cut, method="REGISTER", password_for=USERS.get, now=0).ok


def test_parse_credentials_reads_every_field() -> None:
    creds = parse_credentials(
        'Digest username="101", realm="r", nonce="n", uri="sip:r", algorithm=MD5, '
        'response="ABC", cnonce="c", qop=auth, nc=00000001, opaque="o"'
    )
    assert (creds.username, creds.qop, creds.nc, creds.cnonce, creds.opaque) == (
        "101", "auth", "00000001", "c", "o"
    )
    assert creds.response == "abc"


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_verify_never_raises_on_garbage(value: str) -> None:
    auth = DigestAuthenticator(REALM)
    verdict = auth.verify(value, method="REGISTER", password_for=USERS.get, now=0.0)
    assert not verdict.ok


@settings(max_examples=100)
@given(
    st.sampled_from(["101", "102"]),
    st.sampled_from(["REGISTER", "INVITE", "MESSAGE"]),
    st.floats(min_value=0, max_value=1e6),
    st.floats(min_value=0, max_value=299),
)
def test_any_fresh_correct_answer_is_accepted(
    user: str, method: str, t0: float, age: float
) -> None:
    auth = DigestAuthenticator(REALM, nonce_ttl=300)
    value = answer(auth, t0, method=method, username=user, password=USERS[user])
    assert auth.verify(value, method=method, password_for=USERS.get, now=t0 + age).ok


def test_nonces_are_unique_and_carry_no_password() -> None:
    auth = DigestAuthenticator(REALM)
    nonces = {auth.new_nonce(1.0) for _ in range(100)}
    assert len(nonces) == 100
    assert all(re.fullmatch(r"[0-9a-f\-]+\.[0-9a-f]+\.[0-9a-f]+", n) for n in nonces)


def test_single_use_nonces_refuse_a_right_answer_the_second_time() -> None:
    """RFC 7616 §3.4 allows answering one challenge again with the next nc (accepted by
    default); `single_use` refuses it like OpenSIPS or Kamailio's one_time_nonce."""
    lenient, strict = DigestAuthenticator(REALM), DigestAuthenticator(REALM, single_use=True)
    for auth in (lenient, strict):
        challenge = parse_challenge(auth.challenge(1.0))
        first, again = (authorization(challenge, method="REGISTER", uri=f"sip:{REALM}",
                                      username="101", password="pw101", domain=REALM, nc=nc)
                        for nc in (1, 2))
        assert auth.verify(first, method="REGISTER", password_for=USERS.get, now=2.0).ok
        verdict = auth.verify(again, method="REGISTER", password_for=USERS.get, now=3.0)
        assert verdict.ok is (auth is lenient)
        assert verdict.reused is (auth is strict) and not verdict.stale
    bad = answer(strict, 1.0, password="nope")  # a wrong answer never uses a nonce up
    assert strict.verify(bad, method="REGISTER", password_for=USERS.get, now=1.0).reason == (
        "wrong password")


@given(st.lists(st.floats(0.0, 50.0), min_size=1, max_size=30))
def test_single_use_table_holds_only_live_nonces(gaps: list[float]) -> None:
    """Each accepted nonce is refused again while it lives; the table forgets a nonce within
    two lifetimes (by then a reuse is stale anyway), so it stays bounded."""
    auth = DigestAuthenticator(REALM, nonce_ttl=60.0, single_use=True)
    now = 0.0
    for gap in gaps:
        now += gap
        value = answer(auth, now)
        assert auth.verify(value, method="REGISTER", password_for=USERS.get, now=now).ok
        again = auth.verify(value, method="REGISTER", password_for=USERS.get, now=now)
        assert again.reused and not again.ok
        later = auth.verify(value, method="REGISTER", password_for=USERS.get, now=now + 61.0)
        assert later.stale and not later.reused
        assert all(issued >= (now - 120.0) * 1000 for issued in auth._accepted.values())
