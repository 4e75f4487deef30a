"""Hostile or broken messages inside a live call (injected into the real phone's receive path,
as the server would deliver them) never reach internal code, never end or wedge the call, and
are answered as RFC 3261 says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from support.calls import connect, phones
from support.kamailio import Kamailio
from support.wait import wait_until
from webphone.call_session import CallSession
from webphone.sip import SipResponse

pytestmark = pytest.mark.kamailio


def in_dialog(session: CallSession, method: str, cseq: int, body: str = "") -> str:
    """A request from `session`'s peer inside its dialog, as the proxy would relay it."""
    dialog = session.dialog
    assert dialog is not None
    lines = [
        f"{method} {session.client.contact.split(';')[0].strip('<>')} SIP/2.0",
        "Via: SIP/2.0/WS 127.0.0.1:9;branch=z9hG4bKinjected" + str(cseq),
        f"From: {dialog.remote_address.with_tag(dialog.remote_tag)}",
        f"To: {dialog.local_address.with_tag(dialog.local_tag)}",
        f"Call-ID: {dialog.call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:evil@attacker.invalid>",  # never routable: no traffic leaves
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    return "\r\n".join(lines) + f"\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"


def answers(session: CallSession) -> asyncio.Future[SipResponse]:
    """The next response the phone of `session` sends."""
    future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()

    def on_sent(message: object) -> None:
        if isinstance(message, SipResponse) and not future.done():
            future.set_result(message)

    session.client.on("outbound_message", on_sent)
    return future


async def test_invented_methods_get_405_and_touch_nothing(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user]) as (a, b):
        out, _ = await connect(a, b, b_user)
        assert out.dialog is not None
        target = out.dialog.remote_target
        for number, method in enumerate(("ANSWERED", "END", "PROVISIONAL", "FINISH"), 100):
            reply = answers(out)
            out.client._on_frame(in_dialog(out, method, number))
            response = await asyncio.wait_for(reply, 5)
            assert response.status_code == 405 and "BYE" in (response.headers.get("Allow") or "")
        assert out.state == "answered" and out.dialog.remote_target == target
        await out.hangup()


async def test_reinvite_with_unusable_sdp_gets_488_and_the_call_goes_on(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user]) as (a, b):
        out, inc = await connect(a, b, b_user)
        reply = answers(out)
        out.client._on_frame(in_dialog(out, "INVITE", 200, "v=0\r\nthis is not sdp\r\n"))
        response = await asyncio.wait_for(reply, 5)
        assert response.status_code == 488
        assert out.state == "answered" and not out.remote_held
        await out.hold()  # the dialog still works afterwards
        await wait_until(lambda: inc.remote_held, 5, message="hold after the refused offer")
        await out.hangup()


async def test_async_disposed_handlers_run(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user]) as (a, b):
        out, inc = await connect(a, b, b_user)
        ran = asyncio.Event()

        async def on_disposed(reason: str) -> None:
            await asyncio.sleep(0)
            ran.set()

        inc.on("disposed", on_disposed)
        await out.hangup()
        await asyncio.wait_for(ran.wait(), 5)


async def test_malformed_in_dialog_request_gets_400(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user, b_user]) as (a, b):
        out, _ = await connect(a, b, b_user)
        reply = answers(out)
        broken = in_dialog(out, "INFO", 300).replace("CSeq: 300 INFO", "CSeq: three INFO")
        out.client._on_frame(broken)
        response = await asyncio.wait_for(reply, 5)
        assert response.status_code == 400
        assert out.state == "answered"
        await out.hangup()
