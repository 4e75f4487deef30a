"""Action round trip dummy -> real -> dummy (issue 15 item 6), 3 runs, each beside its baselines.

Local (one host, a hub process, a real member process registered on a real Kamailio, a
`SharedWebPhone` dummy in this process):

* the action round trip over the direct link the hub's frames introduce (the default), and
  through the hub (`LocalTransport(direct_actions=False)`: two more hops);
* baseline: a raw asyncio Unix-socket echo of the same size, to a process (target: the direct
  round trip <= 3x its median);
* floor: the same one hop with what any Python real must do per action: decode and check the
  `action` frame, run it in a task, encode the `action_result`, decode it on our side and wake
  the awaiting task (`--frame-echo`); and the same hop with raw bytes answered from a task
  (`--task-echo`). What separates the action from the floor is the member and phone code;
  the floor from the task echo, the frames' encoding and checks; the task echo from the raw
  echo, asyncio's task and future. (The real starts an action eagerly, `shared/eager.py`: one
  that completes without waiting, as this one does, costs no task turn, so the action may
  come in under this floor.)
* the CPU of each process per direct round trip (this dummy's `process_time`, the real's
  /proc ticks): less sensitive to a busy machine than the wall-clock round trip.

Redis (a local redis-server, the real in its own process): the action round trip beside a raw
redis-py asyncio PING from this process (target <= 5x), and three floors, with no frames,
scripts or member code: raw pushes from us through Redis to a process that answers each one
through Redis (PUBLISH, and a subscribed connection on each side: the path the transport takes
since it pushes each entry it writes) with redis-py, the same pushes over the transport's own
hot-path connections (`redis_wire`: RESP over an asyncio.Protocol, hiredis, each push answered
from data_received, as the real runs an action), and raw stream entries the same way (XADD +
blocking XREAD on each side: the path it took before). Beside the times, the CPU each costs
(Linux /proc: user + system of this process, the real's and redis-server's, per round trip): on
a loaded machine the times mostly measure the scheduler, the CPU much less so.

Each run measures `ROUNDS` round trips after `WARMUP`; a row gives the median of the three run
medians and, in "detail", each run's median, baseline, ratio and the load average at its start.

Run: ``.venv/bin/python -m benchmarks rtt`` (JSON in benchmarks/results/rtt_bench.json).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # support.kamailio, support.group, support.redis_server

from benchmarks.group_bench import HEADER, echo_rtts, ms, open_framed, stop, wait_socket  # noqa: E402

RUNS = 3
ROUNDS = int(os.environ.get("WEBPHONE_RTT_ROUNDS", "1000"))
WARMUP = 100
NO_CALL = "bench-no-such-call"


def _action_size() -> int:
    from webphone.shared.protocol import Action

    return len(Action("a123", "hold", NO_CALL, {}, 10.0).to_json())


def _load() -> float:
    return round(os.getloadavg()[0], 2)


async def _times(one: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    out = []
    for i in range(rounds + WARMUP):
        t0 = time.perf_counter()
        await one()
        if i >= WARMUP:
            out.append(time.perf_counter() - t0)
    return out


async def _action(phone: Any) -> None:
    from webphone.errors import CallError

    with contextlib.suppress(CallError):  # the real answers: no such call
        await phone._request("hold", NO_CALL, {})


# -- the one-hop floor: a process that answers action frames like a real ----------------------


class _FrameEcho(asyncio.Protocol):
    """Decode each `action` frame, answer it from a task with an `action_result` error (with
    `frames` False: answer the bytes as they are, from a task: the cost of the task alone)."""

    frames = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        from webphone.shared.protocol import decode_frame

        self.buf += data
        while len(self.buf) >= 4:
            (n,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                return
            payload = bytes(self.buf[4:4 + n])
            del self.buf[:4 + n]
            frame = decode_frame(payload) if self.frames else payload
            asyncio.get_running_loop().create_task(self._answer(frame))

    async def _answer(self, frame: Any) -> None:
        from webphone.shared.protocol import ActionResult, ErrorInfo

        if not self.frames:
            self.transport.write(HEADER.pack(len(frame)) + frame)
            return
        result = ActionResult(frame.action_id, 1, False, None, ErrorInfo(
            "CallError", f"{frame.name}: no call {frame.call_id!r} on the real phone"))
        data = result.to_json()
        self.transport.write(HEADER.pack(len(data)) + data)


async def _serve_frame_echo(path: str, frames: bool) -> None:
    _FrameEcho.frames = frames
    server = await asyncio.get_running_loop().create_unix_server(_FrameEcho, path)
    async with server:
        await server.serve_forever()


async def frame_floor_rtts(rounds: int, frames: bool = True) -> list[float]:
    """Round trips of encoded action frames to a `_FrameEcho` process (see the docstring);
    `frames` False: raw bytes of the same size, answered from a task, not decoded."""
    from webphone.shared.protocol import Action, decode_frame

    tmp = Path(tempfile.mkdtemp(prefix="wpr-"))
    path = str(tmp / "frames.sock")
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.rtt_bench",
                               "--frame-echo" if frames else "--task-echo", path],
                              cwd=ROOT, stdin=subprocess.DEVNULL)
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[Any]] = []
    raw = b"x" * _action_size()

    def on_frame(payload: bytes) -> None:
        waiting.pop(0).set_result(decode_frame(payload) if frames else payload)

    try:
        await wait_socket(path)
        conn = await open_framed(path, on_frame)
        ids = iter(range(1, 1 << 30))

        async def one() -> None:
            future = loop.create_future()
            waiting.append(future)
            conn.send(Action(f"a{next(ids)}", "hold", NO_CALL, {}, 10.0).to_json()
                      if frames else raw)
            await future

        return await _times(one, rounds)
    finally:
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


# -- local ------------------------------------------------------------------------------------


async def bench_local(kam: Any, user: str) -> list[dict[str, Any]]:
    from support.group import MemberGroup, short_runtime_dir
    from webphone.shared import SharedWebPhone
    from webphone.shared.transports.local import LocalTransport

    runtime_dir = short_runtime_dir()
    group = MemberGroup(runtime_dir, runtime_dir, kam.sip_info(user), heartbeat_interval=0.5,
                        heartbeat_timeout=3.0, idle_timeout=2.0, extra=("--no-media",))
    phones: list[Any] = []
    runs: list[dict[str, float]] = []
    try:
        (real,) = await group.spawn_ready(["real"])
        await real.wait_event(lambda e: e["event"] == "registered", 20)
        for direct in (True, False):
            transport = LocalTransport(runtime_dir=runtime_dir, direct_actions=direct)
            phone = SharedWebPhone(kam.sip_info(user), hub=transport, preload_media=False)
            phones.append(phone)
            await phone.start()
            assert phone.role == "dummy"
        size = _action_size()
        for run in range(RUNS):
            load = _load()
            echo = (await echo_rtts(size, ROUNDS + WARMUP))[WARMUP:]
            floor = await frame_floor_rtts(ROUNDS)
            tasked = await frame_floor_rtts(ROUNDS, frames=False)
            cpu0 = (time.process_time(), _cpu_s(real.pid))
            direct_t = await _times(lambda: _action(phones[0]), ROUNDS)
            cpu1 = (time.process_time(), _cpu_s(real.pid))
            hub_t = await _times(lambda: _action(phones[1]), ROUNDS)
            n = ROUNDS + WARMUP
            runs.append({"load": load, "echo": statistics.median(echo),
                         "floor": statistics.median(floor), "task": statistics.median(tasked),
                         "direct": statistics.median(direct_t),
                         "hub": statistics.median(hub_t),
                         "direct_p95": _q95(direct_t),
                         "cpu_dummy": (cpu1[0] - cpu0[0]) / n, "cpu_real": (cpu1[1] - cpu0[1]) / n})
            r = runs[-1]
            print(f"   run {run + 1}: action direct {ms(r['direct'])} ms, via hub {ms(r['hub'])}"
                  f" ms; echo {ms(r['echo'])} ms, echo from a task {ms(r['task'])} ms, "
                  f"one-hop frame floor {ms(r['floor'])} ms; CPU per direct action: dummy "
                  f"{ms(r['cpu_dummy'])} ms, real {ms(r['cpu_real'])} ms; load {load}", flush=True)
    finally:
        for phone in phones:
            await phone.dispose()
        await group.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)
    return [
        _row("action round trip, local, direct link (median of 3 run medians)", runs, "direct",
             "raw Unix-socket echo to a process", "echo", 3.0),
        _row("action round trip, local, through the hub", runs, "hub",
             "raw Unix-socket echo to a process", "echo", None),
        _row("one hop: bytes answered from a task (no frames)", runs, "task",
             "raw Unix-socket echo to a process", "echo", None),
        _row("one-hop floor: action frames decoded, run in a task, answered", runs, "floor",
             "raw Unix-socket echo to a process", "echo", None),
        _row("action round trip, local, direct link vs its one-hop floor", runs, "direct",
             "one-hop frame floor (same run)", "floor", None),
        _row("CPU per direct action round trip: the real's process", runs, "cpu_real",
             "raw Unix-socket echo to a process (wall)", "echo", None),
        _row("CPU per direct action round trip: the dummy's process (this one)", runs,
             "cpu_dummy", "raw Unix-socket echo to a process (wall)", "echo", None),
    ]


# -- Redis ------------------------------------------------------------------------------------


async def ping_rtts(url: str, rounds: int) -> list[float]:
    """redis-py asyncio PINGs from this process (RESP2, as the transport's clients)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, protocol=2)
    try:
        return await _times(client.ping, rounds)
    finally:
        await client.aclose()


async def _serve_push_echo(url: str, prefix: str) -> None:
    """The far end of the push floor: each message on the request channel is answered by a
    PUBLISH on the reply channel, from the loop that reads them (as a real answers)."""
    from redis.asyncio import Redis

    sub, cmd = Redis.from_url(url, protocol=2), Redis.from_url(url, protocol=2)
    push = sub.pubsub()
    await push.subscribe(f"{prefix}:req")
    while True:
        message = await push.parse_response(block=True)
        if message[0] == b"message":
            await cmd.publish(f"{prefix}:rep", message[2])


async def redis_push_floor_rtts(url: str, rounds: int) -> list[float]:
    """Round trips us -> Redis -> a process -> Redis -> us with raw pushes (PUBLISH, and a
    subscribed connection on each side): the path an action takes over Redis, without
    frames, scripts, streams or the member."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from webphone.shared.protocol import Action

    prefix = f"webphone:{{rtt-push-{secrets.token_hex(6)}}}"
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.rtt_bench", "--redis-push-echo",
                               url, prefix], cwd=ROOT, stdin=subprocess.DEVNULL)
    cmd, sub = Redis.from_url(url, protocol=2), Redis.from_url(url, protocol=2)
    push = sub.pubsub()
    await push.subscribe(f"{prefix}:rep")
    await push.parse_response(block=True)  # subscribed
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []

    async def reader() -> None:
        while True:
            try:
                message = await push.parse_response(block=True)
            except RedisError:  # closed at the end of the run
                return
            if message[0] == b"message" and waiting:
                waiting.pop(0).set_result(None)

    task = loop.create_task(reader())
    payload = Action("a1", "hold", NO_CALL, {}, 10.0).to_json()
    try:
        while await cmd.pubsub_numsub(f"{prefix}:req") == [(f"{prefix}:req".encode(), 0)]:
            await asyncio.sleep(0.05)  # the far end is starting (not timed)

        async def one() -> None:
            future = loop.create_future()
            waiting.append(future)
            await cmd.publish(f"{prefix}:req", payload)
            await asyncio.wait_for(future, 30.0)

        return await _times(one, rounds)
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=2.0)
        stop(server)
        with contextlib.suppress(RedisError):
            await push.aclose()
        await cmd.aclose()
        await sub.aclose()


async def _serve_wire_echo(url: str, prefix: str) -> None:
    """`_serve_push_echo` over the transport's own hot-path connections (`redis_wire`): each
    message is answered from ``data_received``, as the real runs a pushed action."""
    from redis.asyncio import Redis

    from webphone.shared.transports.redis_wire import open_wire, subscribe

    client = Redis.from_url(url, protocol=2)
    cmd = await open_wire(client, timeout=5.0)
    sub = await subscribe(client, f"{prefix}:req", 5.0)
    await sub.handle(lambda data: cmd.command("PUBLISH", f"{prefix}:rep", data).add_done_callback(
        lambda reply: reply.exception()))


async def wire_push_floor_rtts(url: str, rounds: int) -> list[float]:
    """`redis_push_floor_rtts` with the transport's hot-path connections on both sides
    (`redis_wire`: RESP over an asyncio.Protocol, hiredis, pushes handled in data_received):
    what the action path costs without its scripts, frames and member code."""
    from redis.asyncio import Redis

    from webphone.shared.protocol import Action
    from webphone.shared.transports.redis_wire import open_wire, subscribe

    prefix = f"webphone:{{rtt-wire-{secrets.token_hex(6)}}}"
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.rtt_bench", "--redis-wire-echo",
                               url, prefix], cwd=ROOT, stdin=subprocess.DEVNULL)
    client = Redis.from_url(url, protocol=2)
    cmd = await open_wire(client, timeout=30.0)
    sub = await subscribe(client, f"{prefix}:rep", 5.0)
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []

    def on_reply(_data: bytes) -> None:
        if waiting:
            waiting.pop(0).set_result(None)

    reader = loop.create_task(sub.handle(on_reply))
    payload = Action("a1", "hold", NO_CALL, {}, 10.0).to_json()
    try:
        while (await cmd.command("PUBSUB", "NUMSUB", f"{prefix}:req"))[1] == 0:
            await asyncio.sleep(0.05)  # the far end is starting (not timed)

        async def one() -> None:
            future = loop.create_future()
            waiting.append(future)
            await cmd.command("PUBLISH", f"{prefix}:req", payload)
            await asyncio.wait_for(future, 30.0)

        return await _times(one, rounds)
    finally:
        sub.stop()
        await asyncio.wait({reader}, timeout=2.0)
        stop(server)
        sub.close()
        cmd.close()
        await client.aclose()


async def _serve_redis_echo(url: str, prefix: str) -> None:
    """The far end of the Redis floor: each request entry read (blocking XREAD) is answered by
    an entry on the reply stream, as a real answers an action."""
    from redis.asyncio import Redis

    blk, cmd = (Redis.from_url(url, protocol=2, socket_timeout=5.0),
                Redis.from_url(url, protocol=2, socket_timeout=5.0))
    last = "0-0"  # the streams are new: every request is answered, however late we start
    while True:
        resp = await blk.xread({f"{prefix}:req": last}, count=32, block=1000)
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                last = entry_id
                await cmd.xadd(f"{prefix}:rep", {"d": fields[b"d"]}, maxlen=1000)


async def redis_floor_rtts(url: str, rounds: int) -> list[float]:
    """Round trips us -> Redis -> a process -> Redis -> us with raw stream entries (XADD, and a
    blocking XREAD on each side, separate connections as the transport has): the path an
    action takes over Redis, without frames, scripts or the member."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from webphone.shared.protocol import Action

    prefix = f"webphone:{{rtt-floor-{secrets.token_hex(6)}}}"
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.rtt_bench", "--redis-echo", url,
                               prefix], cwd=ROOT, stdin=subprocess.DEVNULL)
    cmd, blk = (Redis.from_url(url, protocol=2, socket_timeout=5.0),
                Redis.from_url(url, protocol=2, socket_timeout=5.0))
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []

    async def reader() -> None:
        last = "0-0"
        while True:
            try:
                resp = await blk.xread({f"{prefix}:rep": last}, count=32, block=1000)
            except RedisError:  # closed at the end of the run
                return
            for _stream, entries in resp or []:
                for entry_id, _fields in entries:
                    last = entry_id
                    if waiting:
                        waiting.pop(0).set_result(None)

    task = loop.create_task(reader())
    payload = Action("a1", "hold", NO_CALL, {}, 10.0).to_json()
    try:
        async def one() -> None:  # the first waits for the far end to start (warm-up)
            future = loop.create_future()
            waiting.append(future)
            await cmd.xadd(f"{prefix}:req", {"d": payload}, maxlen=1000)
            await asyncio.wait_for(future, 30.0)

        return await _times(one, rounds)
    finally:
        task.cancel()  # redis-py may swallow a cancellation inside a read: bounded wait
        await asyncio.wait({task}, timeout=2.0)
        stop(server)
        await cmd.delete(f"{prefix}:req", f"{prefix}:rep")
        await cmd.aclose()
        await blk.aclose()


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process `pid` used so far (None: this process)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _timed_cpu(one: Callable[[], Awaitable[object]], rounds: int,
                     pids: list[int | None]) -> tuple[list[float], float]:
    """`_times`, and the CPU seconds per round trip that the processes `pids` used meanwhile."""
    before = [_cpu_s(pid) for pid in pids]
    times = await _times(one, rounds)
    used = sum(_cpu_s(pid) - b for pid, b in zip(pids, before, strict=True))
    return times, used / (rounds + WARMUP)


