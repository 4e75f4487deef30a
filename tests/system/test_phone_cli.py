"""`webphone phone` in non-tty mode, three processes of one extension against the sandbox.

The processes are the command a user runs (`python -m webphone phone`), driven by command lines
on stdin and read as JSON lines on stdout. One is the real phone, two are dummies; a call from
the sandbox's tone party rings on all three, a dummy answers it, the other dummy hangs it up,
then everyone quits (the last one unregisters) and the hub exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from support.group import hub_pids, short_runtime_dir
from support.wait import wait_until
from webphone.sandbox import Sandbox

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

Event = dict[str, Any]


class PhoneProc:
    """One `webphone phone --json` process."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[Event] = []
        self.changed = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.seq = 0

    async def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))  # every stdout line must be JSON
            self.changed.set()
        self.events.append({"event": "<eof>"})
        self.changed.set()

    async def wait(self, match: Callable[[Event], bool], timeout: float = 10.0,
                   since: int = 0) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[since:]:
                    if match(event):
                        return event
                    assert event["event"] not in ("<eof>", "fatal"), (
                        f"{self.name} ended: {self.events[-5:]}\n{self.log.read_text()}")
                self.changed.clear()
                await self.changed.wait()

    async def send(self, line: str, timeout: float = 10.0) -> Event:
        """A command line; returns its result event."""
        assert self.proc is not None and self.proc.stdin is not None
        self.seq += 1
        seq = self.seq
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.wait(lambda e: e["event"] == "result" and e["seq"] == seq, timeout)

    @property
    def role(self) -> str | None:
        return next((e["role"] for e in reversed(self.events) if e["event"] in ("ready", "role")),
                    None)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.reader, 2)


