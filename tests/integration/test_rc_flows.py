"""RingCentral flows of the REAL WebPhone against the sandbox, message by message.

Each test reproduces one upstream live test (upstream-webphone-sdk.md §6, the Playwright specs
of ringcentral-web-phone) and compares what the phone saw on its WebSocket with what the
upstream spec asserts, in upstream's `shortString` form ("outbound - INVITE",
"inbound - SIP/2.0 100 Trying"). As in upstream's `test/common.ts`, inbound x-rc/agent
MESSAGEs for another instance (`Cln` not ours) are left out of a trace.

Where webphone deliberately differs from the upstream SDK, the expected sequence says so:

* RFC 3261 §17.1.1.3: webphone ACKs every non-2xx final answer to its INVITE (the 407, a 486);
  the upstream SDK does not ("+ACK" below).
* RFC 3261 §9.2: after an inbound CANCEL webphone answers the INVITE with 487, which the server
  ACKs; the upstream SDK never sends the 487 ("+487/ACK" below).

Where the sandbox differs from RingCentral the test says so too. RingCentral anchors the media
of every call, so the *other* party sees nothing of a hold, a transfer or a flip, and it sends
the caller its 200 OK before the callee answers; the sandbox is a plain record-routing proxy:
it relays re-INVITE/REFER/NOTIFY to the other leg and relays the callee's 200 when it comes.
The traces of the party doing the action are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from support.calls import heard, next_inbound, silent
from support.sandbox_server import sandbox_users
from support.wait import wait_until
from webphone import SipInfo, WebPhone
from webphone.call_session import InboundCallSession, OutboundCallSession
from webphone.errors import CallError
from webphone.sandbox import Sandbox
from webphone.sip import SipRequest, SipResponse
from webphone.sip.rc import RcCommand, RcMessage, parse_rc_api_ids, parse_rc_message

pytestmark = pytest.mark.timeout(60)

SipMessage = SipRequest | SipResponse


class Trace:
    """Every SIP message one WebPhone sent or received (its `inbound_message` and
    `outbound_message` events), like upstream's Playwright frame recorder."""

    def __init__(self, phone: WebPhone) -> None:
        self.auth_id = phone.sip_info.authorization_id
        self.items: list[tuple[str, SipMessage]] = []
        phone.on("inbound_message", lambda m: self._add("inbound", m))
        phone.on("outbound_message", lambda m: self._add("outbound", m))

    def _add(self, direction: str, message: SipMessage) -> None:
        if direction == "inbound" and isinstance(message, SipRequest) and (
            message.method == "MESSAGE"
        ):
            cln = _rc(message).cln
            if cln and cln != self.auth_id:
                return  # for another instance of the extension (upstream common.ts)
        self.items.append((direction, message))

    def clear(self) -> None:
        self.items.clear()

    def short(self) -> list[str]:
        """["outbound - INVITE", "inbound - SIP/2.0 100 Trying", ...]."""
        return [short(direction, message) for direction, message in self.items]

    async def wait(self, count: int, timeout: float = 5.0) -> list[str]:
        """The trace once it holds at least `count` messages."""
        await wait_until(lambda: len(self.items) >= count, timeout,
                         message=f"{count} messages, got {self.short()}")
        return self.short()

    def sent(self, method: str) -> list[SipRequest]:
        return [m for d, m in self.items
                if d == "outbound" and isinstance(m, SipRequest) and m.method == method]

    def received(self, method: str) -> list[SipRequest]:
        return [m for d, m in self.items
                if d == "inbound" and isinstance(m, SipRequest) and m.method == method]


def short(direction: str, message: SipMessage) -> str:
    if isinstance(message, SipRequest):
        return f"{direction} - {message.method}"
    return f"{direction} - SIP/2.0 {message.status_code} {message.reason}"


def upstream_part(trace: list[str]) -> list[str]:
    """`trace` without webphone's RFC 3261 additions to an INVITE transaction (+ACK, +487/ACK)."""
    extras = (OUT + "ACK", OUT + "SIP/2.0 487 Request Terminated", IN + "ACK")
    return [entry for entry in trace if entry not in extras]


