"""Media placement in one process (memory hub, the sandbox as SIP server): a dummy that answers
or places a call holds its media, hears the far party and is heard by it (tones checked by
frequency at both ends); the real only relays SDP (`RemoteMedia`). Issue #11 items 1 and 7.

The far party is a plain `WebPhone` (user 104) playing `FAR_TONE`; the group is user 103."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from support.calls import heard, next_inbound
from support.sandbox_server import sandbox_users
from support.wait import wait_until
from webphone import SipInfo, WebPhone
from webphone.sandbox import Sandbox
from webphone.shared import SharedWebPhone
from webphone.shared.remote_media import RemoteMedia
from webphone.shared.transports.base import HubOptions
from webphone.shared.transports.memory import MemoryTransport

pytestmark = pytest.mark.timeout(60)

OPTIONS = HubOptions(heartbeat_interval=0.1, heartbeat_timeout=0.8, idle_timeout=5.0)
FAR_TONE, HOLDER_TONE = 440.0, 1000.0
GROUP_USER, FAR_USER = "103", "104"


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test") as sandbox:
        yield sandbox


@pytest.fixture
async def far(sb: Sandbox) -> AsyncIterator[WebPhone]:
    async with WebPhone(SipInfo.from_dict(sb.sip_info(FAR_USER)), instance_id="far-104",
                        loopback_media=True) as phone:
        yield phone


@pytest.fixture
async def group(sb: Sandbox) -> AsyncIterator[Callable[..., Any]]:
    transport = MemoryTransport(OPTIONS)
    made: list[SharedWebPhone] = []

    async def join(n: int, **options: Any) -> list[SharedWebPhone]:
        for _ in range(n):
            phone = SharedWebPhone(SipInfo.from_dict(sb.sip_info(GROUP_USER)), hub=transport,
                                   preload_media=False, loopback_media=True, auto_answer=False,
                                   **options)
            await phone.start()
            made.append(phone)
        return made[-n:]

    yield join
    for phone in reversed(made):
        with contextlib.suppress(Exception):
            await phone.dispose(timeout=1)
    await transport.aclose()


async def both_ways(holder: Any, far_session: Any) -> None:
    """The holder hears the far party's tone and the far party hears the holder's."""
    assert await heard(holder, lambda t: t == FAR_TONE) == FAR_TONE
    assert await heard(far_session, lambda t: t == HOLDER_TONE) == HOLDER_TONE


@contextlib.asynccontextmanager
async def talking(holder: Any, far_session: Any) -> AsyncIterator[None]:
    """Both ends play their tone while the block runs; checked both ways first."""
    playing = [asyncio.ensure_future(far_session.media.play_tone(FAR_TONE, 60)),
               asyncio.ensure_future(holder.media.play_tone(HOLDER_TONE, 60))]
    try:
        await both_ways(holder, far_session)
        yield
    finally:
        for task in playing:
            task.cancel()


def media_events(phone: SharedWebPhone) -> list[Any]:
    moved: list[Any] = []
    phone.on("media_moved", moved.append)
    return moved


async def test_a_dummy_answers_and_holds_the_audio(group: Any, far: WebPhone) -> None:
    """The dummy's answer() makes it the media holder: it hears the far party's tone and the
    far party hears the dummy's; the real's session only relays SDP; DTMF goes both ways."""
    real, dummy = await group(2)
    assert (real.role, dummy.role) == ("real", "dummy")
    moved = media_events(dummy)
    ringing = next_inbound(dummy)  # type: ignore[arg-type]
    out = await far.call(GROUP_USER)
    proxy: Any = await asyncio.wait_for(ringing, 10)
    await proxy.answer()
    await wait_until(lambda: out.state == "answered", 5, message="the far party is answered")
    assert proxy.media is not None and moved == [proxy]
    (session,) = real.call_sessions
    assert isinstance(session.media, RemoteMedia) and session.media.holder == dummy.member_id
    assert out.media is not None
    async with talking(proxy, out):  # the dummy hears and is heard
        digits: list[str] = []
        proxy.on("dtmf", digits.append)
        await out.send_dtmf("4")
        await wait_until(lambda: digits == ["4"], 5, message="the holder hears DTMF")
        far_digits: list[str] = []
        out.on("dtmf", far_digits.append)
        await proxy.send_dtmf("7")  # runs on the real, sent by the holder
        await wait_until(lambda: far_digits == ["7"], 5, message="the far party hears DTMF")
    await proxy.hangup()
    await wait_until(lambda: out.state == "disposed", 5, message="the far party gets the BYE")
    await wait_until(lambda: not dummy.media_host.sessions, 5, message="the holder's media ends")


async def test_a_dummy_places_a_call_and_holds_the_audio(group: Any, far: WebPhone) -> None:
    """call() on a dummy: the real sends the INVITE with the dummy's offer; the dummy hears and
    is heard; hold from the dummy goes through the real to the holder's media."""
    _real, dummy = await group(2)
    ringing = next_inbound(far)
    proxy: Any = await dummy.call(FAR_USER)
    inbound = await asyncio.wait_for(ringing, 10)
    await inbound.answer()
    await wait_until(lambda: proxy.state == "answered", 5, message="the dummy sees answered")
    assert proxy.media is not None and inbound.media is not None
    async with talking(proxy, inbound):
        await proxy.hold()
        assert proxy.media.direction == "sendonly"  # the holder's media was told
        assert await heard(proxy, lambda t: t is None) is None  # the held party stops sending
        await proxy.unhold()
        assert await heard(proxy, lambda t: t == FAR_TONE) == FAR_TONE
    await inbound.hangup()
    await wait_until(lambda: proxy.state == "disposed", 5, message="the BYE reaches the group")
    await wait_until(lambda: not dummy.media_host.sessions, 5, message="the holder's media ends")


async def test_the_real_placement_keeps_the_media_on_the_real(group: Any, far: WebPhone) -> None:
    """media="real": a dummy's answer() leaves the audio on the real (as before placement)."""
    real, dummy = await group(2, media="real")
    ringing = next_inbound(dummy)  # type: ignore[arg-type]
    out = await far.call(GROUP_USER)
    proxy: Any = await asyncio.wait_for(ringing, 10)
    await proxy.answer()
    await wait_until(lambda: out.state == "answered", 5)
    (session,) = real.call_sessions
    assert proxy.media is None and not isinstance(session.media, RemoteMedia)
    assert session.media is not None and not dummy.media_host.sessions
    await proxy.hangup()
