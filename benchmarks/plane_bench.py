"""Continuity-plane round trips: a delegate (real -> hub -> member -> hub -> real) beside an
action (member -> hub -> real -> hub -> member) in the same run, same group, same processes.

Both members run in this process; the hub is its own process (local transport) or Redis (one
redis-server, skipped when it is not installed). Each run interleaves N delegates and N actions
one at a time; the table gives the median of the three runs' medians and the per-run medians
(min/median/max) beside the load average. A delegate carries a 4 KiB SDP-like body both ways.

Run: ``.venv/bin/python -m benchmarks plane``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webphone.shared.member import GroupMember, LinkToken
from webphone.shared.protocol import Action, Continuity, Delegate, Released, Role, Snapshot
from webphone.shared.transports.base import GroupTransport, HubOptions

OPTIONS = HubOptions(heartbeat_interval=0.5, heartbeat_timeout=3.0, idle_timeout=1.0)
ROUNDS, RUNS = 200, 3
SDP = ("v=0\r\n" + "a=candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host\r\n" * 70)[:4096]


class Answerer:
    """Registers when real, answers every action and delegate at once."""

    def __init__(self) -> None:
        self.member: GroupMember | None = None
        self.role: Role | None = None

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        assert self.member is not None
        self.role = new
        if new == "real":
            self.member.registered(epoch)

    def on_snapshot(self, snapshot: Snapshot) -> None: ...
    def on_released(self, released: Released) -> None: ...
    def on_member_lost(self, member_id: str, reason: str) -> None: ...
    def on_continuity(self, state: Continuity) -> None: ...

    def on_action(self, action: Action, token: LinkToken) -> None:
        assert self.member is not None
        self.member.send_result(token, action.action_id, value="ok")

    def on_delegate(self, request: Delegate, token: LinkToken) -> None:
        assert self.member is not None
        self.member.send_delegate_result(token, request, value={"sdp": request.args["sdp"]})


async def one_topology(make: Callable[[], GroupTransport]) -> dict[str, list[float]]:
    group = f"bench-{uuid.uuid4().hex[:6]}"
    made: list[GroupMember] = []
    for name in ("real", "member"):
        listener = Answerer()
        member = GroupMember(make(), group, listener, member_id=name)
        listener.member = member
        made.append(member)
        await member.start(timeout=15)
        while name == "real" and listener.role != "real":
            await asyncio.sleep(0.01)
    real, other = made
    await other.request("hold", "c1", {}, timeout=10)  # the real is ready
    medians: dict[str, list[float]] = {"delegate": [], "action": []}
    try:
        for _ in range(RUNS):
            times: dict[str, list[float]] = {"delegate": [], "action": []}
            for _ in range(ROUNDS):
                start = time.perf_counter()
                await real.delegate("member", "media.offer", "c1", {"sdp": SDP}, timeout=10)
                times["delegate"].append(time.perf_counter() - start)
                start = time.perf_counter()
                await other.request("hold", "c1", {}, timeout=10)
                times["action"].append(time.perf_counter() - start)
            for kind, values in times.items():
                medians[kind].append(statistics.median(values) * 1000)
    finally:
        for member in made:
            await member.close()
            await member.transport.aclose()
    return medians


def _row(topology: str, medians: dict[str, list[float]]) -> dict[str, Any]:
    d, a = medians["delegate"], medians["action"]
    return {"name": f"delegate round trip ({topology}, 4 KiB SDP both ways)",
            "value": statistics.median(d), "unit": "ms",
            "baseline": "action round trip, same run", "baseline_value": statistics.median(a),
            "target": "<= 2x baseline", "met": statistics.median(d) <= 2 * statistics.median(a),
            "detail": {"delegate_run_medians_ms": d, "action_run_medians_ms": a,
                       "delegate_min_median_max_ms": [min(d), statistics.median(d), max(d)],
                       "action_min_median_max_ms": [min(a), statistics.median(a), max(a)],
                       "rounds_per_run": ROUNDS, "runs": RUNS,
                       "loadavg": list(os.getloadavg())}}


async def _all() -> list[dict[str, Any]]:
    from webphone.shared.transports.local import LocalTransport
    rows = []
    runtime_dir = Path(tempfile.mkdtemp(prefix="wpb-"))
    try:
        rows.append(_row("local hub", await one_topology(
            lambda: LocalTransport(OPTIONS, runtime_dir=runtime_dir))))
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)
    if shutil.which("redis-server"):
        import sys
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from support.redis_server import RedisServer
        from webphone.shared.transports.redis import RedisTransport
        workdir = Path(tempfile.mkdtemp(prefix="wpb-redis-"))
        server = RedisServer(workdir)
        server.start()
        try:
            rows.append(_row("Redis, one server", await one_topology(
                lambda: RedisTransport(server.url, OPTIONS))))
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def run() -> list[dict[str, Any]]:
    """The benchmark rows (see `benchmarks/__main__.py`)."""
    return asyncio.run(_all())
