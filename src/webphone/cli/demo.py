"""`webphone demo`: the main job, on a local sandbox, narrated step by step.

1. a sandbox (in this process) and N phone processes of extension 101 (`webphone phone --json`,
   one group: the first becomes the real phone and starts the group hub, the others dummies);
   the sandbox shows ONE binding for the N processes;
2. the tone party calls 101: every member sees it ring; a dummy answers (the real does the SIP
   and the audio); every member's view is shown;
3. the real process is SIGKILLed: the oldest dummy is promoted and registers again (the binding
   is replaced, still one); the call died with the real (its media lived there) and the members
   show it ended;
4. a second call, served by the new real, answered from a dummy, hung up;
5. everyone quits (the last member unregisters), the hub exits, every process is reaped.

The members print JSON lines (see `webphone.cli.phone`); the demo waits for their events with
deadlines, never with sleeps. Exit 0 when the story went as told, 1 otherwise (with the tails of
the members' logs on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import EXIT_OK, EXIT_RUNTIME, CliError, error_line

if TYPE_CHECKING:
    from webphone.sandbox import PartyCall, Sandbox

__all__ = ["add_arguments", "run"]

Event = dict[str, Any]
USER = "101"
_PR_SET_CHILD_SUBREAPER = 36


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", type=int, default=3, metavar="N",
                        help="phone processes in the group, 3 to 5 (default %(default)s)")
    parser.add_argument("--debug", action="store_true",
                        help="the members' logs (with every SIP message) on stderr")


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


async def _poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """`predicate()`'s first truthy value, polled until `timeout` (then its last value): for
    state no event announces (a counter, the sandbox's registrar)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value or loop.time() >= deadline:
            return value
        await asyncio.sleep(interval)


def _is_call(call_id: str | None = None, state: str | None = None) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return (event.get("event") == "call"
                and (call_id is None or event.get("call_id") == call_id)
                and (state is None or event.get("state") == state))

    return match


# -- the story ---------------------------------------------------------------------------------


class Demo:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.runtime_dir = workdir / "rt"
        self.t0 = time.monotonic()
        self.sandbox: Sandbox | None = None
        self.members: list[Member] = []
        self.hub_pids: set[int] = set()
        self.party_calls: list[PartyCall] = []

    # -- narration -------------------------------------------------------------------------------

    def say(self, text: str, *, indent: bool = False) -> None:
        """One narrated line: elapsed time, then the text (steps flush left, details in)."""
        stamp = f"[{time.monotonic() - self.t0:6.2f}s]"
        if indent:
            stamp = " " * len(stamp)
        elif not text.startswith(("step ", "done ")):
            text = "  " + text
        print(f"{stamp} {text}", flush=True)

    def ms(self, t: float, since: float) -> str:
        return f"{(t - since) * 1000:.0f} ms"

    # -- helpers ----------------------------------------------------------------------------------

    def member_argv(self, sip_info_path: Path) -> list[str]:
        argv = [sys.executable, "-m", "webphone", "phone", "--sip-info", str(sip_info_path),
                "--json", "--runtime-dir", str(self.runtime_dir), "--hub-idle-timeout", "0.5",
                "--drain-timeout", "2"]
        if self.args.debug:
            argv.append("--debug")
        return argv

    def bindings(self) -> list[dict[str, Any]]:
        assert self.sandbox is not None
        return self.sandbox.bindings(USER)

    def describe_binding(self, binding: dict[str, Any]) -> str:
        return f"instance {binding.get('instance')}, contact {binding.get('contact')}"

    async def show_views(self) -> None:
        """Every live member's own view (its `status` command)."""
        for member in self.alive():
            result = await member.command("status")
            status = result["status"]
            calls = status.get("calls") or []
            text = "; ".join(
                f"call {c['ref']}: {c['direction']} from {c['remote']} {c['state']}"
                + (f" {c['duration']:.1f}s" if c.get("duration") is not None else "")
                for c in calls) or "no calls"
            self.say(f"    {member.name} (pid {member.pid}) {status['role']:<5} "
                     f"registration {status['registration']}; {text}", indent=True)

    def alive(self) -> list[Member]:
        return [m for m in self.members if m.running and not m.killed]

    async def wait_all(self, match: Callable[[Event], bool], what: str, members: list[Member],
                       timeout: float = 10.0, start: dict[str, int] | None = None) -> list[Event]:
        return list(await asyncio.gather(*(
            m.wait_event(match, timeout, what, start=(start or {}).get(m.name, 0))
            for m in members)))

    def marks(self) -> dict[str, int]:
        return {m.name: len(m.events) for m in self.members}

    async def party_call(self) -> PartyCall:
        assert self.sandbox is not None
        call = await self.sandbox.party_call(USER, party="tone")
        self.party_calls.append(call)
        return call

    # -- the steps ---------------------------------------------------------------------------------

    async def run(self) -> None:
        from webphone.sandbox import Sandbox

        n = self.args.members
        print(f"webphone demo: {n} phone processes of one extension share ONE registration; "
              "the real one is killed; a dummy takes over.", flush=True)
        self.say(f"step 1: a sandbox SIP server (in this process) and {n} phone processes of "
                 f"extension {USER} (`webphone phone --json`), one group")
        self.sandbox = Sandbox(generate=2)
        await self.sandbox.start()
        self.say(f"sandbox listening on {self.sandbox.url} (domain {self.sandbox.domain}); "
                 f"extension {USER}; party 901 plays a 440 Hz tone")
        sip_info_path = self.workdir / "sip-info.json"
        fd = os.open(sip_info_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.sandbox.sip_info(USER), f)
        self.runtime_dir.mkdir(mode=0o700)
        await self.start_members(n, sip_info_path)
        await self.first_call()
        await self.kill_the_real()
        await self.second_call()
        await self.shut_down()

    async def start_members(self, n: int, sip_info_path: Path) -> None:
        names = [chr(ord("A") + i) for i in range(n)]
        argv = self.member_argv(sip_info_path)
        logs = None if self.args.debug else self.workdir
        for name in names:
            self.members.append(Member(name, argv, logs / f"{name}.log" if logs else None))
        first = self.members[0]
        await first.start()
        ready = await first.wait_event(lambda e: e.get("event") == "ready", 20, "ready")
        if ready.get("hub_pid"):
            self.hub_pids.add(int(ready["hub_pid"]))
        self.say(f"phone {first.name} (pid {first.pid}) joined as {ready['role']}: it started "
                 f"the group hub (pid {ready.get('hub_pid')}) and registered")
        rest = self.members[1:]
        await asyncio.gather(*(m.start() for m in rest))
        readies = await asyncio.gather(*(
            m.wait_event(lambda e: e.get("event") == "ready", 20, "ready") for m in rest))
        for member, event in zip(rest, readies, strict=True):
            if event.get("hub_pid"):
                self.hub_pids.add(int(event["hub_pid"]))
            self.say(f"phone {member.name} (pid {member.pid}) joined as {event['role']}")
        roles = [m.role for m in self.members]
        if roles.count("real") != 1:
            raise DemoError(f"expected one real phone, the roles are {roles}")
        bindings = self.bindings()
        self.say(f"the sandbox has {len(bindings)} registration for {USER} for {n} processes: "
                 + "; ".join(self.describe_binding(b) for b in bindings))
        if len(bindings) != 1:
            raise DemoError(f"expected 1 binding, the sandbox has {len(bindings)}")

    def real(self) -> Member:
        reals = [m for m in self.alive() if m.role == "real"]
        if len(reals) != 1:
            raise DemoError(f"expected one real phone, found {len(reals)}")
        return reals[0]

    def dummies(self) -> list[Member]:
        return [m for m in self.alive() if m.role == "dummy"]

    async def ring_everywhere(self, label: str) -> tuple[PartyCall, str]:
        marks = self.marks()
        started = time.monotonic()
        call = await self.party_call()
        ringing = await self.wait_all(_is_call(call.call_id, "ringing"), "ringing call",
                                      self.alive(), start=marks)
        last = max(e["t"] for e in ringing)
        self.say(f"ringing on {', '.join(m.name for m in self.alive())} "
                 f"({self.ms(last, started)} after the INVITE; {label})")
        return call, call.call_id

    async def answer_from(self, member: Member, call: PartyCall, call_id: str) -> None:
        marks = self.marks()
        started = time.monotonic()
        await member.command(f"answer {call_id}")
        await call.wait_answered(10)
        events = await self.wait_all(_is_call(call_id, "answered"), "answered call",
                                     self.alive(), start=marks)
        last = max(e["t"] for e in events)
        self.say(f"answered: the party is connected; every member shows it answered "
                 f"({self.ms(last, started)})")

    async def first_call(self) -> None:
        real, dummy = self.real(), self.dummies()[0]
        self.say(f"step 2: the tone party (901) calls {USER}")
        call, call_id = await self.ring_everywhere("the real sent 180 Ringing, dummies see it "
                                                   "through the group")
        self.say(f"step 3: phone {dummy.name}, a DUMMY, answers; the real ({real.name}) does the "
                 "SIP and holds the audio")
        await self.answer_from(dummy, call, call_id)
        await self.audio_check(call)
        await self.show_views()

    async def audio_check(self, call: PartyCall, timeout: float = 3.0) -> None:
        await _poll(lambda: call.frames_received or call.state != "answered", timeout)
        if call.frames_received:
            frames = call.frames_received
            self.say(f"audio: the party receives the real's RTP ({frames} "
                     f"frame{'s' if frames != 1 else ''} so far); its tone flows the other way")
        else:
            self.say(f"audio: not connected within {timeout:g} s (signalling is unaffected)")

    async def kill_the_real(self) -> None:
        real = self.real()
        call = self.party_calls[-1]
        before = self.bindings()
        marks = self.marks()
        self.say(f"step 4: kill -9 phone {real.name} (pid {real.pid}), the real phone, "
                 "during the call")
        killed_at = time.monotonic()
        real.kill()
        assert real.proc is not None
        await real.proc.wait()
        survivors = self.alive()
        member, _event = await _first_of(survivors, lambda e: e.get("event") == "role"
                                        and e.get("role") == "real", marks, 10, "promotion")
        registered = await member.wait_event(lambda e: e.get("event") == "registered", 10,
                                             "registration", start=marks[member.name])
        self.say(f"phone {member.name} was promoted to real and registered "
                 f"{self.ms(registered['t'], killed_at)} after the kill (the group hub saw "
                 f"{real.name}'s socket close at once; {member.name} connected and sent REGISTER)")
        after = await self.wait_binding_replaced(before)
        self.say(f"the sandbox has {len(after)} registration for {USER}, now {member.name}'s: "
                 f"the same instance id, a new contact ({after[0].get('contact')}); every real "
                 "of a group registers with one instance id, so a promotion replaces the binding "
                 "instead of taking a second slot")
        await self.wait_all(_is_call(call.call_id, "disposed"), "the call to end", survivors,
                            start=marks)
        self.say(f"the call died with {real.name} (its SIP dialog and its media lived in that "
                 "process): every member shows it ended")
        if call.state == "ended":
            self.say(f"the tone party's side ended too: {call.reason or 'ended'} (the sandbox "
                     f"noticed {real.name}'s WebSocket close)")
        else:
            await call.hangup()
            self.say("the tone party got no BYE from the dead process; it hangs up on its side")
        await self.show_views()

    async def wait_binding_replaced(self, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
        old = {b.get("contact") for b in before}

        def replaced() -> list[dict[str, Any]]:
            now = self.bindings()
            return now if len(now) == 1 and now[0].get("contact") not in old else []

        after: list[dict[str, Any]] = await _poll(replaced, 10)
        if not after:
            raise DemoError(f"the binding was not replaced within 10 s: {self.bindings()}")
        return after

    async def second_call(self) -> None:
        real, dummy = self.real(), self.dummies()[0]
        self.say(f"step 5: a second call; the new real ({real.name}) serves it")
        call, call_id = await self.ring_everywhere("the new real rang")
        self.say(f"phone {dummy.name}, a DUMMY, answers")
        await self.answer_from(dummy, call, call_id)
        await self.show_views()
        marks = self.marks()
        self.say(f"step 6: phone {real.name} (the real) hangs up")
        started = time.monotonic()
        await real.command(f"hangup {call_id}")
        await call.wait_ended(10)
        events = await self.wait_all(_is_call(call_id, "disposed"), "the call to end",
                                     self.alive(), start=marks)
        self.say(f"ended: the party got the BYE; every member shows it ended "
                 f"({self.ms(max(e['t'] for e in events), started)})")

    async def shut_down(self) -> None:
        real = self.real()
        dummies = self.dummies()
        self.say(f"step 7: everyone quits: the dummies ({', '.join(m.name for m in dummies)}) "
                 f"leave, then {real.name}, the last member, unregisters")
        codes = await asyncio.gather(*(m.quit(10) for m in dummies))
        codes.append(await real.quit(15))
        if any(code != 0 for code in codes):
            raise DemoError(f"a phone exited with {codes}")
        left = self.bindings()
        self.say(f"all phones exited 0; the sandbox has {len(left)} registration(s) for {USER}")
        hub_codes = await self.reap_hubs(wait=5.0)
        self.say(f"the group hub exited by itself ({hub_codes}); every process is reaped")

    async def reap_hubs(self, wait: float) -> str:
        """Wait for every hub to exit (they were adopted: this process is a subreaper), then
        stop any left over; returns how they ended."""
        outcomes = []
        for pid in sorted(self.hub_pids):
            outcomes.append(await _reap_pid(pid, wait))
        return ", ".join(outcomes) or "none"

    async def cleanup(self) -> None:
        for member in self.members:
            await member.reap()
        await self.reap_hubs(wait=0.0)
        for call in self.party_calls:
            with contextlib.suppress(Exception):
                await call.hangup()
        if self.sandbox is not None:
            await self.sandbox.close()


async def _first_of(members: list[Member], match: Callable[[Event], bool],
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


async def _reap_pid(pid: int, wait: float) -> str:
    """Wait up to `wait` s for `pid` to exit (reaping it if it is our child), then SIGTERM, then
    SIGKILL."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        status = await _poll(lambda: _exit_status(pid), wait if sig is None else 3.0)
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


def _become_subreaper() -> None:
    """Adopt orphaned descendants (the hub, once the member that started it is killed) so that
    they are reaped here and not left as zombies; Linux only, harmless elsewhere."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


async def _main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="wpd-"))  # short: Unix socket paths are limited
    demo = Demo(args, workdir)
    ok = False
    try:
        await demo.run()
        ok = True
    finally:
        try:
            await demo.cleanup()
        finally:
            if not ok and not args.debug:
                _print_log_tails(workdir)
            shutil.rmtree(workdir, ignore_errors=True)
    demo.say(f"done in {time.monotonic() - demo.t0:.1f} s: answered from a dummy, the real "
             "killed, a dummy promoted and re-registered, a second call served; no process left")
    return EXIT_OK


def _print_log_tails(workdir: Path, lines: int = 15) -> None:
    for log in sorted(workdir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        if text:
            print(f"--- {log.stem}'s log (last {len(text)} lines):", file=sys.stderr)
            print("\n".join(text), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """`webphone demo`; 0 when every step happened as narrated."""
    if not 3 <= args.members <= 5:
        print("webphone demo: error: --members must be 3, 4 or 5", file=sys.stderr)
        return 2
    if args.debug:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    _become_subreaper()
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(error_line("webphone demo", exc), file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else EXIT_RUNTIME