async def bench_redis(kam: Any, user: str, url: str,
                      redis_pid: int | None = None) -> list[dict[str, Any]]:
    from benchmarks.redis_bench import _members, _old_enough
    from support.group import short_runtime_dir
    from webphone.shared import SharedWebPhone

    await _old_enough(url, 3.0)
    runtime_dir = short_runtime_dir()
    group = _members(url, runtime_dir, kam.sip_info(user), 3.0)
    phone = None
    runs: list[dict[str, float]] = []
    try:
        (real,) = await group.spawn_ready(["real"])
        await real.wait_event(lambda e: e["event"] == "registered", 20)
        phone = SharedWebPhone(kam.sip_info(user), hub=url, preload_media=False)
        await phone.start()
        assert phone.role == "dummy"
        for run in range(RUNS):
            load = _load()
            cpu = redis_pid is not None and Path(f"/proc/{redis_pid}/stat").exists()
            pids: list[int | None] = [None, redis_pid] if cpu else []
            before = [_cpu_s(pid) for pid in pids]
            ping = await ping_rtts(url, ROUNDS)
            ping_cpu = sum(_cpu_s(pid) - b for pid, b in zip(pids, before, strict=True)) / (
                ROUNDS + WARMUP)
            floor = await redis_floor_rtts(url, ROUNDS)
            pushed = await redis_push_floor_rtts(url, ROUNDS)
            wired = await wire_push_floor_rtts(url, ROUNDS)
            action, action_cpu = await _timed_cpu(lambda: _action(phone), ROUNDS,
                                                  [None, real.pid, redis_pid] if cpu else [])
            runs.append({"load": load, "ping": statistics.median(ping),
                         "floor": statistics.median(floor), "push": statistics.median(pushed),
                         "wire": statistics.median(wired),
                         "redis": statistics.median(action), "redis_p95": _q95(action),
                         "cpu": action_cpu, "ping_cpu": ping_cpu})
            print(f"   run {run + 1}: action via Redis {ms(runs[-1]['redis'])} ms; PING "
                  f"{ms(runs[-1]['ping'])} ms; raw push floor {ms(runs[-1]['push'])} ms (over the "
                  f"transport's RESP connections {ms(runs[-1]['wire'])} ms); raw "
                  f"stream floor {ms(runs[-1]['floor'])} ms; CPU per action {ms(action_cpu)} ms"
                  f" (caller + real + Redis), per PING {ms(ping_cpu)} ms (client + Redis); "
                  f"load {load}", flush=True)
    finally:
        if phone is not None:
            await phone.dispose()
        await group.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)
    return [_row("action round trip via Redis (median of 3 run medians)", runs, "redis",
                 "raw redis-py PING from this process", "ping", 5.0),
            _row("Redis floor: raw pushes us -> Redis -> a process -> Redis -> us", runs,
                 "push", "raw redis-py PING from this process", "ping", None),
            _row("action round trip via Redis vs its raw push floor", runs, "redis",
                 "raw push floor (same run)", "push", None),
            _row("the same raw pushes over the transport's RESP connections (redis_wire)", runs,
                 "wire", "raw redis-py PING from this process", "ping", None),
            _row("action round trip via Redis vs the raw pushes over redis_wire", runs, "redis",
                 "raw pushes over redis_wire (same run)", "wire", None),
            _row("raw stream entries (XADD + blocking XREAD) the same way", runs,
                 "floor", "raw redis-py PING from this process", "ping", None),
            *([_row("CPU per action via Redis (this process + the real + redis-server)", runs,
                    "cpu", "CPU per PING (this process + redis-server)", "ping_cpu", None)]
              if all(r["cpu"] > 0 for r in runs) else [])]


