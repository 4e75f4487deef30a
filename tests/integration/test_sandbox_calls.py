"""Calls through the sandbox with scripted phones: forking, CANCEL, and RingCentral's flows.

Each RingCentral test reproduces one upstream live test (upstream-webphone-sdk.md §6): the
phones answer like the browser SDK (automatic 200 to MESSAGE/BYE/CANCEL/INFO/NOTIFY) and the
message sequence each side sees is compared with the upstream assertion.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from support.sandbox_server import DialogView, ScriptedPhone, sandbox_users
from support.wait import wait_until
from webphone.sandbox import Sandbox
from webphone.sip import SipRequest, SipResponse
from webphone.sip.rc import RcCommand, build_info_command, parse_rc_api_ids, parse_rc_message
from webphone.sip.transaction import new_tag

MakePhone = Callable[..., Awaitable[ScriptedPhone]]


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test", parties=False,
                       reject_delay=0.3) as sandbox:
        yield sandbox


@pytest.fixture
async def phones(sb: Sandbox) -> AsyncIterator[MakePhone]:
    made: list[ScriptedPhone] = []

    async def make(user: str, instance: str | None = None) -> ScriptedPhone:
        phone = ScriptedPhone(sb.sip_info(user), instance or f"{user}-{len(made)}")
        made.append(phone)
        return await phone.start()

    yield make
    for phone in made:
        await phone.stop()


@dataclass
class Ringing:
    """A call from `caller` ringing on `callee`, after the SDK's 100/180/Cmd 17 dance."""

    caller: ScriptedPhone
    callee: ScriptedPhone
    invite: SipRequest  # as the callee got it
    tag: str
    outcome: asyncio.Future[SipResponse]  # the caller's final response
    provisional: list[SipResponse]
    sent: SipRequest | None = None  # the caller's authenticated INVITE, once answered

    async def answer(self) -> SipResponse:
        """Callee answers; caller ACKs. Returns the caller's 200."""
        await self.callee.client.reply(self.invite, 200, "OK", to_tag=self.tag,
                                       body=b"v=0\r\n", content_type="application/sdp")
        final = await asyncio.wait_for(self.outcome, 5)
        assert final.status_code == 200
        self.sent = last_invite(self.caller)
        await self.caller.client.send(self.caller.ack(self.sent, final))
        return final

    def callee_dialog(self) -> DialogView:
        return DialogView.as_callee(self.invite, self.tag)

    def caller_dialog(self) -> DialogView:
        return DialogView.as_caller(self.sent, self.outcome.result())


async def ring(caller: ScriptedPhone, callee: ScriptedPhone, number: str = "102") -> Ringing:
    provisional: list[SipResponse] = []
    outcome = asyncio.ensure_future(
        caller.client.request(caller.invite(number), on_provisional=provisional.append)
    )
    invite = await callee.next("INVITE")
    tag = new_tag()
    await callee.client.reply(invite, 100, "Trying")
    await callee.client.reply(invite, 180, "Ringing", to_tag=tag)
    confirm = await callee.rc(invite, RcCommand.CLIENT_RECEIVE_CONFIRM)
    assert confirm.status_code == 200
    await wait_until(lambda: any(p.status_code == 183 for p in provisional), 5)
    return Ringing(caller, callee, invite, tag, outcome, provisional)


def last_invite(phone: ScriptedPhone) -> SipRequest:
    """The last INVITE `phone` sent (the authenticated one)."""
    return next(m for d, m in reversed(phone.trace)
                if d == "out" and isinstance(m, SipRequest) and m.method == "INVITE")


def rc_cmd(message: SipRequest | SipResponse) -> int | None:
    return parse_rc_message(message.body).cmd


def inbound(phone: ScriptedPhone, method: str) -> list[SipRequest]:
    return [m for d, m in phone.trace if d == "in" and isinstance(m, SipRequest)
            and m.method == method]


