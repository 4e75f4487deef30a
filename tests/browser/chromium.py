"""Headless Chromium for the browser tier: the Node driver process and its asyncio client.

    driver = ChromiumDriver(workdir); driver.start()      # one Chromium for the whole tier
    async with driver.connect() as browser:               # per test (per event loop)
        tab = await browser.open("rc.html")               # a page served on 127.0.0.1
        await tab.api("start", {...})                     # window.api.start({...}), awaited
        await tab.eval("1 + 1")

Why a Node driver (puppeteer-core) behind a JSON-lines socket rather than a Python CDP client:
puppeteer-core is the DevTools client maintained with Chromium itself (targets, page lifecycle,
console capture, awaited evaluation), and the pages need Node anyway to load the npm modules
(JsSIP is bundled in memory by esbuild). The protocol to Python is four operations (open, eval,
logs, close), and because the driver listens on a TCP port, every pytest event loop opens its
own connection while one browser serves the whole tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from support.procs import ManagedProcess
from support.wait import wait_until_sync

__all__ = ["BROWSER_DIR", "BrowserError", "ChromiumDriver", "Tab"]

BROWSER_DIR = Path(__file__).parent
CHROMIUM = os.environ.get("WEBPHONE_CHROMIUM", "/usr/bin/chromium")


class BrowserError(AssertionError):
    """An evaluation in the page failed (its JavaScript error, with the tab's console tail)."""


class ChromiumDriver:
    """`node driver.mjs`: Chromium plus the HTTP server of the test pages."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.ready_file = self.workdir / "driver.json"
        node = shutil.which("node") or "node"
        self.proc = ManagedProcess(
            "chromium-driver", [node, str(BROWSER_DIR / "driver.mjs"), str(self.ready_file)],
            self.workdir / "driver.log", cwd=BROWSER_DIR,
            env={**os.environ, "WEBPHONE_CHROMIUM": CHROMIUM},
        )
        self.control_port = 0
        self.http_port = 0

    def start(self, timeout: float = 30.0) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.proc.start()

        def ready() -> bool:
            self.proc.check_alive()
            return self.ready_file.exists()

        wait_until_sync(ready, timeout, message="chromium driver ready")
        info = json.loads(self.ready_file.read_text())
        self.control_port, self.http_port = info["control"], info["http"]

    def stop(self) -> None:
        self.proc.stop()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Browser]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.control_port)
        browser = Browser(reader, writer)
        try:
            yield browser
        finally:
            await browser.close()


class Browser:
    """One control connection; the tabs opened through it are closed with it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._task = asyncio.ensure_future(self._read())
        self.tabs: list[Tab] = []

    async def _read(self) -> None:
        while line := await self._reader.readline():
            reply = json.loads(line)
            future = self._pending.pop(reply["id"], None)
            if future is None or future.done():
                continue
            if reply["ok"]:
                future.set_result(reply["value"])
            else:
                future.set_exception(BrowserError(reply["error"]))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the chromium driver closed the connection"))

    async def request(self, op: str, timeout: float = 30.0, **fields: Any) -> Any:
        number = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        self._writer.write(json.dumps({"id": number, "op": op, **fields}).encode() + b"\n")
        await self._writer.drain()
        return await asyncio.wait_for(future, timeout)

    async def open(self, page: str) -> Tab:
        tab = Tab(self, await self.request("open", page=page), page)
        self.tabs.append(tab)
        return tab

    async def close(self) -> None:
        for tab in self.tabs:
            with contextlib.suppress(Exception):
                await tab.close()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Tab:
    """A page; `api(name, *args)` calls `window.api[name](...args)` and awaits its promise."""

    def __init__(self, browser: Browser, tab_id: str, page: str) -> None:
        self.browser, self.id, self.page = browser, tab_id, page
        self.closed = False

    async def eval(self, expr: str, timeout: float = 30.0) -> Any:
        try:
            return await self.browser.request("eval", timeout, tab=self.id, expr=expr)
        except BrowserError as exc:
            console = await self.console()
            raise BrowserError(f"{exc}\n-- console of {self.page} --\n{console}") from None

    async def api(self, name: str, *args: Any, timeout: float = 30.0) -> Any:
        arguments = ", ".join(json.dumps(arg) for arg in args)
        return await self.eval(f"api.{name}({arguments})", timeout)

    async def logs(self) -> list[str]:
        lines: list[str] = await self.browser.request("logs", tab=self.id)
        return lines

    async def console(self, last: int = 40) -> str:
        with contextlib.suppress(Exception):
            return "\n".join(line[:2000] for line in (await self.logs())[-last:])
        return "(console unavailable)"

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.browser.request("close", tab=self.id)
