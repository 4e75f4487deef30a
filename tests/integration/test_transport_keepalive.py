"""WebSocket keepalive pings: phones connected at the same moment do not ping together (each
starts at a random phase), and every one of them does ping (its pong sets the latency). What
happens without a pong is the websockets library's own keepalive, unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from support.wait import wait_until
from webphone.transport import WebSocketTransport

Handler = Callable[[ServerConnection], Awaitable[None]]


async def _hold(ws: ServerConnection) -> None:
    await ws.wait_closed()


@pytest.fixture
async def server_url() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[Any] = []

    async def start(handler: Handler) -> str:
        server = await serve(handler, "127.0.0.1", 0, subprotocols=["sip"],  # type: ignore[list-item]
                             ping_interval=None)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_phones_connected_together_ping_at_different_times(
    server_url: Callable[[Handler], Awaitable[str]],
) -> None:
    url = await server_url(_hold)
    interval = 0.5
    transports = [WebSocketTransport(url, on_frame=lambda _: None, on_close=lambda _: None,
                                     ping_interval=interval, ping_timeout=2.0) for _ in range(20)]
    await asyncio.gather(*(t.connect() for t in transports))
    loop = asyncio.get_running_loop()
    start = loop.time()
    first_pong: dict[int, float] = {}

    def all_answered() -> bool:  # latency is set when a keepalive ping's pong comes back
        for i, transport in enumerate(transports):
            if i not in first_pong and transport._ws is not None and transport._ws.latency > 0:
                first_pong[i] = loop.time() - start
        return len(first_pong) == len(transports)

    try:
        await wait_until(all_answered, timeout=3 * interval + 2, interval=0.005,
                         message="a keepalive pong on every connection")
    finally:
        await asyncio.gather(*(t.close() for t in transports))
    # each first ping comes 1 to 2 intervals after connecting, at its own random phase: 20
    # draws spread over less than a quarter of the interval would happen once in ~10^11 runs
    assert max(first_pong.values()) - min(first_pong.values()) > interval / 4, first_pong
