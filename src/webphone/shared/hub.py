"""The hub: one per group, the coordinator (`coordinator.py`) in a thin asyncio shell.

The hub is what the browser's SharedWorker is to tabs. `Hub` is transport-neutral: a transport
hands it one `HubPeer` per member connection and the bytes of every frame, and the hub feeds them
to the pure `Coordinator`, performs its effects (write a frame, close a connection) and runs its
timers at `next_deadline()`. Two shells use it:

* `run_local_hub()` / ``python -m webphone.shared.hub``: its own process, serving a Unix socket
  in the private runtime directory (see `transports/local.py`). Started on demand by the first
  member (`subprocess`, a new session, never a fork of the member), so no member's crash takes it
  down. Exactly one per group: the hub holds an exclusive `flock` on the group's lock file for its
  whole life (the kernel drops it when the hub dies, so a stale socket file is recognised by a
  free lock and replaced). It exits by itself when the group has been empty for `idle_timeout`,
  and on SIGTERM/SIGINT, unlinking its socket first.
* the memory transport runs a `Hub` object inside the members' own event loop.

A connection's first frame may be `members_query` instead of `hello`: that is a status probe
(``webphone status``). It is answered with `members` and closed, and never becomes a member.
A connection that sends nothing is closed after `hello_timeout`, like one that sends no hello.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from webphone.errors import GroupProtocolError
from webphone.shared.coordinator import Close, Coordinator, Effect, MemberState, Send
from webphone.shared.protocol import (
    Action,
    ActionAccepted,
    ActionResult,
    Continuity,
    DelegateResult,
    Frame,
    Heartbeat,
    Members,
    MembersQuery,
    Registered,
    Snapshot,
    decode_frame,
)
from webphone.shared.transports.base import HubOptions

__all__ = ["Hub", "HubPeer", "main", "run_local_hub"]

log = logging.getLogger("webphone.shared.hub")

#: `action_accepted` is information for the caller (its outcome comes as `action_result`), so the
#: hub holds it back this long, or until the next frame to that member, and sends both in one
#: write: one wake-up of the caller per action instead of two
ACCEPTED_DELAY = 0.05
#: frames after which the timers need no new look: they never bring a deadline closer
_NO_NEW_DEADLINE = (Heartbeat, Snapshot, ActionResult, Registered, MembersQuery, Continuity,
                    DelegateResult)

#: a member whose unread output passes this is stuck (stopped, or not reading): it is dropped so
#: that it cannot make the hub grow without bound; a dropped real is replaced at once
MAX_PEER_BUFFER = 8 * 1024 * 1024


class HubPeer(Protocol):
    """The hub's side of one member connection."""

    def send(self, *frames: Frame) -> bool:
        """Queue frames, in order, with one write (the transport encodes and frames them;
        encodings are cached on the frame, so a fan-out of one snapshot encodes it once).
        False when the connection had already failed: the frames never reach the member."""

    def buffered(self) -> int:
        """Bytes queued and not yet taken by the member."""

    def close(self) -> None:
        """Close after flushing what was queued; the transport then reports `Hub.lost`."""