def _rc(message: SipMessage) -> RcMessage:
    return parse_rc_message(message.body)


OUT, IN = "outbound - ", "inbound - "
OK, TRYING = "SIP/2.0 200 OK", "SIP/2.0 100 Trying"


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    """The sandbox; after decline/reply the caller hears ringback for 2 s before its 480 (so
    "the caller sees nothing" holds while the callee's sequence completes)."""
    async with Sandbox(users=sandbox_users(), domain="sip.test", parties=False,
                       reject_delay=2.0) as sandbox:
        yield sandbox


MakePhone = Callable[..., Awaitable[tuple[WebPhone, Trace]]]


@pytest.fixture
async def phones(sb: Sandbox) -> AsyncIterator[MakePhone]:
    """`phone, trace = await phones("101")`: a started WebPhone (loopback media) and its trace,
    cleared after registration."""
    made: list[WebPhone] = []

    async def make(user: str, **options: Any) -> tuple[WebPhone, Trace]:
        phone = WebPhone(SipInfo.from_dict(sb.sip_info(user)), instance_id=f"wp-{user}",
                         loopback_media=True, **options)
        trace = Trace(phone)
        made.append(phone)
        await phone.start()
        trace.clear()
        return phone, trace

    yield make
    for phone in made:
        await phone.dispose()


class Call:
    """A call from 101 to 102 through the sandbox, both phones real WebPhones."""

    def __init__(self, caller: WebPhone, callee: WebPhone, caller_trace: Trace,
                 callee_trace: Trace, out: OutboundCallSession, inc: InboundCallSession) -> None:
        self.caller, self.callee = caller, callee
        self.caller_trace, self.callee_trace = caller_trace, callee_trace
        self.out, self.inc = out, inc

    def clear(self) -> None:
        self.caller_trace.clear()
        self.callee_trace.clear()


async def ring(phones: MakePhone, **call_options: Any) -> Call:
    """101 calls 102 and the call rings at 102 (its 100/180/Cmd 17 done); traces kept."""
    (caller, caller_trace), (callee, callee_trace) = await phones("101"), await phones("102")
    incoming = next_inbound(callee)
    outbound = await caller.call("102", **call_options)
    inbound = await asyncio.wait_for(incoming, 5)
    # upstream's call() waits until the callee has the INVITE; the callee's own part of the
    # dance (100, 180, MESSAGE Cmd 17 and its 100 and 200) completes right after
    await callee_trace.wait(6)
    await wait_until(lambda: outbound.state == "ringing", 5)
    return Call(caller, callee, caller_trace, callee_trace, outbound, inbound)


async def answered(phones: MakePhone) -> Call:
    """upstream callAndAnswer(): ring, answer, wait for the callee's 4 messages; clear."""
    call = await ring(phones)
    call.clear()
    await call.inc.answer()
    await call.callee_trace.wait(4)
    await call.out.wait_for("answered", timeout=5) if call.out.state != "answered" else None
    await wait_until(lambda: len(call.caller_trace.items) >= 2, 5)  # 200 in, ACK out
    assert call.out.media is not None and call.inc.media is not None
    await asyncio.gather(call.out.media.wait_connected(10), call.inc.media.wait_connected(10))
    call.clear()
    return call


# -- registration ---------------------------------------------------------------------------------


async def test_register(phones: MakePhone) -> None:
    """misc/register.spec.ts: registering again gives REGISTER,100,401,REGISTER,100,200 and the
    Contact ends with ;expires=60. The sandbox sends 100 Trying to REGISTER as RingCentral does."""
    phone, trace = await phones("101")
    await phone.start()  # upstream: start() again = a new WebSocket and a new REGISTER
    assert trace.short() == [
        OUT + "REGISTER", IN + TRYING, IN + "SIP/2.0 401 Unauthorized",
        OUT + "REGISTER", IN + TRYING, IN + OK,
    ]
    first, second = trace.sent("REGISTER")
    assert first.headers["Contact"].endswith(";expires=60")
    assert "Authorization" in second.headers and first.call_id == second.call_id


