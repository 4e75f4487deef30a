"""Redis that fails over, on 127.0.0.1 free ports: a Sentinel set and a Redis Cluster.

    s = SentinelSet(workdir); s.start()      # a primary, a replica, three sentinels
    s.url                                    # "redis+sentinel://127.0.0.1:P1,.../webphone"
    old = s.primary(); old.kill()            # SIGKILL; the sentinels promote the replica
    new = s.wait_new_primary(old, 10)        # the promoted node (ROLE master, sentinels agree)
    s.rejoin(old)                            # restarted as a replica of the new primary

    c = ClusterSet(workdir); c.start()       # 3 primaries + 3 replicas (redis-cli --cluster)
    c.url                                    # "redis+cluster://127.0.0.1:P1,..."
    node = c.primary_for(key); node.kill()
    new = c.wait_new_primary(key, node, 10); c.rejoin(node)

Short timings so that a failover takes about a second: sentinels `down-after-milliseconds`
500 and `failover-timeout` 2000; cluster `cluster-node-timeout` 500. Replicas sync diskless
without delay. No persistence: a killed node comes back empty and is re-synchronised by its
new primary (`rejoin`), as a supervisor (systemd, k8s) restarting it would do. Sentinel mode is
``redis-server --sentinel`` (the Debian package redis-sentinel only adds a service unit).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from .ports import HOST, free_tcp_port
from .procs import ManagedProcess, ProcessDiedError
from .redis_server import redis_ping
from .wait import wait_until_sync

__all__ = ["ClusterSet", "RedisNode", "SentinelSet", "require_redis_tools", "wait_old_enough"]

SERVICE = "webphone"
_COMMON = ["--bind", HOST, "--protected-mode", "yes", "--save", "", "--appendonly", "no",
           "--daemonize", "no", "--loglevel", "notice", "--repl-diskless-sync", "yes",
           "--repl-diskless-sync-delay", "0", "--repl-diskless-load", "disabled"]


class RedisNode:
    """One redis-server (or sentinel) process on a fixed port; restartable on that port."""

    def __init__(self, workdir: Path, name: str, port: int, args: list[str]) -> None:
        self.workdir, self.name, self.port, self.args = workdir, name, port, args
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess(name, ["redis-server", *args], workdir / f"{name}.log",
                                   cwd=workdir)

    @property
    def addr(self) -> tuple[str, int]:
        return HOST, self.port

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(HOST, self.port, socket_timeout=timeout, socket_connect_timeout=timeout)

    def start(self, timeout: float = 10.0) -> None:
        self.proc.start()

        def ready() -> bool:
            self.proc.check_alive()
            return redis_ping(HOST, self.port)

        try:
            wait_until_sync(ready, timeout, 0.005, f"{self.name} PING on {self.port}")
        except TimeoutError as exc:
            raise ProcessDiedError(f"{self.name} did not start: {exc}\n"
                                   f"{self.proc.log_tail(20)}") from exc

    def kill(self) -> None:
        """SIGKILL (a crash), then reap."""
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.stop()

    def stop(self) -> None:
        self.proc.stop()

    def role(self) -> str:
        """"master", "slave" or "sentinel" (ROLE); "down" when it does not answer."""
        try:
            with self.client(0.5) as c:
                return str(_s(c.execute_command("ROLE")[0]))
        except (redis.RedisError, OSError):
            return "down"

    def uptime(self) -> float:
        with self.client() as c:
            return float(c.info("server")["uptime_in_seconds"])

    def __repr__(self) -> str:
        return f"<RedisNode {self.name} {self.port}>"


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def require_redis_tools() -> None:
    """Skip the test when redis-server or redis-cli is missing (fail under CI=true)."""
    import os

    import pytest

    for binary, package in (("redis-server", "redis-server"), ("redis-cli", "redis-tools")):
        if shutil.which(binary) is None:
            reason = f"{binary!r} not found on PATH (apt-get install {package})"
            if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
                pytest.fail(f"CI=true and {reason}", pytrace=False)
            pytest.skip(reason)


def _require_redis() -> None:
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            raise FileNotFoundError(f"{binary} not found (apt install redis-server redis-tools)")


class SentinelSet:
    """A primary, one replica and three sentinels monitoring them as service "webphone"."""

    def __init__(self, workdir: str | Path, *, down_after_ms: int = 500,
                 failover_timeout_ms: int = 2000) -> None:
        _require_redis()
        self.workdir = Path(workdir)
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        port = free_tcp_port()
        primary = RedisNode(self.workdir / "r0", "redis-0", port, self._args(port))
        port = free_tcp_port()
        self.nodes = [primary, RedisNode(self.workdir / "r1", "redis-1", port,
                                         self._args(port, primary))]
        self.sentinels: list[RedisNode] = []

    @staticmethod
    def _args(port: int, replica_of: RedisNode | None = None) -> list[str]:
        args = ["--port", str(port), *_COMMON, "--dir", "."]
        if replica_of is not None:
            args += ["--replicaof", HOST, str(replica_of.port)]
        return args

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        primary = self.nodes[0]
        for i in range(3):
            port = free_tcp_port()
            workdir = self.workdir / f"s{i}"
            workdir.mkdir(parents=True, exist_ok=True)
            conf = workdir / "sentinel.conf"
            conf.write_text("\n".join([
                f"port {port}", f"bind {HOST}", f"dir {workdir}",
                f"sentinel monitor {SERVICE} {HOST} {primary.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {SERVICE} 1", ""]))
            sentinel = RedisNode(workdir, f"sentinel-{i}", port, [str(conf), "--sentinel"])
            sentinel.start()
            self.sentinels.append(sentinel)
        wait_until_sync(self._settled, 15, 0.05, "sentinels see the primary and its replica")

    def _settled(self) -> bool:
        with self.sentinels[0].client() as c:
            replicas = c.execute_command("SENTINEL", "REPLICAS", SERVICE)
            sentinels = c.execute_command("SENTINEL", "SENTINELS", SERVICE)
        return len(replicas) >= 1 and len(sentinels) >= 2 and self.nodes[1].role() == "slave" \
            and _synced(self.nodes[1])

    def master_addr(self) -> tuple[str, int] | None:
        """Where the sentinels (the majority that answers first) say the primary is."""
        answers: dict[tuple[str, int], int] = {}
        for s in self.sentinels:
            try:
                with s.client(0.5) as c:
                    host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                                   SERVICE)
                addr = (_s(host), int(port))
                answers[addr] = answers.get(addr, 0) + 1
            except (redis.RedisError, OSError, TypeError, ValueError):
                continue
        best = max(answers.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best is not None and best[1] >= 2 else None

    def primary(self) -> RedisNode:
        addr = self.master_addr()
        return next(n for n in self.nodes if n.addr == addr)

    def wait_new_primary(self, old: RedisNode, timeout: float = 15.0) -> RedisNode:
        """The node the sentinels promoted after `old` failed (ROLE master, majority agrees)."""
        def promoted() -> RedisNode | None:
            addr = self.master_addr()
            node = next((n for n in self.nodes if n.addr == addr and n is not old), None)
            return node if node is not None and node.role() == "master" else None

        found: RedisNode = wait_until_sync(promoted, timeout, 0.02, "a promoted primary")
        return found

    def rejoin(self, node: RedisNode, timeout: float = 30.0) -> None:
        """Restart a killed node as a replica of the current primary and wait until it is in
        sync (a supervisor restarting it; the sentinels would reconfigure it the same way)."""
        new = self.primary()
        node.args = self._args(node.port, new)
        node.proc = ManagedProcess(node.name, ["redis-server", *node.args],
                                   node.workdir / f"{node.name}.log", cwd=node.workdir)
        node.start()
        wait_until_sync(lambda: _synced(node), timeout, 0.02, f"{node.name} in sync")

    def wait_known(self, node: RedisNode, timeout: float = 30.0) -> bool:
        """Wait until the sentinels count `node` as a replica again (a candidate for the next
        failover); False if they did not within `timeout` (then the next failover may need
        Sentinel's retry after 2 x failover-timeout)."""
        try:
            wait_until_sync(lambda: self._knows_replica(node), timeout, 0.1,
                            f"{node.name} known to the sentinels")
        except TimeoutError:
            return False
        return True

    def _knows_replica(self, node: RedisNode) -> bool:
        """A majority of the sentinels lists `node` as a healthy replica: a candidate for the
        next failover (sentinels learn about replicas from INFO, every 10 s when calm; one of
        them may keep a stale view for longer, and then the next failover may need a retry)."""
        healthy = 0
        for sentinel in self.sentinels:
            with sentinel.client() as c:
                replicas = c.execute_command("SENTINEL", "REPLICAS", SERVICE)
            fields = [r if isinstance(r, dict) else dict(zip(r[::2], r[1::2], strict=True))
                      for r in replicas]
            healthy += any(int(_s(f.get(b"port", b"0"))) == node.port
                           and _s(f.get(b"flags")) == "slave"
                           and _s(f.get(b"master-link-status")) == "ok" for f in fields)
        return healthy >= 2

    def close(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()


def _synced(replica: RedisNode) -> bool:
    try:
        with replica.client(0.5) as c:
            info = c.info("replication")
    except (redis.RedisError, OSError):
        return False
    return info.get("role") == "slave" and info.get("master_link_status") == "up" \
        and not info.get("master_sync_in_progress")


class ClusterSet:
    """Six cluster nodes: three primaries with one replica each (`redis-cli --cluster create
    ... --cluster-replicas 1`)."""

    def __init__(self, workdir: str | Path, *, node_timeout_ms: int = 500) -> None:
        _require_redis()
        self.workdir = Path(workdir)
        self.nodes: list[RedisNode] = []
        for i in range(6):
            port, bus = free_tcp_port(), free_tcp_port()
            args = ["--port", str(port), *_COMMON, "--dir", ".", "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus),
                    "--cluster-node-timeout", str(node_timeout_ms)]
            self.nodes.append(RedisNode(self.workdir / f"c{i}", f"cluster-{i}", port, args))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"{HOST}:{n.port}" for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
        wait_until_sync(self._healthy, 20, 0.05, "cluster state ok, every replica in sync")

    def _healthy(self) -> bool:
        for node in self.nodes:
            if node.proc.running:
                with node.client() as c:
                    if "cluster_state:ok" not in _s(c.execute_command("CLUSTER", "INFO")):
                        return False
        replicas = [n for n in self.nodes if n.proc.running and n.role() == "slave"]
        return len(replicas) == 3 and all(_synced(n) for n in replicas)

    def _slots(self) -> list[Any]:
        for node in self.nodes:
            if node.proc.running:
                try:
                    with node.client(0.5) as c:
                        return list(c.execute_command("CLUSTER", "SLOTS"))
                except (redis.RedisError, OSError):
                    continue
        return []

    def primary_for(self, key: str) -> RedisNode:
        """The node that serves `key`'s slot (as a running node sees it)."""
        slot = key_slot(key.encode())
        for start, end, primary, *_ in self._slots():
            if int(start) <= slot <= int(end):
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise LookupError(f"no node serves slot {slot}")

    def wait_new_primary(self, key: str, old: RedisNode, timeout: float = 15.0) -> RedisNode:
        """The replica promoted for `key`'s slot once `old` failed (ROLE master)."""
        def promoted() -> RedisNode | None:
            try:
                node = self.primary_for(key)
            except LookupError:
                return None
            return node if node is not old and node.role() == "master" else None

        found: RedisNode = wait_until_sync(promoted, timeout, 0.02, "a promoted primary")
        return found

    def rejoin(self, node: RedisNode, timeout: float = 20.0) -> None:
        """Restart a killed node (same port, same nodes.conf): it rejoins as a replica of the
        node that replaced it; wait until the cluster is healthy again."""
        node.start()
        wait_until_sync(self._healthy, timeout, 0.05, f"{node.name} back as a replica")

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


def wait_old_enough(nodes: list[RedisNode], seconds: float, timeout: float = 15.0) -> None:
    """Every node up for `seconds` (a younger one grants no new lease: the restart grace)."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        wait_until_sync(lambda n=node: n.uptime() >= seconds,
                        max(0.1, deadline - time.monotonic()), 0.05, f"{node.name} uptime")
