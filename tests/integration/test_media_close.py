"""MediaSession.close() after aiortc's own close() was cancelled halfway (issue 13 item 1)."""

from __future__ import annotations

import asyncio

import pytest

from webphone.media import session as media_session
from webphone.media.session import MediaSession


async def test_close_returns_when_a_previous_peer_connection_close_was_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiortc's second close() awaits the cancelled first one forever; ours is bounded."""
    monkeypatch.setattr(media_session, "PC_CLOSE_TIMEOUT", 0.2)
    media = MediaSession(stun_servers=[], loopback_only=True)
    await media.create_offer()
    first = asyncio.ensure_future(media._pc.close())
    await asyncio.sleep(0)  # one step: aiortc has marked itself closing and awaits its senders
    assert not first.done()
    first.cancel()
    async with asyncio.timeout(5):
        await media.close()
    assert media.closed
