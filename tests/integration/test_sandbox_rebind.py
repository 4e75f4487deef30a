"""A call leg survives the loss of its WebSocket: the same device (same RFC 5626 instance id)
comes back on a new connection, re-INVITEs, and the sandbox routes the dialog there.

Phone A's WebSocket goes through a TcpProxy; closing the proxy drops it the way a SIGKILL or a
broken network does (TCP closed, no WebSocket close frame). Phone B, a new SipClient with A's
instance id, registers and sends the in-dialog re-INVITE (A's dialog, its own Contact, a CSeq
above A's). Audio is checked by frequency against the echo party (what we send comes back).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from support.calls import heard
from support.sandbox_server import DialogView, ScriptedPhone, sandbox_users
from support.tcp_proxy import TcpProxy
from support.wait import wait_until
from webphone.sandbox import Sandbox
from webphone.sip import SipRequest, SipResponse
from webphone.sip.transaction import new_tag

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TONE = 1000.0


@dataclass
class Device:
    """A phone and what it knows of its call (enough for its successor to carry on)."""

    phone: ScriptedPhone
    proxy: TcpProxy | None
    dialog: DialogView | None = None
    cseq: int = 0


@dataclass
class Media:
    """What `support.calls.heard` needs: an object with `.media`."""

    media: Any


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test", rebind_grace=5.0) as sandbox:
        yield sandbox


@pytest.fixture
async def devices(sb: Sandbox) -> AsyncIterator[Callable[..., Awaitable[Device]]]:
    made: list[Device] = []

    async def make(user: str, instance: str, *, droppable: bool = False) -> Device:
        info = sb.sip_info(user)
        proxy = None
        if droppable:
            proxy = await TcpProxy("127.0.0.1", sb.port).start()
            info = {**info, "outboundProxy": f"127.0.0.1:{proxy.port}"}
        device = Device(ScriptedPhone(info, instance), proxy)
        made.append(device)
        await device.phone.start()
        return device

    yield make
    for device in made:
        await device.phone.stop()
        if device.proxy is not None:
            await device.proxy.close()


async def lose(device: Device, sb: Sandbox) -> None:
    """Drop the device's WebSocket without a goodbye (no close frame, no BYE); returns once
    the sandbox saw it (the binding that came over it is gone)."""
    assert device.proxy is not None
    contact = device.phone.client.contact
    await device.proxy.close()
    await wait_until(lambda: not any(b["contact"] in contact for b in sb.bindings("101")), 5,
                     message="the sandbox to see the connection lost")


async def call(caller: Device, callee: Device, number: str) -> SipRequest:
    """`caller` calls `number`, `callee` answers; returns the INVITE as the callee got it."""
    pending = asyncio.ensure_future(caller.phone.client.request(caller.phone.invite(number)))
    invite = await callee.phone.next("INVITE")
    tag = new_tag()
    await callee.phone.client.reply(invite, 200, "OK", to_tag=tag, body=b"v=0\r\n",
                                    content_type="application/sdp")
    answer = await asyncio.wait_for(pending, 5)
    assert answer.status_code == 200
    sent = _last_out(caller.phone, "INVITE")
    await caller.phone.client.send(caller.phone.ack(sent, answer))
    caller.dialog, caller.cseq = DialogView.as_caller(sent, answer), sent.cseq.number
    callee.dialog = DialogView.as_callee(invite, tag)
    await callee.phone.next("ACK")
    return invite


async def reinvite(device: Device, dialog: DialogView, cseq: int, sdp: bytes) -> SipResponse:
    """An in-dialog re-INVITE refreshing the target (our Contact), then its ACK."""
    request = device.phone.in_dialog(dialog, "INVITE", body=sdp, content_type="application/sdp")
    request.headers.set("CSeq", f"{cseq} INVITE")
    response = await device.phone.client.request(request)
    if response.status_code == 200:
        ack = device.phone.in_dialog(dialog, "ACK")
        ack.headers.set("CSeq", f"{cseq} ACK")
        await device.phone.client.send(ack)
    return response


async def lost_caller(devices: Callable[..., Awaitable[Device]], sb: Sandbox
                      ) -> tuple[Device, Device]:
    """A (instance dev-x, droppable) called 102 (answered); A's connection is then lost."""
    a = await devices("101", "dev-x", droppable=True)
    far = await devices("102", "far")
    await call(a, far, "102")
    await lose(a, sb)
    return a, far


