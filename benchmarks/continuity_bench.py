"""Calls that survive the group's faults (issue #11): the audio gap at the far party, beside
baselines measured in the same run.

Member processes (`member_cli --tone`, each its own tone) of one extension on the sandbox (in a
thread of this process); the far party, a `WebPhone` in its own process
(tests/support/continuity.py), calls the group, plays 440 Hz and measures, by frequency, the
longest stretch without a member's tone (the gap) and the 20 ms frames missing.

* baseline: the steady gap of a call whose holder lives (the jitter floor), and a bare re-INVITE
  exchange (the real's `refresh()`, same SDP: its round trip and the gap across it);
* signalling holder SIGKILLed (a dummy holds the media): gap; kill -> the successor's re-INVITE
  at the far party. Target: <= 60 ms, no frame lost beyond jitter;
* media holder SIGKILLed (`KILLS` calls per run, each answered by a dummy that is then killed;
  the real takes the media; a fresh member after each): gap. Target: median <= 500 ms,
  p95 <= 1 s;
* the real holding both (dialog and media) SIGKILLed, and its successor too as soon as it says
  it is the real (a double failover), beside the same kill without the second one: kill -> the
  far party hears the last member's tone; its promotion -> its re-INVITE at the far party
  (what a takeover that renews the media waits for: the media stack, new media, SIP);
* graceful leave of a dummy holding 3 calls: `dispose()` time and calls lost, beside the
  dispose() of a member without calls. Target: <= 500 ms, 0 lost;
* capacity: calls with clean audio (every call's worst gap <= 100 ms, <= 5 % of its frames
  missing over 2 s) for a group of 1, 2 and 4 member processes, calls added two at a time
  (answered by the members in turn) up to the 12 test users; each call's far end is a
  process of its own on the same machine;
* soak: one long call, `WEBPHONE_SOAK="30,10"` kills of the signalling holder and of the media
  holder (interleaved: a media kill, then three of the real; a fresh member after each) ->
  calls lost (target 0), gaps. Six members, the media on the youngest dummy (`member_cli
  --media dummy`): a promotion takes the oldest dummy, so the holder is not promoted (which
  would make the next kill of the real a kill of both) before the next media kill.

min/median/max of `RUNS` runs, the load average with each row. Run:
``.venv/bin/python -m benchmarks continuity`` (~7 min; the soak ~1 more);
``WEBPHONE_CONTINUITY=both`` runs only the "both at once" rows (~1 min).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # support.*

from support.continuity import (  # noqa: E402
    FarParty,
    GroupCall,
    Members,
    answer_call,
    dummies_of,
    first_to,
    is_,
    marks,
    real_of,
    spawn_holders,
)
from support.group import MemberGroup, enable_subreaper, short_runtime_dir  # noqa: E402
from support.sandbox_server import SandboxServer  # noqa: E402

RUNS = 3
KILLS = 4  # media holder kills per run
GROUP_USER = "105"
FAR_USERS = ("106", "107", "108")
RECOVER = 15.0  # s: no recovery within this = the call is lost


def _soak_counts() -> tuple[int, int]:
    text = os.environ.get("WEBPHONE_SOAK", "30,10")
    signalling, media = (int(n) for n in text.split(","))
    return signalling, media


class Lab:
    """The sandbox, a work directory, and the groups and far parties of one scenario."""

    def __init__(self, server: SandboxServer, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.names = (f"m{i}" for i in itertools.count(1))

    @contextlib.asynccontextmanager
    async def scene(self, members: int, fars: int = 1, policy: str = "taker"
                    ) -> AsyncIterator[tuple[MemberGroup, Members, list[FarParty]]]:
        """A group of `members` holders (media placement `policy`, see `member_cli --media`)
        and `fars` far parties; everything killed after."""
        runtime_dir = short_runtime_dir()
        self.server.clear_bindings(GROUP_USER)
        group = MemberGroup(runtime_dir, self.workdir, self.server.sip_info(GROUP_USER),
                            extra=("--media", policy))
        parties: list[FarParty] = []
        try:
            held = await spawn_holders(group, [next(self.names) for _ in range(members)])
            for user in FAR_USERS[:fars]:
                self.server.clear_bindings(user)
                parties.append(await FarParty.spawn(self.server.sip_info(user), self.workdir,
                                                    name=f"far{user}"))
            yield group, held, parties
        finally:
            for party in parties:
                await party.close()
            await group.close()
            shutil.rmtree(runtime_dir, ignore_errors=True)

    async def replace(self, group: MemberGroup, members: Members) -> None:
        """One fresh member in place of a dead one."""
        members.update(await spawn_holders(group, [next(self.names)]))


# -- the scenarios -------------------------------------------------------------------------------


async def baseline(lab: Lab) -> dict[str, float]:
    async with lab.scene(2) as (_, members, (far,)):
        real = real_of(members)
        call = await answer_call(members, far, GROUP_USER, real.name)
        start = time.monotonic() + 0.5
        steady = await far.report(since=start, until=start + 1.0)
        sent = time.monotonic()
        result = await real.command("session", call_id=call.call_id, name="refresh")
        if not result["ok"]:
            raise RuntimeError(f"refresh failed: {result}")
        across = await far.report(since=sent - 0.2, until=result["t"] + 0.5)
        return {"steady_gap_ms": steady["gap_ms"], "reinvite_ms": (result["t"] - sent) * 1000,
                "reinvite_gap_ms": across["gap_ms"]}


async def kill_signalling(call: GroupCall) -> dict[str, Any]:
    """SIGKILL of the real; the far party's gap until 1 s after the successor's re-INVITE."""
    real = real_of(call.members)
    killed = time.monotonic()
    real.kill()
    reinvite = await call.far.wait_event(
        lambda e: is_("sip_in", method="INVITE")(e) and e["t"] > killed, RECOVER)
    report = await call.far.report(since=killed - 0.2, until=reinvite["t"] + 1.0)
    return {**report, "adopted_ms": (reinvite["t"] - killed) * 1000}


async def kill_media(call: GroupCall) -> dict[str, Any]:
    """SIGKILL of the media holder; the gap until 0.5 s after the far party hears the next."""
    since = marks([m for m in call.alive() if m is not call.holder])
    killed = time.monotonic()
    call.holder.kill()
    holder = await call.new_holder(since, RECOVER)
    heard = await call.far.wait_tone(call.tone(holder), after=killed, timeout=RECOVER)
    call.holder = holder
    report = await call.far.report(since=killed - 0.2, until=heard + 0.5)
    return {**report, "holder": holder.name}


async def signalling_run(lab: Lab) -> dict[str, Any]:
    async with lab.scene(3) as (_, members, (far,)):
        call = await answer_call(members, far, GROUP_USER, dummies_of(members)[0].name)
        return await kill_signalling(call)


async def both_run(lab: Lab, double: bool) -> dict[str, Any]:
    """SIGKILL of the real holding both; with `double`, of its successor too once it says it
    is the real. Kill -> the far party hears the member that took the call over; that
    member's promotion -> its re-INVITE at the far party."""
    async with lab.scene(3) as (_, members, (far,)):
        call = await answer_call(members, far, GROUP_USER, real_of(members).name)
        others = [m for m in call.alive() if m.role != "real"]
        since = marks(others)
        killed = time.monotonic()
        real_of(members).kill()
        last = await first_to(others, is_("role", role="real"), since, RECOVER)
        if double:
            others.remove(last)
            last.kill()
            last = await first_to(others, is_("role", role="real"), since, RECOVER)
        promoted = last.last("role")
        assert promoted is not None
        heard = await far.wait_tone(call.tone(last), after=killed, timeout=RECOVER)
        reinvite = await far.wait_event(
            lambda e: is_("sip_in", method="INVITE")(e) and e["t"] > promoted["t"], RECOVER)
        return {"heard_ms": (heard - killed) * 1000,
                "reinvite_ms": (reinvite["t"] - promoted["t"]) * 1000}


