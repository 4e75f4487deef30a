"""Managed subprocesses for test servers and peers.

- stdout and stderr go to one log file per process (appended across restarts);
- the `Popen` is kept and always waited for (PID 1 in the sandbox reaps orphans late, so a
  double-forked/detached child would linger as <defunct>: never daemonise, never double-fork);
- stop = the configured signal sequence (default SIGTERM, wait 5 s) then SIGKILL, each followed
  by `wait()`; a paused (SIGSTOPped) process is continued first so it can act on SIGTERM;
- each process gets its own session/process group (`group=True`, the default): stop signals go
  to the PID we started (Kamailio's main process stops its own workers), while pause/resume
  (SIGSTOP/SIGCONT) and the final SIGKILL go to the whole group we created, because Kamailio's
  SIP work happens in its worker processes, so stopping only the main PID would freeze nothing;
- every process started in the session is registered so conftest can attach the log tails of
  those involved in a failing test to the pytest report (`log_tails_since`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ManagedProcess", "ProcessDiedError", "child_logging", "log_tails_since"]

def child_logging(tag: str) -> None:
    """Logging of a test's child process (a far party, a callers' process): INFO to stderr,
    each line with `tag[pid]`, aioice's per-candidate chatter left out."""
    import logging
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {tag}[{os.getpid()}] %(name)s %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)


DEFAULT_STOP: tuple[tuple[int, float], ...] = ((signal.SIGTERM, 5.0),)


class ProcessDiedError(RuntimeError):
    """A managed process exited when it should be running (message includes its log tail)."""


class ManagedProcess:
    """One external process, started and stopped by a test fixture.

    `stop_sequence` is a list of (signal, seconds to wait for exit) tried in order; SIGKILL
    follows if the process is still alive. `start()` may be called again after `stop()`.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stop_sequence: Sequence[tuple[int, float]] = DEFAULT_STOP,
        group: bool = True,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_sequence = tuple(stop_sequence)
        self.group = group
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        _REGISTRY.add(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {self.argv}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.group,
            )
        self.paused = False
        self.started_at = time.monotonic()
        self.stopped_at = None

    def stop(self) -> int | None:
        """Stop (signal sequence, then SIGKILL) and reap. Idempotent. Returns the exit code."""
        p = self.popen
        if p is None:
            return None
        try:
            if p.poll() is None:
                for sig, wait_s in self.stop_sequence:
                    if p.poll() is not None:
                        break
                    try:
                        self._signal(sig)
                    except ProcessDiedError:
                        break
                    if self.paused:
                        self._signal(signal.SIGCONT, group=True)
                        self.paused = False
                    try:
                        p.wait(wait_s)
                    except subprocess.TimeoutExpired:
                        continue
                if p.poll() is None:
                    self._signal(signal.SIGKILL, group=True)
            p.wait(10)
            self._kill_group_leftovers()
        finally:
            self.paused = False
            if self.stopped_at is None:
                self.stopped_at = time.monotonic()
        return p.returncode

    def pause(self) -> None:
        """SIGSTOP the process and (with group=True) all its children; sockets stay open."""
        self._signal(signal.SIGSTOP, group=True)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        self._signal(signal.SIGCONT, group=True)
        self.paused = False

    def send_signal(self, sig: int, *, group: bool = False) -> None:
        """Signal the main PID (or, with group=True, its whole process group)."""
        self._signal(sig, group=group)

    def _signal(self, sig: int, *, group: bool = False) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            raise ProcessDiedError(f"{self.name} is not running{self._tail_suffix()}")
        if group and self.group:
            os.killpg(p.pid, sig)  # the group we created with start_new_session
        else:
            p.send_signal(sig)

    def _kill_group_leftovers(self) -> None:
        # after the leader is reaped, children it failed to stop (only possible after SIGKILL
        # of the leader) still carry its pgid
        if self.group and self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def check_alive(self) -> None:
        """Raise `ProcessDiedError` (with the log tail) if the process has exited."""
        if not self.running:
            raise ProcessDiedError(
                f"{self.name} exited with {self.returncode}{self._tail_suffix()}"
            )

    def log_tail(self, lines: int = 60, max_bytes: int = 64 * 1024) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                data = f.read()
        except OSError as exc:
            return f"<no log: {exc}>"
        text = data.decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def _tail_suffix(self) -> str:
        return f"; log {self.log_path} ends with:\n{self.log_tail(30)}"

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.running else "stopped")
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"


_REGISTRY: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


def log_tails_since(t: float, lines: int = 40) -> list[tuple[str, str]]:
    """(title, tail) of every process that was running at some point after monotonic time t."""
    out = []
    for proc in sorted(_REGISTRY, key=lambda p: p.started_at or 0.0):
        if proc.started_at is None:
            continue
        if proc.stopped_at is not None and proc.stopped_at < t:
            continue
        out.append((f"{proc.name} log ({proc.log_path})", proc.log_tail(lines)))
    return out


@atexit.register
def _kill_leftovers() -> None:  # safety net if a fixture's teardown never ran
    for proc in list(_REGISTRY):
        if proc.running:
            try:
                proc.stop_sequence = ((signal.SIGKILL, 5.0),)
                proc.stop()
            except Exception:
                pass