# -- plain call ----------------------------------------------------------------------------------


async def test_call_traces_match_ringcentral(phones: MakePhone) -> None:
    """misc/call.spec.ts: caller INVITE,100,407,INVITE,100,183,200,ACK; callee INVITE,100,180,
    MESSAGE(17),100,200; P-rc Phn/ToPhn are +numbers; p-rc-api-ids carries the ids."""
    caller, callee = await phones("101"), await phones("102")
    call = await ring(caller, callee)
    assert callee.sequence() == ["in INVITE", "out 100", "out 180", "out MESSAGE", "in 100",
                                 "in 200"]
    p_rc = parse_rc_message(call.invite.headers["P-rc"])
    assert p_rc.cmd == 6 and p_rc.headers["To"] == "102"
    assert p_rc.body["Phn"] == "+16505550101" and p_rc.body["ToPhn"] == "+16505550102"
    assert p_rc.body["Nm"] == "User 101" and p_rc.body["ToNm"] == "User 102"
    ids = parse_rc_api_ids(call.invite.headers["p-rc-api-ids"])
    assert ids.party_id and ids.party_id.startswith("p-") and ids.session_id
    assert call.invite.headers["p-rc-api-call-info"] == "callAttributes=reject,send-vm"
    assert call.invite.headers.get_all("Record-Route")
    callee.clear()
    await call.answer()
    # webphone's client ACKs the 407 (RFC 3261), the upstream SDK does not: both work here
    assert caller.sequence() == ["out INVITE", "in 100", "in 407", "out ACK", "out INVITE",
                                 "in 100", "in 183", "in 200", "out ACK"]
    # inbound/answer.spec.ts: 200 out, ACK in, MESSAGE (Cmd 7) in, 200 out
    await wait_until(lambda: len(callee.sequence()) >= 4, 5)
    assert callee.sequence() == ["out 200", "in ACK", "in MESSAGE", "out 200"]
    assert rc_cmd(inbound(callee, "MESSAGE")[0]) == RcCommand.ALREADY_PROCESSED
    assert parse_rc_message(inbound(callee, "MESSAGE")[0].body).cln == "102"


async def test_caller_hangup_gives_callee_server_free_resources(phones: MakePhone) -> None:
    """answered/hang-up.spec.ts: caller BYE,200; callee BYE,200,MESSAGE(Cmd 2),200."""
    caller, callee = await phones("101"), await phones("102")
    call = await ring(caller, callee)
    await call.answer()
    await wait_until(lambda: inbound(callee, "MESSAGE"), 5)
    caller.clear()
    callee.clear()
    bye = await caller.client.request(caller.in_dialog(call.caller_dialog(), "BYE"))
    assert bye.status_code == 200
    assert caller.sequence() == ["out BYE", "in 200"]
    await wait_until(lambda: len(callee.sequence()) >= 4, 5)
    assert callee.sequence() == ["in BYE", "out 200", "in MESSAGE", "out 200"]
    assert rc_cmd(inbound(callee, "MESSAGE")[0]) == RcCommand.SERVER_FREE_RESOURCES


async def test_callee_hangup_reaches_caller(phones: MakePhone) -> None:
    caller, callee = await phones("101"), await phones("102")
    call = await ring(caller, callee)
    await call.answer()
    bye = await callee.client.request(callee.in_dialog(call.callee_dialog(), "BYE"))
    assert bye.status_code == 200
    got = await caller.next("BYE")
    assert got.call_id == call.invite.call_id


# -- forking -------------------------------------------------------------------------------------


