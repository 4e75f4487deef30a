"""Opening a WebSocket fails with a reason a user can act on (issue 13 item 5)."""

from __future__ import annotations

import pytest

from support.sandbox_server import SandboxServer
from webphone.errors import TransportError
from webphone.transport import WebSocketTransport


async def test_wss_to_a_plain_ws_server_says_why(sandbox_server: SandboxServer) -> None:
    """wss:// against a ws:// server: the error names the failure (it ended in ': ')."""
    url = sandbox_server.ws_url.replace("ws://", "wss://")
    transport = WebSocketTransport(url, on_frame=lambda _: None, on_close=lambda _: None,
                                   open_timeout=5.0)
    with pytest.raises(TransportError) as info:
        await transport.connect()
    message = str(info.value)
    assert not message.rstrip().endswith(":"), message
    assert "is the server plain ws://?" in message or "SSL" in message, message
