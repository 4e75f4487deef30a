"""The default transport: a hub process per group on a Unix socket, same OS user only.

Where: a private runtime directory, `$WEBPHONE_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/webphone`,
else `/tmp/webphone-<uid>`. It is created with mode 0700 and *checked* on every use (a directory,
not a symlink, owned by us, no group/other permissions); anything else raises
`GroupTransportError` rather than talking through a place other users can reach. Per group (the
name is hashed, so any group string gives a short, safe file name)::

    <dir>/<sha256(group)[:24]>.sock   the hub's socket (mode 0600)
    <dir>/<sha256(group)[:24]>.lock   flock held by the live hub for its whole life; holds its pid
    <dir>/<sha256(group)[:24]>.log    the hub's stderr

Both ends check the peer's credentials (SO_PEERCRED): the hub drops a connection from another
uid, a member refuses a hub run by another uid.

Wire: every frame is a 4-byte big-endian length, then that many bytes of the frame's JSON
(`framing.py`).

Starting the hub: a member that finds no socket (or a stale one: connection refused) takes the
group's lock (`flock`) and, if it got it, spawns ``python -m webphone.shared.hub`` with
`subprocess` in a new session (so the member's crash or its terminal's Ctrl-C does not take the
hub along), handing it the locked file descriptor: the lock passes to the hub without a gap, so
of N members starting at once exactly one starts a process and the others wait for it to serve.
The spawning member keeps the `Popen` and reaps it from a daemon thread, so a hub that exits
leaves no zombie behind while the member lives. A hub started by hand takes the lock itself.

The module is a little over 500 lines: the runtime directory's checks, the hub's spawn under
a lock and the member link belong together (one way of reaching a hub on this host).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple, Protocol

from webphone._backoff import backoff
from webphone.shared.protocol import (
    HUB_FRAMES,
    Frame,
    MemberInfo,
    Members,
    MembersQuery,
)
from webphone.shared.transports.base import (
    FrameHandler,
    GroupLink,
    GroupLinkClosed,
    GroupTransport,
    GroupTransportError,
    HubOptions,
    LostHandler,
)
from webphone.shared.transports.framing import FramedProtocol, peer_cred
from webphone.shared.transports.local_direct import DirectActions

__all__ = [
    "GroupPaths",
    "LocalLink",
    "LocalTransport",
    "check_runtime_dir",
    "default_runtime_dir",
    "ensure_runtime_dir",
    "group_paths",
    "serve_hub",
]

log = logging.getLogger("webphone.shared.local")

_MAX_UNIX_PATH = 107
_SPAWN_INTERVAL = 1.0  # seconds between two spawns by one member (the hub needs ~0.2 s to start)


# -- the runtime directory ----------------------------------------------------------------------


def default_runtime_dir() -> Path:
    """`$WEBPHONE_RUNTIME_DIR`, `$XDG_RUNTIME_DIR/webphone`, or `/tmp/webphone-<uid>`."""
    explicit = os.environ.get("WEBPHONE_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "webphone"
    return Path("/tmp") / f"webphone-{os.geteuid()}"  # noqa: S108 - checked: 0700, ours


def check_runtime_dir(path: Path) -> None:
    """Raise `GroupTransportError` unless `path` is a real directory, ours, mode 0700."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise GroupTransportError(f"runtime directory {path} does not exist") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise GroupTransportError(f"runtime directory {path} is not a directory (or a symlink)")
    if st.st_uid != os.geteuid():
        raise GroupTransportError(
            f"runtime directory {path} belongs to uid {st.st_uid}, not to us ({os.geteuid()}): "
            "another user could impersonate the group's hub; use another directory"
        )
    if st.st_mode & 0o077:
        raise GroupTransportError(
            f"runtime directory {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 "
            "(only this user may reach the group's hub)"
        )


