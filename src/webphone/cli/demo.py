"""`webphone demo`: the main job, on a local sandbox, narrated step by step.

1. a sandbox (in this process) and N phone processes of extension 101 (`webphone phone --json`,
   one group: the first becomes the real phone and starts the group hub, the others dummies);
   the sandbox shows ONE binding for the N processes;
2. the tone party calls 101: every member sees it ring; a dummy answers (the real does the SIP,
   the dummy holds the audio and plays its tone, `webphone phone --tone`); every member's view
   is shown;
3. the real process is SIGKILLed: the oldest dummy is promoted and registers again (the binding
   is replaced, still one) and adopts the call: the dummy that answered holds its audio, which
   never stops (the longest gap at the tone party is printed);
4. the media holder is SIGKILLed: the real gives the call's media to a live member (itself here),
   which renews it with a re-INVITE; the audio comes back (the gap is printed);
5. a second call, served by the new real (the last member left), hung up;
6. everyone quits (the last member unregisters), the hub exits, every process is reaped.

The members print JSON lines (see `webphone.cli.phone`); the demo waits for their events with
deadlines, never with sleeps. Exit 0 when the story went as told, 1 otherwise (with the tails of
the members' logs on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import EXIT_OK, EXIT_RUNTIME, CliError, error_line
from ._demo_audio import AudioWatch, member_tone
from ._demo_procs import (
    DemoError,
    Event,
    Member,
    become_subreaper,
    first_of,
    is_call,
    poll,
    reap_pid,
)

if TYPE_CHECKING:
    from webphone.sandbox import PartyCall, Sandbox

__all__ = ["add_arguments", "run"]

USER = "101"
STEADY = 0.5  # s of audio the party has heard before a kill (the gap is measured from there)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", type=int, default=3, metavar="N",
                        help="phone processes in the group, 3 to 5 (default %(default)s)")
    parser.add_argument("--debug", action="store_true",
                        help="the members' logs (with every SIP message) on stderr")


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
        self.watch: AudioWatch | None = None
        self.holder: Member | None = None  # the member that answered: it holds the audio
        self.tones: dict[float, str] = {}  # the tone each member plays into calls it holds

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
              "the real one is killed; its calls survive it, and the death of the process "
              "holding their audio.", flush=True)
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
        await self.real_killed_call_lives()
        await self.media_holder_killed()
        await self.second_call()
        await self.shut_down()

    async def start_members(self, n: int, sip_info_path: Path) -> None:
        names = [chr(ord("A") + i) for i in range(n)]
        argv = self.member_argv(sip_info_path)
        logs = None if self.args.debug else self.workdir
        for i, name in enumerate(names):
            self.tones[member_tone(i)] = name
            self.members.append(Member(name, [*argv, "--tone", str(member_tone(i))],
                                       logs / f"{name}.log" if logs else None))
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

    async def the_real(self, timeout: float = 10.0) -> Member:
        """The real, once exactly one live member is (a promotion may be under way)."""
        reals = await poll(lambda: [m for m in self.alive() if m.role == "real"][:1], timeout)
        if not reals:
            raise DemoError(f"no real phone within {timeout:g} s")
        return reals[0]  # type: ignore[no-any-return]

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
        ringing = await self.wait_all(is_call(call.call_id, "ringing"), "ringing call",
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
        events = await self.wait_all(is_call(call_id, "answered"), "answered call",
                                     self.alive(), start=marks)
        last = max(e["t"] for e in events)
        self.say(f"answered: the party is connected; every member shows it answered "
                 f"({self.ms(last, started)})")

    async def first_call(self) -> None:
        # the youngest dummy answers: the oldest is the one promoted when the real dies
        real, dummy = self.real(), self.dummies()[-1]
        self.say(f"step 2: the tone party (901) calls {USER}")
        call, call_id = await self.ring_everywhere("the real sent 180 Ringing, dummies see it "
                                                   "through the group")
        holder = (f"{dummy.name} holds the audio (its own WebRTC session with the party; it "
                  "plays its tone into it)")
        self.say(f"step 3: phone {dummy.name}, a DUMMY, answers; the real ({real.name}) does the "
                 f"SIP and {holder}")
        if call.media is not None:
            self.watch = AudioWatch(call.media)
        await self.answer_from(dummy, call, call_id)
        self.holder = dummy
        await self.audio_check(call, dummy.name)
        await self.show_views()

    async def audio_check(self, call: PartyCall, sender: str, timeout: float = 3.0) -> None:
        await poll(lambda: call.frames_received or call.state != "answered", timeout)
        if self.watch is not None:  # half a second of it before a kill
            await self.watch.flowing(STEADY, timeout)
        if call.frames_received:
            frames = call.frames_received
            self.say(f"audio: the party receives {sender}'s RTP ({frames} "
                     f"frame{'s' if frames != 1 else ''} so far); its tone flows the other way")
        else:
            self.say(f"audio: not connected within {timeout:g} s (signalling is unaffected)")

    async def binding_replaced(self, member: Member, before: list[dict[str, Any]]) -> None:
        after = await self.wait_binding_replaced(before)
        self.say(f"the sandbox has {len(after)} registration for {USER}, now {member.name}'s: "
                 f"the same instance id, a new contact ({after[0].get('contact')}); every real "
                 "of a group registers with one instance id, so a promotion replaces the binding "
                 "instead of taking a second slot")

    async def kill(self, member: Member) -> float:
        """SIGKILL `member` and reap it; returns when it was killed."""
        killed_at = time.monotonic()
        member.kill()
        assert member.proc is not None
        await member.proc.wait()
        return killed_at

    async def promoted_after_kill(self, victim: Member, what: str) -> tuple[Member, float]:
        """Kill the real `victim`; the promoted member and when it registered."""
        marks = self.marks()
        self.say(f"step 4: kill -9 phone {victim.name} (pid {victim.pid}), {what}, during the "
                 "call")
        killed_at = await self.kill(victim)
        member, _event = await first_of(self.alive(), lambda e: e.get("event") == "role"
                                        and e.get("role") == "real", marks, 10, "promotion")
        registered = await member.wait_event(lambda e: e.get("event") == "registered", 10,
                                             "registration", start=marks[member.name])
        self.say(f"phone {member.name} was promoted to real and registered "
                 f"{self.ms(registered['t'], killed_at)} after the kill (the group hub saw "
                 f"{victim.name}'s socket close at once; {member.name} connected and sent "
                 "REGISTER)")
        return member, killed_at

    async def real_killed_call_lives(self) -> None:
        real, call, watch, holder = self.real(), self.party_calls[-1], self.watch, self.holder
        assert holder is not None
        before = self.bindings()
        member, killed_at = await self.promoted_after_kill(real, "the real phone (all the SIP)")
        await self.binding_replaced(member, before)
        if watch is None:
            raise DemoError("the tone party's call has no media to listen to")
        gap = await watch.gap(killed_at - STEADY, time.monotonic() + 1.5)
        if call.state != "answered" or gap > 1000:
            raise DemoError(f"the call did not survive the real ({call.state}; audio gap "
                            f"{gap:.0f} ms)")
        self.say(f"{member.name} adopted the call (a re-INVITE refreshed the dialog to its "
                 f"connection); {holder.name}'s tone never stopped at the party: longest gap "
                 f"{gap:.0f} ms around the kill; no BYE")
        await self.show_views()

    async def media_holder_killed(self) -> None:
        call, watch, holder = self.party_calls[-1], self.watch, self.holder
        assert watch is not None and holder is not None
        also = " (now also the real: both at once)" if holder.role == "real" else ""
        self.say(f"step 4b: kill -9 phone {holder.name} (pid {holder.pid}), the call's media "
                 f"holder{also}")
        killed_at = await self.kill(holder)
        resumed = await watch.resumed(killed_at, 10)
        if resumed is None or call.state != "answered":
            raise DemoError(f"the audio did not come back within 10 s (call {call.state})")
        back, hz = resumed
        gap = await watch.gap(killed_at - STEADY, back + 0.5)
        real = await self.the_real()
        taker = self.tones.get(hz, "?")
        who = (f"the new real, {taker}, took the call's media" if taker == real.name else
               f"the real ({real.name}) gave the call's media to {taker}")
        self.say(f"{who} and renewed it with a re-INVITE: the party hears {taker}'s tone "
                 f"({hz:.0f} Hz) {self.ms(back, killed_at)} after the kill; gap {gap:.0f} ms; "
                 "no BYE")
        await self.show_views()

    async def wait_binding_replaced(self, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
        old = {b.get("contact") for b in before}

        def replaced() -> list[dict[str, Any]]:
            now = self.bindings()
            return now if len(now) == 1 and now[0].get("contact") not in old else []

        after: list[dict[str, Any]] = await poll(replaced, 10)
        if not after:
            raise DemoError(f"the binding was not replaced within 10 s: {self.bindings()}")
        return after

    async def second_call(self) -> None:
        real, dummies = self.real(), self.dummies()
        self.say(f"step 5: a second call; the new real ({real.name}) serves it")
        call, call_id = await self.ring_everywhere("the new real rang")
        if self.party_calls[0].state == "answered":  # the first call lives on: end it
            await self.party_calls[0].hangup()
            self.say("the tone party hangs up the first call, which is still up")
        answerer = dummies[0] if dummies else real
        self.say(f"phone {answerer.name}, " + ("a DUMMY, answers" if dummies else
                                                "the real (the only member left), answers"))
        await self.answer_from(answerer, call, call_id)
        await self.show_views()
        marks = self.marks()
        self.say(f"step 6: phone {real.name} (the real) hangs up")
        started = time.monotonic()
        await real.command(f"hangup {call_id}")
        await call.wait_ended(10)
        events = await self.wait_all(is_call(call_id, "disposed"), "the call to end",
                                     self.alive(), start=marks)
        self.say(f"ended: the party got the BYE; every member shows it ended "
                 f"({self.ms(max(e['t'] for e in events), started)})")

    async def shut_down(self) -> None:
        real = self.real()
        dummies = self.dummies()
        leave = (f"the dummies ({', '.join(m.name for m in dummies)}) leave, then "
                 if dummies else "")
        self.say(f"step 7: everyone quits: {leave}{real.name}, the last member, unregisters")
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
            outcomes.append(await reap_pid(pid, wait))
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
             "killed and the call kept its audio, the media holder killed and the audio came "
             "back, a second call served; no process left")
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
    become_subreaper()
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
