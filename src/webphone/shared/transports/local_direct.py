"""Direct action links: a local group's dummies send their actions to the real in one hop.

Through the hub an action costs four hops through three processes (dummy -> hub -> real -> hub
-> dummy); `benchmarks/rtt_bench.py` measured that path at ~20x a raw Unix-socket echo, and raw
bytes alone through the same three processes at ~4x. So once the hub has introduced the real (its
`welcome` and `role` frames name the real's member id and the epoch), a dummy's link connects to
the real's own socket and sends actions there; results come back the same way. Everything else
(roles, heartbeats, snapshots, the continuity plane) still goes through the hub, which stays the
authority: the direct path only follows what its frames said, and falls back to it.

This is part of the link (`LocalLink`), the member's stand-in for a hub: `GroupMember` sends the
same `action` frames and gets the same `action_result` frames, whichever way they went.

The real's side (`DirectActions` while its member is the real):

* it serves ``<runtime dir>/<sha256(group, member id)[:24]>.act`` (mode 0600, peer uid checked,
  the runtime directory's rules of `local.py`) only while the hub's frames say it is the real of
  epoch E, its member has sent `registered` for E (actions wait for a ready real), and it neither
  left nor was released;
* it hands a direct action to its member (under an id of its own) only if, at that moment, it
  still serves at the epoch the dummy was introduced at and has heard from the hub within two
  heartbeat intervals and half the heartbeat timeout (the hub echoes every heartbeat: silence
  means we stalled or the hub is gone; the hub deposes a real only after a full timeout of
  silence, or when its connection or its leave told it, which this link sees first). This is
  the fence `GroupMember.confirm_real` applies before a REGISTER. Otherwise it answers
  `REFUSED`: the action did not run, and the dummy sends it through the hub;
* before a result it writes the newest snapshot its member published, if that connection has
  not had it: a caller sees the new state before the result, as through the hub.

The dummy's side: an action goes direct when a connection to the real of the current epoch is
open and no action sent through the hub is still waiting for its outcome (so a later action
never overtakes an earlier one). Exactly one outcome per action (invariant 3): the real's
result; `REFUSED` -> sent through the hub (never run, so never run twice); the connection lost,
or the hub naming another real or epoch, before the result -> ActionInterruptedError (the real
may have run it). A failed connect is retried no sooner than `RETRY_INTERVAL`; meanwhile actions
go through the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from webphone.shared.protocol import (
    Action,
    ActionResult,
    ErrorInfo,
    Frame,
    Hello,
    Leave,
    Registered,
    Released,
    RoleChange,
    Snapshot,
    Welcome,
)
from webphone.shared.transports.framing import FramedProtocol

__all__ = ["MAX_DIRECT_PENDING", "REFUSED", "RETRY_INTERVAL", "DirectActions", "direct_path"]

log = logging.getLogger("webphone.shared.local")

#: the error type of a direct action the real did not take (not run): send it through the hub
REFUSED = "DirectActionRefused"
#: seconds between two connect attempts of a dummy to the same real (the hub path meanwhile)
RETRY_INTERVAL = 1.0
#: direct actions one connection may have in flight; more are refused (the hub's own limit then
#: applies, `Coordinator.max_per_caller`)
MAX_DIRECT_PENDING = 256


def direct_path(runtime_dir: Path, group: str, member_id: str) -> Path:
    """The socket the real `member_id` of `group` serves direct actions on: the group's hash,
    then the member's (a name no longer than the hub's socket, so `local.group_paths`'s length
    check covers it; the group part lets a new real remove the files of earlier ones)."""
    member = _sha(group + "\0" + member_id)[:7]
    return runtime_dir / f"{_group_stem(group)}-{member}.act"


def _group_stem(group: str) -> str:
    return _sha(group)[:16]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class DirectActions:
    """One member link's direct action path, both sides (see the module docstring).

    The link calls `from_hub` with every frame the hub sent (before the member sees it) and
    `to_hub` with every frame the member sends; `to_hub` returns True when it took the frame
    (sent it direct), False when the link sends it to the hub as usual."""

    def __init__(self, runtime_dir: Path, group: str, deliver: Callable[[Frame], None],
                 hub_send: Callable[[Frame], object], *, heartbeat_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.runtime_dir = runtime_dir
        self.group = group
        self._deliver = deliver  # to the member, as if from the hub
        self._hub_send = hub_send
        # what the hub said, and what our member said to it
        self._hello: Hello | None = None
        self.role: str | None = None
        self.epoch = 0
        self.real_id: str | None = None
        self._target: tuple[str | None, int] = (None, 0)  # the real a dummy sends to, epoch
        self._member_id: str | None = None
        self._interval = 0.5
        self._timeout = heartbeat_timeout
        self._fresh_limit = self._limit()
        self._heard = 0.0
        self._fence = 0  # the epoch we take direct actions at now (0: none; `_refresh_fence`)
        self._registered = 0
        self._gone = False  # left or released: never real again on this link
        # the real's side
        self._server: asyncio.AbstractServer | None = None
        self._serving: tuple[Path, int] | None = None
        self._ids = itertools.count(1)
        self._conns: set[_RealSide] = set()  # dummies' connections we accepted
        self._running: dict[str, tuple[_RealSide, str]] = {}  # our id -> (connection, its id)
        self._snapshot: Snapshot | None = None
        # the dummy's side
        self._client: _DummySide | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._tried: tuple[tuple[str | None, int], float] = ((None, 0), -RETRY_INTERVAL)
        self._via_hub: set[str] = set()  # our member's action ids sent through the hub
        self.closed = False

    # -- the link's two directions ----------------------------------------------------------

    def from_hub(self, frame: Frame) -> None:
        """A frame from the hub, before the member gets it."""
        self._heard = self._loop.time()
        if isinstance(frame, ActionResult):
            self._via_hub.discard(frame.action_id)
            return
        if isinstance(frame, Welcome):
            self._member_id = frame.member_id
            self._interval = frame.heartbeat_interval
            self._fresh_limit = self._limit()
            self._set(frame.role, frame.epoch, frame.real_id)
        elif isinstance(frame, RoleChange):
            self._set(frame.role, frame.epoch, frame.real_id)
        elif isinstance(frame, Released):
            self._gone = True
            self._update()

    def to_hub(self, frame: Frame) -> bool:
        """A frame from the member: True if it went direct (the hub never sees it)."""
        if isinstance(frame, Action):
            return self._send_action(frame)
        if isinstance(frame, ActionResult):
            return self._send_result(frame)
        if isinstance(frame, Snapshot):
            self._snapshot = frame
        elif isinstance(frame, Hello):
            self._hello = frame
        elif isinstance(frame, Registered):
            self._registered = frame.epoch
            self._update()
        elif isinstance(frame, Leave):
            self._gone = True
            self._update()
        return False

    def close(self) -> None:
        """The link closed: stop serving, drop the connection to the real (the member ends
        what it sent on this link itself)."""
        self.closed = True
        self._stop_serving()
        if self._connecting is not None:
            self._connecting.cancel()
        client, self._client = self._client, None
        if client is not None:
            client.pending.clear()
            client.close()

    # -- state ------------------------------------------------------------------------------

    def _set(self, role: str, epoch: int, real_id: str | None) -> None:
        if epoch < self.epoch:
            return  # an older frame: the member ignores it too
        self.role, self.epoch, self.real_id = role, epoch, real_id
        self._target = (real_id, epoch) if role == "dummy" else (None, 0)
        self._update()

    def _update(self) -> None:
        if self.closed:
            return
        if self._should_serve():
            if self._serving is None or self._serving[1] != self.epoch:
                self._start_serving()
        elif self._serving is not None:
            self._stop_serving()
        self._refresh_fence()
        client = self._client
        if client is not None and client.target != self._target:
            self._client = None
            client.interrupt("the hub named another real or epoch")

    def _refresh_fence(self) -> None:
        """What `direct_action` checks per action, computed when it changes: the epoch we
        serve and may act at (see `_should_serve`), else 0."""
        serving = self._serving
        self._fence = (serving[1] if serving is not None and serving[1] == self.epoch
                       and self._should_serve() and not self.closed else 0)

    def _should_serve(self) -> bool:
        return (self.role == "real" and self._registered == self.epoch > 0 and not self._gone
                and self._member_id is not None)

    def _limit(self) -> float:
        """How recently we must have heard from the hub to take a direct action: within two
        heartbeat intervals (see the module docstring), and within half the heartbeat timeout:
        a real stalled long enough to be deposed is never fresh when it wakes up, however the
        two are configured."""
        return min(2 * self._interval, self._timeout / 2)

    # -- the real's side --------------------------------------------------------------------

    def _start_serving(self) -> None:
        self._stop_serving()
        assert self._member_id is not None
        path = direct_path(self.runtime_dir, self.group, self._member_id)
        self._serving = (path, self.epoch)
        # at most one real serves: any file of the group is ours from an earlier reign, or
        # left by a real that crashed (its dummies then fall back to the hub until we serve)
        for old in self.runtime_dir.glob(f"{_group_stem(self.group)}-*.act"):
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        task = self._loop.create_task(self._serve(path, self.epoch))
        task.add_done_callback(_log_failure)

    async def _serve(self, path: Path, epoch: int) -> None:
        old = os.umask(0o177)
        try:
            server = await self._loop.create_unix_server(lambda: _RealSide(self), str(path))
        finally:
            os.umask(old)
        if self._serving != (path, epoch) or self.closed:
            server.close()  # stopped meanwhile
            return
        self._server = server

    def _stop_serving(self) -> None:
        serving, self._serving = self._serving, None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if serving is not None:
            with contextlib.suppress(FileNotFoundError):
                serving[0].unlink()
        self._fence = 0
        conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()  # its dummy ends what is in flight ActionInterruptedError
        self._running.clear()

    def direct_action(self, conn: _RealSide, action: Action) -> None:
        """An action from a dummy's direct connection."""
        if (conn.epoch != self._fence or not self._fence  # see _refresh_fence
                or self._loop.time() - self._heard > self._fresh_limit
                or conn.in_flight >= MAX_DIRECT_PENDING):
            conn.send(ActionResult(action.action_id, self.epoch, False, None, ErrorInfo(
                REFUSED, "the real does not take direct actions now: send it through the hub")))
            return
        ours = f"x{next(self._ids)}"
        self._running[ours] = (conn, action.action_id)
        conn.in_flight += 1
        self._deliver(_renamed(action, ours))  # decoded for this call alone

    def _send_result(self, result: ActionResult) -> bool:
        entry = self._running.pop(result.action_id, None)
        if entry is None:
            return False
        conn, theirs = entry
        conn.in_flight -= 1
        result = _renamed(result, theirs)  # built by our member for this send alone
        snap = self._snapshot
        if snap is not None and snap.version > conn.snapshot_sent:
            conn.snapshot_sent = snap.version
            conn.send(snap, result)
        else:
            conn.send(result)
        return True

    def accepted(self, conn: _RealSide) -> None:
        """A dummy connected (from the same user)."""
        if self._server is None:
            conn.close()  # no longer serving
        else:
            self._conns.add(conn)

    def connection_lost(self, conn: _RealSide) -> None:
        """A dummy's connection ended: results of its actions have nobody to go to."""
        self._conns.discard(conn)
        for ours in [k for k, (c, _) in self._running.items() if c is conn]:
            del self._running[ours]

    # -- the dummy's side -------------------------------------------------------------------

    def _send_action(self, action: Action) -> bool:
        client = self._client
        if (client is None or client.transport is None or client.target != self._target
                or self._via_hub):
            self._via_hub.add(action.action_id)
            if client is None:
                self._connect()
            return False
        client.pending[action.action_id] = (action, self._loop.time())
        client.send(action)
        return True

    def _connect(self) -> None:
        target = self._target
        now = self._loop.time()
        if (target[0] is None or self._connecting is not None or self._hello is None
                or (self._tried[0] == target and now - self._tried[1] < RETRY_INTERVAL)):
            return
        self._tried = (target, now)
        self._connecting = self._loop.create_task(self._open(target))

    async def _open(self, target: tuple[str | None, int]) -> None:
        real_id, epoch = target
        assert real_id is not None and self._hello is not None
        path = direct_path(self.runtime_dir, self.group, real_id)
        try:
            transport, client = await self._loop.create_unix_connection(
                lambda: _DummySide(self, target), str(path))
        except OSError as exc:
            log.debug("no direct action link to %s yet: %s", real_id, exc)
            return
        finally:
            self._connecting = None
        if not client.same_user() or self.closed or self._target != target:
            transport.abort()
            return
        client.send(dataclasses.replace(self._hello, epoch=epoch, real=False))
        self._client = client

    def from_real(self, client: _DummySide, frame: Frame) -> None:
        """A frame on our direct connection to the real."""
        if type(frame) is Snapshot:
            self._deliver(frame)  # the member applies it only if it is newer
        elif type(frame) is ActionResult:
            entry = client.pending.pop(frame.action_id, None)
            if entry is None:
                return
            action, sent_at = entry
            if frame.error is not None and frame.error.type == REFUSED:
                left = max(action.timeout - (self._loop.time() - sent_at), 0.0)
                self._via_hub.add(action.action_id)
                self._hub_send(dataclasses.replace(action, timeout=left))
            else:
                self._deliver(frame)

    def real_lost(self, client: _DummySide, reason: str) -> None:
        """Our direct connection to the real ended."""
        if self._client is client:
            self._client = None
        client.interrupt(reason)

    def interrupted(self, action: Action, reason: str) -> None:
        """`action` was sent direct and its outcome will never come."""
        self._deliver(ActionResult(action.action_id, self.epoch, False, None, ErrorInfo(
            "ActionInterruptedError", f"the direct link to the real phone ended ({reason}) "
            f"after {action.name!r} was sent; it may or may not have run, and is not re-sent")))


