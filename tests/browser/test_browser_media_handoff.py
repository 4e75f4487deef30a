"""A call's media taken over by a new process with Chromium as the far party (issue #11
item 3): a plain RTCPeerConnection page (pages/pc.js) in a call with H1, a MediaSession in a
child process; H1 is SIGKILLed (or closed); H2 = `MediaSession.resume(record)` answers
Chromium's offer (the re-INVITE without SDP: Chromium offers, H2 answers `a=setup:active` and
so is the DTLS client). Audio by frequency at both ends: Chromium hears H2's tone (an
AnalyserNode), H2 hears Chromium's.
"""

from __future__ import annotations

import asyncio

import pytest
from chromium import Browser

from support.media_handoff import F_TONE, H1_TONE, H2_TONE, Ear, first_holder
from webphone.media import MediaSession
from webphone.sip.sdp import parse_origin

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.timeout(90)]


@pytest.mark.parametrize("end", ["kill", "close"])
async def test_chromium_follows_a_new_holder_offerless(browser: Browser, end: str) -> None:
    tab = await browser.open("pc.html")
    await tab.api("setTone", F_TONE)

    async def hears_h1() -> None:
        assert await tab.api("pcHeardAt", H1_TONE, 0, 8000) is not None, "F never heard H1"

    record = await first_holder(lambda offer: tab.api("pcAnswer", offer), end, hears_h1)
    new = MediaSession.resume(record, loopback_only=True)
    ear = Ear(new)
    playing = asyncio.ensure_future(new.play_tone(H2_TONE, 3600))
    try:
        began, since = asyncio.get_running_loop().time(), await tab.api("now")
        offer = await tab.api("pcOffer", True)
        await tab.api("pcApplyAnswer", await new.create_answer(offer))
        assert "a=setup:active" in (new.local_sdp or "")  # H2 is the DTLS client
        await new.wait_first_audio(5)
        assert await tab.api("pcHeardAt", H2_TONE, since, 8000) is not None, "F never heard H2"
        assert await ear.tone(F_TONE, began, 8) is not None, "H2 never heard F"
        old, now = parse_origin(record["local_sdp"]), parse_origin(new.local_sdp or "")
        assert now.session_id == old.session_id and now.version > old.version
    finally:
        playing.cancel()
        ear.close()
        await new.close()
