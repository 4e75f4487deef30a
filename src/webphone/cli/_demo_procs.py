"""The processes `webphone demo` drives: each member is a `webphone phone --json` process
(events in, command lines out), waited on with deadlines, and reaped at the end (the demo is a
subreaper, so that a hub orphaned by a killed member is reaped here too).

Split from `demo.py`, which tells the story; this module only runs processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import CliError

__all__ = ["DemoError", "Event", "Member", "become_subreaper", "first_of", "is_call", "poll",
           "reap_pid"]

Event = dict[str, Any]
_PR_SET_CHILD_SUBREAPER = 36


class DemoError(CliError):
    """A step of the demo did not happen in time."""


# -- one member process ------------------------------------------------------------------------


class Member:
    """A `webphone phone --json` process: events in, command lines out."""

    def __init__(self, name: str, argv: list[str], log_path: Path | None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[Event] = []
        self.role = "?"
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._seq = 0
        self.killed = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        stderr = _open_log(self.log_path)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=stderr)
        finally:
            if stderr is not None:
                stderr.close()
        self._reader = asyncio.create_task(self._read(), name=f"demo-member-{self.name}")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "text": line.decode(errors="replace").rstrip()}
            if event.get("event") in ("ready", "role") and "role" in event:
                self.role = event["role"]
            self.events.append(event)
            self._changed.set()
        self._changed.set()

    async def wait_event(self, match: Callable[[Event], bool], timeout: float, what: str,
                         start: int = 0) -> Event:
        """The first event from index `start` on that matches, waiting up to `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = start
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if match(event):
                    return event
                if event.get("event") == "fatal":
                    raise DemoError(f"phone {self.name} failed: {event.get('error')}: "
                                    f"{event.get('message')}")
            if self._reader is not None and self._reader.done():
                raise DemoError(f"phone {self.name} exited while waiting for {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DemoError(f"phone {self.name}: no {what} within {timeout:g} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def command(self, line: str, timeout: float = 10.0) -> Event:
        """Send a command line; return its "result" event (DemoError if it failed)."""
        assert self.proc is not None and self.proc.stdin is not None
        self._seq += 1
        seq = self._seq
        mark = len(self.events)
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        result = await self.wait_event(
            lambda e: e.get("event") == "result" and e.get("seq") == seq, timeout,
            f"result of {line!r}", start=mark)
        if not result.get("ok"):
            raise DemoError(f"phone {self.name}: {line!r} failed: {result.get('error')}: "
                            f"{result.get('message')}")
        return result

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.killed = True

    async def quit(self, timeout: float) -> int | None:
        """Close stdin (= quit) and wait for the exit; SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
            raise DemoError(f"phone {self.name} did not quit within {timeout:g} s") from None
        finally:
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._reader, 2.0)
        return self.proc.returncode

    async def reap(self) -> None:
        """Kill (if running) and wait: never leaves a zombie."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 10.0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


def _open_log(path: Path | None) -> Any:
    return None if path is None else open(path, "ab")  # handed to the child, closed after


async def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """`predicate()`'s first truthy value, polled until `timeout` (then its last value): for
    state no event announces (a counter, the sandbox's registrar)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value or loop.time() >= deadline:
            return value
        await asyncio.sleep(interval)


def is_call(call_id: str | None = None, state: str | None = None) -> Callable[[Event], bool]:
    """A matcher of "call" events (of one call, in one state, when given)."""
    def match(event: Event) -> bool:
        return (event.get("event") == "call"
                and (call_id is None or event.get("call_id") == call_id)
                and (state is None or event.get("state") == state))

    return match


async def first_of(members: list[Member], match: Callable[[Event], bool],
                    marks: dict[str, int], timeout: float, what: str) -> tuple[Member, Event]:
    """The first member (by event time) whose events match."""
    tasks = {asyncio.ensure_future(m.wait_event(match, timeout, what, start=marks[m.name])): m
             for m in members}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is None:
                return tasks[task], task.result()
        raise next(iter(done)).exception() or DemoError(f"no {what}")
    finally:
        for task in tasks:
            task.cancel()


async def reap_pid(pid: int, wait: float) -> str:
    """Wait up to `wait` s for `pid` to exit (reaping it if it is our child), then SIGTERM, then
    SIGKILL."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        status = await poll(lambda: _exit_status(pid), wait if sig is None else 3.0)
        if status is not None:
            return status if sig is None else f"{status} after {signal.Signals(sig).name}"
    return f"pid {pid} still running"


def _exit_status(pid: int) -> str | None:
    """"exit N" once `pid` is gone (reaped here when it is our child), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: look at /proc
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            return "exited"
        return "exited" if state == "Z" else None  # a zombie is dead: its parent reaps it
    if done == 0:
        return None
    code = os.waitstatus_to_exitcode(status)
    return f"exit {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


def become_subreaper() -> None:
    """Adopt orphaned descendants (the hub, once the member that started it is killed) so that
    they are reaped here and not left as zombies; Linux only, harmless elsewhere."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
