"""The real WebPhone against the sandbox: calls with audio, parties, RingCentral commands.

Only names of the public contract are used (call, inbound_call, answer, hangup, to_voicemail,
forward, start_recording), plus `loopback_media` for ICE on 127.0.0.1; the module is skipped
where the phone has no call support yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from support.sandbox_server import sandbox_users
from support.wait import wait_until
from webphone import SipInfo, WebPhone
from webphone.media import AudioStream, MediaSession, detect_tone
from webphone.sandbox import Sandbox

pytestmark = pytest.mark.timeout(60)

RATE = 16000
CANDIDATES = [440, 700, 1000, 1500]


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test") as sandbox:
        yield sandbox


@pytest.fixture
async def phone(sb: Sandbox) -> AsyncIterator[WebPhone]:
    async with WebPhone(SipInfo.from_dict(sb.sip_info("101")), instance_id="wp-101",
                        loopback_media=True) as real:
        yield real


async def heard(media: MediaSession, freq: float, timeout: float = 5.0) -> None:
    stream: AudioStream = media.received_audio()
    async with asyncio.timeout(timeout):
        while True:
            pcm = b""
            for _ in range(10):
                pcm += (await anext(stream)).pcm
            if detect_tone(pcm, media.receive_sample_rate, CANDIDATES) == freq:
                return


async def test_webphone_calls_the_echo_party_and_hears_itself(phone: WebPhone) -> None:
    started = time.perf_counter()
    session = await phone.call("900")
    await wait_until(lambda: session.state == "answered", 5, message="echo answers")
    assert time.perf_counter() - started < 5
    assert session.media is not None
    player = asyncio.ensure_future(session.media.play_tone(1000, 20))
    try:
        await heard(session.media, 1000)
    finally:
        player.cancel()
    await session.hangup()


async def test_tone_party_calls_the_webphone_which_auto_answers(
    sb: Sandbox, phone: WebPhone
) -> None:
    sessions: list[object] = []
    phone.on("inbound_call", sessions.append)
    call = await sb.party_call("101", party="tone", auto_answer=True)
    await call.wait_answered(10)
    session = sessions[0]
    await wait_until(lambda: getattr(session, "media", None) is not None, 5)
    await heard(session.media, 440)  # type: ignore[attr-defined]
    await call.hangup()
    await wait_until(lambda: session.state in ("disposed", "failed"), 5)  # type: ignore[attr-defined]


async def test_two_webphones_call_and_record(sb: Sandbox, phone: WebPhone) -> None:
    async with WebPhone(SipInfo.from_dict(sb.sip_info("102")), instance_id="wp-102",
                        loopback_media=True) as callee:
        inbound: asyncio.Queue[object] = asyncio.Queue()
        callee.on("inbound_call", inbound.put_nowait)
        outbound = await phone.call("102")
        ringing = await asyncio.wait_for(inbound.get(), 5)
        assert getattr(ringing, "party_id", None)  # from p-rc-api-ids
        await ringing.answer()  # type: ignore[attr-defined]
        await wait_until(lambda: outbound.state == "answered", 5)
        result = await outbound.start_recording()
        assert result.code == 0
        assert [d.recording for d in sb.proxy.dialogs()] == [True]
        await outbound.hangup()
        await wait_until(lambda: ringing.state == "disposed", 5)  # type: ignore[attr-defined]


async def test_to_voicemail_reaches_the_voicemail_party_which_records_the_caller(
    sb: Sandbox, phone: WebPhone
) -> None:
    """RingCentral's Cmd 11: the callee sends the ringing call to voicemail; the caller's call
    is answered there (903) and what the caller says arrives in the recorded message."""
    async with WebPhone(SipInfo.from_dict(sb.sip_info("102")), instance_id="wp-102",
                        loopback_media=True) as callee:
        inbound: asyncio.Queue[Any] = asyncio.Queue()
        callee.on("inbound_call", inbound.put_nowait)
        outbound = await phone.call("102")
        ringing = await asyncio.wait_for(inbound.get(), 5)
        await ringing.to_voicemail()
        assert callee.call_sessions == []
        await wait_until(lambda: outbound.state == "answered", 5, message="voicemail answers")
        assert outbound.media is not None
        await outbound.media.wait_connected(10)
        (message,) = sb.voicemails
        assert message.caller == "101" and message.call_id == outbound.call_id
        talking = asyncio.ensure_future(outbound.media.play_tone(700, 30))
        try:
            await wait_until(lambda: message.frames >= 25, 5, message="voicemail hears us")
        finally:
            talking.cancel()
        await outbound.hangup()


async def test_forward_rings_another_webphone_that_talks_with_the_caller(
    sb: Sandbox, phone: WebPhone
) -> None:
    """RingCentral's Cmd 10: the ringing call is forwarded to 103 (a third WebPhone), which
    answers the caller's original call; each hears the other's tone."""
    async with WebPhone(SipInfo.from_dict(sb.sip_info("102")), instance_id="wp-102",
                        loopback_media=True) as callee, \
            WebPhone(SipInfo.from_dict(sb.sip_info("103")), instance_id="wp-103",
                     loopback_media=True) as target:
        at_callee: asyncio.Queue[Any] = asyncio.Queue()
        at_target: asyncio.Queue[Any] = asyncio.Queue()
        callee.on("inbound_call", at_callee.put_nowait)
        target.on("inbound_call", at_target.put_nowait)
        outbound = await phone.call("102")
        ringing = await asyncio.wait_for(at_callee.get(), 5)
        await ringing.forward("103")
        forwarded = await asyncio.wait_for(at_target.get(), 5)
        assert forwarded.remote_number == "101" and forwarded.call_id == outbound.call_id
        await forwarded.answer()
        await wait_until(lambda: outbound.state == "answered", 5)
        assert outbound.media is not None and forwarded.media is not None
        tones = [asyncio.ensure_future(outbound.media.play_tone(700, 30)),
                 asyncio.ensure_future(forwarded.media.play_tone(1500, 30))]
        try:
            await heard(outbound.media, 1500)
            await heard(forwarded.media, 700)
        finally:
            for tone in tones:
                tone.cancel()
        await forwarded.hangup()
        await wait_until(lambda: outbound.state == "disposed", 5)


async def test_hold_and_unhold_a_party_call(phone: WebPhone) -> None:
    """A party answers re-INVITEs like a phone: its tone stops on hold, resumes on unhold."""
    from support.calls import heard as heard_window
    from support.calls import silent

    session = await phone.call("901")
    await wait_until(lambda: session.state == "answered", 5, message="tone party answers")
    assert session.media is not None
    await session.media.wait_connected(10)
    await heard(session.media, 440)
    await session.hold()
    assert session.held
    await heard_window(session, silent)
    await session.unhold()
    await heard(session.media, 440)
    await session.hangup()
