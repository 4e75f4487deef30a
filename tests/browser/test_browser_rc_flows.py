"""RingCentral's flows on a browser's call (the sandbox): Python declines it, sends it to
voicemail, forwards it; and a browser calls a SharedWebPhone group whose dummy answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chromium import Browser, Tab
from interop import Interop
from scenario import (
    BROWSER_HZ,
    PYTHON_HZ,
    browser_phone,
    hears,
    python_phones,
    server_options,
    tone_on,
)

from support.calls import next_inbound
from support.wait import wait_until
from webphone import SipInfo
from webphone.call_session import InboundCallSession
from webphone.shared import SharedWebPhone
from webphone.shared.transports.base import HubOptions
from webphone.shared.transports.memory import MemoryTransport

pytestmark = pytest.mark.browser


@pytest.fixture(params=["rc-sandbox", "jssip-sandbox"])
def sandbox_stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def ring(tab: Tab, phone: Any, number: str) -> tuple[str, InboundCallSession]:
    """The browser calls `number`; returns its call id and the Python side ringing."""
    incoming = next_inbound(phone)
    cid = await tab.api("call", number)
    return cid, await asyncio.wait_for(incoming, 10)


async def test_python_declines_a_browser_call(
    browser: Browser, sandbox_stack: str, rc_sandbox: Any, take_users: Any, interop: Interop
) -> None:
    browser_user, py_user = take_users(rc_sandbox, 2)
    async with browser_phone(browser, sandbox_stack, rc_sandbox, browser_user) as tab, \
            python_phones(rc_sandbox, [py_user]) as [phone]:
        with interop.step(sandbox_stack, "python declines browser's call"):
            cid, py = await ring(tab, phone, py_user)
            await py.decline()
            # RingCentral lets the caller hear ringback, then answers 480 (reject_delay)
            ended = await tab.api("waitState", cid, ["ended"])
            assert ended["state"] == "ended"
            await wait_until(lambda: py.state in ("disposed", "failed"), 10,
                             message="the declined call ends on the Python side")


async def test_python_sends_a_browser_call_to_voicemail(
    browser: Browser, sandbox_stack: str, rc_sandbox: Any, take_users: Any, interop: Interop
) -> None:
    browser_user, py_user = take_users(rc_sandbox, 2)
    async with browser_phone(browser, sandbox_stack, rc_sandbox, browser_user) as tab, \
            python_phones(rc_sandbox, [py_user]) as [phone]:
        with interop.step(sandbox_stack, "python sends browser's call to voicemail"):
            before = len(rc_sandbox.server.sandbox.voicemails)
            cid, py = await ring(tab, phone, py_user)
            await py.to_voicemail()
            await tab.api("waitState", cid, ["answered"])  # the voicemail party answered
            await tab.api("hears", cid, 1000)  # its beep

            def recorded() -> bool:
                messages = rc_sandbox.server.sandbox.voicemails[before:]
                return any(m.caller == browser_user and m.frames > 25 for m in messages)

            await wait_until(recorded, 10, message="the browser's audio recorded")
            await tab.api("hangup", cid)
            await tab.api("waitState", cid, ["ended"])


async def test_python_forwards_a_browser_call(
    browser: Browser, sandbox_stack: str, rc_sandbox: Any, take_users: Any, interop: Interop
) -> None:
    browser_user, py_user, target_user = take_users(rc_sandbox, 3)
    async with browser_phone(browser, sandbox_stack, rc_sandbox, browser_user) as tab, \
            python_phones(rc_sandbox, [py_user, target_user]) as [phone, target]:
        with interop.step(sandbox_stack, "python forwards browser's call"):
            cid, py = await ring(tab, phone, py_user)
            forwarded = next_inbound(target)
            await py.forward(target_user)
            answering = await asyncio.wait_for(forwarded, 10)
            await answering.answer()
            await tab.api("waitState", cid, ["answered"])
            assert answering.media is not None
            await answering.media.wait_connected(10)
            async with tone_on(answering):
                await hears(answering, BROWSER_HZ)
                await tab.api("hears", cid, PYTHON_HZ)
            await tab.api("hangup", cid)
            await wait_until(lambda: answering.state == "disposed", 10, message="forward ended")


@contextlib.asynccontextmanager
async def group(server: Any, user: str, size: int) -> AsyncIterator[list[SharedWebPhone]]:
    """`size` SharedWebPhones of `user` in this process (memory hub): the first is the real."""
    transport = MemoryTransport(HubOptions(heartbeat_interval=0.1, heartbeat_timeout=1.5))
    members: list[SharedWebPhone] = []
    try:
        for _ in range(size):
            member = SharedWebPhone(SipInfo.from_dict(server.sip_info(user)), hub=transport,
                                    loopback_media=True, **server_options(server))
            await member.start()
            members.append(member)
        yield members
    finally:
        for member in reversed(members):
            with contextlib.suppress(Exception):
                await member.dispose(timeout=2)
        await transport.aclose()


async def test_browser_calls_a_group_and_a_dummy_answers(
    browser: Browser, stack: str, server_for: Any, take_users: Any, interop: Interop
) -> None:
    server = server_for(stack)
    browser_user, group_user = take_users(server, 2)
    scenario = "browser calls a SharedWebPhone group, a dummy answers"
    async with browser_phone(browser, stack, server, browser_user) as tab, \
            group(server, group_user, 2) as (real, dummy):
        with interop.step(stack, scenario):
            assert (real.role, dummy.role) == ("real", "dummy")
            ringing: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            dummy.on("inbound_call", lambda s: ringing.done() or ringing.set_result(s))
            cid = await tab.api("call", group_user)
            proxy = await asyncio.wait_for(ringing, 10)
            await proxy.answer()
            await tab.api("waitState", cid, ["answered"])
            # the dummy that answered holds the call's audio (media="taker"); the real keeps
            # the dialog and relays the SDP
            assert all(s.media is not proxy.media for s in real.call_sessions)
            assert proxy.media is not None
            await proxy.media.wait_connected(10)
            async with tone_on(proxy):
                await hears(proxy, BROWSER_HZ)
                await tab.api("hears", cid, PYTHON_HZ)
            await proxy.hangup()
            await tab.api("waitState", cid, ["ended"])
