"""A small event emitter shared by phones, sessions and clients.

Handlers may be plain functions or coroutine functions; a coroutine handler runs as its own task.
A handler that raises is logged and never breaks the emitter or the other handlers: one bad
callback in user code must not take a phone down.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("webphone.events")

Handler = Callable[..., Any]


class EventEmitter:
    """`on`, `once`, `off`, `emit` with per-event handler lists."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[Handler, bool]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event: str, handler: Handler) -> Handler:
        """Call `handler(*args)` every time `event` is emitted; returns the handler."""
        self._handlers.setdefault(event, []).append((handler, False))
        return handler

    def once(self, event: str, handler: Handler) -> Handler:
        """Call `handler(*args)` the next time `event` is emitted, then forget it."""
        self._handlers.setdefault(event, []).append((handler, True))
        return handler

    def off(self, event: str, handler: Handler | None = None) -> None:
        """Remove `handler` from `event`, or every handler of `event` when None."""
        if handler is None:
            self._handlers.pop(event, None)
            return
        self._handlers[event] = [h for h in self._handlers.get(event, []) if h[0] is not handler]

    def emit(self, event: str, *args: Any) -> None:
        """Call the handlers of `event` in registration order."""
        entries = self._handlers.get(event)
        if not entries:
            return
        self._handlers[event] = [h for h in entries if not h[1]]
        for handler, _once in entries:
            try:
                result = handler(*args)
            except Exception:
                log.exception("handler %r for event %r raised", handler, event)
                continue
            if inspect.isawaitable(result):
                self._spawn_handler(event, result)

    async def wait_for(self, event: str, timeout: float | None = None) -> tuple[Any, ...]:
        """Wait for the next `event` and return its arguments."""
        future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

        def resolve(*args: Any) -> None:
            if not future.done():
                future.set_result(args)

        self.once(event, resolve)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.off(event, resolve)

    def _spawn_handler(self, event: str, awaitable: Any) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception:
                log.exception("async handler for event %r raised", event)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