async def media_run(lab: Lab) -> list[dict[str, Any]]:
    """`KILLS` calls, each answered by a dummy (its media holder), which is then killed (the
    real takes the media: the default placement); a fresh member after each."""
    async with lab.scene(3) as (group, members, (far,)):
        results = []
        for _ in range(KILLS):
            call = await answer_call(members, far, GROUP_USER, dummies_of(members)[0].name)
            results.append(await kill_media(call))
            await far.hangup()
            await lab.replace(group, members)
        return results


async def leave_run(lab: Lab) -> dict[str, Any]:
    """A dummy holding 3 calls leaves (dispose()); and a member without calls, the baseline."""
    async with lab.scene(3, fars=3) as (_, members, fars):
        holder, idle = dummies_of(members)[:2]
        calls = [await answer_call(members, far, GROUP_USER, holder.name) for far in fars]
        sent = time.monotonic()
        result = await holder.command("dispose", timeout=10)
        left = result["t"]
        reports = [await c.far.report(since=sent - 0.2, until=left + 2.0) for c in calls]
        lost = sum(1 for r in reports if r["byes"] or r["state"] != "answered"
                   or r["last_tone_at"] is None or r["last_tone_at"] < left + 1.5)
        sent_idle = time.monotonic()
        idle_result = await idle.command("dispose", timeout=10)
        return {"dispose_ms": (left - sent) * 1000, "lost": lost,
                "gaps_ms": [r["gap_ms"] for r in reports],
                "idle_dispose_ms": (idle_result["t"] - sent_idle) * 1000}


