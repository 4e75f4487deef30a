"""The local hub against connections that misbehave (issue 13 item 10): real Unix sockets."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.group import short_runtime_dir
from webphone.shared.hub import Hub
from webphone.shared.transports import local
from webphone.shared.transports.base import HubOptions

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def hub_socket() -> AsyncIterator[Path]:
    runtime_dir = short_runtime_dir()
    path = local.group_paths(runtime_dir, "g").socket
    loop = asyncio.get_running_loop()
    hub = Hub("g", HubOptions(hello_timeout=0.5), clock=loop.time)
    server = await local.serve_hub(hub, path)
    try:
        yield path
    finally:
        hub.close()
        server.close()
        await server.wait_closed()
        shutil.rmtree(runtime_dir, ignore_errors=True)


async def test_a_connection_that_never_sends_a_frame_is_closed_after_the_hello_timeout(
    hub_socket: Path,
) -> None:
    """A client that connects and stays silent is closed by the hub (it used to be kept)."""
    reader, writer = await asyncio.open_unix_connection(str(hub_socket))
    try:
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # EOF: the hub closed it
    finally:
        writer.close()