async def test_fork_to_every_instance_and_cancel_the_others(phones: MakePhone) -> None:
    caller = await phones("101")
    first, second = await phones("102", "dev-a"), await phones("102", "dev-b")
    provisional: list[SipResponse] = []
    outcome = asyncio.ensure_future(
        caller.client.request(caller.invite("102"), on_provisional=provisional.append)
    )
    a, b = await first.next("INVITE"), await second.next("INVITE")
    assert a.uri != b.uri and a.call_id == b.call_id
    assert a.headers["P-rc"] == b.headers["P-rc"]
    await first.client.reply(a, 180, "Ringing", to_tag="ta")
    await second.client.reply(b, 180, "Ringing", to_tag="tb")
    await second.client.reply(b, 200, "OK", to_tag="tb", body=b"v=0\r\n",
                              content_type="application/sdp")
    final = await asyncio.wait_for(outcome, 5)
    assert final.status_code == 200 and final.to_tag == "tb"
    assert [p.status_code for p in provisional if p.status_code > 100] == [183]  # once only
    cancel = await first.next("CANCEL")
    assert 'cause=200' in (cancel.headers.get("Reason") or "")
    message = await first.next("MESSAGE")  # AlreadyProcessed after the CANCEL
    assert rc_cmd(message) == RcCommand.ALREADY_PROCESSED
    sent = last_invite(caller)
    await caller.client.send(caller.ack(sent, final))
    await second.next("ACK")
    assert rc_cmd(await second.next("MESSAGE")) == RcCommand.ALREADY_PROCESSED


async def test_caller_cancel_cancels_every_fork_and_gets_487(phones: MakePhone) -> None:
    caller = await phones("101")
    first, second = await phones("102", "dev-a"), await phones("102", "dev-b")
    invite = caller.invite("102")
    outcome = asyncio.ensure_future(caller.client.request(invite))
    a = await first.next("INVITE")
    await second.next("INVITE")
    await first.client.reply(a, 180, "Ringing", to_tag="ta")
    await wait_until(lambda: any(isinstance(m, SipResponse) and m.status_code == 183
                                 for _, m in caller.trace), 5)
    sent = last_invite(caller)
    cancel = sent.copy()
    cancel.method = "CANCEL"
    cancel.headers.set("CSeq", f"{sent.cseq.number} CANCEL")
    cancel.headers.remove("Content-Type")
    cancel.body = b""
    assert (await caller.client.request(cancel)).status_code == 200
    await first.next("CANCEL")
    await second.next("CANCEL")
    # the devices answer the CANCEL (auto 200) and, being proper UAs here, 487 their INVITEs
    await first.client.reply(a, 487, "Request Terminated", to_tag="ta")
    final = await asyncio.wait_for(outcome, 5)
    assert final.status_code == 487


async def test_unknown_number_is_183_then_486_like_ringcentral(phones: MakePhone) -> None:
    """outbound/invalid-number.spec.ts: ... 183, 486 Busy Here."""
    caller = await phones("101")
    final = await caller.client.request(caller.invite("78654"))
    assert final.status_code == 486
    assert caller.sequence()[-4:] == ["in 100", "in 183", "in 486", "out ACK"]


async def test_nobody_registered_is_480(phones: MakePhone) -> None:
    caller = await phones("101")
    assert (await caller.client.request(caller.invite("103"))).status_code == 480


async def test_custom_headers_reach_the_callee(phones: MakePhone) -> None:
    """outbound/custom-header.spec.ts: X-Custom-Header is on both INVITEs and is delivered."""
    caller, callee = await phones("101"), await phones("102")
    outcome = asyncio.ensure_future(caller.client.request(
        caller.invite("102", headers=[("X-Custom-Header", "hello")])))
    invite = await callee.next("INVITE")
    assert invite.headers["X-Custom-Header"] == "hello"
    sent = [m for d, m in caller.trace if d == "out" and isinstance(m, SipRequest)
            and m.method == "INVITE"]
    assert [m.headers.get("X-Custom-Header") for m in sent] == ["hello", "hello"]
    assert "Proxy-Authorization" not in invite.headers
    await callee.client.reply(invite, 486, "Busy Here", to_tag="x")
    assert (await asyncio.wait_for(outcome, 5)).status_code == 486