async def take_over(b: Device, a: Device, far: Device, cseq: int) -> SipRequest:
    """B re-INVITEs in A's dialog; the far phone answers 200; returns the INVITE it got."""
    assert a.dialog is not None
    pending = asyncio.ensure_future(reinvite(b, a.dialog, cseq, b"v=0\r\n"))
    got = await far.phone.next("INVITE")
    await far.phone.client.reply(got, 200, "OK", body=b"v=0\r\n", content_type="application/sdp")
    assert (await asyncio.wait_for(pending, 5)).status_code == 200
    return got


def _last_out(phone: ScriptedPhone, method: str) -> SipRequest:
    return next(m for d, m in reversed(phone.trace)
                if d == "out" and isinstance(m, SipRequest) and m.method == method)


async def test_the_same_device_on_a_new_connection_takes_the_dialog(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    a, far = await lost_caller(devices, sb)
    b = await devices("101", "dev-x")  # the successor: same instance, new connection
    got = await take_over(b, a, far, a.cseq + 100)
    assert b.phone.client.contact.strip("<>").split(";")[0] in got.headers["Contact"]
    assert far.dialog is not None
    assert (await far.phone.next("ACK")).cseq.number == got.cseq.number
    # the far side's requests and their answers now go over B's connection
    info = far.phone.in_dialog(far.dialog, "INFO", body=b"Signal=5\r\n",
                               content_type="application/dtmf-relay")
    assert (await far.phone.client.request(info)).status_code == 200
    assert (await b.phone.next("INFO")).body == b"Signal=5\r\n"
    bye = far.phone.in_dialog(far.dialog, "BYE")
    assert (await far.phone.client.request(bye)).status_code == 200
    assert (await b.phone.next("BYE")).call_id == far.dialog.call_id


async def test_anyone_else_gets_403(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    a, far = await lost_caller(devices, sb)
    other_device = await devices("101", "dev-y")  # same user, another instance
    other_user = await devices("103", "dev-x")  # another user, the same instance string
    assert a.dialog is not None
    for intruder, why in ((other_device, "+sip.instance differs"),
                          (other_user, "another user's dialog")):
        response = await reinvite(intruder, a.dialog, a.cseq + 1, b"v=0\r\n")
        assert response.status_code == 403 and why in response.reason, response.reason
    # the dialog is intact: the real successor still takes it
    await take_over(await devices("101", "dev-x"), a, far, a.cseq + 2)


async def test_a_device_that_does_not_come_back_is_hung_up_for(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    """After `rebind_grace` (5 s here) the far side gets the BYE; the late successor 481."""
    a = await devices("101", "dev-x", droppable=True)
    far = await devices("102", "far")
    await call(a, far, "102")
    loop = asyncio.get_running_loop()
    lost_at = loop.time()
    await lose(a, sb)
    bye = await far.phone.next("BYE", timeout=15)
    waited = loop.time() - lost_at
    assert bye.call_id == far.dialog.call_id if far.dialog else False
    assert waited >= 4.5, f"hung up {waited:.1f} s after the loss, before the grace"
    b = await devices("101", "dev-x")
    assert a.dialog is not None
    assert (await reinvite(b, a.dialog, a.cseq + 1, b"v=0\r\n")).status_code == 481


async def test_a_bye_from_the_far_side_while_the_device_is_away_ends_the_dialog(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    a, far = await lost_caller(devices, sb)
    assert far.dialog is not None and a.dialog is not None
    reoffer = far.phone.in_dialog(far.dialog, "INVITE", body=b"v=0\r\n",
                                  content_type="application/sdp")
    away = await far.phone.client.request(reoffer)
    assert away.status_code == 480 and away.headers["Retry-After"] == "5"  # away, not gone
    bye = far.phone.in_dialog(far.dialog, "BYE")
    assert (await far.phone.client.request(bye)).status_code == 200
    b = await devices("101", "dev-x")
    assert (await reinvite(b, a.dialog, a.cseq + 1, b"v=0\r\n")).status_code == 481


async def test_audio_goes_on_and_the_party_accepts_new_media_after_the_move(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    """A calls the echo party with media it does not own (it outlives A's SIP connection);
    B takes the dialog with that media's SDP unchanged: the echo goes on. Then B offers new
    media (new DTLS certificate, new ICE credentials): the party follows, the echo is back."""
    from webphone.media import MediaSession

    a = await devices("101", "dev-x", droppable=True)
    media = MediaSession(loopback_only=True)
    try:
        offer = await media.create_offer()
        pending = a.phone.client.request(a.phone.invite("900", body=offer.encode()))
        answer = await asyncio.wait_for(pending, 10)
        assert answer.status_code == 200
        sent = _last_out(a.phone, "INVITE")
        await a.phone.client.send(a.phone.ack(sent, answer))
        dialog = DialogView.as_caller(sent, answer)
        await media.apply_answer(answer.body.decode())
        await media.wait_connected(10)
        playing = asyncio.ensure_future(media.play_tone(TONE, 60))
        assert await heard(Media(media), lambda t: t == TONE) == TONE  # type: ignore[arg-type]
        party_call = next(iter(sb.parties["900"].calls.values()))

        await lose(a, sb)
        b = await devices("101", "dev-x")
        same = media.local_sdp
        assert same is not None
        response = await reinvite(b, dialog, sent.cseq.number + 50, same.encode())
        assert response.status_code == 200, response.reason
        assert await heard(Media(media), lambda t: t == TONE) == TONE  # type: ignore[arg-type]

        fresh = MediaSession(loopback_only=True)
        try:
            new_offer = await fresh.create_offer()
            response = await reinvite(b, dialog, sent.cseq.number + 51, new_offer.encode())
            assert response.status_code == 200, response.reason
            await fresh.apply_answer(response.body.decode())
            await fresh.wait_connected(10)
            new_tone = asyncio.ensure_future(fresh.play_tone(TONE, 60))
            heard_fresh = await heard(Media(fresh), lambda t: t == TONE)  # type: ignore[arg-type]
            assert heard_fresh == TONE
            new_tone.cancel()
        finally:
            await fresh.close()
        playing.cancel()
        # the party's BYE reaches the successor
        await party_call.hangup()
        assert (await b.phone.next("BYE")).call_id == dialog.call_id
        await wait_until(lambda: party_call.state == "ended", 5)
    finally:
        await media.close()


async def test_a_hung_device_is_superseded_and_its_old_connection_refused(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    """SIGSTOP-like: A's socket stays open but A is silent; B (same instance) registers, which
    replaces A's binding, and takes the dialog. When A wakes up and speaks in the dialog over
    its old connection, it gets 403: the device now lives on B's connection."""
    a = await devices("101", "dev-x")
    far = await devices("102", "far")
    await call(a, far, "102")
    b = await devices("101", "dev-x")
    await only_binding_is(sb, b)
    await take_over(b, a, far, a.cseq + 10)
    assert a.dialog is not None and far.dialog is not None
    late = a.phone.in_dialog(a.dialog, "INFO", body=b"Signal=1\r\n",
                             content_type="application/dtmf-relay")
    late.headers.set("CSeq", f"{a.cseq + 1} INFO")
    response = await a.phone.client.request(late)
    assert response.status_code == 403 and "+sip.instance" in response.reason, response.reason
    bye = far.phone.in_dialog(far.dialog, "BYE")
    assert (await far.phone.client.request(bye)).status_code == 200
    assert (await b.phone.next("BYE")).call_id == far.dialog.call_id


async def only_binding_is(sb: Sandbox, b: Device) -> None:
    """One binding for the instance, B's (the REGISTER replaced A's)."""
    bindings = sb.bindings("101")
    assert len(bindings) == 1 and bindings[0]["contact"] in b.phone.client.contact


async def test_a_sigkilled_process_is_lost_not_gone(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    """The dialog's holder is a real process, SIGKILLed: the sandbox waits for its device
    instead of hanging up, and the successor takes the dialog."""
    import json
    import os
    import sys
    from pathlib import Path

    far = await devices("102", "far")
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{tests}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "support.dialog_holder", json.dumps(sb.sip_info("101")), "dev-x",
        "102", stdout=asyncio.subprocess.PIPE, env=env)
    try:
        invite = await far.phone.next("INVITE", timeout=20)
        tag = new_tag()
        await far.phone.client.reply(invite, 200, "OK", to_tag=tag, body=b"v=0\r\n",
                                     content_type="application/sdp")
        far.dialog = DialogView.as_callee(invite, tag)
        assert proc.stdout is not None
        held = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        await far.phone.next("ACK")
        proc.kill()
        await proc.wait()
        await wait_until(lambda: sb.bindings("101") == [], 5, message="the binding to go")
        a = Device(far.phone, None, DialogView(**{k: v for k, v in held.items() if k != "cseq"}),
                   held["cseq"])
        b = await devices("101", "dev-x")
        await take_over(b, a, far, a.cseq + 10)
        bye = far.phone.in_dialog(far.dialog, "BYE")
        assert (await far.phone.client.request(bye)).status_code == 200
        assert (await b.phone.next("BYE")).call_id == far.dialog.call_id
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_clean_close_while_the_device_is_registered_elsewhere_keeps_the_dialog(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    """A group hand-over is make-before-break: the successor B registers A's instance, then A
    closes its WebSocket cleanly (no unregister). A's dialog waits for B's target refresh
    instead of ending (the device is still there, on another flow: RFC 5626 §4.4)."""
    a = await devices("101", "dev-x")
    far = await devices("102", "far")
    await call(a, far, "102")
    b = await devices("101", "dev-x")  # registered before A leaves
    await a.phone.client.dispose(unregister=False)  # a clean close frame, no REGISTER
    await wait_until(lambda: len(sb.bindings("101")) == 1, 5,
                     message="the sandbox to drop A's connection")
    got = await take_over(b, a, far, a.cseq + 100)  # 481 if the close had ended the dialog
    assert far.dialog is not None
    assert (await far.phone.next("ACK")).cseq.number == got.cseq.number
    bye = far.phone.in_dialog(far.dialog, "BYE")
    assert (await far.phone.client.request(bye)).status_code == 200
    assert (await b.phone.next("BYE")).call_id == far.dialog.call_id


async def test_a_clean_close_of_the_devices_only_flow_ends_the_dialog_at_once(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    a = await devices("101", "dev-x")
    far = await devices("102", "far")
    await call(a, far, "102")
    await a.phone.client.dispose(unregister=False)
    bye = await far.phone.next("BYE", timeout=3)  # well before the 5 s grace
    assert far.dialog is not None and bye.call_id == far.dialog.call_id


async def test_a_reoffer_in_flight_to_a_lost_connection_gets_500_and_the_dialog_stays(
    devices: Callable[..., Awaitable[Device]], sb: Sandbox
) -> None:
    """The far side's re-INVITE was forwarded to A and A's connection is lost before A
    answers: a transport error (RFC 3261 §16.9) answered as 500 (§16.7 step 6), not 408,
    which would end the dialog at the far side (§12.2.1.2). The dialog stays: A's successor
    takes it and the far side's requests reach it. (Before: 408.)"""
    a = await devices("101", "dev-x", droppable=True)
    far = await devices("102", "far")
    await call(a, far, "102")
    assert far.dialog is not None and a.dialog is not None
    reoffer = far.phone.in_dialog(far.dialog, "INVITE", body=b"v=0\r\n",
                                  content_type="application/sdp")
    pending = asyncio.ensure_future(far.phone.client.request(reoffer))
    await a.phone.next("INVITE")  # in flight: A never answers it
    await lose(a, sb)
    failed = await asyncio.wait_for(pending, 5)
    assert (failed.status_code, failed.reason) == (500, "Server Internal Error"), failed
    assert "connection closed" in failed.headers["Warning"]
    got = await take_over(await devices("101", "dev-x"), a, far, a.cseq + 100)
    assert (await far.phone.next("ACK")).cseq.number == got.cseq.number
    bye = far.phone.in_dialog(far.dialog, "BYE")
    assert (await far.phone.client.request(bye)).status_code == 200


async def test_a_reoffer_the_device_never_answers_times_out_with_408(
    devices: Callable[..., Awaitable[Device]]
) -> None:
    """The device's connection is up but it never answers: Timer C/F (the sandbox's
    `transaction_timeout`) — a 408 (RFC 3261 §16.8), which rightly ends the dialog at the
    sender (§12.2.1.2): the far UA is there and does not answer."""
    quick = Sandbox(users=sandbox_users(), domain="sip.test")
    quick.config.transaction_timeout = 0.5
    async with quick:
        a = ScriptedPhone(quick.sip_info("101"), "dev-x")
        far = ScriptedPhone(quick.sip_info("102"), "far")
        await a.start()
        await far.start()
        try:
            caller, callee = Device(a, None), Device(far, None)
            await call(caller, callee, "102")
            assert callee.dialog is not None
            reoffer = far.in_dialog(callee.dialog, "INVITE", body=b"v=0\r\n",
                                    content_type="application/sdp")
            pending = asyncio.ensure_future(far.client.request(reoffer))
            await a.next("INVITE")
            assert (await asyncio.wait_for(pending, 5)).status_code == 408
        finally:
            await a.stop()
            await far.stop()
