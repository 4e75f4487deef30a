"""A real peer nobody here wrote: baresip 1.0 (Debian baresip-core) and the WebPhone, through
Kamailio, with real audio on loopback.

baresip offers no loopback ICE candidates (only the machine's interfaces, which these tests
must never send to: the phone's loopback-only media drops them). Media still comes up: our
offer/answer carries a 127.0.0.1 host candidate, baresip's connectivity checks reach it from
127.0.0.1, and ICE completes on that peer-reflexive pair, so every packet stays on loopback.
baresip's `ausine` source plays 440 Hz, which the phone must hear. test_baresip_netns.py does
the same with baresip's own host candidates, inside a network namespace.

Interop bugs these tests found (fixed in webphone.media, see `_interop.py` and `_hooks.py`):
baresip answers without `a=mid` ("Media sections in answer do not match offer"), its DTLS
certificate is RSA (aiortc as DTLS client offered ECDSA suites only: "no shared cipher"), and it
answers a re-INVITE with `a=setup:actpass`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from support.baresip import Baresip
from support.calls import heard, next_inbound, phones, silent
from support.kamailio import Kamailio
from support.wait import wait_until
from webphone.call_session import CallSession
from webphone.media._interop import (
    drop_empty_groups,
    fill_missing_mids,
    fix_answer_setup,
    keep_candidates,
    networks,
)

pytestmark = [pytest.mark.kamailio, pytest.mark.baresip, pytest.mark.timeout(60)]

MakeBaresip = Callable[..., Awaitable[Baresip]]
AUSINE = 440.0  # baresip's audio_source (tests/support/baresip.py)


async def start_bob(baresip: MakeBaresip, **options: object) -> Baresip:
    """The `baresip` fixture's peer "bob" (ICE + DTLS-SRTP account)."""
    return await baresip("bob", ice=True, **options)


async def wait_answered(session: CallSession, timeout: float = 5.0) -> None:
    await wait_until(lambda: session.state == "answered", timeout,
                     message=f"{session} answered")
    assert session.media is not None
    await session.media.wait_connected(timeout)


async def test_phone_calls_baresip_audio_hold_and_phone_hangs_up(
    kamailio: Kamailio, fresh_user: Callable[[], str], baresip: MakeBaresip
) -> None:
    user = fresh_user()
    bob = await start_bob(baresip)
    async with phones(kamailio, [user]) as (phone,):
        out = await phone.call("bob")
        incoming = await bob.wait_event("CALL_INCOMING", timeout=5)
        assert incoming["peeruri"] == f"sip:{user}@{kamailio.domain}"
        await bob.accept()
        await wait_answered(out)
        await bob.wait_event("CALL_ESTABLISHED", timeout=5)
        assert await heard(out, lambda t: t == AUSINE) == AUSINE
        # hold: our re-INVITE offers sendonly, baresip answers recvonly and stops sending
        await out.hold()
        assert out.held and out.media is not None
        assert out.media.negotiated_direction == "sendonly"
        await heard(out, silent)
        await out.unhold()
        assert out.media.negotiated_direction == "sendrecv"
        await heard(out, lambda t: t == AUSINE)
        assert out.media.stats.endpoint_changes == 0
        await out.hangup()
        await bob.wait_event("CALL_CLOSED", timeout=5)
        assert phone.call_sessions == []


async def test_baresip_calls_phone_audio_and_baresip_hangs_up(
    kamailio: Kamailio, fresh_user: Callable[[], str], baresip: MakeBaresip
) -> None:
    user = fresh_user()
    bob = await start_bob(baresip)
    async with phones(kamailio, [user]) as (phone,):
        ringing = next_inbound(phone)
        await bob.dial(f"sip:{user}@{kamailio.domain}")
        inc = await asyncio.wait_for(ringing, 5)
        assert inc.remote_number == "bob" and inc.state == "ringing"
        await bob.wait_event("CALL_RINGING", timeout=5)
        await inc.answer()
        await bob.wait_event("CALL_ESTABLISHED", timeout=5)
        await wait_answered(inc)
        assert await heard(inc, lambda t: t == AUSINE) == AUSINE
        await bob.hangup()
        await asyncio.wait_for(inc.wait_closed(), 5)
        assert inc.end_reason == "remote hung up" and phone.call_sessions == []