# -- rows -------------------------------------------------------------------------------------


def _q95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def _row(name: str, runs: list[dict[str, float]], key: str, baseline: str, base: str,
         target: float | None) -> dict[str, Any]:
    values = [r[key] for r in runs]
    bases = [r[base] for r in runs]
    ratios = [v / b for v, b in zip(values, bases, strict=True)]
    med_ratio = statistics.median(ratios)
    return {
        "name": name, "value": ms(statistics.median(values)), "unit": "ms",
        "baseline": f"{baseline}, median of 3", "baseline_value": ms(statistics.median(bases)),
        "target": f"<= {target:g}x baseline (median ratio)" if target else "(no target)",
        "met": med_ratio <= target if target else None,
        "detail": {
            "min_median_max_ms": [ms(min(values)), ms(statistics.median(values)), ms(max(values))],
            "baseline_min_median_max_ms": [ms(min(bases)), ms(statistics.median(bases)),
                                           ms(max(bases))],
            "ratio_min_median_max": [round(min(ratios), 2), round(med_ratio, 2),
                                     round(max(ratios), 2)],
            "runs": [{"median_ms": ms(r[key]), "baseline_ms": ms(r[base]),
                      "ratio": round(r[key] / r[base], 2), "load_average": r["load"],
                      **({"p95_ms": ms(r[key + "_p95"])} if key + "_p95" in r else {})}
                     for r in runs],
            "rounds_per_run": ROUNDS,
        },
    }


