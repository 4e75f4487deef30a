"""SharedWebPhone over Redis (issues 7 and 16), each beside a baseline measured in the same run,
on one redis-server, a Sentinel set (a primary, a replica, three sentinels) and a Redis Cluster
(3 primaries + 3 replicas), all started here on loopback.

* crash failover over Redis: SIGKILL of the real member process -> its successor's REGISTER
  answered 200 (a real Kamailio, a real redis-server), vs the configured lease time (the default
  3 s) and a bare REGISTER exchange with the same server. A crash is only visible as a lease that
  is no longer renewed, so the floor is the lease's remaining life (ttl minus the time since the
  last renewal: 2-3 s with the defaults) + jitter + one REGISTER. Target: <= lease + one
  REGISTER + 100 ms.
* action round trip dummy -> Redis -> real -> Redis -> dummy (a `SharedWebPhone` dummy in this
  process, a real member process) vs a raw Redis round trip from this process (redis-py PING,
  and SET+GET), same run. An action needs three scripts in series (ENQUEUE, CLAIM, RESULT) and
  two stream wake-ups (the real's XREAD, the caller's XREAD). Target: median <= 8x the raw PING.

* per topology: the same action round trip and crash failover, beside the one-server figures.
  On Sentinel and Cluster every lease grant, renewal and claim waits for a replica (WAIT 1):
  the action round trip pays one more round trip (the claim's WAIT) plus the replica's
  acknowledgement.
* Redis failover soak (per topology): SIGKILL the primary that holds the group, the promotion,
  the killed node restarted as a replica (as a supervisor would), `WEBPHONE_REDIS_KILLS` times
  (default 20), with three `SharedWebPhone`s registered on Kamailio and actions in flight from
  all of them: the time the group is without a real per kill (median, p95), kill -> a real
  again, how often the real kept its role, and the safety counts: the most reals and the most
  Kamailio bindings ever seen at once (sampled every 10 / 20 ms), actions run twice, actions
  with an outcome outside the contract. Targets: 1, 1, 0, 0.

Run: ``.venv/bin/python -m benchmarks redis``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # support.kamailio, support.group, support.redis_server

from benchmarks.group_bench import _first_registered, bare_register_times, ms, q  # noqa: E402

#: a member process with hub="redis://..." (member_cli, wrapped)
MEMBER = """
import functools, sys
from webphone.shared import member_cli
member_cli.SharedWebPhone = functools.partial(member_cli.SharedWebPhone, hub=sys.argv[1])
sys.exit(member_cli.main(sys.argv[2:]))
"""


def _members(url: str, runtime_dir: Path, sip_info: dict[str, Any], lease: float) -> Any:
    from support.group import MemberGroup

    class RedisMembers(MemberGroup):
        def argv(self, name: str, *extra: str) -> list[str]:
            argv = super().argv(name, *extra)
            at = argv.index("-m")
            return [argv[0], "-c", MEMBER, url, *argv[at + 2:]]

    return RedisMembers(runtime_dir, runtime_dir, sip_info, heartbeat_interval=0.5,
                        heartbeat_timeout=lease, extra=("--no-media",))


async def _old_enough(url: str, seconds: float) -> None:
    """A Redis younger than a lease grants no new lease (restart grace): wait that out once."""
    from redis.asyncio import Redis

    from webphone.shared.transports.redis_topology import parse_hub_url

    node = await parse_hub_url(url).locate("webphone:{bench}:lease", 1.0)
    client = Redis.from_url(node)
    try:
        while float((await client.info("server"))["uptime_in_seconds"]) < seconds:
            await asyncio.sleep(0.1)  # polling the server's own clock
    finally:
        await client.aclose()


# -- 1. crash failover ---------------------------------------------------------------------


async def bench_failover(kam: Any, user: str, url: str, rounds: int = 6,
                         lease: float = 3.0, topo: str = "one server") -> list[dict[str, Any]]:
    from support.group import short_runtime_dir

    runtime_dir = short_runtime_dir()
    group = _members(url, runtime_dir, kam.sip_info(user), lease)
    times: list[float] = []
    try:
        procs = await group.spawn_ready(["m0", "m1", "m2"])
        real = group.reals()[0]
        await real.wait_event(lambda e: e["event"] == "registered", 20)
        for r in range(rounds):
            await asyncio.sleep(0.3)  # settle: not measured under the load of a start
            others = [p for p in procs if p is not real]
            marks = {p.name: len(p.events) for p in others}
            t0 = time.monotonic()
            real.kill()
            successor, event = await _first_registered(others, marks)
            times.append(event["t"] - t0)
            await real.close()
            procs = [*others, *(await group.spawn_ready([f"n{r}"]))]
            real = successor
    finally:
        await group.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)
    bare = await bare_register_times(kam, user, 40)
    med, bare_med = statistics.median(times), statistics.median(bare)
    worst = max(times)
    print(f"   [{topo}] crash failover of the real median {ms(med)} ms (min {ms(min(times))}, max "
          f"{ms(worst)}); lease {lease * 1000:.0f} ms; bare REGISTER {ms(bare_med)} ms",
          flush=True)
    return [
        {"name": f"Redis [{topo}] crash failover (SIGKILL real -> successor's 200), median",
         "value": ms(med), "unit": "ms", "baseline": "configured lease time",
         "baseline_value": lease * 1000, "target": "<= lease + bare REGISTER + 100 ms",
         "met": med <= lease + bare_med + 0.1,
         "detail": {"rounds": rounds, "all_ms": [ms(t) for t in times],
                    "bare_register_median_ms": ms(bare_med)}},
        {"name": f"Redis [{topo}] crash failover, worst", "value": ms(worst), "unit": "ms",
         "baseline": "lease + bare REGISTER", "baseline_value": ms(lease + bare_med),
         "target": "<= lease + bare REGISTER + 100 ms", "met": worst <= lease + bare_med + 0.1,
         "detail": {}},
    ]


# -- 2. action round trip --------------------------------------------------------------------


async def raw_redis_rtts(urls: list[str], rounds: int,
                         batch: int = 100) -> list[tuple[list[float], list[float]]]:
    """redis-py asyncio round trips from this process to the node that holds a group on each
    hub URL, interleaved in batches: PING, and SET then GET (RESP2, as the transport's
    clients)."""
    from redis.asyncio import Redis

    from webphone.shared.transports.redis_topology import parse_hub_url

    clients = [Redis.from_url(await parse_hub_url(url).locate("webphone:{bench}:lease", 1.0),
                              protocol=2) for url in urls]
    out: list[tuple[list[float], list[float]]] = [([], []) for _ in urls]
    try:
        for b in range(rounds // batch + 1):
            for client, (pings, setgets) in zip(clients, out, strict=True):
                for i in range(batch):
                    t0 = time.perf_counter()
                    await client.ping()
                    t1 = time.perf_counter()
                    await client.set("webphone:{bench}:x", i)
                    await client.get("webphone:{bench}:x")
                    if b > 0:
                        pings.append(t1 - t0)
                        setgets.append(time.perf_counter() - t1)
    finally:
        for client in clients:
            await client.aclose()
    return out


async def bench_actions(kam: Any, topologies: list[tuple[str, str, str]],
                        rounds: int = 2000, batch: int = 100) -> list[dict[str, Any]]:
    """Action round trips on every topology, interleaved in batches of `batch` (so that all of
    them see the same machine load), each beside raw redis-py round trips to the node that
    holds its group, also interleaved. `topologies`: (name, url, user)."""
    from support.group import short_runtime_dir
    from webphone.errors import CallError
    from webphone.shared import SharedWebPhone

    made: list[tuple[Any, Path, Any]] = []
    times: dict[str, list[float]] = {name: [] for name, _, _ in topologies}
    try:
        dummies = {}
        for name, url, user in topologies:
            runtime_dir = short_runtime_dir()
            group = _members(url, runtime_dir, kam.sip_info(user), 3.0)
            made.append((group, runtime_dir, None))
            (real,) = await group.spawn_ready(["real"])
            await real.wait_event(lambda e: e["event"] == "registered", 20)
            dummy = SharedWebPhone(kam.sip_info(user), hub=url, preload_media=False)
            made[-1] = (group, runtime_dir, dummy)
            await dummy.start()
            assert dummy.role == "dummy"
            dummies[name] = dummy
        for b in range(rounds // batch + 1):
            for name, dummy in dummies.items():
                for _ in range(batch):
                    t0 = time.perf_counter()
                    with contextlib.suppress(CallError):
                        await dummy._request("hold", "bench-no-such-call", {})
                    if b > 0:  # the first batch warms up
                        times[name].append(time.perf_counter() - t0)
    finally:
        for group, runtime_dir, dummy in made:
            if dummy is not None:
                await dummy.dispose()
            await group.close()
            shutil.rmtree(runtime_dir, ignore_errors=True)
    raw = await raw_redis_rtts([url for _, url, _ in topologies], rounds, batch)
    rows = []
    for (name, _, _), (pings, setgets) in zip(topologies, raw, strict=True):
        t = times[name]
        med, ping_med, sg_med = (statistics.median(t), statistics.median(pings),
                                 statistics.median(setgets))
        print(f"   [{name}] action RTT via Redis median {ms(med)} ms (p95 {ms(q(t, 0.95))}); "
              f"raw PING {ms(ping_med)} ms, SET+GET {ms(sg_med)} ms", flush=True)
        rows += [{
            "name": f"action round trip via Redis [{name}] dummy->real->dummy, median",
            "value": ms(med), "unit": "ms",
            "baseline": "raw Redis PING (redis-py asyncio), median",
            "baseline_value": ms(ping_med), "target": "<= 10x baseline",
            "met": med <= 10 * ping_med,
            "detail": {"rounds": len(t), "p95_ms": ms(q(t, 0.95)), "p99_ms": ms(q(t, 0.99)),
                       "ping_p95_ms": ms(q(pings, 0.95)), "ratio": round(med / ping_med, 2),
                       "set_get_median_ms": ms(sg_med)},
        }]
    one = statistics.median(times[topologies[0][0]])
    for name, _, _ in topologies[1:]:
        med = statistics.median(times[name])
        rows.append({
            "name": f"action round trip [{name}] vs [{topologies[0][0]}] (WAIT on the claim)",
            "value": ms(med - one), "unit": "ms more",
            "baseline": f"[{topologies[0][0]}] median, interleaved", "baseline_value": ms(one),
            "target": "(measured cost of the rule)", "met": None, "detail": {}})
    return rows


# -- 3. Redis failover soak -------------------------------------------------------------------


class _Sampler:
    """Every 10 ms: how many of `phones` are real (the most at once, and the time with none);
    every 20 ms (a thread): how many bindings the user has on Kamailio (the most at once)."""

    def __init__(self, phones: list[Any], kam: Any, user: str) -> None:
        self.phones, self.kam, self.user = phones, kam, user
        self.most_reals = self.most_bindings = self.binding_samples = 0
        self.no_real = 0.0  # seconds sampled with no real, since the last reset
        self._tasks = [asyncio.ensure_future(self._reals()),
                       asyncio.ensure_future(self._bindings())]

    def reals(self) -> int:
        return sum(p.role == "real" for p in self.phones)

    async def _reals(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)  # the sampling period
            now, reals = time.monotonic(), self.reals()
            self.most_reals = max(self.most_reals, reals)
            if reals == 0:
                self.no_real += now - last
            last = now

    async def _bindings(self) -> None:
        while True:
            bindings = await asyncio.to_thread(self.kam.bindings, self.user)
            self.most_bindings = max(self.most_bindings, len(bindings))
            self.binding_samples += 1
            await asyncio.sleep(0.02)  # the sampling period

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def bench_soak(kam: Any, user: str, servers: Any, kills: int,
                     lease: float = 3.0) -> list[dict[str, Any]]:
    """`kills` primary SIGKILLs under a group of three registered phones with actions flowing."""
    from webphone.errors import ActionInterruptedError, CallError, NoRealPhoneError
    from webphone.shared import SharedWebPhone
    from webphone.shared.transports.redis_scripts import GroupKeys

    topo = "Sentinel" if hasattr(servers, "sentinels") else "Cluster"
    phones = [SharedWebPhone(kam.sip_info(user), hub=servers.url, member_id=f"m{i}",
                             heartbeat_interval=0.5, heartbeat_timeout=lease,
                             preload_media=False) for i in range(3)]
    runs: dict[str, int] = {}
    for phone in phones:
        def counting(action: Any, token: Any, _run: Any = phone.on_action) -> None:
            runs[action.action_id] = runs.get(action.action_id, 0) + 1
            _run(action, token)
        phone.on_action = counting  # type: ignore[method-assign]
    outcomes: dict[str, int] = {"ran": 0, "NoRealPhoneError": 0, "ActionInterruptedError": 0,
                                "other": 0}
    stop = asyncio.Event()

    async def caller(phone: Any, name: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:  # an action with no outcome in 30 s breaks the contract: counted, not waited
                await asyncio.wait_for(phone._request("hold", f"{name}-{n}", {}), 30)
            except CallError:
                outcomes["ran"] += 1  # it ran on the real: no such call there
            except (NoRealPhoneError, ActionInterruptedError) as exc:
                outcomes[type(exc).__name__] += 1
            except Exception as exc:  # counted: outside the contract
                outcomes["other"] += 1
                print(f"   unexpected outcome {type(exc).__name__}: {exc}", flush=True)
                await asyncio.sleep(0.05)  # do not spin on a persistent error

    gaps, backs, promoted, rejoined, kept, unknown = [], [], [], [], 0, 0
    sampler: _Sampler | None = None
    callers: list[asyncio.Future[None]] = []
    try:
        for phone in phones:
            await phone.start()
        sampler = _Sampler(phones, kam, user)
        callers = [asyncio.ensure_future(caller(p, p.member_id or "x")) for p in phones]
        group = phones[0].group
        key = GroupKeys.for_group(group).lease
        for k in range(kills):
            await _wait_for(lambda: sampler.reals() == 1 and outcomes["ran"] > 0, 30)
            real = next(p for p in phones if p.role == "real")
            epoch = real.epoch
            old = servers.primary() if topo == "Sentinel" else servers.primary_for(key)
            sampler.no_real = 0.0
            t0 = time.monotonic()
            old.kill()
            if topo == "Sentinel":
                await asyncio.to_thread(servers.wait_new_primary, old, 20)
            else:
                await asyncio.to_thread(servers.wait_new_primary, key, old, 20)
            promoted.append(time.monotonic() - t0)
            await asyncio.to_thread(servers.rejoin, old)
            rejoined.append(time.monotonic() - t0)
            ran = outcomes["ran"]
            await _wait_for(lambda r=ran: sampler.reals() == 1 and outcomes["ran"] > r, 30)
            backs.append(time.monotonic() - t0)
            gaps.append(sampler.no_real)
            kept += int(real.role == "real" and real.epoch == epoch)
            # the group in steady service for a while (50 more actions) before the next kill
            await _wait_for(lambda r=outcomes["ran"]: outcomes["ran"] > r + 50, 30)
            if topo == "Sentinel" and not await asyncio.to_thread(servers.wait_known, old, 30):
                unknown += 1  # the next failover may take Sentinel's retry
            print(f"   [{topo}] kill {k + 1}/{kills}: promoted after {ms(promoted[-1])} ms, "
                  f"replica back {ms(rejoined[-1])} ms, served again {ms(backs[-1])} ms after "
                  f"the kill, {ms(gaps[-1])} ms without a real", flush=True)
    finally:
        stop.set()
        await asyncio.gather(*callers, return_exceptions=True)
        if sampler is not None:
            await sampler.stop()
        for phone in phones:
            await phone.dispose()
    doubled = sum(1 for n in runs.values() if n > 1)
    assert sampler is not None
    print(f"   [{topo}] {kills} kills: without a real median {ms(statistics.median(gaps))} ms, "
          f"p95 {ms(q(gaps, 0.95))} ms; most reals {sampler.most_reals}, most bindings "
          f"{sampler.most_bindings}; {len(runs)} actions run, {doubled} twice; {outcomes}",
          flush=True)
    detail = {"kills": kills, "lease_s": lease, "kept_role": kept,
              "replica_unseen_by_sentinels_30s": unknown,
              "kill_to_served_ms": [ms(b) for b in backs], "no_real_ms": [ms(g) for g in gaps],
              "kill_to_promoted_ms": [ms(t) for t in promoted],
              "kill_to_replica_back_ms": [ms(t) for t in rejoined],
              "binding_samples": sampler.binding_samples, "outcomes": outcomes}
    return [
        {"name": f"Redis [{topo}] failover: time without a real, median", "value":
         ms(statistics.median(gaps)), "unit": "ms", "baseline": "lease TTL",
         "baseline_value": lease * 1000, "target": "(measured)", "met": None,
         "detail": {**detail, "p95_ms": ms(q(gaps, 0.95)), "max_ms": ms(max(gaps))}},
        {"name": f"Redis [{topo}] failover: time without a real, p95", "value": ms(q(gaps, 0.95)),
         "unit": "ms", "baseline": "lease TTL", "baseline_value": lease * 1000,
         "target": "(measured)", "met": None, "detail": {}},
        {"name": f"Redis [{topo}] failover: kill -> replica promoted, median",
         "value": ms(statistics.median(promoted)), "unit": "ms", "baseline": "lease TTL",
         "baseline_value": lease * 1000, "target": "(measured: Redis's own part)", "met": None,
         "detail": {"p95_ms": ms(q(promoted, 0.95)), "max_ms": ms(max(promoted))}},
        {"name": f"Redis [{topo}] failover: kill -> a real serving again, median",
         "value": ms(statistics.median(backs)), "unit": "ms", "baseline": "lease TTL",
         "baseline_value": lease * 1000, "target": "(measured)", "met": None,
         "detail": {"p95_ms": ms(q(backs, 0.95)), "max_ms": ms(max(backs))}},
        {"name": f"Redis [{topo}] soak: most reals / most bindings at once", "value":
         f"{sampler.most_reals}/{sampler.most_bindings}", "unit": "", "baseline": "the rule",
         "baseline_value": "1/1", "target": "1/1",
         "met": sampler.most_reals == 1 and sampler.most_bindings == 1, "detail": {}},
        {"name": f"Redis [{topo}] soak: actions run twice / outside the contract", "value":
         f"{doubled}/{outcomes['other']}", "unit": "", "baseline": "the rule",
         "baseline_value": "0/0", "target": "0/0",
         "met": doubled == 0 and outcomes["other"] == 0,
         "detail": {"actions_run": len(runs), **outcomes}},
    ]


async def _wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the group was not served again in time")
        await asyncio.sleep(0.01)  # polling in-process state


# -- run -------------------------------------------------------------------------------------


async def run_async() -> list[dict[str, Any]]:
    from support.kamailio import Kamailio
    from support.redis_ha import ClusterSet, SentinelSet, wait_old_enough
    from support.redis_server import RedisServer

    if any(shutil.which(b) is None for b in ("kamailio", "redis-server", "redis-cli")):
        print("   kamailio, redis-server or redis-cli not installed: skipping the Redis "
              "benchmarks")
        return []
    kills = int(os.environ.get("WEBPHONE_REDIS_KILLS", "20"))
    workdir = Path(tempfile.mkdtemp(prefix="wpb-redis-"))
    kam = Kamailio(workdir / "kamailio")
    redis = RedisServer(workdir / "redis")
    sentinel = SentinelSet(workdir / "sentinel")
    cluster = ClusterSet(workdir / "cluster")
    kam.start()
    rows: list[dict[str, Any]] = []
    try:
        redis.start()
        sentinel.start()
        cluster.start()
        await _old_enough(redis.url, 3.0)
        await asyncio.to_thread(wait_old_enough, [*sentinel.nodes, *cluster.nodes], 3.0)
        topologies = [("one server", redis.url), ("Sentinel", sentinel.url),
                      ("Cluster", cluster.url)]
        rows += await bench_actions(kam, [(topo, url, user) for (topo, url), user in
                                          zip(topologies, ("105", "106", "107"), strict=True)])
        for topo, url in topologies:
            rows += await bench_failover(kam, "110", url, topo=topo)
        if kills > 0:
            for servers in (sentinel, cluster):
                rows += await bench_soak(kam, "108", servers, kills)
    finally:
        redis.stop()
        sentinel.close()
        cluster.close()
        kam.close()
        shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()
    print(f"   load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    for row in rows:
        row.setdefault("detail", {})["load_average"] = [round(x, 2) for x in load]
    return rows


def run() -> list[dict[str, Any]]:
    """Every Redis group benchmark; rows for benchmarks/__main__."""
    return asyncio.run(run_async())


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    print_table(run())