def ensure_runtime_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed, then `check_runtime_dir` it."""
    with contextlib.suppress(FileExistsError):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    check_runtime_dir(path)
    return path


class GroupPaths(NamedTuple):
    """The files of one group in the runtime directory."""

    socket: Path
    lock: Path
    log: Path


def group_paths(runtime_dir: Path, group: str) -> GroupPaths:
    """Socket, lock and log paths of `group` (name hashed: any group string is safe)."""
    stem = hashlib.sha256(group.encode()).hexdigest()[:24]
    paths = GroupPaths(runtime_dir / f"{stem}.sock", runtime_dir / f"{stem}.lock",
                       runtime_dir / f"{stem}.log")
    if len(os.fsencode(paths.socket)) > _MAX_UNIX_PATH:
        raise GroupTransportError(
            f"runtime directory {runtime_dir} is too long for a Unix socket path "
            f"(at most {_MAX_UNIX_PATH} bytes); choose a shorter runtime_dir"
        )
    return paths


# -- hub side -----------------------------------------------------------------------------------


class _HubSide(FramedProtocol):
    def __init__(self, hub: _HubLike) -> None:
        super().__init__()
        self.hub = hub
        self.conn: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.same_user():
            self.conn = self.hub.open(self)

    def frame_bytes(self, data: bytes) -> None:
        if self.conn is not None:
            self.hub.frame(self.conn, data)

    def lost(self, reason: str) -> None:
        if self.conn is not None:
            self.hub.lost(self.conn)


class _HubLike(Protocol):  # the part of hub.Hub used here (importing hub.py would be a cycle)
    def open(self, peer: FramedProtocol) -> str:
        """A member connected."""

    def frame(self, conn: str, data: bytes) -> None:
        """One frame arrived."""

    def lost(self, conn: str) -> None:
        """The connection ended."""


class HubServer(NamedTuple):
    """A serving hub socket: the asyncio server and the inode of the socket file it bound."""

    server: asyncio.Server
    inode: int

    def close(self) -> None:
        """Stop accepting."""
        self.server.close()

    async def wait_closed(self) -> None:
        """Wait until the server closed."""
        await self.server.wait_closed()


async def serve_hub(hub: _HubLike, path: Path) -> HubServer:
    """Serve `hub` (a `webphone.shared.hub.Hub`) on the Unix socket `path` (mode 0600)."""
    loop = asyncio.get_running_loop()
    old = os.umask(0o177)
    try:
        server = await loop.create_unix_server(
            lambda: _HubSide(hub), path=str(path), backlog=1024
        )
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return HubServer(server, os.stat(path).st_ino)


def socket_inode(server: HubServer) -> int:
    """The inode of the socket file `server` bound (to unlink only our own file)."""
    return server.inode


# -- member side --------------------------------------------------------------------------------


class _MemberSide(FramedProtocol):
    def __init__(self, on_frame: FrameHandler, on_lost: LostHandler) -> None:
        super().__init__()
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.closed_here = False
        self.direct: DirectActions | None = None  # the direct action path, if enabled

    def frame_bytes(self, data: bytes) -> None:
        frame = self.decoded(data, "from the hub")
        if frame is None:
            return
        if type(frame) not in HUB_FRAMES:
            self.protocol_error(f"the hub sent a {frame.TYPE!r} frame")
            return
        if self.direct is not None:
            self.direct.from_hub(frame)
        self.on_frame(frame)

    def lost(self, reason: str) -> None:
        if self.direct is not None:
            self.direct.close()
        if not self.closed_here:
            self.on_lost(reason)


class LocalLink(GroupLink):
    """A member's connection to a local hub."""

    def __init__(self, protocol: _MemberSide, peer_pid: int) -> None:
        self._protocol = protocol
        self.peer_pid = peer_pid

    def send(self, frame: Frame) -> None:
        protocol = self._protocol
        transport = protocol.transport
        if protocol._done or transport is None or transport.is_closing():  # self.closed
            raise GroupLinkClosed("the link to the group hub is closed")
        direct = protocol.direct
        if direct is None or not direct.to_hub(frame):
            protocol.send(frame)

    def close(self) -> None:
        if self._protocol.direct is not None:
            self._protocol.direct.close()
        self._protocol.closed_here = True
        self._protocol._done = True
        self._protocol.close()

    @property
    def closed(self) -> bool:
        transport = self._protocol.transport
        return self._protocol._done or transport is None or transport.is_closing()