async def test_dispose_unregisters(sb: Sandbox, phones: MakePhone) -> None:
    """misc/dispose.spec.ts: REGISTER with Contact ending with ;expires=0. Upstream's six
    messages (REGISTER,100,401,REGISTER,100,200) are RingCentral's, whose challenges have no
    qop; the sandbox's have qop=auth, so the unregister answers the registration's challenge
    again (nc 2, `webphone.sip.digest.NonceReuse`) and gets its 200 at once."""
    phone, trace = await phones("101")
    assert len(sb.bindings("101")) == 1
    await phone.dispose()
    assert trace.short() == [OUT + "REGISTER", IN + TRYING, IN + OK]
    assert "nc=00000002" in trace.sent("REGISTER")[0].headers["Authorization"]
    assert all(r.headers["Contact"].endswith(";expires=0") for r in trace.sent("REGISTER"))
    assert sb.bindings("101") == []


# -- calls ----------------------------------------------------------------------------------------


async def test_call_traces(phones: MakePhone) -> None:
    """misc/call.spec.ts: caller INVITE,100,407,INVITE,100,183,200,ACK with one Call-ID (+ACK of
    the 407); callee INVITE in,100,180,MESSAGE(Cmd 17) out,100,200; P-rc Phn/ToPhn are the
    +numbers. The sandbox relays the callee's 200 when it answers (RingCentral sends it at once),
    so the caller's 200 and ACK come after answer() here."""
    call = await ring(phones, caller_id="16505550101")
    assert call.callee_trace.short() == [
        IN + "INVITE", OUT + TRYING, OUT + "SIP/2.0 180 Ringing", OUT + "MESSAGE", IN + TRYING,
        IN + OK,
    ]
    (invite,) = call.callee_trace.received("INVITE")
    p_rc = parse_rc_message(invite.headers["P-rc"])
    assert p_rc.body["Phn"] == "+16505550101" and p_rc.body["ToPhn"] == "+16505550102"
    (confirm,) = call.callee_trace.sent("MESSAGE")
    assert _rc(confirm).cmd == RcCommand.CLIENT_RECEIVE_CONFIRM
    assert _rc(confirm).cln == "102"
    assert call.inc.party_id == parse_rc_api_ids(invite.headers["p-rc-api-ids"]).party_id
    await call.inc.answer()
    await call.out.wait_for("answered", timeout=5)
    await call.caller_trace.wait(9)
    assert call.caller_trace.short() == [
        OUT + "INVITE", IN + TRYING, IN + "SIP/2.0 407 Proxy Authentication Required",
        OUT + "ACK",  # +ACK: webphone ACKs the 407 (RFC 3261), the upstream SDK does not
        OUT + "INVITE", IN + TRYING, IN + "SIP/2.0 183 Session Progress", IN + OK, OUT + "ACK",
    ]
    assert {m.call_id for _, m in call.caller_trace.items} == {call.out.call_id}
    first, second = call.caller_trace.sent("INVITE")
    assert "Proxy-Authorization" in second.headers and second.cseq.number > first.cseq.number
    assert second.headers["P-Asserted-Identity"] == "sip:16505550101@sip.test"
    assert call.caller.call_sessions == [call.out] and call.callee.call_sessions == [call.inc]


async def test_answer(phones: MakePhone) -> None:
    """inbound/answer.spec.ts: callee 200 out, ACK in, MESSAGE (Cmd 7 AlreadyProcessed) in,
    200 out."""
    call = await ring(phones)
    call.clear()
    await call.inc.answer()
    trace = await call.callee_trace.wait(4)
    assert trace == [OUT + OK, IN + "ACK", IN + "MESSAGE", OUT + OK]
    (processed,) = call.callee_trace.received("MESSAGE")
    assert _rc(processed).cmd == RcCommand.ALREADY_PROCESSED
    assert call.inc.state == "answered"