# -- x-rc/agent commands before answer -----------------------------------------------------------

CLOSE_SEQUENCE = ["out MESSAGE", "in 100", "in 200", "in MESSAGE", "out 200", "in CANCEL",
                  "out 200"]


async def _close_ringing(phones: MakePhone, cmd: RcCommand, extra: dict[str, str] | None = None,
                         ) -> Ringing:
    caller, callee = await phones("101"), await phones("102")
    call = await ring(caller, callee)
    caller.clear()
    callee.clear()
    response = await callee.rc(call.invite, cmd, extra)
    assert response.status_code == 200
    await wait_until(lambda: len(callee.sequence()) >= 7, 5)
    assert callee.sequence() == CLOSE_SEQUENCE
    sent = [m for d, m in callee.trace if d == "out" and isinstance(m, SipRequest)]
    assert rc_cmd(sent[0]) == cmd
    assert rc_cmd(inbound(callee, "MESSAGE")[0]) == RcCommand.SESSION_CLOSE
    assert caller.sequence() == []  # the caller hears ringback meanwhile
    return call


async def test_decline(phones: MakePhone) -> None:
    """inbound/decline.spec.ts; the caller ends with 480 (RingCentral: "no one is available")."""
    call = await _close_ringing(phones, RcCommand.CLIENT_REJECT)
    assert (await asyncio.wait_for(call.outcome, 5)).status_code == 480


async def test_to_voicemail_without_a_voicemail_party(phones: MakePhone) -> None:
    """inbound/voicemail.spec.ts (the sandbox here has no parties: the caller gets 480)."""
    call = await _close_ringing(phones, RcCommand.CLIENT_VOICEMAIL)
    assert (await asyncio.wait_for(call.outcome, 5)).status_code == 480


async def test_forward_rings_the_target(phones: MakePhone) -> None:
    """inbound/forward.spec.ts, then the forward target rings and can answer the caller."""
    target = await phones("103")
    call = await _close_ringing(phones, RcCommand.CLIENT_FORWARD,
                                {"FwdDly": "0", "Phn": "103", "PhnTp": "3"})
    invite = await target.next("INVITE")
    assert parse_rc_message(invite.headers["P-rc"]).headers["To"] == "103"
    await target.client.reply(invite, 200, "OK", to_tag="fw", body=b"v=0\r\n",
                              content_type="application/sdp")
    final = await asyncio.wait_for(call.outcome, 5)
    assert final.status_code == 200 and final.to_tag == "fw"


async def test_start_reply_keeps_the_call_ringing(phones: MakePhone) -> None:
    """inbound/reply/start-reply.spec.ts: MESSAGE(13),100,200 and nothing else."""
    caller, callee = await phones("101"), await phones("102")
    call = await ring(caller, callee)
    caller.clear()
    callee.clear()
    assert (await callee.rc(call.invite, RcCommand.CLIENT_START_REPLY)).status_code == 200
    assert callee.sequence() == ["out MESSAGE", "in 100", "in 200"]
    assert caller.sequence() == [] and not call.outcome.done()
    await callee.client.reply(call.invite, 486, "Busy Here", to_tag=call.tag)


