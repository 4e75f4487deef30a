"""Kamailio routes a dialog to the new WebSocket of a device that came back (see the routing
notes in tests/support/kamailio.cfg: the flow lives in the remote target's ;alias, which a
target refresh replaces).

Phone A (a scripted SipClient, instance X) calls a real WebPhone through Kamailio with media
it does not own; A's WebSocket is dropped without a close frame or a BYE (through a TcpProxy
that is closed). Phone B, instance X on a new connection, registers and re-INVITEs with the
same SDP. Audio is checked by frequency at both ends before and after; the WebPhone's BYE
reaches B.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from support.baresip import Baresip
from support.calls import heard, next_inbound, phones
from support.kamailio import Kamailio
from support.sandbox_server import FAKE_SDP, DialogView, ScriptedPhone
from support.tcp_proxy import TcpProxy
from support.wait import wait_until
from webphone.sip import SipRequest

pytestmark = [pytest.mark.kamailio, pytest.mark.filterwarnings("ignore::ResourceWarning")]

OURS, THEIRS = 1000.0, 440.0


@dataclass
class Media:
    media: Any


async def take_over(b: ScriptedPhone, dialog: DialogView, cseq: int, sdp: bytes) -> None:
    """B's re-INVITE in A's dialog (its own Contact, `sdp`, CSeq `cseq`), 200, ACK."""
    reinvite = b.in_dialog(dialog, "INVITE", body=sdp, content_type="application/sdp")
    reinvite.headers.set("CSeq", f"{cseq} INVITE")
    response = await b.client.request(reinvite)
    assert response.status_code == 200, response.reason
    ack = b.in_dialog(dialog, "ACK")
    ack.headers.set("CSeq", f"{cseq} ACK")
    await b.client.send(ack)


def _last_out(phone: ScriptedPhone, method: str) -> SipRequest:
    return next(m for d, m in reversed(phone.trace)
                if d == "out" and isinstance(m, SipRequest) and m.method == method)


async def test_a_dialog_follows_its_device_to_a_new_websocket(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    from webphone.media import MediaSession

    user, far_user = fresh_user(), fresh_user()
    tcp = await TcpProxy("127.0.0.1", int(kamailio.outbound_proxy.rsplit(":", 1)[1])).start()
    a = ScriptedPhone({**kamailio.sip_info(user), "outboundProxy": f"127.0.0.1:{tcp.port}"},
                      "dev-x")
    b = ScriptedPhone(kamailio.sip_info(user), "dev-x")
    media = MediaSession(loopback_only=True)
    try:
        async with phones(kamailio, [far_user]) as (far,):
            await a.start()
            incoming = next_inbound(far)
            offer = await media.create_offer()
            pending = asyncio.ensure_future(
                a.client.request(a.invite(far_user, body=offer.encode())))
            session = await asyncio.wait_for(incoming, 10)
            await session.answer()
            answer = await asyncio.wait_for(pending, 10)
            assert answer.status_code == 200
            sent = _last_out(a, "INVITE")
            await a.client.send(a.ack(sent, answer))
            dialog = DialogView.as_caller(sent, answer)
            await media.apply_answer(answer.body.decode())
            assert session.media is not None
            await media.wait_connected(10)
            ours = asyncio.ensure_future(media.play_tone(OURS, 60))
            theirs = asyncio.ensure_future(session.media.play_tone(THEIRS, 60))
            assert await heard(Media(media), lambda t: t == THEIRS) == THEIRS  # type: ignore[arg-type]
            assert await heard(session, lambda t: t == OURS) == OURS

            await tcp.close()  # A is gone: no close frame, no BYE
            await wait_until(lambda: kamailio.bindings(user) == [], 5,
                             message="Kamailio to drop the lost WebSocket's binding")
            await b.start()  # same instance, new connection
            same = media.local_sdp
            assert same is not None
            await take_over(b, dialog, sent.cseq.number + 50, same.encode())
            assert await heard(Media(media), lambda t: t == THEIRS) == THEIRS  # type: ignore[arg-type]
            assert await heard(session, lambda t: t == OURS) == OURS
            ours.cancel()
            theirs.cancel()
            # the far party's BYE goes to the new connection
            await session.hangup()
            bye = await b.next("BYE")
            assert bye.call_id == dialog.call_id
    finally:
        await media.close()
        await a.stop()
        await b.stop()
        await tcp.close()


async def test_a_udp_peer_reaches_the_new_websocket_too(
    kamailio: Kamailio, fresh_user: Callable[[], str],
    baresip: Callable[..., Awaitable[Baresip]],
) -> None:
    """The same with baresip (UDP, plain RTP) as the far party: Kamailio's double Record-Route
    (UDP <-> WS) and the refreshed ;alias route baresip's BYE to B's connection."""
    user = fresh_user()
    bob = await baresip("bob", answermode="auto")
    tcp = await TcpProxy("127.0.0.1", int(kamailio.outbound_proxy.rsplit(":", 1)[1])).start()
    a = ScriptedPhone({**kamailio.sip_info(user), "outboundProxy": f"127.0.0.1:{tcp.port}"},
                      "dev-u")
    b = ScriptedPhone(kamailio.sip_info(user), "dev-u")
    try:
        await a.start()
        answer = await a.client.request(a.invite("bob", body=FAKE_SDP))
        assert answer.status_code == 200
        sent = _last_out(a, "INVITE")
        await a.client.send(a.ack(sent, answer))
        await bob.wait_event("CALL_ESTABLISHED", timeout=5)
        dialog = DialogView.as_caller(sent, answer)
        await tcp.close()
        await wait_until(lambda: kamailio.bindings(user) == [], 5,
                         message="Kamailio to drop the lost WebSocket's binding")
        await b.start()
        await take_over(b, dialog, sent.cseq.number + 50, FAKE_SDP)
        await bob.hangup()
        assert (await b.next("BYE")).call_id == dialog.call_id
        await bob.wait_event("CALL_CLOSED", timeout=5)
    finally:
        await a.stop()
        await b.stop()
        await tcp.close()