async def test_invalid_number(phones: MakePhone) -> None:
    """outbound/invalid-number.spec.ts: ... 183, 486 Busy Here; the session is removed."""
    phone, trace = await phones("101")
    try:
        session = await phone.call("78654")
    except CallError as exc:  # the 486 came before call() returned
        assert "486" in str(exc)
    else:
        (reason,) = await session.wait_for("failed", timeout=5)
        assert reason.startswith("486")
    await trace.wait(9)
    assert trace.short()[-5:] == [
        OUT + "INVITE", IN + TRYING, IN + "SIP/2.0 183 Session Progress",
        IN + "SIP/2.0 486 Busy Here", OUT + "ACK",  # +ACK
    ]
    assert phone.call_sessions == []


async def test_custom_header_on_both_invites(phones: MakePhone) -> None:
    """outbound/custom-header.spec.ts: X-Custom-Header is on both INVITEs (and reaches the
    callee)."""
    call = await ring(phones, headers={"X-Custom-Header": "Custom Value"})
    assert [i.headers.get("X-Custom-Header") for i in call.caller_trace.sent("INVITE")] == [
        "Custom Value", "Custom Value"]
    (invite,) = call.callee_trace.received("INVITE")
    assert invite.headers["X-Custom-Header"] == "Custom Value"


# -- RingCentral commands while ringing -----------------------------------------------------------

#: decline/voicemail/forward: Cmd out, 100, 200, SessionClose (Cmd 9) in, 200 out, CANCEL in,
#: 200 out; then webphone's 487 to the INVITE and the server's ACK (+487/ACK)
CLOSE_RINGING = [
    OUT + "MESSAGE", IN + TRYING, IN + OK, IN + "MESSAGE", OUT + OK, IN + "CANCEL", OUT + OK,
    OUT + "SIP/2.0 487 Request Terminated", IN + "ACK",
]


@pytest.mark.parametrize(
    ("action", "cmd"),
    [("decline", RcCommand.CLIENT_REJECT), ("to_voicemail", RcCommand.CLIENT_VOICEMAIL),
     ("forward", RcCommand.CLIENT_FORWARD)],
)
async def test_close_ringing(phones: MakePhone, action: str, cmd: RcCommand) -> None:
    """inbound/{decline,voicemail,forward}.spec.ts: the command, then SessionClose and the
    server's CANCEL; the caller sees nothing meanwhile; the callee has no call left."""
    call = await ring(phones)
    call.clear()
    args = ("16505550103",) if action == "forward" else ()
    await getattr(call.inc, action)(*args)
    assert call.callee.call_sessions == []
    assert await call.callee_trace.wait(len(CLOSE_RINGING)) == CLOSE_RINGING
    sent = call.callee_trace.sent("MESSAGE")[0]
    assert _rc(sent).cmd == cmd
    if action == "forward":
        assert _rc(sent).body == {"Cln": "102", "FwdDly": "0", "Phn": "16505550103",
                                  "PhnTp": "3"}
    assert _rc(call.callee_trace.received("MESSAGE")[0]).cmd == RcCommand.SESSION_CLOSE
    assert call.caller_trace.short() == []
    assert call.caller.call_sessions == [call.out]


async def test_start_reply(phones: MakePhone) -> None:
    """inbound/reply/start-reply.spec.ts: MESSAGE (Cmd 13), 100, 200; the call keeps ringing."""
    call = await ring(phones)
    call.clear()
    await call.inc.start_reply()
    assert call.callee_trace.short() == [OUT + "MESSAGE", IN + TRYING, IN + OK]
    assert _rc(call.callee_trace.sent("MESSAGE")[0]).cmd == RcCommand.CLIENT_START_REPLY
    assert call.inc.state == "ringing" and call.callee.call_sessions == [call.inc]
    assert call.caller_trace.short() == []


