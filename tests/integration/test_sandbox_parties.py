"""Built-in parties with real audio (aiortc on loopback), party calls, the control channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from support.sandbox_server import DialogView, ScriptedPhone, sandbox_users
from support.tones import heard, playing
from support.wait import wait_until
from webphone.media import MediaSession
from webphone.sandbox import Sandbox
from webphone.sandbox.cli import main as cli_main
from webphone.sip import SipRequest
from webphone.sip.rc import RcCommand, parse_rc_message
from webphone.sip.transaction import new_tag

pytestmark = pytest.mark.timeout(60)

RATE = 16000


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test", reject_delay=0.2) as sandbox:
        yield sandbox


@pytest.fixture
async def phone(sb: Sandbox) -> AsyncIterator[ScriptedPhone]:
    scripted = await ScriptedPhone(sb.sip_info("101"), "media-101").start()
    yield scripted
    await scripted.stop()


@pytest.fixture
async def media() -> AsyncIterator[MediaSession]:
    session = MediaSession(loopback_only=True, receive_sample_rate=RATE)
    yield session
    await session.close()


async def call_party(phone: ScriptedPhone, media: MediaSession, number: str) -> DialogView:
    invite = phone.invite(number, body=(await media.create_offer()).encode())
    final = await phone.client.request(invite)
    assert final.status_code == 200, final.reason
    sent = next(m for d, m in reversed(phone.trace)
                if d == "out" and isinstance(m, SipRequest) and m.method == "INVITE")
    await phone.client.send(phone.ack(sent, final))
    await media.apply_answer(final.body.decode())
    return DialogView.as_caller(sent, final)


async def test_echo_party_sends_back_what_it_hears(
    sb: Sandbox, phone: ScriptedPhone, media: MediaSession
) -> None:
    started = time.perf_counter()
    dialog = await call_party(phone, media, "900")
    setup = time.perf_counter() - started
    stream = media.received_audio()
    async with playing(media, 1000):
        assert await heard(stream, 1000) < 5.0
    async with playing(media, 700):
        await heard(stream, 700)
    assert sb.parties["900"].calls[dialog.call_id].frames_received > 0
    bye = await phone.client.request(phone.in_dialog(dialog, "BYE"))
    assert bye.status_code == 200
    await wait_until(lambda: not sb.parties["900"].calls, 5)
    assert setup < 5.0
    assert phone.sequence()[:3] == ["out INVITE", "in 100", "in 407"]


async def test_tone_party(phone: ScriptedPhone, media: MediaSession) -> None:
    await call_party(phone, media, "901")
    assert await heard(media.received_audio(), 440) < 5.0


async def test_busy_party(phone: ScriptedPhone) -> None:
    assert (await phone.client.request(phone.invite("902"))).status_code == 486


async def test_party_calls_user_with_auto_answer_headers(
    sb: Sandbox, phone: ScriptedPhone, media: MediaSession
) -> None:
    call = await sb.party_call("101", party="tone", auto_answer=True,
                               headers={"X-Test": "yes"})
    invite = await phone.next("INVITE")
    assert invite.headers["Alert-Info"] == "Auto Answer"
    assert "Answer-After=0" in invite.headers["Call-Info"]
    assert invite.headers["X-Test"] == "yes"
    p_rc = parse_rc_message(invite.headers["P-rc"])
    assert p_rc.body["Nm"] == "Tone" and p_rc.headers["To"] == "101"
    answer = await media.create_answer(invite.body.decode())
    await phone.client.reply(invite, 200, "OK", to_tag=new_tag(), body=answer.encode(),
                             content_type="application/sdp")
    await call.wait_answered(5)
    await phone.next("ACK")
    assert await heard(media.received_audio(), 440) < 5.0
    await call.hangup()
    await phone.next("BYE")
    await asyncio.wait_for(call, 5)
    assert call.state == "ended"


async def test_party_call_hung_up_while_ringing_is_cancelled(
    sb: Sandbox, phone: ScriptedPhone
) -> None:
    call = await sb.party_call("101", party="echo")
    invite = await phone.next("INVITE")
    assert "Alert-Info" not in invite.headers
    await phone.client.reply(invite, 180, "Ringing", to_tag="r")
    await call.ringing.wait()
    hangup = asyncio.ensure_future(call.hangup())
    await phone.next("CANCEL")
    await phone.client.reply(invite, 487, "Request Terminated", to_tag="r")
    await asyncio.wait_for(hangup, 5)
    assert call.state == "ended" and call.status == 487


async def test_party_call_to_an_offline_user_fails(sb: Sandbox) -> None:
    call = await sb.party_call("110", party="tone")
    with pytest.raises(Exception, match="480"):
        await call.wait_answered(5)


async def test_to_voicemail_is_answered_by_the_voicemail_party(
    sb: Sandbox, phone: ScriptedPhone, media: MediaSession
) -> None:
    callee = await ScriptedPhone(sb.sip_info("102"), "vm-102").start()
    try:
        outcome = asyncio.ensure_future(phone.client.request(
            phone.invite("102", body=(await media.create_offer()).encode())))
        invite = await callee.next("INVITE")
        await callee.client.reply(invite, 180, "Ringing", to_tag="t")
        await callee.rc(invite, RcCommand.CLIENT_VOICEMAIL)
        final = await asyncio.wait_for(outcome, 10)
        assert final.status_code == 200
        await media.apply_answer(final.body.decode())
        async with playing(media, 700):
            await wait_until(lambda: sb.voicemails and sb.voicemails[0].frames > 10, 5)
        assert sb.voicemails[0].caller == "101"
    finally:
        await callee.stop()


async def test_cli_call_through_the_control_channel(
    sb: Sandbox, phone: ScriptedPhone, media: MediaSession
) -> None:
    argv = ["call", "101", "--from", "tone", "--url", sb.url, "--auto-answer",
            "--header", "X-From-Cli: 1", "--duration", "0.5"]
    code = asyncio.ensure_future(asyncio.to_thread(cli_main, argv))
    invite = await phone.next("INVITE")
    assert invite.headers["X-From-Cli"] == "1" and invite.headers["Alert-Info"] == "Auto Answer"
    answer = await media.create_answer(invite.body.decode())
    await phone.client.reply(invite, 200, "OK", to_tag=new_tag(), body=answer.encode(),
                             content_type="application/sdp")
    await phone.next("BYE", timeout=10)
    assert await asyncio.wait_for(code, 10) == 0


async def test_control_channel_refuses_browsers(sb: Sandbox) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        async with connect(sb.url, subprotocols=["webphone-sandbox-control"],  # type: ignore[list-item]
                           origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403


async def test_cli_call_reports_an_unreachable_sandbox() -> None:
    assert await asyncio.to_thread(cli_main, ["call", "101", "--port", "1"]) == 2
