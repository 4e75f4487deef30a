"""Polling with a deadline: how tests synchronise with external processes (never bare sleeps).

`predicate` may be a plain callable or (for `wait_until`) return an awaitable. Exceptions raised
by the predicate count as "not yet" (a server that is still starting refuses connections); the
last one is chained to the final `TimeoutError` so a failure shows why it never became true.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_tcp", "wait_tcp_async", "wait_until", "wait_until_sync"]


def _timeout_error(message: str | None, timeout: float, last_value: Any) -> TimeoutError:
    text = message or "condition not met"
    return TimeoutError(f"{text} (after {timeout:.2f} s; last value: {last_value!r})")


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.01,
    message: str | None = None,
) -> Any:
    """Await until `predicate()` (sync or async) returns a truthy value; return that value.

    Raises `TimeoutError` (message + last value, the predicate's last exception chained) when
    `timeout` seconds pass first. The predicate is always evaluated at least once, and once more
    right at the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_exc: BaseException | None = None
    last_value: Any = None
    while True:
        final = loop.time() >= deadline
        try:
            value = predicate()
            if inspect.isawaitable(value):
                # a hanging async predicate must not overrun the deadline
                value = await asyncio.wait_for(value, max(deadline - loop.time(), interval))
            last_exc = None
            last_value = value
            if value:
                return value
        except Exception as exc:  # "not yet" (AssertionError included)
            last_exc = exc
        if final:
            raise _timeout_error(message, timeout, last_value) from last_exc
        await asyncio.sleep(max(0.0, min(interval, deadline - loop.time())))


def wait_until_sync(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.01,
    message: str | None = None,
) -> Any:
    """Blocking twin of `wait_until` (for fixtures and threads; never inside a running loop)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: Any = None
    while True:
        final = time.monotonic() >= deadline
        try:
            value = predicate()
            last_exc = None
            last_value = value
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        if final:
            raise _timeout_error(message, timeout, last_value) from last_exc
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def _tcp_connects(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def wait_tcp(
    host: str,
    port: int,
    timeout: float,
    interval: float = 0.01,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until a TCP connect to host:port succeeds.

    `alive` (optional) is checked on every round; when it returns False (the server process
    died) the wait stops at once with `RuntimeError` instead of running into the timeout.
    """

    def ready() -> bool:
        if alive is not None and not alive():
            raise _Died
        return _tcp_connects(host, port)

    try:
        wait_until_sync(ready, timeout, interval, f"{host}:{port} not accepting")
    except _Died:
        raise RuntimeError(f"process exited before {host}:{port} accepted connections") from None


async def wait_tcp_async(host: str, port: int, timeout: float, interval: float = 0.01) -> None:
    """Await until a TCP connect to host:port succeeds."""

    async def ready() -> bool:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
        writer.close()
        await writer.wait_closed()
        return True

    await wait_until(ready, timeout, interval, f"{host}:{port} not accepting")


class _Died(BaseException):
    """Escapes wait_until_sync's "not yet" handling (it only catches Exception)."""