@pytest.mark.parametrize(
    ("result", "response", "number"),
    [({"Sts": "0", "Resp": "1"}, "yes", None),
     ({"Sts": "0", "Resp": "3", "ExtNfo": "16505550199"}, "urgent", "16505550199")],
    ids=["yes", "urgent"],
)
async def test_reply(sb: Sandbox, phones: MakePhone, result: dict[str, str], response: str,
                     number: str | None) -> None:
    """inbound/reply/reply-with-{yes,urgent}.spec.ts: Cmd 14 out, 100, 200, CANCEL in, 200 out,
    SessionClose (Cmd 9, Sts=0, Resp=1 or 3 with ExtNfo) in, 200 out (+487/ACK after the
    CANCEL's 200). The caller's keypad answer is the sandbox's `reply_result`."""
    sb.config.reply_result = result
    call = await ring(phones)
    await call.inc.start_reply()
    call.clear()
    close = await call.inc.reply("Hello world!")
    assert close.responded and close.response == response and close.callback_number == number
    assert close.phone == "+16505550101"
    trace = await call.callee_trace.wait(9)
    # The SessionClose follows the CANCEL's 200 at once, so the server's ACK of our 487 may come
    # before or after our 200 to it: the upstream part is exact, the +487/ACK pair in order.
    assert upstream_part(trace) == [
        OUT + "MESSAGE", IN + TRYING, IN + OK, IN + "CANCEL", OUT + OK, IN + "MESSAGE", OUT + OK,
    ]
    assert trace[5] == OUT + "SIP/2.0 487 Request Terminated" and IN + "ACK" in trace[6:]
    sent, = call.callee_trace.sent("MESSAGE")
    assert _rc(sent).cmd == RcCommand.CLIENT_REPLY
    assert _rc(sent).body == {"Cln": "102", "RepTp": "0", "Bdy": "Hello world!"}
    closing = _rc(call.callee_trace.received("MESSAGE")[0])
    assert closing.cmd == RcCommand.SESSION_CLOSE and closing.body["Resp"] == result["Resp"]
    assert call.callee.call_sessions == [] and call.caller_trace.short() == []


# -- answered calls -------------------------------------------------------------------------------


async def test_caller_hangs_up(phones: MakePhone) -> None:
    """answered/hang-up.spec.ts: caller BYE, 200; callee BYE in, 200 out, MESSAGE (Cmd 2
    ServerFreeResources) in, 200 out; both have no call left."""
    call = await answered(phones)
    await call.out.hangup()
    assert call.caller_trace.short() == [OUT + "BYE", IN + OK]
    assert call.caller.call_sessions == []
    assert await call.callee_trace.wait(4) == [IN + "BYE", OUT + OK, IN + "MESSAGE", OUT + OK]
    assert _rc(call.callee_trace.received("MESSAGE")[0]).cmd == RcCommand.SERVER_FREE_RESOURCES
    assert call.callee.call_sessions == []


@pytest.mark.parametrize("side", ["caller", "callee"])
async def test_hold_unhold(phones: MakePhone, side: str) -> None:
    """answered/hold-unhold/{caller,callee}-hold-unhold.spec.ts: INVITE (a=sendonly), 100, 200,
    ACK; then the same with a=sendrecv. (The sandbox relays the re-INVITE to the other party,
    which answers it; RingCentral's media server answers it itself.)"""
    call = await answered(phones)
    session, trace = (call.out, call.caller_trace) if side == "caller" else (
        call.inc, call.callee_trace)
    for action, direction in ((session.hold, "a=sendonly"), (session.unhold, "a=sendrecv")):
        trace.clear()
        await action()
        assert trace.short() == [OUT + "INVITE", IN + TRYING, IN + OK, OUT + "ACK"]
        body = trace.sent("INVITE")[0].body.decode()
        assert direction in body and "a=sendrecv" not in body.replace(direction, "")
    assert call.caller.call_sessions == [call.out] and call.callee.call_sessions == [call.inc]
    assert call.out.media is not None and call.inc.media is not None
    assert call.out.media.stats.endpoint_changes == call.inc.media.stats.endpoint_changes == 0


async def test_mute_and_dtmf_send_no_sip(phones: MakePhone) -> None:
    """answered/mute-unmute.spec.ts and dtmf.spec.ts: no SIP message at all. Checked by what
    the other party hears: silence when muted, the tone again after unmute, the digits as
    RFC 4733 events."""
    call = await answered(phones)
    assert call.out.media is not None
    tone = asyncio.ensure_future(call.out.media.play_tone(1000, 30))
    try:
        await heard(call.inc, lambda t: t == 1000.0)
        call.clear()
        await call.out.mute()
        await heard(call.inc, silent)
        await call.out.unmute()
        await heard(call.inc, lambda t: t == 1000.0)
        digits: list[str] = []
        call.inc.on("dtmf", digits.append)
        await call.out.send_dtmf("123#")
        await wait_until(lambda: "".join(digits) == "123#", 5, message=f"dtmf {digits}")
    finally:
        tone.cancel()
    assert call.caller_trace.short() == [] and call.callee_trace.short() == []


