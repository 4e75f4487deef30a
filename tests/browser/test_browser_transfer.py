"""Transfers with a browser as the target (cold, and warm with Replaces, RFC 3891) and as the
transferee (REFER, RFC 3515; warm: a Refer-To carrying Replaces)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from chromium import Browser
from interop import Interop
from scenario import BROWSER_HZ, PYTHON_HZ, browser_phone, hears, python_phones, tone_on

from support.calls import connect, next_inbound
from support.wait import wait_until
from webphone import WebPhone
from webphone.call_session import CallSession, InboundCallSession

pytestmark = pytest.mark.browser


async def talk(tab: Any, cid: str, py: CallSession) -> None:
    """Audio both ways between the browser's call `cid` and `py`."""
    assert py.media is not None
    await py.media.wait_connected(10)
    async with tone_on(py):
        await hears(py, BROWSER_HZ)
        await tab.api("hears", cid, PYTHON_HZ)


async def browser_calls(tab: Any, py: WebPhone, user: str) -> tuple[str, InboundCallSession]:
    """The browser calls `py` (as `user`), `py` answers: the browser's call id and py's call."""
    incoming = next_inbound(py)
    cid = await tab.api("call", user)
    at_py = await asyncio.wait_for(incoming, 10)
    await at_py.answer()
    await tab.api("waitState", cid, ["answered"])
    return cid, at_py


async def test_cold_transfer_to_a_browser(browser: Browser, stack: str, server_for: Any,
                                          take_users: Any, interop: Interop) -> None:
    server = server_for(stack)
    browser_user, a_user, b_user = take_users(server, 3)
    async with browser_phone(browser, stack, server, browser_user) as tab, \
            python_phones(server, [a_user, b_user]) as [a, b]:
        with interop.step(stack, "cold transfer: browser is the target"):
            out, inc = await connect(a, b, b_user)
            # b refers a to the browser; transfer() returns once the REFER has an outcome
            transferring = asyncio.ensure_future(inc.transfer(browser_user))
            cid = await tab.api("waitIncoming")
            await tab.api("answer", cid)
            await asyncio.wait_for(transferring, 10)
            moved = next(s for s in a.call_sessions if s is not out and s.state != "disposed")
            await wait_until(lambda: moved.state == "answered", 10, message="a's new call")
            await talk(tab, cid, moved)
            await tab.api("hangup", cid)
            await wait_until(lambda: moved.state == "disposed", 10, message="transferred ended")


@pytest.mark.parametrize("jssip_stack", ["jssip-sandbox", "jssip-kamailio"])
async def test_cold_transfer_of_a_browser(browser: Browser, jssip_stack: str, server_for: Any,
                                          take_users: Any, interop: Interop) -> None:
    server = server_for(jssip_stack)
    browser_user, a_user, b_user = take_users(server, 3)
    async with browser_phone(browser, jssip_stack, server, browser_user) as tab, \
            python_phones(server, [a_user, b_user]) as [a, b]:
        with interop.step(jssip_stack, "cold transfer: browser is the transferee"):
            _, at_a = await browser_calls(tab, a, a_user)
            at_b = next_inbound(b)
            transferring = asyncio.ensure_future(at_a.transfer(b_user))  # a refers the browser
            new = await asyncio.wait_for(at_b, 10)
            await new.answer()
            await asyncio.wait_for(transferring, 10)
            moved = await tab.api("waitReferred")
            await tab.api("waitState", moved, ["answered"])
            await talk(tab, moved, new)
            await new.hangup()
            await tab.api("waitState", moved, ["ended"])


@pytest.mark.parametrize("jssip_stack", ["jssip-sandbox", "jssip-kamailio"])
async def test_warm_transfer_to_a_browser(browser: Browser, jssip_stack: str, server_for: Any,
                                          take_users: Any, interop: Interop) -> None:
    """(The official SDK has no Replaces: it takes the INVITE as one more call and keeps the
    replaced one; on RingCentral the server carries the transfer out.)"""
    stack = jssip_stack
    server = server_for(stack)
    browser_user, a_user, b_user = take_users(server, 3)
    async with browser_phone(browser, stack, server, browser_user) as tab, \
            python_phones(server, [a_user, b_user]) as [a, b]:
        with interop.step(stack, "warm transfer: browser is the target"):
            out, inc = await connect(a, b, b_user)
            consulting = asyncio.ensure_future(inc.warm_transfer(browser_user))
            consult = await tab.api("waitIncoming")
            await tab.api("answer", consult)
            transfer = await asyncio.wait_for(consulting, 10)
            await wait_until(lambda: transfer.session.state == "answered", 10,
                             message="b's consult call answered")
            completing = asyncio.ensure_future(transfer.complete())
            replacing = await tab.api("waitIncoming")  # a's INVITE with Replaces
            await tab.api("answer", replacing)
            await asyncio.wait_for(completing, 10)
            await tab.api("waitState", consult, ["ended"])
            moved = next(s for s in a.call_sessions if s is not out and s.state != "disposed")
            await wait_until(lambda: moved.state == "answered", 10, message="a's new call")
            await talk(tab, replacing, moved)
            await tab.api("hangup", replacing)
            await wait_until(lambda: moved.state == "disposed", 10, message="transferred ended")


@pytest.mark.parametrize("jssip_stack", ["jssip-sandbox", "jssip-kamailio"])
async def test_warm_transfer_of_a_browser(browser: Browser, jssip_stack: str, server_for: Any,
                                          take_users: Any, interop: Interop) -> None:
    """The browser calls a, a consults c, then refers the browser to c with Replaces: the
    browser's INVITE replaces a's consult leg at c, and a's call with the browser ends."""
    server = server_for(jssip_stack)
    browser_user, a_user, c_user = take_users(server, 3)
    async with browser_phone(browser, jssip_stack, server, browser_user) as tab, \
            python_phones(server, [a_user, c_user]) as [a, c]:
        with interop.step(jssip_stack, "warm transfer: browser is the transferee"):
            original, at_a = await browser_calls(tab, a, a_user)
            at_c = next_inbound(c)
            consulting = asyncio.ensure_future(at_a.warm_transfer(c_user))  # holds the browser
            consulted = await asyncio.wait_for(at_c, 10)
            await consulted.answer()
            transfer = await asyncio.wait_for(consulting, 10)
            await wait_until(lambda: transfer.session.state == "answered", 10,
                             message="a's consult call answered")
            replacing = next_inbound(c)
            await asyncio.wait_for(transfer.complete(), 10)  # REFER, Refer-To: c?Replaces=...
            moved = await tab.api("waitReferred")
            at_c_again = await asyncio.wait_for(replacing, 10)
            assert at_c_again.remote_number == browser_user
            await tab.api("waitState", moved, ["answered"])
            await asyncio.wait_for(consulted.wait_closed(), 10)  # replaced at c (RFC 3891)
            await tab.api("waitState", original, ["ended"])  # a hung up after the NOTIFY
            await wait_until(lambda: a.call_sessions == [], 10, message="a left both calls")
            await talk(tab, moved, at_c_again)
            await tab.api("hangup", moved)
            await wait_until(lambda: at_c_again.state == "disposed", 10,
                             message="transferred call ended")
