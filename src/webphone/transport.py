"""One WebSocket to the SIP server (RFC 7118): subprotocol `sip`, one SIP message per text frame.

A thin shell over the `websockets` library. It knows nothing about SIP beyond framing: it hands
each received frame to a callback and sends text. The SIP client above it decides what to do
when the socket closes (fail pending transactions, reconnect with backoff).

Keepalive pings (`ping_interval`) are the library's, started at a random point of the first
interval: phones connected at the same moment (a process starting hundreds of them) would
otherwise ping together every interval for as long as they live, a burst of CPU (~75 us a ping
and pong: 4 % of a core for a second with 500 phones) and of server load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .errors import TransportError

log = logging.getLogger("webphone.transport")

#: Largest frame accepted from the server. A SIP message with SDP is a few KiB; RingCentral's
#: INVITEs with P-rc XML stay well under 16 KiB, and Kamailio sends at most 64 KiB. 256 KiB
#: leaves room, bounds memory, and bounds the time one message holds the event loop while it
#: is parsed (linear: about 0.25 s for the worst case, 256 KiB of one-character headers).
MAX_FRAME_BYTES = 256 * 1024


class WebSocketTransport:
    """A WebSocket connection carrying SIP.

    `on_frame(data)` is called for every received frame (str for text, bytes for binary);
    `on_close(reason)` once when the connection ends for any reason other than `close()`.
    `wss://` verifies the server certificate with the system trust store unless an
    `ssl_context` is given.
    """

    def __init__(
        self,
        url: str,
        *,
        on_frame: Callable[[str | bytes], Any],
        on_close: Callable[[str], Any],
        ssl_context: ssl.SSLContext | None = None,
        open_timeout: float = 5.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self.url = url
        self._on_frame = on_frame
        self._on_close = on_close
        self._ssl = ssl_context
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def is_open(self) -> bool:
        """True while the WebSocket is connected."""
        return self._ws is not None and not self._closing

    async def connect(self) -> None:
        """Open the WebSocket; raise `TransportError` saying why it could not."""
        kwargs: dict[str, Any] = {}
        if self.url.startswith("wss://"):
            kwargs["ssl"] = self._ssl or ssl.create_default_context()
        try:
            self._ws = await connect(
                self.url,
                subprotocols=["sip"],  # type: ignore[list-item]
                open_timeout=self._open_timeout,
                ping_interval=None,  # started below, at a random phase
                ping_timeout=self._ping_timeout,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                **kwargs,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            # some errors have no text (a TLS handshake cut by a plain ws:// server): name them
            reason = str(exc) or str(exc.__cause__ or exc.__context__ or "") or \
                "closed during the opening handshake"
            hint = " (is the server plain ws://?)" if isinstance(exc, ssl.SSLError | EOFError) or \
                (self.url.startswith("wss://") and not str(exc)) else ""
            raise TransportError(f"cannot open WebSocket {self.url}: {type(exc).__name__}: "
                                 f"{reason}{hint}") from exc
        if self._ws.subprotocol != "sip":
            await self._ws.close()
            self._ws = None
            raise TransportError(f"server at {self.url} did not accept WebSocket subprotocol 'sip'")
        self._closing = False
        self._reader = asyncio.create_task(self._read(self._ws), name="webphone-ws-reader")
        if self._ping_interval is not None:
            # the library's keepalive sleeps one interval before each ping: the first ping
            # comes 1 to 2 intervals after connecting, then one every interval
            self._ws.ping_interval = self._ping_interval
            self._keepalive = asyncio.get_running_loop().call_later(
                random.uniform(0, self._ping_interval), self._ws.start_keepalive)

    async def send(self, text: str) -> None:
        """Send one SIP message as a text frame; `TransportError` if the socket is gone."""
        ws = self._ws
        if ws is None or self._closing:
            raise TransportError("WebSocket is not connected")
        try:
            await ws.send(text)
        except ConnectionClosed as exc:
            raise TransportError(f"WebSocket closed while sending: {exc}") from exc

    async def close(self) -> None:
        """Close the connection; `on_close` is not called for a close we asked for."""
        self._closing = True
        self._stop_keepalive()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, ws: ClientConnection) -> None:
        reason = "closed by server"
        try:
            async for frame in ws:
                self._on_frame(frame)
        except ConnectionClosed as exc:
            reason = f"connection lost: {exc}"
        except Exception as exc:
            # A bug in a frame handler must not leave a half-dead connection behind.
            log.exception("frame handler failed; closing the connection")
            reason = f"frame handler failed: {exc!r}"
        self._stop_keepalive()
        if not self._closing and self._ws is ws:
            self._ws = None
            self._on_close(reason)

    def _stop_keepalive(self) -> None:
        """Cancel a keepalive not started yet (a started one ends with its connection)."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
