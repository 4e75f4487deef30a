"""Peers of the sandbox: a WebSocket client, or a built-in party living in the same process.

The proxy only ever calls `send(message)`, which never blocks: a WebSocket connection queues
the text for its writer task (so messages leave in the order the proxy decided them), a local
connection hands the message to its party on the next loop iteration (so the proxy is never
re-entered while it is still handling a message).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
from collections.abc import Callable
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from webphone.sip import SipRequest, SipResponse

log = logging.getLogger("webphone.sandbox")

SipMessage = SipRequest | SipResponse


class TxFailure(enum.StrEnum):
    """Why a request the sandbox sent got no final response (`Proxy.send_request`)."""

    #: No final response in time: RFC 3261 §16.8, the proxy acts as if it got a 408.
    TIMED_OUT = "timed out"
    #: The target's connection closed (before or after the request went out): a transport
    #: error, RFC 3261 §16.9, the proxy acts as if it got a 503.
    CONNECTION_CLOSED = "connection closed"
    #: Given up on purpose (`Proxy.forget_later`, after a CANCEL).
    FORGOTTEN = "forgotten"


ResponseHandler = Callable[[SipResponse], None]
FailureHandler = Callable[[TxFailure], None]

#: Messages queued for one client before the sandbox gives up on it (it stopped reading).
MAX_QUEUED = 1000

_ids = itertools.count(1)


class Sender(Protocol):
    """What the sandbox's routing helpers need to send (the proxy is one): the base of the
    small router interfaces each of them declares (`calls.CallRouter`, ...), so that none of
    them depends on `proxy.Proxy`, which depends on them."""

    def via(self) -> str:
        """A fresh Via value of ours."""
        ...

    def send(self, connection: Connection, message: SipMessage) -> None:
        """Record and queue `message` on `connection`."""
        ...

    def send_request(
        self,
        connection: Connection,
        request: SipRequest,
        *,
        on_response: ResponseHandler | None = None,
        on_failure: FailureHandler | None = None,
        timeout: float | None = -1.0,
    ) -> None:
        """Send a request of ours and route its responses (see `Proxy.send_request`)."""
        ...


class Connection:
    """One peer. `user` is the extension it authenticated as (or the party number).

    `lost` is set when it closed without a goodbye (no WebSocket close frame: the process died
    or the network broke), so its device may come back on a new connection (RFC 5626).
    """

    kind = "abstract"

    def __init__(self, peer: str, *, trusted: bool = False) -> None:
        self.id = next(_ids)
        self.peer = peer
        self.trusted = trusted
        self.user: str | None = None
        self.closed = False
        self.lost = False

    def send(self, message: SipMessage) -> None:
        """Queue `message` for the peer; never blocks, silently drops once closed."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.closed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} {self.peer} user={self.user}>"


class WebSocketConnection(Connection):
    """A SIP-over-WebSocket client; one SIP message per text frame."""

    kind = "ws"

    def __init__(self, ws: ServerConnection) -> None:
        address = ws.remote_address
        peer = f"{address[0]}:{address[1]}" if address else "?"
        super().__init__(peer)
        self.ws = ws
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name=f"sandbox-ws-writer-{self.id}")

    def send(self, message: SipMessage) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            log.warning("%r stopped reading (%d messages queued); closing it", self, MAX_QUEUED)
            self.close()
            return
        self._queue.put_nowait(str(message))

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._queue.put_nowait(None)

    async def _write(self) -> None:
        while (text := await self._queue.get()) is not None:
            try:
                await self.ws.send(text)
            except ConnectionClosed:
                break
        with contextlib.suppress(Exception):
            await self.ws.close()

    async def wait_closed(self) -> None:
        """Wait until the writer has flushed and closed the socket."""
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


class LocalConnection(Connection):
    """An in-process peer (a built-in party): messages are objects, delivered asynchronously."""

    kind = "party"

    def __init__(self, name: str, deliver: Callable[[SipMessage], None]) -> None:
        super().__init__(f"party:{name}", trusted=True)
        self.user = name
        self._deliver = deliver

    def send(self, message: SipMessage) -> None:
        if not self.closed:
            asyncio.get_running_loop().call_soon(self._safe_deliver, message)

    def _safe_deliver(self, message: SipMessage) -> None:
        if self.closed:
            return
        try:
            self._deliver(message)
        except Exception:
            log.exception("party %s failed handling %s", self.user, _first_line(message))


def _first_line(message: SipMessage) -> str:
    return str(message).split("\r\n", 1)[0]