class LocalTransport(GroupTransport):
    """Members on this host, one hub process per group (see the module docstring).

    `runtime_dir` defaults to `default_runtime_dir()`; `spawn=False` never starts a hub (connect
    fails while none runs); `connect_timeout` bounds one `connect()` including a hub start;
    `direct_actions=False` sends every action through the hub (`local_direct.py` says why and
    how they go direct otherwise).
    """

    name = "local"

    def __init__(
        self,
        options: HubOptions | None = None,
        *,
        runtime_dir: str | os.PathLike[str] | None = None,
        spawn: bool = True,
        connect_timeout: float = 5.0,
        hub_log_level: str = "INFO",
        direct_actions: bool = True,
    ) -> None:
        super().__init__(options)
        self.runtime_dir = Path(runtime_dir) if runtime_dir is not None else default_runtime_dir()
        self.spawn = spawn
        self.connect_timeout = connect_timeout
        self.hub_log_level = hub_log_level
        self.direct_actions = direct_actions
        self._last_spawn = -_SPAWN_INTERVAL
        self.spawned: list[subprocess.Popen[bytes]] = []

    def paths(self, group: str) -> GroupPaths:
        """The group's files (creates and checks the runtime directory)."""
        ensure_runtime_dir(self.runtime_dir)
        return group_paths(self.runtime_dir, group)

    async def connect(self, group: str, on_frame: FrameHandler, on_lost: LostHandler) -> GroupLink:
        paths = self.paths(group)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        # a hub starts in tens of milliseconds: poll its socket at 2 ms, doubling up to 50 ms
        delays = backoff(first=0.002, initial=0.004, cap=0.05)
        while True:
            try:
                return await self._open(paths.socket, on_frame, on_lost,
                                        group if self.direct_actions else None)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if not self.spawn:
                    raise
                self._spawn_hub(group, paths)
                error: OSError = exc
            except BlockingIOError as exc:  # the hub's backlog is full: it is alive, retry
                error = exc
            delay = next(delays)
            if loop.time() + delay > deadline:
                raise error
            await asyncio.sleep(delay)  # backoff while the hub starts, not synchronisation

    async def _open(self, path: Path, on_frame: FrameHandler, on_lost: LostHandler,
                    direct_group: str | None = None) -> LocalLink:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_unix_connection(
            lambda: _MemberSide(on_frame, on_lost), path=str(path)
        )
        if direct_group is not None:
            protocol.direct = DirectActions(self.runtime_dir, direct_group, on_frame,
                                            protocol.send,
                                            heartbeat_timeout=self.options.heartbeat_timeout)
        try:
            pid, uid, _ = peer_cred(transport.get_extra_info("socket"))
        except OSError as exc:
            transport.abort()
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"no peer credentials: {exc}") from exc
        if uid != os.geteuid():
            transport.abort()
            raise GroupTransportError(f"the hub socket {path} is served by uid {uid}, not us")
        return LocalLink(protocol, pid)

    def _spawn_hub(self, group: str, paths: GroupPaths) -> None:
        """Start a hub unless one holds (or is being started with) the group's lock.

        The member takes the lock itself and hands the locked file to the hub it starts, so of
        N members that find no hub at the same moment exactly one starts a process; the others
        see the lock held and keep connecting until that hub serves."""
        now = time.monotonic()
        if now - self._last_spawn < _SPAWN_INTERVAL:
            return
        lock_fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)  # a hub holds it (starting, serving, or exiting): wait for it
            return
        try:
            self._start_hub_process(group, paths, lock_fd)
        finally:
            os.close(lock_fd)  # the hub's inherited descriptor keeps the lock
        self._last_spawn = now

    def _start_hub_process(self, group: str, paths: GroupPaths, lock_fd: int) -> None:
        o = self.options
        argv = [sys.executable, "-m", "webphone.shared.hub", "--group", group,
                "--runtime-dir", str(self.runtime_dir),
                "--heartbeat-interval", repr(o.heartbeat_interval),
                "--heartbeat-timeout", repr(o.heartbeat_timeout),
                "--handover-timeout", repr(o.handover_timeout),
                "--hello-timeout", repr(o.hello_timeout),
                "--idle-timeout", repr(o.idle_timeout),
                "--log-level", self.hub_log_level, "--lock-fd", str(lock_fd)]
        if o.rejoin_grace is not None:
            argv += ["--rejoin-grace", repr(o.rejoin_grace)]
        fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size > 1 << 20:
                os.ftruncate(fd, 0)  # keep the hub log small
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=fd, start_new_session=True, close_fds=True,
                                    pass_fds=(lock_fd,))
        finally:
            os.close(fd)
        log.info("started a hub for %r (pid %d)", group, proc.pid)
        self.spawned.append(proc)
        # Reap it whenever it exits (it may outlive us; then init reaps it).
        threading.Thread(target=proc.wait, name=f"webphone-hub-reaper-{proc.pid}",
                         daemon=True).start()

    async def query_members(
        self, group: str, timeout: float = 2.0
    ) -> tuple[MemberInfo, ...] | None:
        if not self.runtime_dir.exists():
            return None  # a status query creates nothing
        check_runtime_dir(self.runtime_dir)
        paths = group_paths(self.runtime_dir, group)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[MemberInfo, ...] | None] = loop.create_future()

        def on_frame(frame: Frame) -> None:
            if isinstance(frame, Members) and not answer.done():
                answer.set_result(frame.members)

        def on_lost(reason: str) -> None:
            if not answer.done():
                answer.set_exception(ConnectionError(f"hub closed the status query: {reason}"))

        try:
            link = await self._open(paths.socket, on_frame, on_lost)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        try:
            link.send(MembersQuery())
            return await asyncio.wait_for(answer, timeout)
        finally:
            link.close()

    async def recover_hung(self, link: GroupLink) -> None:
        """Kill a hung hub (after checking it is ours and the one holding the group's lock), so
        a new one can take the lock; then close the link."""
        pid = link.peer_pid
        link.close()
        if pid is None or pid <= 0:
            return
        holder = _lock_holder_pid(self.runtime_dir, pid)
        if holder:
            log.warning("the group hub (pid %d) stopped answering; killing it", pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _lock_holder_pid(runtime_dir: Path, pid: int) -> bool:
    """True if `pid` is a webphone hub whose pid is written in a lock file of `runtime_dir`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"webphone.shared.hub" not in cmdline or os.fsencode(runtime_dir) not in cmdline:
        return False
    for lock in runtime_dir.glob("*.lock"):
        with contextlib.suppress(OSError, ValueError):
            if int(lock.read_text().strip() or 0) == pid:
                return True
    return False
