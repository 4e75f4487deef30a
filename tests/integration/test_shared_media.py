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
FAR_TONE, HOLDER_TONE, NEW_HOLDER_TONE = 440.0, 1000.0, 1400.0
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


async def both_ways(holder: Any, far_session: Any, tone: float = HOLDER_TONE) -> None:
    """The holder hears the far party's tone and the far party hears the holder's `tone`."""
    assert await heard(holder, lambda t: t == FAR_TONE) == FAR_TONE
    assert await heard(far_session, lambda t: t == tone) == tone


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


def taker_or_a_dummy(call: dict[str, Any], members: list[dict[str, Any]]) -> str | None:
    """A placement policy: the taker, else the first dummy (after a holder was lost)."""
    if call.get("taker"):
        return str(call["taker"])
    return next((m["member_id"] for m in members if m["role"] == "dummy"), None)


def play_when_moved_here(phone: SharedWebPhone, playing: list[asyncio.Future[Any]],
                         tone: float = HOLDER_TONE) -> None:
    """What an application does on ``media_moved``: play its audio into the new media."""
    phone.on("media_moved", lambda session: playing.append(
        asyncio.ensure_future(session.media.play_tone(tone, 60))))


@contextlib.asynccontextmanager
async def moving_call(answerer: SharedWebPhone, new_holder: SharedWebPhone, far: WebPhone
                      ) -> AsyncIterator[tuple[Any, Any]]:
    """A call `answerer` answers, both ends talking (checked) while the block runs: (its
    session, the far session). `new_holder` plays NEW_HOLDER_TONE once the media moves to it."""
    playing: list[asyncio.Future[Any]] = []
    play_when_moved_here(new_holder, playing, NEW_HOLDER_TONE)
    session, out = await answered_by(answerer, far)
    try:
        async with talking(session, out):
            yield session, out
    finally:
        for task in playing:
            task.cancel()


async def timed(what: str, coro: Any) -> None:
    """Await `coro` and print how long it took (a figure for the report, never asserted)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await coro
    print(f"{what}: {1000 * (loop.time() - started):.0f} ms")


async def answered_by(member: SharedWebPhone, far: WebPhone) -> tuple[Any, Any]:
    """The far party calls the group and `member` answers: (its session, the far session)."""
    ringing = next_inbound(member)  # type: ignore[arg-type]
    out = await far.call(GROUP_USER)
    proxy: Any = await asyncio.wait_for(ringing, 10)
    await proxy.answer()
    await wait_until(lambda: out.state == "answered", 5, message="the far party is answered")
    return proxy, out


async def test_a_crashed_media_holder_is_replaced_by_another_member(
    group: Any, far: WebPhone
) -> None:
    """The holder crashes (its link and media gone): the real gives the call to another dummy
    (the policy), which resumes the media; the far party hears the new holder and is heard,
    and never gets a BYE."""
    real, holder, spare = await group(3, media=taker_or_a_dummy)
    async with moving_call(holder, spare, far) as (_, out):
        holder._crash()
        await wait_until(lambda: spare.media_host.sessions, 10, message="spare takes over")
        (session,) = real.call_sessions
        await wait_until(lambda: isinstance(session.media, RemoteMedia)
                         and session.media.holder == spare.member_id, 10)
        (moved,) = [p for p in spare.call_sessions if p.media is not None]
        await both_ways(moved, out, NEW_HOLDER_TONE)
    assert out.state == "answered" and session.state == "answered"  # no BYE either way


async def test_a_leaving_holder_moves_its_calls_first(group: Any, far: WebPhone) -> None:
    """dispose() of a dummy holder: the real moves the media of its calls (here to itself)
    before the dummy closes; the audio goes on both ways, the far party gets no BYE."""
    real, holder = await group(2)
    async with moving_call(holder, real, far) as (_, out):
        await timed("dispose() of a holder with 1 call", holder.dispose())
        (session,) = real.call_sessions
        assert session.media is not None and not isinstance(session.media, RemoteMedia)
        await both_ways(session, out, NEW_HOLDER_TONE)
    assert out.state == "answered" and session.state == "answered"


async def test_an_answer_for_a_taker_that_died_leaves_the_media_on_the_real(
    group: Any, far: WebPhone
) -> None:
    """The member named as holder is not in the group when the real answers (it died after
    asking): the call is answered all the same, its media on the real."""
    real, dummy = await group(2)
    ringing = next_inbound(dummy)  # type: ignore[arg-type]
    out = await far.call(GROUP_USER)
    proxy: Any = await asyncio.wait_for(ringing, 10)
    await dummy._request("answer", proxy.call_id, {"holder": "gone-member"})
    await wait_until(lambda: out.state == "answered", 5, message="answered all the same")
    (session,) = real.call_sessions
    assert session.media is not None and not isinstance(session.media, RemoteMedia)
    async with talking(session, out):
        pass


async def test_a_leaving_real_moves_its_own_media_to_a_member_first(
    group: Any, far: WebPhone
) -> None:
    """A real that leaves without draining first moves the media it holds to a dummy
    (make-before-break): the dummy hears the far party and is heard, no BYE. The move is
    checked before the hand-over that `dispose()` does next (the next test: the whole leave)."""
    real, dummy = await group(2)
    async with moving_call(real, dummy, far) as (session, out):
        await real._move_own_media()  # what dispose() does before handing over
        assert isinstance(session.media, RemoteMedia)
        assert session.media.holder == dummy.member_id
        (proxy,) = [p for p in dummy.call_sessions if p.media is not None]
        await both_ways(proxy, out, NEW_HOLDER_TONE)
    assert out.state == "answered" and session.state == "answered"


async def test_a_call_whose_remote_media_goes_silent_ends_by_the_media_timeout(
    group: Any, far: WebPhone
) -> None:
    """The real watches the RTP of media held by a dummy too (the holder's counters): when the
    far party's audio stops, the call ends after media_timeout with a BYE and the reason."""
    real, dummy = await group(2, media_timeout=1.0)
    proxy, out = await answered_by(dummy, far)
    (session,) = real.call_sessions
    async with talking(proxy, out):
        pass
    await out.media.close()  # the far party's audio stops (its dialog stays)
    await wait_until(lambda: session.state == "disposed", 5, message="the real ends the call")
    assert "media timeout" in (session.end_reason or "")
    await wait_until(lambda: out.state == "disposed", 5, message="the far party gets the BYE")
    await wait_until(lambda: not dummy.media_host.sessions, 5, message="the holder's media ends")


async def test_a_real_with_a_call_leaves_and_the_call_goes_on(group: Any, far: WebPhone) -> None:
    """dispose() of the real holding a call's dialog and media: its media moves to the dummy,
    the dummy becomes the real and adopts the dialog; the far party, without a BYE, hears the
    new holder and is heard by it."""
    real, dummy = await group(2)
    async with moving_call(real, dummy, far) as (_, out):
        await timed("dispose() of the real with 1 call", real.dispose())
        assert dummy.role == "real"
        (adopted,) = dummy.call_sessions
        await wait_until(lambda: adopted.media is not None, 5, message="media adopted")
        await both_ways(adopted, out, NEW_HOLDER_TONE)
    assert out.state == "answered" and adopted.state == "answered"  # no BYE either way