async def soak(lab: Lab) -> dict[str, Any]:
    """One call; kills of the signalling holder and of the media holder as planned (a kill of
    a real that holds the media too counts as "both"); a fresh member after each. Six
    members: see the module docstring."""
    signalling, media = _soak_counts()
    total = signalling + media
    media_at = {round(k * total / media) for k in range(media)} if media else set()
    plan = ["media" if i in media_at else "signalling" for i in range(total)]
    gaps: dict[str, list[float]] = {"signalling": [], "media": [], "both": []}
    lost = 0
    async with lab.scene(6, policy="dummy") as (group, members, (far,)):
        await real_of(members).command("refresh_members")  # the policy sees every member
        # the youngest dummy: the oldest is promoted when the real dies
        call = await answer_call(members, far, GROUP_USER, dummies_of(members)[-1].name)
        started = time.monotonic()
        for kind in plan:
            if call.holder.role == "real":
                kind = "both"  # the real holds the media: killing either is killing both
            try:
                report = await (kill_signalling(call) if kind == "signalling"
                                else kill_media(call))
            except (TimeoutError, RuntimeError) as exc:
                print(f"  soak: the call did not come back after a {kind} kill: "
                      f"{str(exc).splitlines()[0]}")
                lost = 1
                break
            gaps[kind].append(report["gap_ms"])
            if report["byes"] or report["state"] != "answered":
                lost = 1
                break
            await lab.replace(group, members)
            await real_of(members).command("refresh_members")
        final = await far.report(since=started)
    return {"lost": lost, "gaps": gaps, "byes": final["byes"], "reinvites": final["reinvites"],
            "minutes": (time.monotonic() - started) / 60}


CAPACITY_USERS = ("101", "102", "103", "104", "106", "107", "108", "109", "110", "alice", "bob",
                  "carol")
CLEAN_GAP_MS = 100.0  # a call's audio is clean with no longer gap over the window ...
CLEAN_MISSING = 0.05  # ... and at most this share of its frames missing
CAPACITY_STEP = 2


