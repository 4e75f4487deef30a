"""Start a coroutine as a task whose first step runs at once (Python 3.12's eager tasks).

The real runs every action a dummy sends in a task of its own (an action may wait on SIP for
seconds, and the link must go on reading). Many actions complete without ever waiting (an error
such as an unknown call, a flag change): with `loop.create_task` even those wait for the next
turn of the event loop before their first step, and only then write their result. Started
eagerly, the result is on the wire before the callback that received the action returns; an
action that waits continues in its task as before.

Python 3.12+: `asyncio.Task(coro, eager_start=True)`. Python 3.11 has no eager tasks; the same
semantics are built from its public task API plus `asyncio.tasks._enter_task`/`_leave_task` and
`_current_tasks` (what 3.11's own Task step uses to make a task current;
tests/unit/test_shared_eager.py pins them: `current_task()` and `asyncio.timeout` inside the
first step, cancellation after it):
the task is created around a continuation, made the current task while the coroutine runs up to
its first suspension, in the task's context, and the continuation resumes the coroutine from
where it suspended (PEP 380 delegation: every yield and throw is passed through).

`EagerStarter` is for a caller that starts many such coroutines and needs no task for one that
completes at once (the real's `ActionRunner`). On 3.11 a task per coroutine costs 41,000
instructions (callgrind: the Task, its registration in `asyncio.all_tasks`' WeakSet, the step
it schedules and the done callback), a tenth of a direct action round trip; the starter costs
17,000. Its first steps run under a *lender*: a task of the starter, parked on a future, made
the current task for the step, which runs in a context of its own (a copy of the caller's, as a
task's). A coroutine that completes there needs nothing more; one that waits is handed to the
lender, which goes on running it (in that context) as its task, so the task that was current in
its first step stays its task (`asyncio.timeout`, cancellation), and a new lender serves the
next first steps. The one difference from a task per coroutine: coroutines that complete at
once share the lender as their current task (code that kept `current_task()` past its own end
would see it reused; nothing in webphone does). Python 3.12+ uses its eager tasks instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["EagerStarter", "start_eagerly"]

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


class EagerStarter:
    """Starts coroutines whose first step runs at once; a task only for those that wait (see
    the module docstring). One per caller and event loop."""

    def __init__(self) -> None:
        self._lender: _Lender | None = None
        # the loop of the first start, kept: asyncio.get_running_loop() is a getpid() system
        # call on 3.11 (it checks for a fork), one per action (strace)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run `coro` up to its first suspension, as a task: None if it ended there (an
        exception it raised is raised here), else the task that runs it (the first coroutine,
        and any while a new lender has not yet parked, gets a task of its own, as
        `start_eagerly`)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if sys.version_info >= (3, 12):
            task = asyncio.Task(coro, loop=loop, eager_start=True)
            if task.done():
                task.result()  # its outcome: raised here, as on 3.11
                return None
            return task
        lender = self._lender
        if lender is None or lender.task.done() or lender.task.cancelling():
            self._lender = _Lender(loop)  # none yet, or someone cancelled it
            return start_eagerly(coro)
        if not lender.parked:  # it has not run its first step: a task of its own meanwhile
            return start_eagerly(coro)
        context = contextvars.copy_context()  # the coroutine's own, as a task's
        task = lender.task
        previous = _CURRENT_TASKS.get(loop)  # None from a callback (a link's read): the usual
        if previous is None:
            _enter_task(loop, task)
        else:
            _swap_current(loop, task)
        try:
            yielded = context.run(coro.send, None)
        except StopIteration:
            return None
        finally:
            if previous is None:
                _leave_task(loop, task)
            else:
                _swap_current(loop, previous)
        self._lender = _Lender(loop)  # this one is now coro's task
        lender.handoff.set_result((coro, yielded, context))
        return lender.task

    def close(self) -> None:
        """Stop the parked lender (the tasks `start` returned go on)."""
        lender, self._lender = self._lender, None
        if lender is not None:
            lender.task.cancel()


class _Lender:
    """A task parked until a coroutine whose first step it lent itself to needs it: then it
    runs the rest of that coroutine (Python 3.11, `EagerStarter`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.parked = False  # lent only once its task waits on `handoff`: a cancellation then
        # reaches `_run` inside its try (before its first step it would end the task unentered)
        self.handoff: asyncio.Future[_Handed] = loop.create_future()
        self.task = loop.create_task(self._run())

    async def _run(self) -> Any:
        self.parked = True
        try:
            coro, yielded, context = await self.handoff
        except asyncio.CancelledError as exc:
            if self.handoff.cancelled() or not self.handoff.done():
                raise  # parked: nothing was handed to us (closed, or the loop is closing)
            # cancelled between the hand-over and our first step: the coroutine gets it
            coro, yielded, context = self.handoff.result()
            return await _Continue(coro, yielded, context, exc)
        return await _Continue(coro, yielded, context)


#: what a lender is handed: the coroutine, what its first step yielded, its context
_Handed = tuple[Coroutine[Any, Any, Any], Any, contextvars.Context]


_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task
#: the running task of each loop (3.11; not in typeshed)
_CURRENT_TASKS: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = vars(asyncio.tasks).get(
    "_current_tasks", {})


def _swap_current(loop: asyncio.AbstractEventLoop,
                  task: asyncio.Task[Any] | None) -> asyncio.Task[Any] | None:
    """Make `task` the loop's current task (None: no task); the one it replaces."""
    current = _CURRENT_TASKS.get(loop)  # asyncio.current_task(loop), without its Python layer
    if current is not None:
        _leave_task(loop, current)
    if task is not None:
        _enter_task(loop, task)
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

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any,
                 context: contextvars.Context | None = None,
                 thrown: BaseException | None = None) -> None:
        self.coro = coro
        self.yielded = yielded
        self.context = context  # each step of `coro` runs in it (None: the awaiting task's)
        self.thrown = thrown  # thrown into `coro` first (instead of waiting on `yielded`)

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value, context = self.coro, self.yielded, self.context
        send: Callable[[Any], Any] = coro.send
        throw: Callable[[BaseException], Any] = coro.throw
        if context is not None:
            def send(value: Any) -> Any:
                return context.run(coro.send, value)

            def throw(exc: BaseException) -> Any:
                return context.run(coro.throw, exc)
        if self.thrown is not None:
            try:
                value = throw(self.thrown)
            except StopIteration as stop:
                return stop.value
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task: cancellation
                try:
                    value = throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = send(sent)
                except StopIteration as stop:
                    return stop.value
