"""A call's media renewed by new media (`renew_media`), and a call adopted by another phone
(`continuity_record` / `WebPhone.adopt_call`): issue #11 items 2-4, in one process.

Two WebPhones call each other through Kamailio and through the sandbox; audio is checked by
frequency at both ends, before and after."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from support.calls import connect, heard, phones
from webphone import WebPhone
from webphone.call_session import CallSession
from webphone.errors import CallError, SipParseError
from webphone.media import MediaSession
from webphone.sip import SipRequest

pytestmark = pytest.mark.timeout(60)

FAR, OLD, NEW = 440.0, 1000.0, 1400.0


def requests_seen(phone: WebPhone, method: str) -> list[SipRequest]:
    """Every `method` request `phone` receives from now on."""
    seen: list[SipRequest] = []

    def note(message: Any) -> None:
        if isinstance(message, SipRequest) and message.method == method:
            seen.append(message)

    phone.on("inbound_message", note)
    return seen


def tone_is(hz: float) -> Callable[[float | None], bool]:
    return lambda tone: tone == hz


async def playing(session: CallSession, hz: float) -> asyncio.Task[Any]:
    media = session.media
    assert isinstance(media, MediaSession)
    return asyncio.create_task(media.play_tone(hz, 60))


@pytest.mark.parametrize("side", ["caller", "callee"])
async def test_renew_media_brings_the_audio_back_both_ways(
    sip_server: Any, server_user: Callable[[], str], side: str
) -> None:
    """One side's media is closed and resumed from its continuity record; `renew_media`
    (offerless re-INVITE, answer in the ACK; the webphone far party re-offers) brings the
    audio back: the far party hears the new tone, the new media hears the far party, no BYE."""
    a, b = server_user(), server_user()
    async with phones(sip_server, [a, b]) as (caller, callee):
        out, inc = await connect(caller, callee, b)
        mover, far = (out, inc) if side == "caller" else (inc, out)
        far_phone = callee if side == "caller" else caller
        tasks = [await playing(far, FAR), await playing(mover, OLD)]
        assert await heard(far, tone_is(OLD)) == OLD
        old = mover.media
        assert isinstance(old, MediaSession)
        record = old.continuity()
        await old.close()
        byes = requests_seen(far_phone, "BYE")
        new = MediaSession.resume(record, loopback_only=True)
        tasks.append(asyncio.create_task(new.play_tone(NEW, 60)))
        moved = asyncio.ensure_future(mover.wait_for("media_moved", timeout=20))
        await mover.renew_media(new)
        assert mover.media is new and await moved == (new,)
        assert await heard(far, tone_is(NEW)) == NEW
        assert await heard(mover, tone_is(FAR)) == FAR
        assert mover.state == far.state == "answered" and byes == []
        for task in tasks:
            task.cancel()


@pytest.mark.kamailio
async def test_the_media_timeout_waits_while_renew_media_negotiates(
    kamailio: Any, fresh_user: Callable[[], str]
) -> None:
    """The far party offers (in its 200 to the offerless re-INVITE) three media timeouts late,
    as a busy far end may: the mover's media timeout does not count while `renew_media`
    negotiates (no audio is expected before that exchange ends), so the call goes on and the
    audio comes back both ways; once renewed, silence ends the call by the timeout again.
    (A successor adopting a call with `--media-timeout 1` on a loaded machine ended it: "no
    audio received for 1 s" while the far party had not yet answered its re-INVITE.)"""
    timeout = 0.5
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user], media_timeout=timeout) as (caller,), \
            phones(kamailio, [b_user], media_timeout=None) as (callee,):
        out, inc = await connect(caller, callee, b_user)
        tasks = [await playing(inc, FAR), await playing(out, OLD)]
        assert await heard(inc, tone_is(OLD)) == OLD
        far_media, old = inc.media, out.media
        assert isinstance(far_media, MediaSession) and isinstance(old, MediaSession)
        offer = far_media.create_offer

        async def slow_offer(**options: Any) -> str:
            await asyncio.sleep(3 * timeout)  # the far end's slowness under test
            return await offer(**options)

        far_media.create_offer = slow_offer  # type: ignore[method-assign]
        record = old.continuity()
        await old.close()
        new = MediaSession.resume(record, loopback_only=True)
        tasks.append(asyncio.create_task(new.play_tone(NEW, 60)))
        await out.renew_media(new)
        assert out.state == "answered" and out.media is new
        assert await heard(inc, tone_is(NEW)) == NEW
        assert await heard(out, tone_is(FAR)) == FAR
        await far_media.peer_connection.close()
        await asyncio.wait_for(out.wait_closed(), 5)
        assert out.end_reason == f"no audio received for {timeout:g} s (media timeout)"
        for task in tasks:
            task.cancel()