async def capacity(lab: Lab, members: int) -> dict[str, Any]:
    """Calls added `CAPACITY_STEP` at a time (each a far party process of its own, answered by
    the members in turn, so each holds its share) until one call's audio over a 2 s window is
    not clean; returns the last count at which every call was clean."""
    clean, calls, parties = 0, [], []
    async with lab.scene(members, fars=0) as (_, held, _):
        names = list(held)
        try:
            for user in CAPACITY_USERS:
                lab.server.clear_bindings(user)
                far = await FarParty.spawn(lab.server.sip_info(user), lab.workdir,
                                           name=f"cap{user}")
                parties.append(far)
                by = names[len(calls) % len(names)]
                calls.append(await answer_call(held, far, GROUP_USER, by))
                if len(calls) % CAPACITY_STEP:
                    continue
                start = time.monotonic()
                reports = await asyncio.gather(*(c.far.report(since=start, until=start + 2.0)
                                                 for c in calls))
                worst = max(r["gap_ms"] for r in reports)
                missing = max(r["missing_frames"] for r in reports) / 100  # of 100 frames
                print(f"    {members} member(s), {len(calls)} calls: worst gap {worst:.0f} ms, "
                      f"worst missing {missing:.0%} (load {os.getloadavg()[0]:.1f})", flush=True)
                if worst > CLEAN_GAP_MS or missing > CLEAN_MISSING:
                    break
                clean = len(calls)
        finally:
            for far in parties:
                await far.close()
    return {"clean_calls": clean, "tried": len(calls)}


# -- rows ------------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _row(name: str, value: float | None, unit: str, baseline: str, baseline_value: float | None,
         target: str, met: bool | None, **detail: Any) -> dict[str, Any]:
    row = {"name": name, "value": value, "unit": unit, "baseline": baseline,
           "baseline_value": baseline_value, "target": target, "met": met,
           "detail": {**detail, "load": os.getloadavg()}}
    print(f"  {name}: {value if value is None else round(value, 1)} {unit} ({detail}; "
          f"load {os.getloadavg()[0]:.1f})", flush=True)
    return row