def is_call(call_id: str, state: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "call" and e["call_id"] == call_id and e["state"] == state


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(users={"101": "pw101", "102": "pw102"}, domain="sip.test") as sb:
        yield sb


@pytest.fixture
async def phones(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await phones(name, *args)` -> a started PhoneProc; all killed, hubs stopped at the end."""
    runtime_dir = short_runtime_dir()
    made: list[PhoneProc] = []

    async def spawn(name: str, *args: str) -> PhoneProc:
        argv = [sys.executable, "-m", "webphone", "phone", "--json", "--runtime-dir",
                str(runtime_dir), "--hub-idle-timeout", "0.2", *args]
        proc = PhoneProc(name, argv, tmp_path / f"{name}.log")
        made.append(proc)
        await proc.start()
        return proc

    spawn.runtime_dir = runtime_dir  # type: ignore[attr-defined]
    try:
        yield spawn
    finally:
        for proc in made:
            await proc.close()
        for pid in hub_pids(runtime_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # adopted (tests/system enables the subreaper) or not ours
        shutil.rmtree(runtime_dir, ignore_errors=True)


async def test_three_phone_processes_one_real_a_dummy_answers_another_hangs_up(
    sandbox: Sandbox, phones: Callable[..., Any], tmp_path: Path
) -> None:
    sip_info = tmp_path / "sip-info.json"
    sip_info.write_text(json.dumps(sandbox.sip_info("101")))
    a = await phones("a", "--sip-info", str(sip_info))
    ready_a = await a.wait(lambda e: e["event"] == "ready", 20)
    assert ready_a["role"] == "real" and ready_a["user"] == "101"
    # the other two: one from the file, one fetched from the sandbox's control channel
    b = await phones("b", "--sip-info", str(sip_info))
    c = await phones("c", "--sandbox", sandbox.url, "--user", "101")
    for proc in (b, c):
        ready = await proc.wait(lambda e: e["event"] == "ready", 20)
        assert ready["role"] == "dummy"
        assert ready["group"] == ready_a["group"] and ready["hub_pid"] == ready_a["hub_pid"]
    assert len(sandbox.bindings("101")) == 1  # three processes, one registration

    status = (await c.send("status"))["status"]
    assert status["role"] == "dummy" and status["registration"].startswith("held by the real")
    assert sorted(m["role"] for m in status["members"]) == ["dummy", "dummy", "real"]

    marks = {p.name: len(p.events) for p in (a, b, c)}
    call = await sandbox.party_call("101", party="tone")
    for proc in (a, b, c):
        event = await proc.wait(is_call(call.call_id, "ringing"), since=marks[proc.name])
        assert event["direction"] == "inbound" and event["remote"] == "901"

    answered = await b.send(f"answer {call.call_id}")  # a dummy answers ...
    assert answered["ok"], answered
    await call.wait_answered(10)
    for proc in (a, b, c):
        await proc.wait(is_call(call.call_id, "answered"), since=marks[proc.name])
    view = (await c.send("status"))["status"]
    assert [(x["call_id"], x["state"]) for x in view["calls"]] == [(call.call_id, "answered")]

    hung_up = await c.send("hangup")  # ... another hangs up (the only call: no id needed)
    assert hung_up["ok"] and hung_up["call_id"] == call.call_id, hung_up
    await call.wait_ended(10)
    for proc in (a, b, c):
        await proc.wait(is_call(call.call_id, "disposed"), since=marks[proc.name])

    # a command that fits no call fails with a result, not a crash
    failed = await b.send("hangup")
    assert not failed["ok"] and "no call" in failed["message"]

    # quit: dummies first, then the real (the last member unregisters); EOF is quit too
    assert (await b.send("quit"))["ok"]
    assert c.proc is not None and c.proc.stdin is not None
    c.proc.stdin.close()
    for proc in (b, c):
        assert proc.proc is not None
        assert await asyncio.wait_for(proc.proc.wait(), 10) == 0
        assert proc.events[-2]["event"] == "bye"
    assert (await a.send("quit"))["ok"]
    assert a.proc is not None
    assert await asyncio.wait_for(a.proc.wait(), 10) == 0
    await wait_until(lambda: sandbox.bindings("101") == [], 5, message="unregistered")


async def test_a_dummy_takes_over_when_the_real_phone_process_is_killed(
    sandbox: Sandbox, phones: Callable[..., Any]
) -> None:
    a = await phones("a", "--sandbox", sandbox.url, "--user", "102")
    assert (await a.wait(lambda e: e["event"] == "ready", 20))["role"] == "real"
    b = await phones("b", "--sandbox", sandbox.url, "--user", "102")
    assert (await b.wait(lambda e: e["event"] == "ready", 20))["role"] == "dummy"
    contact = sandbox.bindings("102")[0]["contact"]
    assert a.proc is not None
    a.proc.kill()
    await b.wait(lambda e: e["event"] == "role" and e["role"] == "real")
    await b.wait(lambda e: e["event"] == "registered")
    bindings = sandbox.bindings("102")
    assert len(bindings) == 1 and bindings[0]["contact"] != contact
    result = await b.send("call 900")  # the echo party, from the new real
    assert result["ok"], result
    await b.wait(is_call(result["call_id"], "answered"))
    assert (await b.send("hangup"))["ok"]
    await b.wait(is_call(result["call_id"], "disposed"))
    assert (await b.send("quit"))["ok"]
    assert b.proc is not None
    assert await asyncio.wait_for(b.proc.wait(), 10) == 0


async def test_phones_meet_over_redis_and_status_lists_them(
    sandbox: Sandbox, phones: Callable[..., Any], redis_server: Any
) -> None:
    """`--hub redis://...`: the group needs no hub process; `webphone status --hub` reads it."""
    a = await phones("a", "--sandbox", sandbox.url, "--user", "101", "--hub", redis_server.url)
    # A Redis up for less than one lease (3 s) grants no new lease (restart grace, see
    # docs/redis.md): on a fresh server the first phone may start as a dummy, then become real.
    await a.wait(lambda e: e["event"] in ("ready", "role") and e["role"] == "real", 20)
    b = await phones("b", "--sandbox", sandbox.url, "--user", "101", "--hub", redis_server.url)
    assert (await b.wait(lambda e: e["event"] == "ready", 20))["role"] == "dummy"
    assert len(sandbox.bindings("101")) == 1
    assert hub_pids(phones.runtime_dir) == []  # type: ignore[attr-defined]
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "webphone", "status", "--sandbox", sandbox.url, "--user", "101",
        "--hub", redis_server.url, "--json", stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(status.communicate(), 20)
    assert status.returncode == 0
    members = json.loads(out)["members"]
    assert sorted(m["role"] for m in members) == ["dummy", "real"]
    for proc in (b, a):
        assert (await proc.send("quit"))["ok"]
        assert proc.proc is not None
        assert await asyncio.wait_for(proc.proc.wait(), 10) == 0
    await wait_until(lambda: sandbox.bindings("101") == [], 5, message="unregistered")
