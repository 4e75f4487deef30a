"""Proofs of call continuity (issue #11): a far party in its own process that measures the audio
gap, and member processes that hold a call's media and play a tone.

    far = await FarParty.spawn(sip_info, log_dir, tone=440.0, expect=(1000.0, 1200.0))
    call_id = await far.call("101")            # or: await far.answer()  (the group calls it)
    await far.wait_tone(1000.0, after=t, timeout=5)
    t = time.monotonic(); member.kill(); ...
    report = await far.report(since=t)         # {"gap_ms", "missing_frames", "byes", ...}
    await far.close()

The far party is a plain `WebPhone` (the call layer of webphone: it follows a new media endpoint
the way `CallSession` does) in a process of its own, so that what it measures is not disturbed by
the test process (which may be running the sandbox). It plays `tone` for the whole call and looks
at every received 20 ms frame: a frame whose dominant frequency is one of `expect` (the tones of
the members that may hold the call's media) is a tone frame. The gap over an interval is the
longest stretch without a tone frame, counting from the interval's start to the first one and
from the last one to the end (audio that stopped is a gap that grows); missing frames are the
frames the interval should have held minus the tone frames it got. It counts the BYEs and the
in-dialog INVITEs it receives (adoption re-INVITEs, media renewals); it prints a `sip_in` event
for each BYE and in-dialog INVITE, and an `sdp_in` event for each response carrying SDP (the
group's answer to its re-offer).

The members are `webphone.shared.member_cli` processes started with `--tone HZ`: whenever one of
them holds a call's media (it answered it as the media holder, or the media moved to it) it plays
HZ into it and prints what it hears (`{"event": "heard", "call_id", "hz", "t"}` when the dominant
tone of its received audio changes), so the tests check the audio at both ends by frequency.

`python tests/support/continuity.py --sip-info FILE --tone 440 --expect 1000,1200` runs the far
party (JSON lines out, commands in, like member_cli).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: `support` is importable from tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.group import MemberGroup, MemberProc
from support.procs import child_logging
from support.wait import wait_until

__all__ = [
    "FAR_TONE",
    "MEMBER_TONES",
    "FarParty",
    "GroupCall",
    "Members",
    "ToneMeter",
    "answer_call",
    "dummies_of",
    "far_party",
    "first_to",
    "is_",
    "marks",
    "member_tone",
    "real_of",
    "spawn_holders",
    "survived",
    "tone_in_wav",
]

FAR_TONE = 440.0
MEMBER_TONES = (1000.0, 1200.0, 1400.0, 1600.0, 1800.0)
FRAME_S = 0.02
RESUMED_AFTER = 0.1  # s without a tone frame after which the tone "begins" again
STEADY_S = 0.6  # s of audio a call has before `answer_call` returns
Members = dict[str, tuple[MemberProc, float]]  # name -> (member process, its tone)
Event = dict[str, Any]


def member_tone(index: int) -> float:
    """The tone of the index-th member of a test (each member its own, so the far party can
    say who it hears)."""
    return MEMBER_TONES[index % len(MEMBER_TONES)]


async def spawn_holders(group: MemberGroup, names: list[str], *extra: str,
                        loopback: bool = True) -> Members:
    """Members that play their own tone (`member_tone(i)`) into every call whose media they
    hold, ICE on 127.0.0.1 unless `loopback` is False (the sandbox's parties and the far party
    are loopback-only; a browser is not); once all are ready: {name: (member, tone)}."""
    procs = {}
    for name in names:
        tone = member_tone(len(group.members))
        options = ["--tone", str(tone), *(["--loopback-media"] if loopback else []), *extra]
        procs[name] = (await group.spawn(name, *options), tone)
    for member, _ in procs.values():
        ready = await member.ready()
        if ready["event"] == "fatal":
            raise RuntimeError(f"{member.name} failed to start: {ready}\n{member.log_tail()}")
        if ready.get("hub_pid"):
            group.hubs_seen.add(int(ready["hub_pid"]))
    # over Redis a member may say "ready" as a dummy just before the lease makes one the real
    await wait_until(lambda: len([m for m in group.members if _live(m) and m.role == "real"])
                     == 1, 10, message="one real member")
    return procs


# -- a call of the far party into a group of holders -----------------------------------------


def is_(event: str, call_id: str | None = None, **fields: Any) -> Callable[[Event], bool]:
    """A matcher of member events: this kind, of this call (if given), with these fields."""
    return lambda e: (e["event"] == event and (call_id is None or e.get("call_id") == call_id)
                      and all(e.get(k) == v for k, v in fields.items()))


@dataclass(kw_only=True)
class GroupCall:
    """One answered call of the far party into the group, and who holds what."""

    call_id: str
    members: Members
    far: FarParty
    holder: MemberProc
    steady: dict[str, Any] = field(default_factory=dict)  # the far party's first STEADY_S

    def alive(self) -> list[MemberProc]:
        return [m for m, _ in self.members.values() if _live(m)]

    def tone(self, member: MemberProc) -> float:
        return self.members[member.name][1]

    async def new_holder(self, since: dict[str, int], timeout: float = 15.0) -> MemberProc:
        """The member (of those in `since`) that reports holding the call's media after its
        mark in `since`."""
        waits = {asyncio.ensure_future(m.wait_event(is_("holding", self.call_id), timeout,
                                                    since=since[m.name])): m
                 for m in self.alive() if m.name in since}
        pending = set(waits)
        errors: list[BaseException] = []
        try:
            while pending:  # a member that exits (the one just killed) is no answer
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        return waits[task]
                    errors.append(task.exception())  # type: ignore[arg-type]
            raise TimeoutError(f"no member took the media of {self.call_id}: {errors}")
        finally:
            for task in waits:
                task.cancel()


async def first_to(members: list[MemberProc], predicate: Callable[[dict[str, Any]], bool],
                   since: dict[str, int], timeout: float = 15.0) -> MemberProc:
    """The first of `members` to print an event matching `predicate` after `since`."""
    waits = {asyncio.ensure_future(m.wait_event(predicate, timeout, since=since[m.name])): m
             for m in members}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        task = done.pop()
        task.result()
        return waits[task]
    finally:
        for task in waits:
            task.cancel()


def marks(members: list[MemberProc]) -> dict[str, int]:
    """How many events each member printed so far (`since` of a later wait)."""
    return {m.name: len(m.events) for m in members}


async def answer_call(members: Members, far: FarParty, user: str, by: str) -> GroupCall:
    """The far party calls `user` (the group) and member `by` answers; once the member that
    holds the media (`by` with the default placement; see `GroupCall.holder`) is heard at the
    far party and hears it."""
    member = members[by][0]
    since = marks([m for m, _ in members.values() if _live(m)])
    began = time.monotonic()
    calling = asyncio.ensure_future(far.call(user))
    ringing = await member.wait_event(is_("inbound_call"), 10, since=since[by])
    call_id = ringing["call_id"]
    result = await member.command("session", call_id=call_id, name="answer")
    if not result["ok"]:
        raise RuntimeError(f"{member.name} could not answer: {result}")
    if await calling != call_id:
        raise RuntimeError(f"the far party answered another call than {call_id}")
    call = GroupCall(call_id=call_id, members=members, far=far, holder=member)
    call.holder = await call.new_holder(since, 10)
    heard = await far.wait_tone(call.tone(call.holder), after=began, timeout=10)
    await call.holder.wait_event(is_("heard", call_id, hz=FAR_TONE), 10,
                                 since=since[call.holder.name])
    # half a second of audio before anything else happens: a fault's window looks back 0.5 s
    call.steady = await far.report(since=heard, until=heard + STEADY_S)
    return call


def real_of(members: Members) -> MemberProc:
    """The one live real member."""
    (real,) = [m for m, _ in members.values() if m.role == "real" and _live(m)]
    return real


def dummies_of(members: Members) -> list[MemberProc]:
    """The live dummies."""
    return [m for m, _ in members.values() if m.role == "dummy" and _live(m)]


def _live(member: MemberProc) -> bool:
    return member.proc is not None and member.proc.returncode is None and not member.stopped


def tone_in_wav(path: Path, start: float, end: float,
                tones: Iterable[float] = (440.0, 1000.0, 1400.0)) -> float | None:
    """The dominant tone among `tones` in [start, end) s of a WAV (mono mix; a negative
    `start`/`end` counts from the end): what a recording peer (baresip's dump) heard."""
    import array
    import wave

    from webphone.media import detect_tone

    with wave.open(str(path)) as wav:
        rate, channels, length = wav.getframerate(), wav.getnchannels(), wav.getnframes()
        first = int(start * rate) % length if start < 0 else int(start * rate)
        last = length + int(end * rate) if end < 0 else int(end * rate)
        wav.setpos(max(0, first))
        raw = wav.readframes(max(0, last - first))
    samples = array.array("h", raw)
    mono = array.array("h", (sum(samples[i:i + channels]) // channels
                             for i in range(0, len(samples) - channels + 1, channels)))
    return detect_tone(mono.tobytes(), rate, tuple(tones))


# -- the meter (pure: frames and their times in, a report out) --------------------------------


@dataclass(kw_only=True)
class ToneMeter:
    """Which expected tone each received frame carried, and when."""

    expect: frozenset[float]
    frame_s: float = FRAME_S
    times: list[float] = field(default_factory=list)  # arrival of each tone frame
    changes: list[tuple[float, float | None]] = field(default_factory=list)  # (t, tone)
    frames: int = 0
    current: float | None = None

    def feed(self, hz: float | None, at: float) -> bool:
        """One received frame whose dominant tone was `hz` (None: none); True when the tone
        heard changed with it, or came back after `RESUMED_AFTER` s without frames (a new
        holder playing the same tone)."""
        self.frames += 1
        tone = hz if hz in self.expect else None
        resumed = tone is not None and bool(self.times) and at - self.times[-1] > RESUMED_AFTER
        if tone is not None:
            self.times.append(at)
        if tone != self.current or resumed:
            self.current = tone
            self.changes.append((at, tone))
            return True
        return False

    def report(self, since: float, until: float) -> dict[str, Any]:
        """The longest stretch without an expected tone in [since, until], in ms, and when it
        began; the frames missing from the interval, and the tones heard in it (in order)."""
        inside = [t for t in self.times if since <= t <= until]
        edges = [since, *inside, until]
        longest, gap_from = max(((b - a, a) for a, b in itertools.pairwise(edges)),
                                default=(0.0, since))
        expected = round((until - since) / self.frame_s)
        heard = [hz for t, hz in self.changes if t < since][-1:]
        heard += [hz for t, hz in self.changes if since <= t <= until]
        tones = [hz for hz, _ in itertools.groupby(heard) if hz is not None]
        return {
            "gap_ms": round(longest * 1000, 1),
            "gap_from": gap_from,
            "missing_frames": max(0, expected - len(inside)),
            "tone_frames": len(inside),
            "tones": tones,
            "last_tone_at": inside[-1] if inside else None,
            "current": self.current,
        }


# -- the test's handle on the far party --------------------------------------------------------


@contextlib.asynccontextmanager
async def far_party(server: Any, user: str, log_dir: Path) -> AsyncIterator[FarParty]:
    """A far party process registered as `user` on `server` (its bindings cleared first),
    killed and reaped afterwards."""
    server.clear_bindings(user)
    party = await FarParty.spawn(server.sip_info(user), log_dir)
    try:
        yield party
    finally:
        await party.close()


class FarParty(MemberProc):
    """The far party process, driven by JSON commands (see the module docstring)."""

    @classmethod
    async def spawn(cls, sip_info: dict[str, Any], log_dir: Path, *, tone: float = FAR_TONE,
                    expect: Iterable[float] = MEMBER_TONES, name: str = "far",
                    instance_id: str | None = None) -> FarParty:
        """Start the far party registered with `sip_info` (written 0600 into `log_dir`)."""
        info_path = log_dir / f"{name}-sip-info.json"
        fd = os.open(info_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(sip_info, out)
        argv = [sys.executable, str(Path(__file__).resolve()), "--sip-info", str(info_path),
                "--tone", str(tone), "--expect", ",".join(str(t) for t in expect),
                "--instance-id", instance_id or f"far-{uuid.uuid4().hex[:8]}"]
        far = cls(name, argv, log_dir / f"{name}.log")
        await far.start()
        ready = await far.ready()
        if ready["event"] != "ready":
            raise RuntimeError(f"the far party failed to start: {ready}\n{far.log_tail()}")
        return far

    async def _ok(self, cmd: str, timeout: float = 15.0, **fields: Any) -> Any:
        result = await self.command(cmd, timeout=timeout, **fields)
        if not result["ok"]:
            raise RuntimeError(f"far party: {cmd} failed: {result['error']}: "
                               f"{result.get('message')}\n{self.log_tail()}")
        return result["value"]

    async def call(self, callee: str, timeout: float = 15.0) -> str:
        """Call `callee`; returns the call id once answered."""
        value = await self._ok("call", timeout=timeout + 1, callee=callee, timeout_s=timeout)
        return str(value["call_id"])

    async def answer(self, timeout: float = 15.0) -> str:
        """Answer the next inbound call (one already ringing included); returns its call id."""
        value = await self._ok("answer", timeout=timeout + 1, timeout_s=timeout)
        return str(value["call_id"])

    async def report(self, since: float, until: float | None = None) -> dict[str, Any]:
        """The meter's report over [since, until or now] (monotonic times of this host; a
        future `until` is waited for), with "byes", "reinvites", "state" and "end_reason"."""
        value: dict[str, Any] = await self._ok("report", since=since, until=until)
        return value

    async def wait_tone(self, hz: float, after: float, timeout: float) -> float:
        """Monotonic time at which the far party began hearing `hz` after `after`."""
        event = await self.wait_event(
            lambda e: e["event"] == "heard" and e["hz"] == hz and e["t"] >= after, timeout)
        return float(event["t"])

    async def hangup(self) -> None:
        await self._ok("hangup")


# -- the far party process ---------------------------------------------------------------------


def _out(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


class _Far:
    def __init__(self, phone: Any, tone: float, expect: frozenset[float]) -> None:
        self.phone = phone
        self.tone = tone
        self.meter = ToneMeter(expect=expect)
        self.candidates = sorted(expect | {tone})
        self.session: Any = None
        self.ringing: asyncio.Queue[Any] = asyncio.Queue()
        self.byes = 0
        self.reinvites = 0
        self.playing: asyncio.Future[Any] | None = None
        phone.on("inbound_call", self.ringing.put_nowait)
        phone.sip_client.on("inbound_message", self._sip_in)

    def _sip_in(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if self.session is None or message.headers.get("Call-ID") != self.session.call_id:
            return
        if method == "BYE":
            self.byes += 1
        elif method == "INVITE":
            self.reinvites += 1
        elif method is None and message.body:  # a response with SDP
            _out("sdp_in", first_line=str(message).split("\r\n", 1)[0],
                 call_id=self.session.call_id)
            return
        else:
            return
        _out("sip_in", method=method, call_id=self.session.call_id)

    def attach(self, session: Any) -> dict[str, Any]:
        from webphone.media import detect_tone

        self.session = session
        media = session.media
        meter, candidates = self.meter, self.candidates

        def on_audio(frame: Any) -> None:
            hz = detect_tone(frame.pcm, frame.sample_rate, candidates)
            if meter.feed(hz, frame.received_at):
                _out("heard", hz=meter.current, t=frame.received_at)

        media.on("audio", on_audio)
        self.playing = asyncio.ensure_future(media.play_tone(self.tone, 24 * 3600, 0.5))
        session.on("disposed", lambda *_: _out("call_state", state="disposed",
                                               reason=session.end_reason))
        return {"call_id": session.call_id}

    async def run(self, cmd: dict[str, Any]) -> Any:
        name = cmd.get("cmd")
        if name == "call":
            session = await self.phone.call(cmd["callee"])
            if session.state != "answered":
                await session.wait_for("answered", timeout=cmd.get("timeout_s", 15))
            return self.attach(session)
        if name == "answer":
            session = await asyncio.wait_for(self.ringing.get(), cmd.get("timeout_s", 15))
            await session.answer()
            return self.attach(session)
        if name == "report":
            until = cmd.get("until") or time.monotonic()
            if until > time.monotonic():  # the measured interval is not over yet
                await asyncio.sleep(until - time.monotonic())
            session = self.session
            return {**self.meter.report(float(cmd["since"]), float(until)),
                    "byes": self.byes, "reinvites": self.reinvites,
                    "state": getattr(session, "state", None),
                    "end_reason": getattr(session, "end_reason", None)}
        if name == "reinvite":  # a re-offer of ours (CallError if refused)
            await self.session.re_invite()
            return None
        if name == "hangup":
            if self.session is not None and self.session.state != "disposed":
                await self.session.hangup()
            return None
        raise ValueError(f"unknown command {name!r}")


async def _far_main(args: argparse.Namespace) -> int:
    from webphone import SipInfo, WebPhone

    info = SipInfo.from_dict(json.loads(Path(args.sip_info).read_text(encoding="utf-8")))
    expect = frozenset(float(t) for t in args.expect.split(",") if t)
    phone = WebPhone(info, instance_id=args.instance_id, loopback_media=True, auto_answer=False)
    far = _Far(phone, args.tone, expect)
    try:
        await phone.start()
    except Exception as exc:
        _out("fatal", error=type(exc).__name__, message=str(exc))
        return 1
    _out("ready", role="far", pid=os.getpid())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def command(cmd: dict[str, Any]) -> None:
        try:
            value = await far.run(cmd)
        except Exception as exc:
            _out("result", id=cmd.get("id"), ok=False, error=type(exc).__name__,
                 message=str(exc))
        else:
            _out("result", id=cmd.get("id"), ok=True, value=value)

    while line := await reader.readline():
        task = asyncio.create_task(command(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await phone.dispose()
    return 0


def main() -> int:
    """Entry point of the far party process."""
    p = argparse.ArgumentParser(prog="continuity.py")
    p.add_argument("--sip-info", required=True)
    p.add_argument("--tone", type=float, default=FAR_TONE)
    p.add_argument("--expect", default=",".join(str(t) for t in MEMBER_TONES))
    p.add_argument("--instance-id", required=True)
    args = p.parse_args()
    child_logging("far")
    return asyncio.run(_far_main(args))


if __name__ == "__main__":
    sys.exit(main())


async def survived(call: GroupCall, since: float, holder: MemberProc, what: str
                ) -> dict[str, Any]:
    """After a fault at `since`: the far party hears the holder's tone and no BYE, the holder
    hears 440 Hz, every live member shows the one call (the holder becomes `call.holder`);
    returns the far party's report (printed) over [since - 0.5 s, now + 1 s]."""
    tone = call.tone(holder)
    heard = await call.far.wait_tone(tone, after=since, timeout=10) if (
        tone != call.tone(call.holder)) else since
    report = await call.far.report(since=since - 0.5, until=max(time.monotonic(), heard)
                                   + 1.0)
    print(f"\n{what}: gap {report['gap_ms']:.0f} ms (from {report['gap_from'] - since:+.3f} s), "
          f"{report['missing_frames']} frames "
          f"missing, tones {report['tones']}, re-INVITEs {report['reinvites']}, BYEs "
          f"{report['byes']}")
    assert report["byes"] == 0 and report["state"] == "answered", report
    assert report["current"] == tone, report
    holds = (await holder.command("holds"))["value"]
    assert holds.get(call.call_id) == FAR_TONE, (holder.name, holds)
    for m in call.alive():
        calls = (await m.command("state"))["value"]["calls"]
        assert [(c["call_id"], c["state"]) for c in calls] == [
            (call.call_id, "answered")], (m.name, calls)
    call.holder = holder
    return report