async def _attempt(coro: Any) -> Any:
    """A run's result, or None when the scenario failed (printed)."""
    try:
        return await coro
    except (TimeoutError, RuntimeError) as exc:
        print(f"  a run failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
        return None


async def _both(lab: Lab) -> list[dict[str, Any]]:
    """The "both at once" rows: a double failover beside the single one, same run."""
    single = [r for r in [await _attempt(both_run(lab, False)) for _ in range(RUNS)] if r]
    double = [r for r in [await _attempt(both_run(lab, True)) for _ in range(RUNS)] if r]
    heard, base = [r["heard_ms"] for r in double], [r["heard_ms"] for r in single]
    return [_row(
        "real holding both SIGKILLed, then its successor: kill -> far party hears the third",
        statistics.median(heard) if len(heard) == RUNS else None, "ms",
        "real holding both SIGKILLed (single failover)",
        statistics.median(base) if base else None, "<= baseline + 300 ms",
        len(heard) == RUNS and bool(base) and max(heard) <= statistics.median(base) + 300,
        runs_ms=_spread(heard), baseline_runs_ms=_spread(base),
        promotion_to_reinvite_ms=_spread([r["reinvite_ms"] for r in double]),
        baseline_promotion_to_reinvite_ms=_spread([r["reinvite_ms"] for r in single]))]


async def _all(server: SandboxServer, workdir: Path, soak_too: bool) -> list[dict[str, Any]]:
    lab = Lab(server, workdir)
    if os.environ.get("WEBPHONE_CONTINUITY") == "both":
        return await _both(lab)
    bases = [b for b in [await _attempt(baseline(lab)) for _ in range(RUNS)] if b]
    steady = [b["steady_gap_ms"] for b in bases]
    reinvite = [b["reinvite_ms"] for b in bases]
    steady_median = statistics.median(steady) if steady else None
    reinvite_median = statistics.median(reinvite) if reinvite else None
    rows = []
    sig = [s for s in [await _attempt(signalling_run(lab)) for _ in range(RUNS)] if s]
    gaps = [s["gap_ms"] for s in sig]
    rows.append(_row(
        "signalling holder SIGKILLed: gap at the far party", statistics.median(gaps)
        if len(gaps) == RUNS else None, "ms", "steady gap (jitter floor)", steady_median,
        "<= 60 ms", len(gaps) == RUNS and max(gaps) <= 60, runs_ms=_spread(gaps),
        missing_frames=[s["missing_frames"] for s in sig],
        adopted_ms=_spread([s["adopted_ms"] for s in sig]), baseline_runs_ms=_spread(steady)))
    media = [r for run in [await _attempt(media_run(lab)) for _ in range(RUNS)] if run
             for r in run]
    mgaps = [r["gap_ms"] for r in media]
    complete = len(mgaps) == RUNS * KILLS
    rows.append(_row(
        "media holder SIGKILLed: gap at the far party", statistics.median(mgaps)
        if complete else None, "ms", "bare re-INVITE exchange", reinvite_median,
        "median <= 500 ms, p95 <= 1 s", complete and statistics.median(mgaps) <= 500
        and _p95(mgaps) <= 1000, kills=len(mgaps), of=RUNS * KILLS, gaps_ms=_spread(mgaps),
        p95_ms=_p95(mgaps) if mgaps else None, baseline_runs_ms=_spread(reinvite),
        reinvite_gap_ms=_spread([b["reinvite_gap_ms"] for b in bases])))
    rows.extend(await _both(lab))
    leaves = [r for r in [await _attempt(leave_run(lab)) for _ in range(RUNS)] if r]
    times = [r["dispose_ms"] for r in leaves]
    lost = sum(r["lost"] for r in leaves) + 3 * (RUNS - len(leaves))
    rows.append(_row(
        "graceful leave of a holder of 3 calls: dispose()", statistics.median(times)
        if times else None, "ms", "dispose() without calls",
        statistics.median([r["idle_dispose_ms"] for r in leaves]) if leaves else None,
        "<= 500 ms, 0 lost", len(leaves) == RUNS and max(times) <= 500 and lost == 0,
        runs_ms=_spread(times), calls_lost=lost,
        gaps_ms=[g for r in leaves for g in r["gaps_ms"]]))
    caps = {n: await _attempt(capacity(lab, n)) for n in (1, 2, 4)}
    counts = {n: (c or {}).get("clean_calls") for n, c in caps.items()}
    rows.append(_row(
        "calls with clean audio: group of 1 / 2 / 4 member processes", None if counts[4] is None
        else float(counts[4]), "calls", "a group of 1", None if counts[1] is None
        else float(counts[1]), "grows with members until the cores are used",
        None if None in counts.values() else counts[4] > counts[1],  # type: ignore[operator]
        clean_calls=counts, max_tried=len(CAPACITY_USERS),
        note="each call's far end is a process of its own on the same 2 cores"))
    if soak_too:
        result = await _attempt(soak(lab))
        signalling, media_kills = _soak_counts()
        rows.append(_row(
            f"soak: {signalling} signalling + {media_kills} media holder kills, one call: "
            "calls lost", None if result is None else float(result["lost"]), "calls",
            "", None, "0", result is not None and result["lost"] == 0,
            **({} if result is None else {
                "signalling_gaps_ms": _spread(result["gaps"]["signalling"]),
                "media_gaps_ms": _spread(result["gaps"]["media"]),
                "both_gaps_ms": _spread(result["gaps"]["both"]),
                "kills_done": {k: len(v) for k, v in result["gaps"].items()},
                "byes": result["byes"], "minutes": round(result["minutes"], 1)})))
    return rows


def run() -> list[dict[str, Any]]:
    """Every scenario; the soak unless WEBPHONE_SOAK="0,0"."""
    enable_subreaper()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wpc-"))
    server = SandboxServer()
    server.start()
    try:
        rows = asyncio.run(_all(server, workdir, soak_too=_soak_counts() != (0, 0)))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"  ({time.monotonic() - started:.0f} s, load {os.getloadavg()})")
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    print_table(run())