async def test_recording(sb: Sandbox, phones: MakePhone) -> None:
    """answered/recording.spec.ts: start and stop each INFO, 200, INFO (result), 200; code 0."""
    call = await answered(phones)
    assert (await call.out.start_recording()).code == 0
    assert [d.recording for d in sb.proxy.dialogs()] == [True]
    assert (await call.out.stop_recording()).code == 0
    assert [d.recording for d in sb.proxy.dialogs()] == [False]
    assert call.caller_trace.short() == [OUT + "INFO", IN + OK, IN + "INFO", OUT + OK] * 2
    commands = [m.body for m in call.caller_trace.sent("INFO")]
    assert b'"command":"startcallrecord"' in commands[0].replace(b" ", b"")
    assert call.callee_trace.short() == []


async def test_park(sb: Sandbox, phones: MakePhone) -> None:
    """answered/park.spec.ts: INFO, 200, INFO (result), 200, BYE, 200; code 0; the parker has
    no call left, the parked caller still has its call (and sees nothing)."""
    call = await answered(phones)
    result = await call.inc.park()
    assert result.code == 0 and result.extra == {"park extension": "801"}
    assert call.callee_trace.short() == [
        OUT + "INFO", IN + OK, IN + "INFO", OUT + OK, OUT + "BYE", IN + OK]
    assert call.callee.call_sessions == []
    assert call.caller_trace.short() == [] and call.caller.call_sessions == [call.out]
    assert "801" in sb.proxy.features.parked


async def test_parked_call_picked_up_with_star_extension(phones: MakePhone) -> None:
    """After park, 103 dials *801 and talks with the parked caller (sandbox pickup: the caller
    is re-INVITEd by the picker's media endpoint), audio both ways."""
    call = await answered(phones)
    picker, _ = await phones("103")
    result = await call.inc.park()
    assert result.extra == {"park extension": "801"}
    picked = await picker.call("*801")
    await wait_until(lambda: picked.state == "answered", 5, message="pickup answered")
    assert picked.media is not None and call.out.media is not None
    await picked.media.wait_connected(10)
    assert call.caller_trace.short() == [IN + "INVITE", OUT + OK, IN + "ACK"]
    tones = [asyncio.ensure_future(picked.media.play_tone(1400, 30)),
             asyncio.ensure_future(call.out.media.play_tone(440, 30))]
    try:
        assert await heard(call.out, lambda t: t == 1400.0) == 1400.0
        assert await heard(picked, lambda t: t == 440.0) == 440.0
    finally:
        for tone in tones:
            tone.cancel()
    assert call.out.media.stats.endpoint_changes == 1
    await picked.hangup()
    await asyncio.wait_for(call.out.wait_closed(), 5)


async def test_flip(phones: MakePhone) -> None:
    """answered/flip.spec.ts: INFO, 200, INFO (result), 200, then the app's hangup BYE, 200;
    code 0; the caller keeps its call and sees nothing of it meanwhile. Then (sandbox: no media
    anchoring) the flip target 103 rings, answers, and the caller is moved to it by a re-INVITE
    from a new media endpoint: caller and target hear each other on the caller's same call."""
    call = await answered(phones)
    target, _ = await phones("103")
    at_target = next_inbound(target)
    result = await call.inc.flip("103")
    assert result.code == 0 and result.extra == {"number": "+16505550103", "target": "103"}
    await call.inc.hangup()
    assert call.callee_trace.short() == [
        OUT + "INFO", IN + OK, IN + "INFO", OUT + OK, OUT + "BYE", IN + OK]
    assert call.callee.call_sessions == [] and call.caller.call_sessions == [call.out]
    assert call.caller_trace.short() == []
    flipped = await asyncio.wait_for(at_target, 5)
    assert flipped.remote_number == "101"
    await flipped.answer()  # the sandbox's INVITE has no SDP: our offer, the caller's answer
    assert flipped.media is not None and call.out.media is not None
    await flipped.media.wait_connected(10)
    assert call.caller_trace.short() == [IN + "INVITE", OUT + OK, IN + "ACK"]
    tones = [asyncio.ensure_future(flipped.media.play_tone(1400, 30)),
             asyncio.ensure_future(call.out.media.play_tone(440, 30))]
    try:
        assert await heard(call.out, lambda t: t == 1400.0) == 1400.0
        assert await heard(flipped, lambda t: t == 440.0) == 440.0
    finally:
        for tone in tones:
            tone.cancel()
    assert call.caller.call_sessions == [call.out] and call.out.state == "answered"
    assert call.out.media.stats.endpoint_changes == 1  # same call, new media endpoint


