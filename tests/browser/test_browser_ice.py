"""Loopback-only media stays on 127.0.0.0/8 even when a browser checks from elsewhere.

Chromium gathers host candidates on every interface (127.0.0.1 with
--allow-loopback-in-peer-connection, and the machine's own addresses); its connectivity checks
from a non-loopback address reach our 127.0.0.1 candidate and, unfiltered, become a
peer-reflexive candidate (RFC 8445 §7.3.1.3) that aioice then sends media to.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from chromium import Browser
from interop import Interop
from scenario import BROWSER_HZ, PYTHON_HZ, browser_phone, hears, python_phones, tone_on

from support.calls import next_inbound
from webphone.call_session import CallSession

pytestmark = pytest.mark.browser

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def remote_addresses(session: CallSession) -> dict[str, list[str]]:
    """aioice's view of the call: every remote candidate it knows, and the nominated pair."""
    assert session.media is not None
    transport = session.media.peer_connection.getTransceivers()[0].receiver.transport
    connection: Any = transport.transport._connection
    return {
        "candidates": [f"{c.host} {c.type}" for c in connection._remote_candidates],
        "nominated": [p.remote_candidate.host for p in connection._nominated.values()],
    }


def outside_loopback(hosts: list[str]) -> list[str]:
    return [h for h in hosts if ipaddress.ip_address(h.split()[0]) not in LOOPBACK]


async def test_loopback_media_ignores_checks_from_other_addresses(
    browser: Browser, stack: str, server_for: Any, take_users: Any, interop: Interop
) -> None:
    server = server_for(stack)
    browser_user, py_user = take_users(server, 2)
    with interop.step(stack, "loopback-only media stays on 127.0.0.1"):
        async with browser_phone(browser, stack, server, browser_user) as tab, \
                python_phones(server, [py_user]) as [phone]:
            incoming = next_inbound(phone)
            cid = await tab.api("call", py_user)
            py = await asyncio.wait_for(incoming, 10)
            await py.answer()
            assert py.media is not None
            await py.media.wait_connected(10)
            async with tone_on(py):
                await hears(py, BROWSER_HZ)
                await tab.api("hears", cid, PYTHON_HZ)
            # Chromium offered candidates outside loopback too (they were never tried) ...
            sdp = py.media.remote_sdp or ""
            assert "a=candidate" in sdp
            # ... and checked from there: nothing of it may reach aioice's candidate list.
            seen = remote_addresses(py)
            assert not outside_loopback(seen["candidates"]), seen
            assert seen["nominated"] and not outside_loopback(seen["nominated"]), seen
            pair = await tab.api("selectedPair", cid)
            assert pair["remote"].startswith("127."), pair
            await py.hangup()
