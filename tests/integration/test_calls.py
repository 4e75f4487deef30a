"""Phone-to-phone calls through a real Kamailio, with real audio over loopback WebRTC."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from support.calls import connect, heard, next_inbound, phones, silent
from support.kamailio import Kamailio
from support.wait import wait_until
from webphone.errors import CallError

pytestmark = pytest.mark.kamailio


async def test_tone_hold_mute_dtmf_and_hangup(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user]) as (a, b):
        out, inc = await connect(a, b, b_user)
        assert out.remote_number == b_user and inc.remote_number == a_user
        assert out.call_id == inc.call_id
        assert out.media is not None and inc.media is not None
        # a tone from B is heard at A at the right frequency (and A's at B)
        b_tone = asyncio.create_task(inc.media.play_tone(1000, 30))
        a_tone = asyncio.create_task(out.media.play_tone(440, 30))
        assert await heard(out, lambda t: t == 1000.0) == 1000.0
        assert await heard(inc, lambda t: t == 440.0) == 440.0
        # A holds B: B stops sending; unhold resumes it
        await out.hold()
        assert out.held
        await wait_until(lambda: inc.remote_held, 5, message="B sees it is held")
        await heard(out, silent)
        await out.unhold()
        await heard(out, lambda t: t == 1000.0)
        # mute silences B's tone, unmute brings it back
        await inc.mute()
        await heard(out, silent)
        await inc.unmute()
        await heard(out, lambda t: t == 1000.0)
        # DTMF from A arrives as events at B, in order
        digits: list[str] = []
        inc.on("dtmf", digits.append)
        await out.send_dtmf("12#9")
        await wait_until(lambda: "".join(digits) == "12#9", 5, message=f"dtmf {digits}")
        b_tone.cancel()
        a_tone.cancel()
        # hangup from the callee ends both sides
        disposed = asyncio.ensure_future(out.wait_for("disposed", timeout=5))
        await inc.hangup()
        await disposed
        assert out.state == inc.state == "disposed"
        assert a.call_sessions == [] and b.call_sessions == []


async def test_caller_hangs_up(kamailio: Kamailio, fresh_user: Callable[[], str]) -> None:
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user]) as (a, b):
        out, inc = await connect(a, b, b_user)
        await out.hangup()
        await inc.wait_closed()
        assert inc.state == "disposed" and inc.end_reason == "remote hung up"


async def test_cancel_while_ringing(kamailio: Kamailio, fresh_user: Callable[[], str]) -> None:
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user]) as (a, b):
        incoming = next_inbound(b)
        out = await a.call(b_user)
        assert out.state == "ringing"
        inc = await asyncio.wait_for(incoming, 10)
        await out.cancel()
        await asyncio.wait_for(inc.wait_closed(), 5)
        assert inc.end_reason == "caller cancelled"
        assert out.state == "disposed" and b.call_sessions == []


async def test_decline_fails_the_caller(kamailio: Kamailio, fresh_user: Callable[[], str]) -> None:
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user]) as (a, b):
        incoming = next_inbound(b)
        out = await a.call(b_user)
        inc = await asyncio.wait_for(incoming, 10)
        failed = asyncio.ensure_future(out.wait_for("failed", timeout=5))
        await inc.decline()
        (reason,) = await failed
        assert reason.startswith("603")
        assert out.state == "failed" and a.call_sessions == []


async def test_calling_nobody_raises(kamailio: Kamailio, fresh_user: Callable[[], str]) -> None:
    a_user, nobody = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user]) as (a,):
        with pytest.raises(CallError, match="404"):
            await a.call(nobody)
        assert a.call_sessions == []


async def test_cold_transfer(kamailio: Kamailio, fresh_user: Callable[[], str]) -> None:
    a_user, b_user, c_user = fresh_user(), fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user, c_user]) as (a, b, c):
        out, inc = await connect(a, b, b_user)
        at_c = next_inbound(c)
        transferring = asyncio.create_task(out.transfer(c_user))
        c_call = await asyncio.wait_for(at_c, 10)
        assert c_call.remote_number == b_user  # B (the transferee) calls C
        await c_call.answer()
        await transferring
        await asyncio.wait_for(out.wait_closed(), 5)
        await asyncio.wait_for(inc.wait_closed(), 5)
        (b_to_c,) = b.call_sessions
        assert b_to_c.state == "answered" and b_to_c.remote_number == c_user
        assert a.call_sessions == []
        assert c_call.media is not None and b_to_c.media is not None
        tone = asyncio.create_task(c_call.media.play_tone(1400, 30))
        await heard(b_to_c, lambda t: t == 1400.0)
        tone.cancel()


async def test_warm_transfer(kamailio: Kamailio, fresh_user: Callable[[], str]) -> None:
    a_user, b_user, c_user = fresh_user(), fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user, c_user]) as (a, b, c):
        a_to_b, b_from_a = await connect(a, b, b_user)
        at_c = next_inbound(c)
        warm = asyncio.create_task(a_to_b.warm_transfer(c_user))
        c_from_a = await asyncio.wait_for(at_c, 10)
        await c_from_a.answer()
        transfer = await warm
        assert a_to_b.held and transfer.session.state in ("ringing", "answered")
        if transfer.session.state != "answered":
            await transfer.session.wait_for("answered", timeout=5)
        at_c_again = next_inbound(c)
        await transfer.complete()
        replacing = await asyncio.wait_for(at_c_again, 10)
        assert replacing.remote_number == b_user
        await wait_until(lambda: a.call_sessions == [], 10, message="A left both calls")
        await asyncio.wait_for(b_from_a.wait_closed(), 5)  # B's leg with A ended
        await asyncio.wait_for(c_from_a.wait_closed(), 5)  # C's leg with A was replaced
        (b_to_c,) = b.call_sessions
        (c_to_b,) = c.call_sessions
        assert c_to_b is replacing and b_to_c.state == c_to_b.state == "answered"


async def test_dispose_ends_every_call_then_unregisters(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    """The upstream SDK skipped every second call (it iterated over the list it shrank)."""
    a_user, b_user, c_user, d_user = fresh_user(), fresh_user(), fresh_user(), fresh_user()
    async with phones(kamailio, [b_user, c_user, d_user]) as (b, c, d):
        async with phones(kamailio, [a_user]) as (a,):
            _, at_b = await connect(a, b, b_user)
            _, at_c = await connect(a, c, c_user)
            at_d = next_inbound(d)
            ringing = await a.call(d_user)  # a third call, still ringing
            ringing_at_d = await asyncio.wait_for(at_d, 10)
            assert len(a.call_sessions) == 3
            await a.dispose()
            assert a.call_sessions == [] and ringing.state == "disposed"
            assert kamailio.bindings(a_user) == []
        for session in (at_b, at_c, ringing_at_d):
            await asyncio.wait_for(session.wait_closed(), 5)
        assert at_b.end_reason == at_c.end_reason == "remote hung up"
        assert ringing_at_d.end_reason == "caller cancelled"
