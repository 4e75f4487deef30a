"""A call's media taken over by a new process (issue #11 item 3): the first holder H1 is a
MediaSession in a child process, SIGKILLed or closed; H2 = `MediaSession.resume(record)`
continues the session with the far party F. Audio by frequency at both ends: F hears H2's
tone (not H1's), H2 hears F's. Both take-over paths: the offerless re-INVITE (F offers, H2
answers `active`; H2 falls back to a fresh offer after 1 s of silence) and H2's offer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from support.media_handoff import F_TONE, H2_TONE, Ear, Far, first_holder, take_over
from webphone.media import MediaError, MediaSession
from webphone.media.continuity import RESUME_GAP
from webphone.sip.sdp import parse_origin

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]


@pytest.fixture
async def far() -> AsyncIterator[Far]:
    far = Far()
    try:
        yield far
    finally:
        await far.close()


async def _handoff(far: Far, end: str, path: str) -> MediaSession:
    record = await first_holder(far.media.create_answer, end)
    new = MediaSession.resume(record, loopback_only=True)
    new_ear = Ear(new)
    playing = asyncio.ensure_future(new.play_tone(H2_TONE, 3600))
    began = asyncio.get_running_loop().time()
    try:
        await take_over(far, new, path)
        assert await far.ear.tone(H2_TONE, began, 10) is not None, "F never heard H2"
        assert await new_ear.tone(F_TONE, began, 10) is not None, "H2 never heard F"
        # the lineage: same o= session id as H1's, a version above any H1 may have sent
        # unrecorded (RFC 3264 §8)
        old, now = parse_origin(record["local_sdp"]), parse_origin(new.local_sdp or "")
        assert (now.session_id, now.version > old.version + RESUME_GAP) == (old.session_id, True)
    except BaseException:
        playing.cancel()
        new_ear.close()
        await new.close()
        raise
    playing.cancel()
    new_ear.close()
    return new


@pytest.mark.parametrize("end", ["kill", "close"])
@pytest.mark.parametrize("path", ["offerless", "offer"])
async def test_new_holder_takes_over(far: Far, end: str, path: str) -> None:
    new = await _handoff(far, end, path)
    # an offer says actpass (Chromium refuses active); an answer to actpass says active
    setup = "a=setup:actpass" if path == "offer" else "a=setup:active"
    assert setup in (new.local_sdp or "")
    await new.close()


async def test_plain_far_party_recovers_by_the_fallback_offer() -> None:
    """A far party that does not re-offer on "renegotiation_needed" (a plain peer): after a
    kill the offerless exchange brings nothing, and H2's fresh offer after 1 s does."""
    far = Far(follow=False)
    try:
        new = await _handoff(far, "kill", "offerless")
        assert new.stats.endpoint_changes == 1  # the fallback came from a new peer connection
        await new.close()
    finally:
        await far.close()


async def test_far_party_re_offers_after_an_answer_from_a_new_endpoint(far: Far) -> None:
    """Item 3, the far side: F's offer came from its old, still connected peer connection;
    H2's answer brings a new certificate; F says "renegotiation_needed" and its re-offer
    comes from a new peer connection, which H2 follows (no fallback offer needed)."""
    new = await _handoff(far, "kill", "offerless")
    assert far.reoffers == 1 and far.media.stats.endpoint_changes == 1
    await new.close()


async def test_wait_first_audio_gives_up_with_a_clear_error() -> None:
    lonely = MediaSession(loopback_only=True)
    try:
        with pytest.raises(MediaError, match=r"no audio from the far end within 0.2 s"):
            await lonely.wait_first_audio(0.2)
    finally:
        await lonely.close()


@pytest.mark.parametrize(
    ("change", "error"),
    [({"version": 2}, "version 2 is not 1"),
     ({"local_sdp": "hello"}, "local_sdp must be SDP text"),
     ({"direction": "sideways"}, "direction 'sideways' is not one of"),
     ({"receive_sample_rate": 7}, "receive_sample_rate 7 is not an integer")],
)
async def test_resume_refuses_a_bad_record(change: dict[str, object], error: str) -> None:
    a, b = MediaSession(loopback_only=True), MediaSession(loopback_only=True)
    try:
        await a.apply_answer(await b.create_answer(await a.create_offer()))
        record = a.continuity() | change
        with pytest.raises(MediaError, match=error):
            MediaSession.resume(record, loopback_only=True)
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_the_record_carries_hold_mute_and_dtmf_to_the_new_holder() -> None:
    a, b = MediaSession(loopback_only=True), MediaSession(loopback_only=True)
    try:
        with pytest.raises(MediaError, match="before the first completed offer/answer"):
            a.continuity()
        await a.apply_answer(await b.create_answer(await a.create_offer()))
        a.set_direction("sendonly")  # hold, the RingCentral way
        a.mute()
        record = a.continuity()
        assert record["dtmf_payload_type"] == 110 and record["mids"] == ["0"]
        new = MediaSession.resume(record, loopback_only=True)
        try:
            assert (new.direction, new.muted) == ("sendonly", True)
            offer = await new.create_offer()
            assert "a=sendonly" in offer and "a=rtpmap:110 telephone-event/48000" in offer
        finally:
            await new.close()
    finally:
        await asyncio.gather(a.close(), b.close())