@pytest.mark.parametrize(
    ("result", "resp"),
    [({"Sts": "0", "Resp": "1"}, "1"), ({"Sts": "0", "Resp": "3", "ExtNfo": "16505550199"}, "3")],
    ids=["yes", "urgent"],
)
async def test_reply(sb: Sandbox, phones: MakePhone, result: dict[str, str], resp: str) -> None:
    """inbound/reply/reply-with-{yes,urgent}.spec.ts: MESSAGE(14),100,200,CANCEL,200,
    MESSAGE(9 Sts=0 Resp=..),200. The caller's keypad answer is `sb.config.reply_result`."""
    sb.config.reply_result = result
    caller, callee = await phones("101"), await phones("102")
    call = await ring(caller, callee)
    await callee.rc(call.invite, RcCommand.CLIENT_START_REPLY)
    caller.clear()
    callee.clear()
    response = await callee.rc(call.invite, RcCommand.CLIENT_REPLY,
                               {"RepTp": "0", "Bdy": "Hello world!"})
    assert response.status_code == 200
    await wait_until(lambda: len(callee.sequence()) >= 7, 5)
    assert callee.sequence() == ["out MESSAGE", "in 100", "in 200", "in CANCEL", "out 200",
                                 "in MESSAGE", "out 200"]
    close = parse_rc_message(inbound(callee, "MESSAGE")[0].body)
    assert close.cmd == RcCommand.SESSION_CLOSE
    assert close.body["Sts"] == "0" and close.body["Resp"] == resp
    assert close.body.get("ExtNfo") == result.get("ExtNfo")
    assert close.body["Phn"] == "+16505550101"
    assert caller.sequence() == []
    assert (await asyncio.wait_for(call.outcome, 5)).status_code == 480


# -- INFO JSON commands after answer -------------------------------------------------------------


async def _info(phone: ScriptedPhone, dialog: DialogView, command: str, reqid: int,
                **args: str) -> dict[str, object]:
    body = build_info_command(command, reqid, **args)
    request = phone.in_dialog(dialog, "INFO", body=body,
                              content_type="application/json;charset=utf-8")
    assert (await phone.client.request(request)).status_code == 200
    answer = await phone.next("INFO")
    response = json.loads(answer.body)["response"]
    assert response["reqid"] == reqid and response["command"] == command
    result: dict[str, object] = response["result"]
    return result


async def _answered(phones: MakePhone) -> Ringing:
    caller, callee = await phones("101"), await phones("102")
    call = await ring(caller, callee)
    await call.answer()
    assert rc_cmd(await callee.next("MESSAGE")) == RcCommand.ALREADY_PROCESSED
    caller.clear()
    callee.clear()
    return call


async def test_recording_start_stop(phones: MakePhone, sb: Sandbox) -> None:
    """answered/recording.spec.ts: INFO,200,INFO(result),200 twice; code 0; callee sees none."""
    call = await _answered(phones)
    dialog = call.caller_dialog()
    assert (await _info(call.caller, dialog, "startcallrecord", 1))["code"] == 0
    assert [d.recording for d in sb.proxy.dialogs()] == [True]
    assert (await _info(call.caller, dialog, "stopcallrecord", 2))["code"] == 0
    assert [d.recording for d in sb.proxy.dialogs()] == [False]
    await wait_until(lambda: len(call.caller.sequence()) >= 8, 5)
    assert call.caller.sequence() == ["out INFO", "in 200", "in INFO", "out 200"] * 2
    assert call.callee.sequence() == []


async def test_park(phones: MakePhone, sb: Sandbox) -> None:
    """answered/park.spec.ts: INFO,200,INFO,200,BYE,200; code 0; the caller sees nothing."""
    call = await _answered(phones)
    dialog = call.callee_dialog()
    result = await _info(call.callee, dialog, "callpark", 1)
    assert result["code"] == 0 and result["park extension"] == "801"
    bye = await call.callee.client.request(call.callee.in_dialog(dialog, "BYE"))
    assert bye.status_code == 200
    await wait_until(lambda: len(call.callee.sequence()) >= 6, 5)
    assert call.callee.sequence() == ["out INFO", "in 200", "in INFO", "out 200", "out BYE",
                                      "in 200"]
    assert call.caller.sequence() == []
    assert "801" in sb.proxy.features.parked
    # the parked caller hangs up: the sandbox answers for the parker
    assert (await call.caller.client.request(
        call.caller.in_dialog(call.caller_dialog(), "BYE"))).status_code == 200
    assert sb.proxy.features.parked == {}


