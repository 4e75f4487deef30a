"""Group members as real OS processes (`python -m webphone.shared.member_cli`) for system tests.

    members = MemberGroup(runtime_dir, log_dir, sip_info, heartbeat_timeout=1.5)
    a = await members.spawn("a")          # started; `await a.ready()` for its first role
    await a.wait_event(lambda e: e["event"] == "role" and e["role"] == "real", 10)
    result = await a.command("call", callee="102")   # -> the "result" event (ok/value/error)
    a.kill()  /  a.stop()  /  a.cont()   # SIGKILL / SIGSTOP / SIGCONT
    await members.close()                 # every member SIGKILLed and reaped, hubs stopped

Every member prints JSON lines (see member_cli's docstring); `events` keeps them all, each with
"t" = time.monotonic() of the member, one clock for the whole host. Hubs are not our children
(members spawn them in a new session); `enable_subreaper()` makes this process adopt them when
their member dies, and `MemberGroup.close()` stops and reaps the hubs of its runtime directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MemberGroup", "MemberProc", "enable_subreaper", "hub_pids", "reap_adopted_zombies",
           "short_runtime_dir"]

_PR_SET_CHILD_SUBREAPER = 36
Event = dict[str, Any]


def enable_subreaper() -> None:
    """Adopt orphaned descendants (hubs whose member died) so we can reap them ourselves."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def short_runtime_dir() -> Path:
    """A fresh 0700 directory with a short path (Unix socket paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="wpg-"))


def hub_pids(runtime_dir: Path) -> list[int]:
    """Pids written in the hub lock files of `runtime_dir` (live or not)."""
    pids = []
    for lock in runtime_dir.glob("*.lock"):
        with contextlib.suppress(OSError, ValueError):
            text = lock.read_text().strip()
            if text:
                pids.append(int(text))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def reap_adopted_zombies(exclude: set[int]) -> None:
    """Reap zombies that became our children through the subreaper (a hub that exited while its
    member was stopped, then the member died). Our own children (`exclude`, the managed
    processes of support.procs) are left to their owners."""
    from support.procs import _REGISTRY

    exclude = exclude | {p.pid for p in list(_REGISTRY) if p.pid is not None}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            _reap(int(entry))


class MemberProc:
    """One member process: JSON events out, JSON commands in."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._ids = 0
        self.stopped = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, start_new_session=True,
            )
        finally:
            log.close()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                self.events.append({"event": "exit", "t": time.monotonic()})
                self._changed.set()
                return
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "garbage", "line": line.decode(errors="replace")}
            self.events.append(event)
            self._changed.set()

    async def wait_event(
        self, predicate: Callable[[Event], bool], timeout: float, since: int = 0
    ) -> Event:
        """The first event (from index `since`) matching `predicate`; TimeoutError if none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        checked = since
        while True:
            for event in self.events[checked:]:
                if predicate(event):
                    return event
                if event["event"] == "exit":
                    raise RuntimeError(f"{self.name} exited; log:\n{self.log_tail()}")
            checked = len(self.events)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no matching event in {timeout} s; events: "
                                   f"{self.events[-8:]}\nlog:\n{self.log_tail()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def ready(self, timeout: float = 20.0) -> Event:
        """The "ready" event (start() finished)."""
        return await self.wait_event(lambda e: e["event"] in ("ready", "fatal"), timeout)

    def last(self, event: str) -> Event | None:
        """The latest event of that kind."""
        return next((e for e in reversed(self.events) if e["event"] == event), None)

    @property
    def role(self) -> str | None:
        """The latest role this member reported."""
        for e in reversed(self.events):
            if e["event"] in ("role", "ready"):
                return str(e["role"])
        return None

    def registers(self, after: float = 0.0) -> list[Event]:
        """REGISTER requests this member sent after monotonic time `after`."""
        return [e for e in self.events if e["event"] == "sip_out" and e["t"] > after]

    async def command(self, cmd: str, timeout: float = 15.0, **fields: Any) -> Event:
        """Send a command; returns its "result" event."""
        assert self.proc is not None and self.proc.stdin is not None
        self._ids += 1
        ident = self._ids
        self.proc.stdin.write((json.dumps({"id": ident, "cmd": cmd, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.wait_event(
            lambda e: e["event"] == "result" and e.get("id") == ident, timeout
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGSTOP (a hang)."""
        self.kill(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        """SIGCONT."""
        self.kill(signal.SIGCONT)
        self.stopped = False

    async def close(self) -> None:
        """SIGKILL and reap."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.kill(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 1)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


class MemberGroup:
    """The member processes of one test (one runtime directory); `close()` cleans everything."""

    def __init__(
        self,
        runtime_dir: Path,
        log_dir: Path,
        sip_info: dict[str, Any],
        *,
        group: str | None = None,
        heartbeat_interval: float = 0.25,
        heartbeat_timeout: float = 1.5,
        idle_timeout: float = 2.0,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.runtime_dir = runtime_dir
        self.log_dir = log_dir
        self.sip_info = sip_info
        self.group = group
        self.options = ["--heartbeat-interval", str(heartbeat_interval),
                        "--heartbeat-timeout", str(heartbeat_timeout),
                        "--idle-timeout", str(idle_timeout), *extra]
        self.members: list[MemberProc] = []
        self.hubs_seen: set[int] = set()

    def argv(self, name: str, *extra: str) -> list[str]:
        argv = [sys.executable, "-m", "webphone.shared.member_cli",
                "--sip-info", str(self._sip_info_file()), "--runtime-dir", str(self.runtime_dir),
                "--member-id", name, "--log-level", "INFO", *self.options, *extra]
        if self.group:
            argv += ["--group", self.group]
        return argv

    def _sip_info_file(self) -> Path:
        """The sipInfo in a 0600 file: on a command line, any local user could read the
        password in the process list."""
        path = Path(self.log_dir) / "sip-info.json"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(self.sip_info, out)
        return path

    async def spawn(self, name: str, *extra: str) -> MemberProc:
        member = MemberProc(name, self.argv(name, *extra), self.log_dir / f"member-{name}.log")
        self.members.append(member)
        await member.start()
        return member

    async def spawn_ready(self, names: list[str], *extra: str) -> list[MemberProc]:
        """Spawn all at once; return them once every one is ready."""
        procs = [await self.spawn(n, *extra) for n in names]
        events = await asyncio.gather(*(p.ready() for p in procs))
        for p, e in zip(procs, events, strict=True):
            if e["event"] == "fatal":
                raise RuntimeError(f"{p.name} failed to start: {e}\n{p.log_tail()}")
            if e.get("hub_pid"):
                self.hubs_seen.add(int(e["hub_pid"]))
        return procs

    def reals(self) -> list[MemberProc]:
        """Members whose latest role is real (alive and not stopped)."""
        return [m for m in self.members
                if m.role == "real" and m.proc is not None and m.proc.returncode is None]

    def hub_pid(self) -> int | None:
        """The live hub of this runtime directory, if any."""
        for pid in hub_pids(self.runtime_dir):
            if _alive(pid):
                return pid
        return None

    async def close(self) -> None:
        for member in self.members:
            if member.stopped:
                member.cont()
            await member.close()
        pids = set(hub_pids(self.runtime_dir)) | self.hubs_seen
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                await asyncio.sleep(0.02)  # polling a foreign process's exit
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while _alive(pid) and time.monotonic() < deadline + 5:
                    await asyncio.sleep(0.02)
            _reap(pid)
        reap_adopted_zombies(exclude={m.pid for m in self.members if m.proc is not None})
