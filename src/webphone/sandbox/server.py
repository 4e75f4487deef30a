"""The WebSocket listener: SIP clients (subprotocol `sip`) and the loopback control channel.

One port serves both:

* `sip` (RFC 7118): one SIP message per text frame, handed to the `Proxy`. Frames are bounded
  (`max_frame`); a frame the proxy cannot use gets a 400 or a log line, never a closed socket.
* `webphone-sandbox-control`: JSON commands from `webphone sandbox call` (see `control.py`).
  Accepted only from a loopback address and only without an `Origin` header: a web page in a
  browser always sends Origin, so it cannot drive the sandbox even on localhost.

A plain HTTP GET (no upgrade) gets a one-line description, handy for `curl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers as HttpHeaders
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from .connection import WebSocketConnection
from .proxy import Proxy

log = logging.getLogger("webphone.sandbox")

SIP_SUBPROTOCOL = Subprotocol("sip")
CONTROL_SUBPROTOCOL = Subprotocol("webphone-sandbox-control")

#: Largest WebSocket frame accepted. SIP INVITEs with SDP and RingCentral's P-rc are a few KiB.
MAX_FRAME_BYTES = 64 * 1024

ControlHandler = Callable[[ServerConnection], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SipServer:
    """Listens on host:port and feeds the proxy; `port=0` picks a free port (see `.port`)."""

    def __init__(
        self,
        proxy: Proxy,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        control: ControlHandler | None = None,
        max_frame: int = MAX_FRAME_BYTES,
    ) -> None:
        self.proxy = proxy
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.control = control
        self.max_frame = max_frame
        self._server: Server | None = None
        self._connections: set[WebSocketConnection] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen; afterwards `.port` is the real port."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=[SIP_SUBPROTOCOL, CONTROL_SUBPROTOCOL],
            process_request=self._process_request,
            max_size=self.max_frame,
            max_queue=64,
            compression=None,
            ssl=self.ssl_context,
            ping_interval=None,  # SIP keeps itself alive (REGISTER refresh), like Kamailio's cfg
            server_header="webphone-sandbox",
        )
        sockets = list(self._server.sockets)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Close every client connection and the listening socket."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=True)
        for connection in list(self._connections):
            connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5.0)
        for task in list(self._handlers):
            task.cancel()

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return _text(http.HTTPStatus.OK, "webphone sandbox: SIP over WebSocket "
                         "(subprotocol 'sip') on this port\n")
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        if CONTROL_SUBPROTOCOL in offered and SIP_SUBPROTOCOL not in offered:
            peer = ws.remote_address[0] if ws.remote_address else ""
            if not is_loopback(str(peer)) or "Origin" in request.headers:
                log.warning("refused a control connection from %s", peer)
                return _text(http.HTTPStatus.FORBIDDEN, "control is loopback-only\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if ws.subprotocol == CONTROL_SUBPROTOCOL and self.control is not None:
                await self.control(ws)
            elif ws.subprotocol == SIP_SUBPROTOCOL:
                await self._sip(ws)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _sip(self, ws: ServerConnection) -> None:
        connection = WebSocketConnection(ws)
        self._connections.add(connection)
        self.proxy.connection_opened(connection)
        log.info("SIP client connected: %r", connection)
        try:
            async for frame in ws:
                try:
                    self.proxy.receive(connection, frame)
                except Exception:  # the proxy never raises; this is the last line of defence
                    log.exception("dropped a frame from %r", connection)
        except ConnectionClosed:
            pass
        finally:
            # No close frame came: the peer died or its network broke (not a goodbye).
            connection.lost = ws.protocol.close_rcvd is None
            self.proxy.connection_closed(connection)
            self._connections.discard(connection)
            log.info("SIP client gone: %r", connection)
            await connection.wait_closed()


def _text(status: http.HTTPStatus, text: str) -> Response:
    body = text.encode("utf-8")
    headers = HttpHeaders(
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return Response(status.value, status.phrase, headers, body)
