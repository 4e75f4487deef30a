"""Steps the browser scenarios share: a browser phone on a stack, Python phones on the same
server, and audio/DTMF checks at both ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Any

from chromium import Browser, Tab

from support.calls import heard, phones
from webphone import WebPhone
from webphone.call_session import CallSession

__all__ = ["BROWSER_HZ", "PYTHON_HZ", "Step", "browser_phone", "digits_from", "hears",
           "hears_silence", "python_phones", "server_options", "tone_on"]

Step = Callable[[str], AbstractContextManager[None]]

BROWSER_HZ = 1400.0  # the page's oscillator
PYTHON_HZ = 1000.0  # what Python plays (both among support.calls.TONES)


def server_options(server: Any) -> dict[str, Any]:
    """Extra WebPhone/SipClient options the server needs (the sandbox's test CA)."""
    return dict(getattr(server, "options", {}))


@contextlib.asynccontextmanager
async def python_phones(server: Any, users: list[str]) -> AsyncIterator[list[WebPhone]]:
    async with phones(server, users, **server_options(server)) as started:
        yield started


@contextlib.asynccontextmanager
async def browser_phone(
    browser: Browser, stack: str, server: Any, user: str, step: Step | None = None
) -> AsyncIterator[Tab]:
    """A registered browser phone of `stack` for `user` (the registration is the interop step
    "register" when `step` is given); unregistered at the end."""
    if stack.startswith("rc"):
        tab = await browser.open("rc.html")
        config: dict[str, Any] = {"sipInfo": server.sip_info(user), "instanceId": f"b-{user}"}
    else:
        tab = await browser.open("jssip.html")
        url = server.wss_url if hasattr(server, "wss_url") else server.ws_url
        config = {"wsUrl": url, "user": user, "domain": server.domain,
                  "password": server.password(user)}
    with step("register") if step is not None else contextlib.nullcontext():
        await tab.api("start", config)
    try:
        yield tab
    finally:
        with contextlib.suppress(Exception):
            await tab.api("stop", timeout=10)


@contextlib.asynccontextmanager
async def tone_on(session: CallSession, hz: float = PYTHON_HZ) -> AsyncIterator[None]:
    """Python plays `hz` into the call for the duration of the block."""
    assert session.media is not None
    task = asyncio.ensure_future(session.media.play_tone(hz, 120.0, 0.5))
    try:
        yield
    finally:
        session.media.stop_playback()
        with contextlib.suppress(Exception):
            await task


def digits_from(session: CallSession) -> list[str]:
    """A list that collects the RFC 4733 digits `session` receives from now on."""
    got: list[str] = []
    session.on("dtmf", got.append)
    return got


async def hears(session: CallSession, hz: float) -> None:
    await heard(session, lambda tone: tone == hz)


async def hears_silence(session: CallSession) -> None:
    await heard(session, lambda tone: tone is None)