async def test_baresip_holds_the_phone_then_phone_hangs_up(
    kamailio: Kamailio, fresh_user: Callable[[], str], baresip: MakeBaresip
) -> None:
    user = fresh_user()
    bob = await start_bob(baresip)
    async with phones(kamailio, [user]) as (phone,):
        ringing = next_inbound(phone)
        await bob.dial(f"sip:{user}@{kamailio.domain}")
        inc = await asyncio.wait_for(ringing, 5)
        await inc.answer()
        await bob.wait_event("CALL_ESTABLISHED", timeout=5)
        await wait_answered(inc)
        await bob.hold()  # re-INVITE with a=sendonly: the phone answers recvonly
        media = inc.media
        assert media is not None
        await wait_until(lambda: media.negotiated_direction == "recvonly", 5,
                         message="phone answered the hold with recvonly")
        assert inc.remote_held
        await bob.resume()
        await wait_until(lambda: media.negotiated_direction == "sendrecv", 5,
                         message="phone answered the resume with sendrecv")
        assert not inc.remote_held
        await heard(inc, lambda t: t == AUSINE)
        assert media.stats.endpoint_changes == 0  # baresip's re-INVITEs: same endpoint
        await inc.hangup()
        await bob.wait_event("CALL_CLOSED", timeout=5)
        assert phone.call_sessions == []


async def test_phone_calls_baresip_which_hangs_up(
    kamailio: Kamailio, fresh_user: Callable[[], str], baresip: MakeBaresip
) -> None:
    user = fresh_user()
    bob = await start_bob(baresip, answermode="auto")
    async with phones(kamailio, [user]) as (phone,):
        out = await phone.call("bob")
        await wait_answered(out)
        await bob.wait_event("CALL_ESTABLISHED", timeout=5)
        await bob.hangup()
        await asyncio.wait_for(out.wait_closed(), 5)
        assert out.end_reason == "remote hung up" and phone.call_sessions == []


async def test_phone_cancels_a_ringing_call_to_baresip(
    kamailio: Kamailio, fresh_user: Callable[[], str], baresip: MakeBaresip
) -> None:
    user = fresh_user()
    bob = await start_bob(baresip)
    async with phones(kamailio, [user]) as (phone,):
        out = await phone.call("bob")
        await bob.wait_event("CALL_INCOMING", timeout=5)
        await wait_until(lambda: out.state == "ringing", 5)
        await out.cancel()
        await bob.wait_event("CALL_CLOSED", timeout=5)
        assert out.state == "disposed" and phone.call_sessions == []


# -- the SDP fix-ups, on baresip's own SDP ---------------------------------------------------------

BARESIP_ANSWER = (
    "v=0\r\no=- 640521721 1508755458 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "a=setup:actpass\r\nm=audio 31956 UDP/TLS/RTP/SAVPF 96 0\r\nc=IN IP4 192.0.2.2\r\n"
    "a=rtpmap:96 opus/48000/2\r\na=sendrecv\r\n"
    "a=candidate:c0000202 1 UDP 2113929471 192.0.2.2 31956 typ host\r\n"
    "a=candidate:020000fd 1 UDP 2113929471 fd00::2 31956 typ host\r\n"
    "a=candidate:7f000003 1 UDP 1845494015 127.0.0.1 31956 typ prflx raddr 192.0.2.2 rport 1\r\n"
    "a=rtcp-mux\r\n"
)
OFFER = "v=0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendrecv\r\n"


def test_answer_without_mid_gets_the_offers_mid_by_position() -> None:
    fixed = fill_missing_mids(BARESIP_ANSWER, OFFER)
    assert "m=audio 31956 UDP/TLS/RTP/SAVPF 96 0\r\na=mid:0\r\n" in fixed
    assert fixed.replace("a=mid:0\r\n", "") == BARESIP_ANSWER
    assert fill_missing_mids(fixed, OFFER) == fixed


def test_actpass_answer_takes_the_role_opposite_ours() -> None:
    assert "a=setup:passive\r\n" in fix_answer_setup(BARESIP_ANSWER, "client")
    assert "a=setup:active\r\n" in fix_answer_setup(BARESIP_ANSWER, "server")
    assert "a=setup:active\r\n" in fix_answer_setup(BARESIP_ANSWER, None)


def test_candidates_outside_the_allowed_networks_are_dropped() -> None:
    loopback = keep_candidates(BARESIP_ANSWER, networks(["127.0.0.1/8"]))
    assert "192.0.2.2 31956" not in loopback and "fd00::2" not in loopback
    assert "127.0.0.1 31956 typ prflx" in loopback
    assert keep_candidates(BARESIP_ANSWER, networks(["192.0.2.0/24"])).count("a=candidate") == 1


def test_empty_bundle_group_is_dropped() -> None:
    assert drop_empty_groups("v=0\r\na=group:BUNDLE \r\nm=audio 9 X 0\r\n") == (
        "v=0\r\nm=audio 9 X 0\r\n")
    assert drop_empty_groups(OFFER) == OFFER