class _RealSide(FramedProtocol):
    """The real's end of one dummy's direct connection."""

    def __init__(self, owner: DirectActions) -> None:
        super().__init__()
        self.owner = owner
        self.epoch: int | None = None  # from the dummy's hello: the epoch it was introduced at
        self.in_flight = 0
        self.snapshot_sent: tuple[int, int] = (0, 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.same_user():
            self.owner.accepted(self)

    def frame_bytes(self, data: bytes) -> None:
        frame = self.decoded(data, "on a direct action link")
        if frame is None:
            return
        if type(frame) is Action and self.epoch is not None:
            self.owner.direct_action(self, frame)
        elif isinstance(frame, Hello) and self.epoch is None:
            self.epoch = frame.epoch
        else:
            self.protocol_error(f"a {frame.TYPE!r} frame on a direct action link")

    def lost(self, reason: str) -> None:
        self.owner.connection_lost(self)


class _DummySide(FramedProtocol):
    """A dummy's direct connection to the real of one epoch."""

    def __init__(self, owner: DirectActions, target: tuple[str | None, int]) -> None:
        super().__init__()
        self.owner = owner
        self.target = target
        self.pending: dict[str, tuple[Action, float]] = {}  # our id -> (action, sent at)

    def frame_bytes(self, data: bytes) -> None:
        frame = self.decoded(data, "from the real's direct link")
        if frame is None:
            return
        if type(frame) is not ActionResult and type(frame) is not Snapshot:
            self.protocol_error(f"the real sent a {frame.TYPE!r} frame on a direct link")
            return
        self.owner.from_real(self, frame)

    def interrupt(self, reason: str) -> None:
        """Close; every action in flight ends ActionInterruptedError."""
        pending, self.pending = self.pending, {}
        self.close()
        for action, _ in pending.values():
            self.owner.interrupted(action, reason)

    def lost(self, reason: str) -> None:
        self.owner.real_lost(self, reason)


_F = TypeVar("_F", Action, ActionResult)


def _renamed(frame: _F, action_id: str) -> _F:
    """`frame`, which nothing else holds (decoded or built for this hop alone), under another
    action id: changed in place, not copied (a frame is frozen for its readers; here it has
    none yet). Its fields are not checked again: they were when it was built or decoded, and
    `action_id` is one of ours or one checked on arrival."""
    values = frame.__dict__
    values["action_id"] = action_id
    values.pop("_json", None)  # the encodings under the old id (protocol, framing)
    values.pop("_wire", None)
    return frame


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("cannot serve direct actions: %s", task.exception())
