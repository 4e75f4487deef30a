"""Calls between a browser (the official RingCentral Web Phone SDK, or JsSIP) and webphone, in
both directions, with audio, DTMF, mute, hold and hang-up checked at both ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from chromium import Browser, Tab
from interop import Interop
from scenario import (
    BROWSER_HZ,
    PYTHON_HZ,
    Step,
    browser_phone,
    digits_from,
    hears,
    hears_silence,
    python_phones,
    tone_on,
)

from support.calls import next_inbound
from support.wait import wait_until
from webphone.call_session import CallSession

pytestmark = pytest.mark.browser


async def exercise(step: Step, tab: Tab, cid: str, py: CallSession,
                   whose: str) -> None:
    """Audio both ways, DTMF both ways, mute on each side, hold/unhold from each side."""
    assert py.media is not None
    await py.media.wait_connected(10)
    async with tone_on(py):
        with step("audio browser -> python"):
            await hears(py, BROWSER_HZ)
        with step("audio python -> browser"):
            await tab.api("hears", cid, PYTHON_HZ)
        with step("mute in browser"):
            await tab.api("mute", cid)
            await hears_silence(py)
            await tab.api("unmute", cid)
            await hears(py, BROWSER_HZ)
        with step("mute in python"):
            await py.mute()
            await tab.api("silent", cid)
            await py.unmute()
            await tab.api("hears", cid, PYTHON_HZ)
        with step(f"hold/unhold from browser ({whose} call)"):
            await tab.api("hold", cid)
            await tab.api("silent", cid)  # the held side (Python) stops sending
            await tab.api("unhold", cid)
            await tab.api("hears", cid, PYTHON_HZ)
        with step(f"hold/unhold from python ({whose} call)"):
            await asyncio.wait_for(py.hold(), 10)
            await hears_silence(py)  # the held browser stops sending
            await asyncio.wait_for(py.unhold(), 10)
            await hears(py, BROWSER_HZ)
    with step("dtmf browser -> python"):
        got = digits_from(py)
        await tab.api("dtmf", cid, "159#")
        await wait_until(lambda: "".join(got) == "159#", 8, message=f"digits {got}")
    with step("dtmf python -> browser"):
        await py.send_dtmf("37*", duration=0.2, gap=0.15)
        await tab.api("digits", cid, "37*")


async def test_browser_calls_python(browser: Browser, stack: str, server_for: Any,
                                    take_users: Any, interop: Interop) -> None:
    server = server_for(stack)
    browser_user, py_user = take_users(server, 2)

    def step(name: str) -> Any:
        return interop.step(stack, name)

    async with browser_phone(browser, stack, server, browser_user, step) as tab, \
            python_phones(server, [py_user]) as [phone]:
        with step("browser calls python"):
            incoming = next_inbound(phone)
            cid = await tab.api("call", py_user)
            py = await asyncio.wait_for(incoming, 10)
        with step("python answers"):
            await py.answer()
            await tab.api("waitState", cid, ["answered"])
        await exercise(step, tab, cid, py, "browser's")
        with step("hang-up from browser"):
            await tab.api("hangup", cid)
            await wait_until(lambda: py.state == "disposed", 10, message="python's call ended")
            await tab.api("waitState", cid, ["ended"])


async def test_python_calls_browser(browser: Browser, stack: str, server_for: Any,
                                    take_users: Any, interop: Interop) -> None:
    server = server_for(stack)
    browser_user, py_user = take_users(server, 2)

    def step(name: str) -> Any:
        return interop.step(stack, name)

    async with browser_phone(browser, stack, server, browser_user, step) as tab, \
            python_phones(server, [py_user]) as [phone]:
        with step("python calls browser"):
            py = await phone.call(browser_user)
            cid = await tab.api("waitIncoming")
        with step("browser answers"):
            await tab.api("answer", cid)
            if py.state != "answered":
                await py.wait_for("answered", timeout=10)
        await exercise(step, tab, cid, py, "python's")
        with step("hang-up from python"):
            await asyncio.wait_for(py.hangup(), 10)
            await tab.api("waitState", cid, ["ended"])