async def test_cold_transfer(phones: MakePhone) -> None:
    """answered/transfer/cold.spec.ts, the callee transfers: REFER, 202, NOTIFY, 200, NOTIFY,
    200, BYE, 200. (The sandbox relays the REFER to the caller, a WebPhone that calls 103 and
    reports by NOTIFY; on RingCentral the server does it.)"""
    call = await answered(phones)
    target, _ = await phones("103")
    at_target = next_inbound(target)
    target.on("inbound_call", lambda s: s._spawn(s.answer()))
    transferred = asyncio.ensure_future(call.out.wait_for("transferred", timeout=10))
    await call.inc.transfer("103")
    await asyncio.wait_for(call.inc.wait_closed(), 5)
    assert call.callee_trace.short() == [
        OUT + "REFER", IN + "SIP/2.0 202 Accepted", IN + "NOTIFY", OUT + OK, IN + "NOTIFY",
        OUT + OK, IN + "BYE", OUT + OK,
    ]
    assert call.callee.call_sessions == []
    (new_call,) = await transferred
    await asyncio.wait_for(call.out.wait_closed(), 5)  # the transferee's BYE got its 200
    at = await asyncio.wait_for(at_target, 5)
    assert at.remote_number == "101" and new_call.state == "answered"
    assert call.caller.call_sessions == [new_call]


async def test_warm_transfer(phones: MakePhone) -> None:
    """answered/transfer/warm.spec.ts, the callee transfers: after its hold and the consult call,
    complete() gives REFER, 202, NOTIFY, 200, BYE (the consulted party's leg, replaced), 200,
    NOTIFY, 200, BYE (the transferee's leg), 200; then 101 and 103 talk, 102 has no call."""
    call = await answered(phones)
    target, _ = await phones("103")
    at_target = next_inbound(target)
    warm = asyncio.ensure_future(call.inc.warm_transfer("103"))
    consulted = await asyncio.wait_for(at_target, 5)
    await consulted.answer()
    transfer = await warm
    await wait_until(lambda: transfer.session.state == "answered", 5)
    assert call.inc.held
    replacing = next_inbound(target)
    call.clear()
    await transfer.complete()
    await asyncio.wait_for(call.inc.wait_closed(), 5)
    await asyncio.wait_for(transfer.session.wait_closed(), 5)
    assert call.callee_trace.short() == [
        OUT + "REFER", IN + "SIP/2.0 202 Accepted", IN + "NOTIFY", OUT + OK, IN + "BYE",
        OUT + OK, IN + "NOTIFY", OUT + OK, IN + "BYE", OUT + OK,
    ]
    byes = call.callee_trace.received("BYE")
    assert [b.call_id for b in byes] == [transfer.session.call_id, call.inc.call_id]
    assert call.callee.call_sessions == []
    new = await asyncio.wait_for(replacing, 5)
    assert new.remote_number == "101" and new.state == "answered"
    await asyncio.wait_for(consulted.wait_closed(), 5)
    (moved,) = call.caller.call_sessions
    assert moved.remote_number == "103" and moved.state == "answered"
    assert target.call_sessions == [new]
    assert new.media is not None
    tone = asyncio.ensure_future(new.media.play_tone(1000, 30))
    try:
        assert await heard(moved, lambda t: t == 1000.0) == 1000.0
    finally:
        tone.cancel()
