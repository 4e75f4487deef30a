"""A network namespace of the test's own, for media with peers that shun loopback (root only).

    ns = Netns.create()                   # ip netns add + a veth pair 10.77.K.1/30 <-> .2/30
    ns.outer_address, ns.inner_address    # our side (this namespace) / the namespace's side
    ns.argv(["baresip", ...])             # ["ip", "netns", "exec", ns.name, "baresip", ...]
    ns.delete()                           # the namespace and both veth ends are gone

Only addresses on the veth pair, inside the namespace this helper made and on our own end of
the pair, are used; the namespace gets no default route, so nothing in it can reach any
other address. `unavailable()` says why namespaces cannot be made here (not root, no `ip`,
`ip netns add` refused), for a skip or, under CI, a failure.

Also here: `kamailio_cfg_listening_on()` (tests/support/kamailio.cfg plus a UDP listener on our
veth end, so a peer in the namespace can register) and `NetnsBaresip` (baresip run inside the
namespace with its SIP, RTP and ctrl_tcp on the namespace's address).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .baresip import Baresip
from .kamailio import KAMAILIO_CFG
from .ports import HOST
from .procs import ManagedProcess, ProcessDiedError
from .wait import wait_until

__all__ = ["Netns", "NetnsBaresip", "NetnsError", "kamailio_cfg_listening_on", "unavailable"]

PREFIX = "wpt"  # names: wpt<pid>n<k> (namespace), wpt<k>a / wpt<k>b (veth ends)


class NetnsError(RuntimeError):
    """An `ip` command failed while setting up or tearing down a namespace."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def unavailable() -> str | None:
    """Why this process cannot make network namespaces, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "`ip` not found (apt-get install iproute2)"
    probe = f"{PREFIX}{os.getpid()}probe"
    try:
        added = _ip("netns", "add", probe, check=False)
        if added.returncode != 0:
            return f"`ip netns add` refused: {added.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _stale_namespaces() -> list[str]:
    """Namespaces of ours whose test process is gone (a killed run never tore down)."""
    listed = _ip("netns", "list", check=False).stdout
    stale = []
    for name in re.findall(rf"^({PREFIX}(\d+)n\d+)\b", listed, re.MULTILINE):
        pid = int(name[1])
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            stale.append(name[0])
    return stale


class Netns:
    """One namespace joined to ours by a veth pair (10.77.K.0/30: .1 here, .2 inside)."""

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.outer_if = f"{PREFIX}{index}a"
        self.inner_if = f"{PREFIX}{index}b"
        self.outer_address = f"10.77.{index}.1"
        self.inner_address = f"10.77.{index}.2"
        self.prefix = 30

    @property
    def outer_network(self) -> str:
        """Our end with its prefix ("10.77.K.1/30"): what `MediaSession(ice_networks=...)` takes."""
        return f"{self.outer_address}/{self.prefix}"

    @classmethod
    def create(cls, attempts: int = 5) -> Netns:
        """Make the namespace and the veth pair, or raise `NetnsError` (nothing left behind)."""
        for name in _stale_namespaces():
            _ip("netns", "del", name, check=False)
        last: Exception | None = None
        for _ in range(attempts):
            index = random.randrange(1, 255)
            ns = cls(f"{PREFIX}{os.getpid()}n{index}", index)
            if _ip("link", "show", ns.outer_if, check=False).returncode == 0:
                continue  # taken by a concurrent run
            try:
                ns._setup()
                return ns
            except NetnsError as exc:
                last = exc
                ns.delete()
        raise NetnsError(f"could not create a test network namespace: {last}")

    def _setup(self) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.outer_if, "type", "veth", "peer", "name", self.inner_if)
        _ip("link", "set", self.inner_if, "netns", self.name)
        _ip("addr", "add", f"{self.outer_address}/{self.prefix}", "dev", self.outer_if)
        _ip("link", "set", self.outer_if, "up")
        inner = ("-n", self.name)
        _ip(*inner, "addr", "add", f"{self.inner_address}/{self.prefix}", "dev", self.inner_if)
        _ip(*inner, "link", "set", self.inner_if, "up")
        _ip(*inner, "link", "set", "lo", "up")

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def delete(self) -> None:
        """Remove the namespace (its veth end goes with it, and so does ours). Idempotent."""
        _ip("link", "del", self.outer_if, check=False)
        _ip("netns", "del", self.name, check=False)

    @property
    def exists(self) -> bool:
        return self.name in _ip("netns", "list", check=False).stdout.split()

    def __repr__(self) -> str:
        return f"<Netns {self.name} {self.outer_address} <-> {self.inner_address}>"


def kamailio_cfg_listening_on(address: str, directory: Path) -> Path:
    """A copy of tests/support/kamailio.cfg that also takes UDP SIP on `address` (our veth end).

    `mhomed=1` makes Kamailio pick the socket by route, so requests to the namespace leave from
    `address` and requests to 127.0.0.1 from loopback.
    """
    text = KAMAILIO_CFG.read_text()
    anchor = "listen=tcp:127.0.0.1:WS_PORT\n"
    if anchor not in text:
        raise RuntimeError(f"{KAMAILIO_CFG} changed: no {anchor.strip()!r} line to extend")
    text = text.replace(anchor, f"{anchor}listen=udp:{address}:SIP_PORT\nmhomed=1\n")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kamailio-netns.cfg"
    path.write_text(text)
    return path


class NetnsBaresip(Baresip):
    """`support.baresip.Baresip` inside `netns`: SIP, RTP, ICE and ctrl_tcp on its address.

    `registrar` must be reachable from the namespace (our veth end, see
    `kamailio_cfg_listening_on`)."""

    def __init__(self, netns: Netns, workdir: str | Path, user: str, password: str,
                 **kwargs: Any) -> None:
        super().__init__(workdir, user, password, **kwargs)
        self.netns = netns
        self.host = netns.inner_address
        config = self.confdir / "config"
        config.write_text(config.read_text().replace(HOST, self.host))
        self.proc = ManagedProcess(
            self.name, netns.argv(self.proc.argv), self.log_path, env=self.proc.env,
            stop_sequence=self.proc.stop_sequence,
        )

    @property
    def contact_uri(self) -> str:
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    async def start(self, timeout: float = 10.0) -> None:
        """Start baresip in the namespace and connect to its ctrl_tcp across the veth pair."""
        self._new_event = asyncio.Event()
        self._closed_exc = None
        self.proc.start()

        async def connect() -> bool:
            self.proc.check_alive()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.ctrl_port)
            return True

        try:
            await wait_until(connect, timeout, 0.02, f"{self.name} ctrl_tcp on {self.host}")
        except TimeoutError as exc:
            tail = self.proc.log_tail(30)
            await asyncio.to_thread(self.proc.stop)
            raise ProcessDiedError(f"{self.name} did not start: {exc}\n{tail}") from exc
        self._read_task = asyncio.create_task(self._read_loop(), name=f"{self.name}-ctrl")

    async def stop(self) -> int | None:
        with contextlib.suppress(Exception):
            return await super().stop()
        return await asyncio.to_thread(self.proc.stop)
