"""A TCP proxy on 127.0.0.1 that a test can partition: connections through it stay open, but
while `block()`ed no byte gets through either way (a network partition without root)."""

from __future__ import annotations

import asyncio


class TcpProxy:
    """127.0.0.1:port -> target. `block()` is a partition: connections stay open (new ones are
    accepted too) but nothing gets through either way; `unblock()` heals it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.blocked = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def block(self) -> None:
        self.blocked = True

    def unblock(self) -> None:
        self.blocked = False

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while self.blocked:  # the connect went through, the handshake never will
                if not await reader.read(65536):
                    return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except OSError:
            pass
        finally:
            writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if not self.blocked:  # dropped on the floor while partitioned
                    dst.write(data)
                    await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()
