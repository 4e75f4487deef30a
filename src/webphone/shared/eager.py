"""Start a coroutine as a task whose first step runs at once (Python 3.12's eager tasks).

The real runs every action a dummy sends in a task of its own (an action may wait on SIP for
seconds, and the link must go on reading). Many actions complete without ever waiting (an error
such as an unknown call, a flag change): with `loop.create_task` even those wait for the next
turn of the event loop before their first step, and only then write their result. Started
eagerly, the result is on the wire before the callback that received the action returns; an
action that waits continues in its task as before.

Python 3.12+: `asyncio.Task(coro, eager_start=True)`. Python 3.11 has no eager tasks; the same
semantics are built from its public task API plus `asyncio.tasks._enter_task`/`_leave_task` (the
functions 3.11's own Task step uses to make a task current; tests/unit/test_shared_eager.py
pins them: `current_task()` and `asyncio.timeout` inside the first step, cancellation after it):
the task is created around a continuation, made the current task while the coroutine runs up to
its first suspension, in the task's context, and the continuation resumes the coroutine from
where it suspended (PEP 380 delegation: every yield and throw is passed through).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["start_eagerly"]

_T = TypeVar("_T")


def start_eagerly(coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
    """A task running `coro`, whose first step (up to its first suspension) has run already."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)
    first = _FirstStep(coro)
    context = contextvars.copy_context()
    task = loop.create_task(first.rest(), context=context)
    previous = _swap_current(loop, task)
    try:
        context.run(first.run)
    finally:
        _swap_current(loop, previous)
    return task


def _swap_current(loop: asyncio.AbstractEventLoop,
                  task: asyncio.Task[Any] | None) -> asyncio.Task[Any] | None:
    """Make `task` the loop's current task (None: no task); the one it replaces."""
    current = asyncio.current_task(loop)
    if current is not None:
        asyncio.tasks._leave_task(loop, current)
    if task is not None:
        asyncio.tasks._enter_task(loop, task)
    return current


class _FirstStep:
    """`coro` run up to its first suspension, and what that gave (Python 3.11)."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.yielded: Any = None
        self.outcome: tuple[bool, Any] | None = None  # (ok, value or exception) once it ended

    def run(self) -> None:
        try:
            self.yielded = self.coro.send(None)
        except StopIteration as stop:
            self.outcome = (True, stop.value)
        except BaseException as exc:  # the task ends with it, as a task would
            self.outcome = (False, exc)

    async def rest(self) -> Any:
        """The task's coroutine: the outcome of the first step, or the rest of `coro`."""
        if self.outcome is not None:
            ok, value = self.outcome
            if not ok:
                raise value
            return value
        return await _Continue(self.coro, self.yielded)


class _Continue:
    """Awaitable resuming `coro`, suspended after yielding `yielded` (to the task that awaits
    this: a future it blocks on, or None for a bare yield), as `yield from coro` would."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.yielded
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task: cancellation
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
