"""`start_eagerly`: the first step runs at once, as a task (pins the asyncio hooks on 3.11)."""

from __future__ import annotations

import asyncio
import contextvars
import sys

import pytest

from webphone.shared.eager import EagerStarter, start_eagerly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="caller")
#: EagerStarter lends a parked task to first steps (3.11); 3.12+ starts eager tasks
LENDS = sys.version_info < (3, 12)


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


async def at_once() -> None:
    raise KeyError("now")


async def later() -> None:
    await asyncio.sleep(0)
    raise KeyError("later")


async def test_errors_end_the_task_whenever_they_happen() -> None:
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


# -- EagerStarter: no task for a coroutine that completes in its first step ---------------------


async def parked_starter() -> EagerStarter:
    """A starter whose lender has parked (the first start gets a task of its own)."""
    starter = EagerStarter()

    async def nothing() -> None:
        pass

    first = starter.start(nothing())
    assert (first is not None) == LENDS  # 3.11: no lender yet, a task as start_eagerly
    if first is not None:
        await first
    return starter


async def test_the_starter_runs_a_first_step_as_a_task_and_makes_none_for_one_that_ends() -> None:
    starter = await parked_starter()
    seen: list[object] = []

    async def work() -> None:
        seen.append(asyncio.current_task())
        async with asyncio.timeout(1.0):  # needs a current task
            token = VAR.set("inside")
            VAR.reset(token)  # left as it was: the same lender serves the next one

    assert starter.start(work()) is None and starter.start(work()) is None
    assert seen[0] is not None and (seen[0] is seen[1]) == LENDS  # 3.11: one lender, no task
    assert asyncio.current_task() is not seen[0] and VAR.get() == "caller"
    starter.close()


async def test_a_coroutine_that_waits_goes_on_in_the_task_of_its_first_step() -> None:
    starter = await parked_starter()
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    tasks: list[object] = []

    async def work() -> str:
        tasks.append(asyncio.current_task())
        VAR.set("work's")
        value = await gate
        await asyncio.sleep(0)
        tasks.append(asyncio.current_task())
        return value + "!" + VAR.get()  # its later steps run in its own context

    async def quick() -> None:
        tasks.append(asyncio.current_task())
        assert VAR.get() == "caller"

    task = starter.start(work())
    assert task is not None and tasks == [task] and not task.done()
    await asyncio.sleep(0)  # the next lender parks
    assert starter.start(quick()) is None and tasks[1] is not task  # a new lender
    gate.set_result("go")
    assert await task == "go!work's" and tasks[2] is task and VAR.get() == "caller"
    starter.close()


async def test_a_timeout_entered_in_the_first_step_cancels_the_right_coroutine() -> None:
    starter = await parked_starter()
    outcome: list[str] = []

    async def work() -> None:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(3600)
        except TimeoutError:
            outcome.append("timed out")

    task = starter.start(work())
    assert task is not None
    await task
    assert outcome == ["timed out"] and not task.cancelled()
    starter.close()


async def test_cancelling_a_started_task_reaches_its_coroutine_even_before_it_resumed() -> None:
    starter = await parked_starter()
    seen: list[tuple[str, type[BaseException]]] = []

    async def work(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        except BaseException as exc:
            seen.append((name, type(exc)))
            raise

    early = starter.start(work("early"))
    assert early is not None
    early.cancel()  # handed over, but its task has not resumed yet
    await asyncio.sleep(0)
    later = starter.start(work("later"))
    assert later is not None and later is not early
    await asyncio.sleep(0)
    later.cancel()
    for task in (early, later):
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
    assert seen == [("early", asyncio.CancelledError), ("later", asyncio.CancelledError)]
    starter.close()


async def test_a_variable_left_set_by_one_first_step_is_not_seen_by_the_next() -> None:
    starter = await parked_starter()
    seen: list[str] = []

    async def leaves_it_set() -> None:
        VAR.set("leaked")

    async def reads() -> None:
        seen.append(VAR.get())

    assert starter.start(leaves_it_set()) is None
    assert starter.start(reads()) is None  # each first step has a context of its own
    assert seen == ["caller"] and VAR.get() == "caller"
    starter.close()


async def test_errors_of_a_first_step_are_raised_by_start_and_later_ones_end_the_task() -> None:
    starter = await parked_starter()
    with pytest.raises(KeyError, match="now"):
        starter.start(at_once())
    task = starter.start(later())
    assert task is not None
    with pytest.raises(KeyError, match="later"):
        await task
    starter.close()


async def test_closing_the_starter_ends_its_parked_lender_only() -> None:
    starter = await parked_starter()
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        await gate

    async def quick() -> None:
        pass

    running = starter.start(waits())
    await asyncio.sleep(0)
    assert running is not None and starter.start(quick()) is None
    before = asyncio.all_tasks()
    starter.close()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before - {t for t in before if t.done()}
    assert not running.done()  # what was started goes on
    gate.set_result(None)
    await running
