"""A real Kamailio (Debian 5.6) on random loopback ports, from tests/support/kamailio.cfg.

    kam = Kamailio(workdir)          # picks free ports
    kam.start()                      # waits until the WebSocket port accepts (about 0.2 s)
    kam.sip_info("101")              # camelCase sipInfo dict for webphone
    kam.bindings("101")              # usrloc contacts of an AoR, via kamcmd
    kam.pause(); kam.resume()        # SIGSTOP/SIGCONT of the whole process group
    kam.stop(); kam.start()          # restart on the same ports (usrloc is memory only: empty)

Users and passwords are read from the `event_route[htable:mod-init]` block of the cfg, so the
table in the cfg is the single source of truth (`USERS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .ports import HOST, free_sip_port, free_tcp_port
from .procs import ManagedProcess, ProcessDiedError
from .wait import wait_tcp, wait_until, wait_until_sync

__all__ = ["DOMAIN", "KAMAILIO_CFG", "USERS", "Kamailio", "parse_ul_lookup"]

KAMAILIO_CFG = Path(__file__).with_name("kamailio.cfg")
DOMAIN = "sip.test"


def _read_users(cfg: Path) -> dict[str, str]:
    users = dict(re.findall(r'\$sht\(users=>(\w+)\)\s*=\s*"([^"]*)"', cfg.read_text()))
    if not users:
        raise RuntimeError(f"no users found in {cfg}")
    return users


USERS: dict[str, str] = _read_users(KAMAILIO_CFG)

# "Name: value" lines of kamcmd's pretty-printed RPC structures
_FIELD = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*):\s?(.*)$")
_INT_FIELDS = {
    "Expires",
    "CSeq",
    "Reg-Id",
    "Server-Id",
    "Tcpconn-Id",
    "Flags",
    "CFlags",
    "Methods",
    "Keepalive",
    "Last-Keepalive",
    "KA-Roundtrip",
    "Last-Modified",
    "Q",
}


def parse_ul_lookup(text: str) -> list[dict[str, Any]]:
    """Parse `kamcmd ul.lookup location <aor>` output into one dict per contact.

    Output (kamailio 5.6) when found::

        {
            AoR: alice
            Contacts: {
                Contact: {
                    Address: sip:xalice@abc.invalid;transport=ws
                    Expires: 600
                    Received: sip:127.0.0.1:35902;transport=ws
                    Instance: <urn:uuid:6a4636b0-...>
                    Reg-Id: 1
                    ...
                }
            }
        }

    and `error: 500 - AOR not found in location table` / `error: 500 - AOR has no contacts`
    (rc 0!) when there is nothing. Each dict has every raw field (original names) plus the
    normalised keys: contact (URI), instance (without <> or None), expires (int seconds left, or
    the raw string such as "permanent"), received (str or None), reg_id, call_id, cseq,
    user_agent, socket, ruid, tcpconn_id.
    """
    contacts: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    depth = 0
    contact_depth = -1
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith("{"):
            depth += 1
            if stripped.startswith("Contact:"):
                current = {}
                contact_depth = depth
            continue
        if stripped == "}":
            if current is not None and depth == contact_depth:
                contacts.append(_normalise(current))
                current = None
            depth -= 1
            continue
        if current is not None:
            m = _FIELD.match(line)
            if m:
                current[m.group(1)] = m.group(2).strip()
    return contacts


def _normalise(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(raw)
    for key in _INT_FIELDS & raw.keys():
        with contextlib.suppress(ValueError):
            out[key] = int(raw[key])
    instance = raw.get("Instance")
    instance = None if instance in (None, "", "[not set]") else instance.strip("<>")
    received = raw.get("Received")
    if received in ("", "[not set]"):
        received = None
    out.update(
        contact=raw.get("Address"),
        instance=instance,
        expires=out.get("Expires"),
        received=received,
        reg_id=out.get("Reg-Id"),
        call_id=raw.get("Call-ID"),
        cseq=out.get("CSeq"),
        user_agent=raw.get("User-Agent"),
        socket=raw.get("Socket"),
        ruid=raw.get("Ruid"),
        tcpconn_id=out.get("Tcpconn-Id"),
    )
    return out


class KamcmdError(RuntimeError):
    pass


class Kamailio:
    """One Kamailio process (start/stop/pause/resume, same ports across restarts)."""

    domain = DOMAIN
    users = USERS

    def __init__(
        self,
        workdir: str | Path,
        *,
        sip_port: int | None = None,
        ws_port: int | None = None,
        cfg: str | Path = KAMAILIO_CFG,
        name: str = "kamailio",
        defines: dict[str, str] | None = None,
    ) -> None:
        if shutil.which("kamailio") is None:
            raise FileNotFoundError("kamailio binary not found (apt install kamailio)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = Path(cfg)
        self.sip_port = sip_port or free_sip_port()
        self.ws_port = ws_port or free_tcp_port()
        # unix socket paths are limited to 107 bytes: keep the ctl socket in a short dir
        self._ctl_dir = Path(tempfile.mkdtemp(prefix="wpkam-"))
        self.ctl_path = self._ctl_dir / "ctl.sock"
        self.ctl_sock = f"unix:{self.ctl_path}"
        self.log_path = self.workdir / f"{name}.log"
        self._own_ports = sip_port is None and ws_port is None
        self._name = name
        self._defines = dict(defines or {})
        self.proc = self._make_proc()

    def _make_proc(self) -> ManagedProcess:
        argv = [
            "kamailio", "-DD", "-E", "-f", str(self.cfg), "-m", "64", "-M", "8",
            "-A", f"SIP_PORT={self.sip_port}",
            "-A", f"WS_PORT={self.ws_port}",
            "-A", f'CTL_SOCK="{self.ctl_sock}"',
        ]  # fmt: skip
        for key, value in self._defines.items():
            argv += ["-A", f"{key}={value}"]
        return ManagedProcess(self._name, argv, self.log_path)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.ws_port}"

    @property
    def outbound_proxy(self) -> str:
        return f"{HOST}:{self.ws_port}"

    @property
    def sip_uri_host(self) -> str:
        """host:port of the UDP/TCP SIP listener (what UDP peers such as baresip register to)."""
        return f"{HOST}:{self.sip_port}"

    def password(self, user: str) -> str:
        try:
            return self.users[user]
        except KeyError:
            raise KeyError(f"{user!r} is not in the kamailio.cfg user table") from None

    def sip_info(self, user: str, **overrides: Any) -> dict[str, Any]:
        """camelCase sipInfo for webphone (transport WS, no STUN)."""
        info: dict[str, Any] = {
            "username": user,
            "password": self.password(user),
            "authorizationId": user,
            "domain": self.domain,
            "outboundProxy": self.outbound_proxy,
            "transport": "WS",
            "stunServers": [],
        }
        info.update(overrides)
        return info

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0, attempts: int = 3) -> None:
        """Start and wait until the WebSocket port accepts (fails with the log tail).

        If a port chosen by this object was taken in the meantime (first start only), new
        ports are picked and the start retried; restarts always keep their ports."""
        for attempt in range(attempts):
            if self.ctl_path.exists():
                self.ctl_path.unlink()  # stale socket from a SIGKILLed run
            first = self.proc.started_at is None
            self.proc.start()
            try:
                wait_tcp(HOST, self.ws_port, timeout, alive=lambda: self.proc.running)
                wait_until_sync(self.ctl_path.exists, timeout, message="kamailio ctl socket")
                self.proc.check_alive()  # the WS port may have been someone else's listener
                return
            except (RuntimeError, TimeoutError) as exc:
                tail = self.proc.log_tail(40)
                self.proc.stop()
                if (
                    first
                    and self._own_ports
                    and attempt + 1 < attempts
                    and "Address already in use" in tail
                ):
                    self.sip_port, self.ws_port = free_sip_port(), free_tcp_port()
                    self.proc = self._make_proc()
                    continue
                raise ProcessDiedError(
                    f"kamailio did not come up on {self.ws_url}: {exc}\n"
                    f"--- {self.log_path}:\n{tail}"
                ) from exc

    def stop(self) -> int | None:
        return self.proc.stop()

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP every Kamailio process: sockets stay open, nothing is answered."""
        self.proc.pause()

    def resume(self) -> None:
        self.proc.resume()

    async def astart(self, timeout: float = 10.0) -> None:
        """`start()` in a thread, for use inside a running event loop."""
        await asyncio.to_thread(self.start, timeout)

    async def astop(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    @property
    def running(self) -> bool:
        return self.proc.running

    @property
    def paused(self) -> bool:
        return self.proc.paused

    def close(self) -> None:
        """Stop and remove the ctl socket directory."""
        self.stop()
        shutil.rmtree(self._ctl_dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        return self.proc.log_tail(lines)

    # -- usrloc ------------------------------------------------------------------------------

    def kamcmd(self, *args: str, timeout: float = 5.0) -> str:
        """Run `kamcmd -s <ctl> args...`; returns stdout. Raises KamcmdError when kamcmd fails
        to talk to Kamailio (non-zero exit). RPC errors come back as rc 0 with `error: ...`."""
        if self.proc.paused:
            raise KamcmdError("kamailio is paused (SIGSTOP): kamcmd would hang")
        res = subprocess.run(
            ["kamcmd", "-s", self.ctl_sock, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if res.returncode != 0:
            raise KamcmdError(
                f"kamcmd {' '.join(args)} failed rc={res.returncode}: {res.stderr or res.stdout}"
            )
        return res.stdout

    def bindings(self, user: str) -> list[dict[str, Any]]:
        """The usrloc contacts of `user` ([] if none); see `parse_ul_lookup` for the keys."""
        # "s:" forces a string: kamcmd would send a numeric AoR such as 101 as an int and
        # Kamailio would answer "500 - Not enough parameters"
        out = self.kamcmd("ul.lookup", "location", f"s:{user}")
        if out.lstrip().lower().startswith("error:"):
            if "not found" in out or "no contacts" in out:
                return []
            raise KamcmdError(f"ul.lookup location {user}: {out.strip()}")
        return parse_ul_lookup(out)

    def clear_bindings(self, user: str) -> None:
        """Delete every binding of `user` (`kamcmd ul.rm location <user>`)."""
        out = self.kamcmd("ul.rm", "location", f"s:{user}")
        if out.strip() and "not found" not in out.lower():
            raise KamcmdError(f"ul.rm location {user}: {out.strip()}")

    def dump(self) -> str:
        """Raw `ul.dump` output (for debugging)."""
        return self.kamcmd("ul.dump")

    async def wait_bindings(
        self, user: str, count: int, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Await until `user` has exactly `count` bindings; returns them."""
        result: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal result
            result = self.bindings(user)
            return len(result) == count

        try:
            await wait_until(check, timeout, 0.02)
        except TimeoutError:
            raise TimeoutError(
                f"{user} has {len(result)} binding(s), expected {count} after {timeout} s: "
                f"{[b['contact'] for b in result]}"
            ) from None
        return result

    def __repr__(self) -> str:
        return f"<Kamailio {self.ws_url} sip={self.sip_port} {'up' if self.running else 'down'}>"