async def test_renew_media_ends_the_call_when_the_dialog_is_gone(
    sip_server: Any, server_user: Callable[[], str]
) -> None:
    """A re-INVITE answered 481 (the far party forgot the call): `renew_media` raises and the
    call ends with the reason."""
    a, b = server_user(), server_user()
    async with phones(sip_server, [a, b]) as (caller, callee):
        out, inc = await connect(caller, callee, b)
        assert inc.core is not None
        inc.core.end("forgotten")  # the far party's core answers every request 481 now
        new = MediaSession.resume(out.media.continuity(), loopback_only=True)  # type: ignore[union-attr]
        with pytest.raises(CallError, match="481"):
            await out.renew_media(new)
        assert out.state == "disposed" and "481" in (out.end_reason or "")
        assert new.closed


async def test_adopted_call_goes_on_with_a_refresh(
    sip_server: Any, server_user: Callable[[], str]
) -> None:
    """A second phone of the same user adopts the answered call from the first one's record
    (same media, which is handed over), refreshes the target and takes the dialog: the far
    party's next request reaches it, its CSeq is far above the old holder's, audio goes on."""
    a, b = server_user(), server_user()
    async with phones(sip_server, [a, b]) as (caller, callee):
        out, inc = await connect(caller, callee, b)
        tasks = [await playing(out, OLD), await playing(inc, FAR)]
        record = out.continuity_record()
        old_cseq = out.dialog.local_cseq  # type: ignore[union-attr]
        media = out.media
        out.media = None  # the media stays (as on a member that holds it); the SIP side goes
        out.client.fence()
        successor = WebPhone(caller.sip_info, instance_id=caller.instance_id,
                             loopback_media=True)
        await successor.start()
        try:
            adopted = successor.adopt_call(record, media)
            assert adopted.state == "answered" and adopted.call_id == out.call_id
            assert adopted.media is media and adopted.direction == "outbound"
            assert adopted.session_timer is None  # the RFC 4028 timer did not travel ...
            response = await adopted.refresh()
            assert response.is_success
            assert adopted.session_timer is not None  # ... the refresh's 2xx sets it again
            assert response.cseq.number > old_cseq + 900
            assert await heard(inc, tone_is(OLD)) == OLD
            assert await heard(adopted, tone_is(FAR)) == FAR
            infos = requests_seen(successor, "INFO")
            await inc._dialog_send(inc._dialog_request("INFO"))
            assert [r.call_id for r in infos] == [out.call_id]
            await adopted.hangup()
            await asyncio.wait_for(inc.wait_closed(), 5)
            assert inc.end_reason == "remote hung up"
        finally:
            for task in tasks:
                task.cancel()
            await successor.dispose()


async def test_adopt_call_names_the_wrong_field(
    sip_server: Any, server_user: Callable[[], str]
) -> None:
    """A bad record is refused with the field it got wrong; the phone's calls are untouched."""
    a, b = server_user(), server_user()
    async with phones(sip_server, [a, b]) as (caller, callee):
        out, _ = await connect(caller, callee, b)
        record = out.continuity_record()
        with pytest.raises(CallError, match="already one of this phone's"):
            caller.adopt_call(record)
        cases = [({"version": 2}, "'version' is 2"),
                 ({"direction": "inbound"}, "'direction' is 'inbound'"),
                 ({"held": "no"}, "'held' must be bool"),
                 ({"core": {**record["core"], "state": "ringing"}}, "only an answered call"),
                 ({"core": {**record["core"], "version": 9}}, "call.version is 9")]
        async with phones(sip_server, [a]) as (other,):
            for change, message in cases:
                with pytest.raises(SipParseError, match=message):
                    other.adopt_call({**record, **change})
            assert other.call_sessions == []
        assert "password" not in str(record).lower()
        assert "authorization:" not in record["core"]["invite"].lower()  # no digest answer
        assert caller.sip_info.password not in str(record)