async def test_flip(phones: MakePhone) -> None:
    """answered/flip.spec.ts: INFO,200,INFO,200, then BYE,200; code 0; the flipper's BYE does
    not reach the caller. Then the flip target rings (INVITE without SDP) and, once it answers,
    the caller is moved to it with a re-INVITE carrying the target's offer (RingCentral hides
    this by anchoring the media; the sandbox does not)."""
    call = await _answered(phones)
    target = await phones("103")
    dialog = call.callee_dialog()
    result = await _info(call.callee, dialog, "callflip", 1, target="103")
    assert result == {"code": 0, "description": "Succeeded", "number": "+16505550103",
                      "target": "103"}
    bye = await call.callee.client.request(call.callee.in_dialog(dialog, "BYE"))
    assert bye.status_code == 200
    assert call.callee.sequence() == ["out INFO", "in 200", "in INFO", "out 200", "out BYE",
                                      "in 200"]
    assert "in BYE" not in call.caller.sequence()
    invite = await target.next("INVITE")
    assert invite.body == b"" and "P-rc" in invite.headers
    assert parse_rc_message(invite.headers["P-rc"]).body["Phn"] == "+16505550101"
    await target.client.reply(invite, 200, "OK", to_tag="flip", body=b"v=0\r\ns=target\r\n",
                              content_type="application/sdp")
    moved = await call.caller.next("INVITE")
    assert moved.body == b"v=0\r\ns=target\r\n" and moved.call_id == call.invite.call_id
    await call.caller.client.reply(moved, 200, "OK", body=b"v=0\r\ns=caller\r\n",
                                   content_type="application/sdp")
    ack = await target.next("ACK")
    assert ack.body == b"v=0\r\ns=caller\r\n"
    await call.caller.next("ACK")
    # now caller <-> target through the bridge, both ways
    info = call.caller.in_dialog(call.caller_dialog(), "INFO", body=b"x", content_type="text/plain")
    assert (await call.caller.client.request(info)).status_code == 200
    assert (await target.next("INFO")).body == b"x"
    hangup = target.in_dialog(DialogView.as_callee(invite, "flip"), "BYE")
    assert (await target.client.request(hangup)).status_code == 200
    assert (await call.caller.next("BYE")).call_id == call.invite.call_id


async def test_park_then_pickup_with_star_extension(phones: MakePhone, sb: Sandbox) -> None:
    call = await _answered(phones)
    picker = await phones("103")
    result = await _info(call.callee, call.callee_dialog(), "callpark", 1)
    assert result["park extension"] == "801"
    bye = await call.callee.client.request(call.callee.in_dialog(call.callee_dialog(), "BYE"))
    assert bye.status_code == 200
    outcome = asyncio.ensure_future(picker.client.request(
        picker.invite("*801", body=b"v=0\r\ns=picker\r\n")))
    moved = await call.caller.next("INVITE")
    assert moved.body == b"v=0\r\ns=picker\r\n"
    await call.caller.client.reply(moved, 200, "OK", body=b"v=0\r\ns=parked\r\n",
                                   content_type="application/sdp")
    final = await asyncio.wait_for(outcome, 5)
    assert final.status_code == 200 and final.body == b"v=0\r\ns=parked\r\n"
    sent = last_invite(picker)
    await picker.client.send(picker.ack(sent, final))
    await call.caller.next("ACK")
    assert sb.proxy.features.parked == {} and "*801" not in sb.proxy.parties
    hangup = call.caller.in_dialog(call.caller_dialog(), "BYE")
    assert (await call.caller.client.request(hangup)).status_code == 200
    assert (await picker.next("BYE")).call_id == sent.call_id


async def test_pickup_of_nothing_parked_is_486(phones: MakePhone) -> None:
    picker = await phones("103")
    assert (await picker.client.request(picker.invite("*805"))).status_code == 486