async def run_async() -> list[dict[str, Any]]:
    from support.kamailio import Kamailio
    from support.redis_server import RedisServer

    if shutil.which("kamailio") is None:
        print("   kamailio not installed: skipping the action round trip benchmarks")
        return []
    workdir = Path(tempfile.mkdtemp(prefix="wpb-rtt-"))
    kam = Kamailio(str(workdir / "kamailio"))
    kam.start()
    rows: list[dict[str, Any]] = []
    try:
        only = os.environ.get("WEBPHONE_RTT_ONLY", "local,redis").split(",")
        if "local" in only:
            rows += await bench_local(kam, "107")
        if "redis" in only and shutil.which("redis-server") is not None:
            redis = RedisServer(workdir / "redis")
            redis.start()
            try:
                rows += await bench_redis(kam, "105", redis.url, redis.proc.pid)
            finally:
                redis.stop()
    finally:
        kam.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def run() -> list[dict[str, Any]]:
    """The action round trip benchmarks; rows for benchmarks/__main__."""
    return asyncio.run(run_async())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--frame-echo", "--task-echo"):
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_frame_echo(sys.argv[2], sys.argv[1] == "--frame-echo"))
    elif len(sys.argv) == 4 and sys.argv[1] in ("--redis-echo", "--redis-push-echo",
                                                "--redis-wire-echo"):
        serve = {"--redis-echo": _serve_redis_echo, "--redis-push-echo": _serve_push_echo,
                 "--redis-wire-echo": _serve_wire_echo}[sys.argv[1]]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(sys.argv[2], sys.argv[3]))
    else:
        from benchmarks.__main__ import print_table

        print_table(run())
