"""redis-server on a free loopback port, no persistence, restartable on the same port.

r = RedisServer(workdir); r.start()     # ready when PING answers (20-50 ms)
r.url                                   # "redis://127.0.0.1:PORT/0"
r.stop(); r.start()                     # restart: same port, empty data set
r.pause(); r.resume()                   # SIGSTOP/SIGCONT (a hung server)
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

from .ports import HOST, free_tcp_port
from .procs import ManagedProcess, ProcessDiedError
from .wait import wait_until_sync

__all__ = ["RedisServer", "redis_ping"]


def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Raw RESP PING (no client library): True when the server answers +PONG."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        return s.recv(64).startswith(b"+PONG")


class RedisServer:
    def __init__(
        self, workdir: str | Path, *, port: int | None = None, name: str = "redis"
    ) -> None:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("redis-server not found (apt install redis-server)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_tcp_port()
        self.log_path = self.workdir / f"{name}.log"
        self._name = name
        self.proc = self._make_proc()

    def _make_proc(self) -> ManagedProcess:
        argv = [
            "redis-server",
            "--bind", self.host, "--port", str(self.port),
            "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no", "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        return ManagedProcess(self._name, argv, self.log_path)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc.running

    def ping(self) -> bool:
        try:
            return redis_ping(self.host, self.port)
        except OSError:
            return False

    def start(self, timeout: float = 10.0, attempts: int = 3) -> None:
        """Start and wait for PING. If the port was taken meanwhile (first start only), retry on
        a new port; on a restart the port is kept (tests rely on it), so that is an error."""
        first = self.proc.started_at is None
        for attempt in range(attempts):
            self.proc.start()

            def ready() -> bool:
                self.proc.check_alive()
                return redis_ping(self.host, self.port)

            try:
                wait_until_sync(ready, timeout, 0.005, f"redis-server PING on {self.port}")
                return
            except TimeoutError as exc:
                tail = self.proc.log_tail(20)
                self.proc.stop()
                if first and attempt + 1 < attempts and "Address already in use" in tail:
                    self.port = free_tcp_port()
                    self.proc = self._make_proc()
                    continue
                raise ProcessDiedError(f"redis-server did not start: {exc}\n{tail}") from exc

    def stop(self) -> int | None:
        return self.proc.stop()

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        self.proc.pause()

    def resume(self) -> None:
        self.proc.resume()

    async def astart(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.start, timeout)

    async def astop(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} {'up' if self.running else 'down'}>"