async def test_info_result_cseq_stays_increasing(phones: MakePhone) -> None:
    """The sandbox's INFO in the callee's name must not reuse a CSeq the callee uses later."""
    call = await _answered(phones)
    dialog = call.caller_dialog()
    await _info(call.caller, dialog, "startcallrecord", 1)
    injected = inbound(call.caller, "INFO")[0].cseq.number
    bye = call.callee.in_dialog(call.callee_dialog(), "BYE")
    assert (await call.callee.client.request(bye)).status_code == 200
    relayed = await call.caller.next("BYE")
    assert relayed.cseq.number > injected


async def test_vanished_callee_is_hung_up_for(phones: MakePhone) -> None:
    call = await _answered(phones)
    await call.callee.client.dispose(unregister=False)
    bye = await call.caller.next("BYE")
    assert bye.call_id == call.invite.call_id


# -- in-dialog relaying and out-of-dialog requests -----------------------------------------------


async def test_in_dialog_requests_reach_the_other_leg(phones: MakePhone) -> None:
    """re-INVITE (hold), INFO (not a command), REFER and NOTIFY, MESSAGE: relayed both ways,
    answers come back, the ACK of the re-INVITE too."""
    call = await _answered(phones)
    caller, callee = call.caller, call.callee
    reinvite = callee.in_dialog(call.callee_dialog(), "INVITE", body=b"v=0\r\na=sendonly\r\n",
                                content_type="application/sdp")
    pending = asyncio.ensure_future(callee.client.request(reinvite))
    got = await caller.next("INVITE")
    assert got.body.endswith(b"a=sendonly\r\n") and got.to_tag == call.invite.from_tag
    await caller.client.reply(got, 200, "OK", body=b"v=0\r\na=recvonly\r\n",
                              content_type="application/sdp")
    answer = await asyncio.wait_for(pending, 5)
    assert answer.status_code == 200 and answer.body.endswith(b"a=recvonly\r\n")
    assert str(answer.cseq) == str(reinvite.cseq)
    ack = callee.in_dialog(call.callee_dialog(), "ACK")
    ack.headers.set("CSeq", f"{reinvite.cseq.number} ACK")
    await callee.client.send(ack)
    assert (await caller.next("ACK")).cseq.number == got.cseq.number
    for method, body in (("INFO", b"Signal=5\r\n"), ("MESSAGE", b"hi"), ("NOTIFY", b"")):
        request = caller.in_dialog(call.caller_dialog(), method, body=body,
                                   content_type="text/plain" if body else None)
        response = await caller.client.request(request)
        assert response.status_code == 200, method
        assert (await callee.next(method)).body == body
    refer = callee.in_dialog(call.callee_dialog(), "REFER")
    refer.headers.add("Refer-To", "<sip:103@sip.test>")
    pending = asyncio.ensure_future(callee.client.request(refer))
    got = await caller.next("REFER")
    assert got.headers["Refer-To"] == "<sip:103@sip.test>"
    await caller.client.reply(got, 202, "Accepted")
    assert (await asyncio.wait_for(pending, 5)).status_code == 202


async def test_message_between_users_goes_to_every_device(phones: MakePhone) -> None:
    sender = await phones("101")
    first, second = await phones("102", "m-a"), await phones("102", "m-b")
    message = sender.client.new_request("MESSAGE", "sip:102@sip.test", to="<sip:102@sip.test>",
                                        body=b"hello", content_type="text/plain")
    response = await sender.client.request(message)
    assert response.status_code == 200
    assert (await first.next("MESSAGE")).body == b"hello"
    assert (await second.next("MESSAGE")).body == b"hello"
    assert sender.sequence()[:3] == ["out MESSAGE", "in 407", "out MESSAGE"]
    nobody = sender.client.new_request("MESSAGE", "sip:999@sip.test", to="<sip:999@sip.test>",
                                       body=b"x", content_type="text/plain")
    assert (await sender.client.request(nobody)).status_code == 404
