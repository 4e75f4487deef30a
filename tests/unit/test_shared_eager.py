"""`start_eagerly`: the first step runs at once, as a task (pins the asyncio hooks on 3.11)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from webphone.shared.eager import start_eagerly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="caller")


async def test_a_coroutine_that_never_waits_has_finished_when_start_returns() -> None:
    seen: list[object] = []

    async def work() -> int:
        seen.append(asyncio.current_task())
        async with asyncio.timeout(1.0):  # needs a current task (3.11: the hooks)
            VAR.set("inside")
        return 7

    task = start_eagerly(work())
    assert seen == [task]  # ran before start_eagerly returned, as that task
    assert VAR.get() == "caller"  # in the task's own context, as a task
    assert asyncio.current_task() is not task  # ours again
    assert await task == 7


async def test_a_coroutine_that_waits_continues_in_its_task() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def work() -> str:
        steps.append("first")
        value = await gate
        await asyncio.sleep(0)  # a bare yield is passed through as well
        steps.append(value)
        assert asyncio.current_task() is task
        return value + "!"

    task = start_eagerly(work())
    assert steps == ["first"] and not task.done()
    gate.set_result("go")
    assert await task == "go!" and steps == ["first", "go"]


async def test_errors_end_the_task_whenever_they_happen() -> None:
    async def at_once() -> None:
        raise KeyError("now")

    async def later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    with pytest.raises(KeyError, match="now"):
        await start_eagerly(at_once())
    with pytest.raises(KeyError, match="later"):
        await start_eagerly(later())


async def test_cancelling_a_waiting_task_reaches_the_coroutine() -> None:
    cleaned = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    task = start_eagerly(work())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set() and task.cancelled()


async def test_started_from_inside_another_task_that_task_stays_current() -> None:
    async def inner() -> object:
        return asyncio.current_task()

    async def outer() -> tuple[object, object, object]:
        me = asyncio.current_task()
        task = start_eagerly(inner())
        return me, asyncio.current_task(), await task

    me, after, inside = await asyncio.create_task(outer())
    assert after is me and inside is not me and inside is not None
