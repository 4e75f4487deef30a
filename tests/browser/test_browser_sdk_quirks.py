"""The official SDK's loose ends that the sandbox accepts on purpose (docs/sdk-quirks.md): each
test makes the SDK do it against the sandbox, proves from the sandbox's own message log that it
happened, and that the call still worked."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from chromium import Browser
from scenario import browser_phone, python_phones

from support.calls import next_inbound
from webphone.sip import SipRequest, SipResponse

pytestmark = pytest.mark.browser


def wire(server: Any, user: str, since: int) -> list[tuple[str, Any]]:
    """("in"|"out", message) on the connections of `user`'s browser since record `since`."""
    records = list(server.server.sandbox.messages)[since:]
    return [(r.direction, r.message) for r in records if r.user == user]


def requests(log: list[tuple[str, Any]], direction: str, method: str) -> list[SipRequest]:
    return [m for d, m in log if d == direction and isinstance(m, SipRequest)
            and m.method == method]


def responses(log: list[tuple[str, Any]], direction: str, method: str) -> list[SipResponse]:
    return [m for d, m in log if d == direction and isinstance(m, SipResponse)
            and m.cseq.method == method]


async def test_sdk_quirks_on_a_call_it_places(browser: Browser, rc_sandbox: Any,
                                              take_users: Any) -> None:
    browser_user, py_user = take_users(rc_sandbox, 2)
    since = len(rc_sandbox.server.sandbox.messages)
    # sipInfo says WS and gives no instance id: the SDK opens wss:// anyway and uses
    # urn:uuid:<authorizationId>
    tab = await browser.open("rc.html")
    await tab.api("start", {"sipInfo": rc_sandbox.sip_info(browser_user, transport="WS")})
    async with python_phones(rc_sandbox, [py_user]) as [phone]:
        incoming = next_inbound(phone)
        cid = await tab.api("call", py_user)
        py = await asyncio.wait_for(incoming, 10)
        await py.answer()
        await tab.api("waitState", cid, ["answered"])
        await tab.api("hold", cid)
        await tab.api("unhold", cid)
        await tab.api("dtmf", cid, "1")
        await tab.api("hangup", cid)
        await tab.api("waitState", cid, ["ended"])
    await tab.api("stop")
    log = wire(rc_sandbox, browser_user, since)

    register = requests(log, "in", "REGISTER")
    assert f'+sip.instance="<urn:uuid:{browser_user}>"' in register[0].headers["Contact"]
    authorization = register[1].headers["Authorization"]
    assert "qop=" not in authorization and "cnonce=" not in authorization  # RFC 2069 digest
    assert f'uri="sip:{rc_sandbox.domain}"' in authorization
    assert [r.status_code for r in responses(log, "out", "REGISTER")][-1] == 200

    invites = requests(log, "in", "INVITE")
    first, authed = invites[0], invites[1]
    assert "Proxy-Authorization" not in first.headers and "Proxy-Authorization" in authed.headers
    acks = requests(log, "in", "ACK")
    assert all(a.cseq.number != first.cseq.number for a in acks)  # the 407 is never ACKed

    hold, unhold = invites[2], invites[3]
    assert b"a=sendonly" in hold.body and b"a=sendrecv" in unhold.body
    original = authed.body.decode()
    # the hold offer is the old SDP with a new o= version and the direction changed: nothing else
    strip = re.compile(r"^(o=.*|a=(sendrecv|sendonly))\r?$", re.M)
    assert strip.sub("", hold.body.decode()) == strip.sub("", original)

    bye = requests(log, "in", "BYE")[0]
    assert bye.uri == f"sip:{rc_sandbox.domain}"  # not the remote target
    assert responses(log, "out", "BYE")[0].status_code == 200
    assert requests(log, "in", "INFO") == []  # DTMF is RFC 4733 only


async def test_sdk_quirks_on_a_call_it_answers(browser: Browser, rc_sandbox: Any,
                                               take_users: Any) -> None:
    browser_user, py_user = take_users(rc_sandbox, 2)
    since = len(rc_sandbox.server.sandbox.messages)
    async with browser_phone(browser, "rc-sandbox", rc_sandbox, browser_user) as tab, \
            python_phones(rc_sandbox, [py_user]) as [phone]:
        py = await phone.call(browser_user)
        cid = await tab.api("waitIncoming")
        await tab.api("answer", cid)
        if py.state != "answered":
            await py.wait_for("answered", timeout=10)
        await asyncio.wait_for(py.hangup(), 10)
        await tab.api("waitState", cid, ["ended"])
    log = wire(rc_sandbox, browser_user, since)

    invite = requests(log, "out", "INVITE")[0]
    assert len(invite.headers.get_all("Via")) == 1  # devices see one Via (the SDK keeps one)
    answers = responses(log, "in", "INVITE")
    assert [r.status_code for r in answers] == [100, 180, 200]
    assert all("Contact" not in r.headers for r in answers)  # no Contact, not even on the 200
    confirm = requests(log, "in", "MESSAGE")[0]
    assert b'Cmd="17"' in confirm.body  # ClientReceiveConfirm, to sip:{P-rc Hdr From}
    assert [r.status_code for r in responses(log, "out", "MESSAGE")][:2] == [100, 200]