class Hub:
    """A coordinator shell for one group, driven by a transport (see the module docstring)."""

    def __init__(
        self,
        group: str,
        options: HubOptions | None = None,
        *,
        on_idle: Callable[[], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.group = group
        self.options = options or HubOptions()
        self._clock = clock or time.monotonic
        o = self.options
        self.coordinator = Coordinator(
            group,
            now=self._clock(),
            heartbeat_interval=o.heartbeat_interval,
            heartbeat_timeout=o.heartbeat_timeout,
            handover_timeout=o.handover_timeout,
            hello_timeout=o.hello_timeout,
            rejoin_grace=o.rejoin_grace,
        )
        self._peers: dict[str, HubPeer] = {}
        self._joined: set[str] = set()  # connections the coordinator knows
        self._ids = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._on_idle = on_idle
        self._held: dict[str, list[Frame]] = {}  # conn -> action_accepted frames held back
        self._held_flush: asyncio.TimerHandle | None = None
        self.closed = False
        self._arm_idle()

    # -- transport-facing ------------------------------------------------------------------------

    def open(self, peer: HubPeer) -> str:
        """A member connected; returns the connection id to pass to `frame`/`lost`."""
        self._ids += 1
        conn = f"c{self._ids}"
        self._peers[conn] = peer
        self._cancel_idle()
        # Known to the coordinator from the start, so that its hello timeout closes a
        # connection that never sends a frame (it used to be kept for ever).
        self._joined.add(conn)
        self._run(self.coordinator.connection_made(conn, self._clock()))
        return conn

    def frame(self, conn: str, data: bytes) -> None:
        """The bytes of one frame arrived on `conn`."""
        if conn not in self._peers:
            return
        now = self._clock()
        try:
            frame: Frame | None = decode_frame(data)
        except GroupProtocolError:
            frame = None
        if isinstance(frame, MembersQuery) and \
                self.coordinator.state_of(conn) is MemberState.PENDING:
            # a status probe (a first frame that is not hello): answer, never join
            self._peers[conn].send(Members(self.coordinator.members()))
            self._peers[conn].close()
            return
        try:
            if frame is None:
                effects = self.coordinator.data_received(conn, data, now)  # -> protocol error
                quiet = False
            else:
                quiet = isinstance(frame, _NO_NEW_DEADLINE) and self._timer is not None
                effects = self.coordinator.frame_received(conn, frame, now)
        except Exception:
            # A bug reached through one member's frame costs that member its connection,
            # never the hub and the rest of the group.
            log.exception("frame from %s could not be handled; disconnecting it", conn)
            self._peers[conn].close()
            return
        self._run(effects, reschedule=not quiet)

    def lost(self, conn: str) -> None:
        """`conn` ended (EOF, reset, or closed by us). A lost real is replaced at once."""
        if self._peers.pop(conn, None) is None:
            return
        self._held.pop(conn, None)
        if conn in self._joined:
            self._joined.discard(conn)
            self._run(self.coordinator.connection_lost(conn, self._clock()))
        if not self._peers:
            self._arm_idle()

    def close(self) -> None:
        """Stop timers and close every connection (the hub is going away)."""
        self.closed = True
        for handle in (self._timer, self._idle, self._held_flush):
            if handle is not None:
                handle.cancel()
        for peer in list(self._peers.values()):
            peer.close()

    @property
    def connections(self) -> int:
        """Open connections (members and probes)."""
        return len(self._peers)

    # -- effects and timers ----------------------------------------------------------------------

    def _run(self, effects: list[Effect], *, reschedule: bool = True) -> None:
        for effect in effects:
            peer = self._peers.get(effect.conn)
            if peer is None:
                continue
            if isinstance(effect, Send):
                if isinstance(effect.frame, ActionAccepted):
                    self._hold(effect.conn, effect.frame)
                    continue
                held = self._held.pop(effect.conn, ())
                if not peer.send(*held, effect.frame) and isinstance(effect.frame, Action):
                    # The real's connection had failed: it never got the action, so it waits
                    # for the next real instead of ending interrupted when the loss is seen.
                    self._run(self.coordinator.action_undelivered(
                        effect.conn, effect.frame.action_id, self._clock()), reschedule=False)
                    continue
                if peer.buffered() > MAX_PEER_BUFFER:
                    log.warning("dropping %s: %d bytes unread", effect.conn, peer.buffered())
                    peer.close()
            elif isinstance(effect, Close):
                log.info("closing %s: %s", effect.conn, effect.reason)
                held = self._held.pop(effect.conn, ())
                if held:
                    peer.send(*held)
                peer.close()
        if reschedule:
            self._schedule()

    def _hold(self, conn: str, frame: Frame) -> None:
        self._held.setdefault(conn, []).append(frame)
        if self._held_flush is None:
            loop = asyncio.get_running_loop()
            self._held_flush = loop.call_later(ACCEPTED_DELAY, self._flush_held)

    def _flush_held(self) -> None:
        self._held_flush = None
        held, self._held = self._held, {}
        for conn, frames in held.items():
            peer = self._peers.get(conn)
            if peer is not None:
                peer.send(*frames)

    def _schedule(self) -> None:
        """Arm the timer for the coordinator's next deadline. A timer that fires early is
        harmless (the tick re-arms it), so one already armed earlier than needed is kept."""
        if self.closed:
            return
        deadline = self.coordinator.next_deadline()
        if self._timer is not None and (deadline is None or (
                self._timer_at is not None and self._timer_at <= deadline)):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - self._clock())
            self._timer = loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = self._timer_at = None
        self._run(self.coordinator.tick(self._clock()))

    def _arm_idle(self) -> None:
        if self._on_idle is None or self.closed or self._idle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._idle = loop.call_later(self.options.idle_timeout, self._idle_fired)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_fired(self) -> None:
        self._idle = None
        if not self._peers and self._on_idle is not None and not self.closed:
            self._on_idle()


# -- the local hub process -------------------------------------------------------------------------


def _serving(path: Path) -> bool:
    """True if something accepts connections on the Unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def _try_lock(path: Path, sock: Path, wait: float) -> int | None:
    """An exclusive flock on `path` (fd). If another hub holds it and serves `sock`, give up at
    once; if it holds it but does not serve (it is exiting), wait up to `wait` s."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline or _serving(sock):
                os.close(fd)
                return None
            time.sleep(0.01)  # a hub that is shutting down releases within milliseconds


def _inherited_lock(fd: int, path: Path) -> int | None:
    """The lock file descriptor handed over by the member that started us, if it is that file
    and (still) locked by us."""
    try:
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: succeeds at once
    except OSError:
        return None
    os.set_inheritable(fd, False)
    return fd


async def run_local_hub(group: str, runtime_dir: Path, options: HubOptions,
                        lock_fd: int | None = None) -> int:
    """Serve `group` on its Unix socket until idle or signalled. Returns the exit status
    (0 also when another hub already serves the group). `lock_fd`: the group's lock file,
    already locked by the member that started this hub."""
    from webphone.shared.transports import local

    local.check_runtime_dir(runtime_dir)
    paths = local.group_paths(runtime_dir, group)
    if lock_fd is not None:
        lock_fd = _inherited_lock(lock_fd, paths.lock)
    if lock_fd is None:
        lock_fd = _try_lock(paths.lock, paths.socket, wait=2.0)
    if lock_fd is None:
        log.info("another hub holds %s; exiting", paths.lock)
        return 0
    try:
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()  # the lock was free: whatever socket file is there is stale
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        hub = Hub(group, options, on_idle=finish, clock=loop.time)
        server = await local.serve_hub(hub, paths.socket)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, finish)
        log.info("hub for %r serving %s (pid %d)", group, paths.socket, os.getpid())
        try:
            await done
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                if paths.socket.stat().st_ino == local.socket_inode(server):
                    paths.socket.unlink()
            hub.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        log.info("hub for %r exits", group)
        return 0
    finally:
        os.close(lock_fd)  # releases the flock


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m webphone.shared.hub",
                                description="Run the hub of one webphone group (normally "
                                "started on demand by the group's first member).")
    p.add_argument("--group", required=True)
    p.add_argument("--runtime-dir", required=True, type=Path)
    defaults = HubOptions()
    for name in ("heartbeat_interval", "heartbeat_timeout", "handover_timeout",
                 "hello_timeout", "idle_timeout"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument("--rejoin-grace", type=float, default=None)
    p.add_argument("--lock-fd", type=int, default=None,
                   help="the group's lock file, already locked (given by the spawning member)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m webphone.shared.hub``."""
    args = _parse(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s hub[{os.getpid()}] %(levelname)s %(message)s")
    options = HubOptions(
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        handover_timeout=args.handover_timeout,
        hello_timeout=args.hello_timeout,
        rejoin_grace=args.rejoin_grace,
        idle_timeout=args.idle_timeout,
    )
    return asyncio.run(run_local_hub(args.group, args.runtime_dir, options, args.lock_fd))


if __name__ == "__main__":
    sys.exit(main())
