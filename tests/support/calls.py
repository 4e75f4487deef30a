"""Helpers for call tests: phones on a server, connected calls, listening for a tone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from webphone import SipInfo, WebPhone
from webphone.call_session import CallSession, InboundCallSession, OutboundCallSession
from webphone.media.tone import detect_tone, rms

TONES = (440.0, 1000.0, 1400.0)


@asynccontextmanager
async def phones(server: Any, users: list[str], **options: Any) -> AsyncIterator[list[WebPhone]]:
    """Started phones (loopback ICE) for `users` on `server` (Kamailio or the sandbox)."""
    started: list[WebPhone] = []
    try:
        for user in users:
            phone = WebPhone(
                SipInfo.from_dict(server.sip_info(user)), instance_id=f"t-{user}",
                loopback_media=True, **options,
            )
            await phone.start()
            started.append(phone)
        yield started
    finally:
        for phone in started:
            await phone.dispose()


def next_inbound(phone: WebPhone) -> asyncio.Future[InboundCallSession]:
    """A future resolved by the phone's next inbound call."""
    future: asyncio.Future[InboundCallSession] = asyncio.get_running_loop().create_future()

    def resolve(session: InboundCallSession) -> None:
        if not future.done():
            future.set_result(session)

    phone.once("inbound_call", resolve)
    return future


async def connect(
    caller: WebPhone, callee: WebPhone, number: str
) -> tuple[OutboundCallSession, InboundCallSession]:
    """Call `number` from `caller`, answer on `callee`, wait until both sides are answered."""
    incoming = next_inbound(callee)
    out = await caller.call(number)
    inc = await asyncio.wait_for(incoming, 10)
    await inc.answer()
    if out.state != "answered":
        await out.wait_for("answered", timeout=10)
    assert out.media is not None and inc.media is not None
    await asyncio.gather(out.media.wait_connected(10), inc.media.wait_connected(10))
    return out, inc


async def heard(
    session: CallSession, want: Callable[[float | None], bool], timeout: float = 10.0,
    window: float = 0.2,
) -> float | None:
    """Listen to `session`'s received audio until a `window` of it satisfies `want(tone)`.

    `tone` is the detected frequency among TONES, or None for silence, noise, or no audio at
    all (no frame for `window` seconds: a held peer sends nothing)."""
    assert session.media is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buffer = b""
    async with session.media.received_audio() as stream:
        while loop.time() < deadline:
            try:
                frame = await asyncio.wait_for(anext(stream), window * 2)
            except TimeoutError:
                buffer = b""
                if want(None):
                    return None
                continue
            buffer += frame.pcm
            if len(buffer) >= int(window * frame.sample_rate) * 2:
                tone = detect_tone(buffer, frame.sample_rate, TONES)
                if want(tone):
                    return tone
                buffer = b""
    level = rms(buffer) if buffer else 0.0
    raise AssertionError(f"audio condition not met within {timeout} s (last rms {level:.4f})")


def silent(tone: float | None) -> bool:
    return tone is None
