"""The member side of a group connection: hello, heartbeats, reconnects, actions, snapshots.

`GroupMember` keeps one member connected to its group's coordinator through a transport
(`transports/base.py`) and knows nothing about SIP. `SharedWebPhone` drives it and listens to it
(`MemberListener`). What it guarantees:

* **Heartbeats** every `heartbeat_interval` (the hub's, from `welcome`); the hub echoes each one.
  Silence from the hub for `hub_timeout` (randomised 1-1.5x, so members do not all act at once,
  F4) means a hung hub (F13): the transport's `recover_hung` replaces it and we reconnect.
* **Reconnects** after any loss, at once and then with a short backoff (`_reconnect_delays`),
  forever until closed; the transport starts a new hub if there is none. The new `hello`
  carries what we knew: the epoch, and `real=True` if we were the real, so a restarted hub
  re-adopts the real and keeps its registration. A real
  that stalled itself longer than the heartbeat timeout (SIGSTOP, suspend: F14) does NOT claim
  on reconnect: it may have been deposed while it slept, so it comes back as a dummy and is
  fenced (the listener gets `on_role(real -> dummy)`); the group promotes a member that is
  surely awake.
* **Actions** (`request`): exactly one outcome each. Queued locally while disconnected (until
  the deadline: NoRealPhoneError); once sent, the hub owns the deadline. If the link is lost
  after sending, the action may have reached the real, so the outcome is
  ActionInterruptedError, never a resend.
* **Snapshots** are applied through `views.MemberView` (never older than what we have); the
  real's `publish` is re-sent after every reconnect so a new hub has the state at once.
* **Fencing support**: `confirm_real()` proves, with one heartbeat round trip when our last news
  from the hub is not fresh, that we are still the real before the SIP client REGISTERs.
* **The continuity plane** (`plane.py`, docs/shared.md): the real's `delegate` to one member
  (exactly one outcome), `send_delegate_result` on the member, `publish_continuity` (re-sent
  after every reconnect, like `publish`), and the `PlaneListener` callbacks when the listener
  implements them.
* **Giving the role up** (`resign`): a real that cannot register becomes a dummy, closes its link
  (the group promotes another member at once) and rejoins after a backoff.

The role rules themselves are `views.MemberView.set_role` (pure). This module is longer than most
(~860 lines) because the connection, heartbeat, stall detection, action and delegate bookkeeping
share one link token and its life cycle (the plane's own parts are in `plane.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import random
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from webphone import errors
from webphone._backoff import backoff
from webphone.errors import (
    ActionInterruptedError,
    DelegateTimeoutError,
    GroupProtocolError,
    HubTimeoutError,
    NoRealPhoneError,
    WebPhoneError,
)
from webphone.shared.plane import ContinuityView, Delegations
from webphone.shared.protocol import (
    MAX_ID_CHARS,
    Action,
    ActionAccepted,
    ActionResult,
    Continuity,
    Delegate,
    DelegateResult,
    Error,
    ErrorInfo,
    Frame,
    Heartbeat,
    Hello,
    Leave,
    MemberInfo,
    MemberLost,
    Members,
    MembersQuery,
    Registered,
    Released,
    Role,
    RoleChange,
    Snapshot,
    Welcome,
)
from webphone.shared.transports.base import GroupLink, GroupLinkClosed, GroupTransport
from webphone.shared.views import MemberView

__all__ = ["GroupMember", "LinkToken", "MemberListener", "PlaneListener", "error_from_info",
           "error_info"]

log = logging.getLogger("webphone.shared.member")


class MemberListener(Protocol):
    """What `GroupMember` tells its owner. Called from the event loop, synchronously."""

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        """Our role changed (or the epoch under it: `old == new == "real"` means adopted)."""

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """A newer snapshot was applied (dummies only get them)."""

    def on_action(self, action: Action, token: LinkToken) -> None:
        """Run `action` (we are the real); answer with `GroupMember.send_result(token, ...)`."""

    def on_released(self, released: Released) -> None:
        """The hub released us after we left as real."""


@runtime_checkable
class PlaneListener(Protocol):
    """The continuity plane's callbacks (from the event loop, synchronously)."""

    def on_delegate(self, request: Delegate, token: LinkToken) -> None:
        """The real asks us to do `request.op` for `request.call_id`: answer exactly once with
        `GroupMember.send_delegate_result(token, request, value=... | error=...)`."""

    def on_member_lost(self, member_id: str, reason: str) -> None:
        """(real only) member `member_id` crashed, hung or left (`reason`); delegates to it
        in flight have already ended with MemberLostError."""

    def on_continuity(self, state: Continuity) -> None:
        """A newer continuity state arrived (every member but the publishing real)."""


@dataclass(eq=False)
class LinkToken:
    """One connection attempt; frames and losses of an old one are ignored."""

    link: GroupLink | None = None
    welcomed: asyncio.Future[Welcome] | None = None
    lost: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    opened_at: float = 0.0
    heartbeats_sent: int = 0
    echoes: int = 0  # the hub echoes every heartbeat, in order: echo k answers heartbeat k


@dataclass(eq=False)
class _Pending:
    action_id: str
    name: str
    call_id: str | None
    args: dict[str, Any]
    deadline: float
    future: asyncio.Future[Any]
    token: LinkToken | None = None  # the connection it was sent on (None: queued here)
    accepted: bool = False
    timer: asyncio.TimerHandle | None = None


#: what an action error's message may not carry (`schema.check_text` with lines=True)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def error_info(exc: BaseException) -> ErrorInfo:
    """An exception as an action's error (class name + message; no tracebacks). A control
    character in the message (a SIP reason phrase, a peer's text) becomes a space: the error
    must always reach the caller, and the frame refuses them (header injection, logs)."""
    message = str(exc)[:2000]
    if not (message.isascii() and message.isprintable()):
        message = _UNSAFE.sub(" ", message)
    name = type(exc).__name__
    if not name.replace("_", "a").isalnum():
        name = "WebPhoneError"
    return ErrorInfo(name, message)


def error_from_info(info: ErrorInfo) -> WebPhoneError:
    """The `webphone.errors` exception named by `info` (unknown names: `WebPhoneError`)."""
    cls = getattr(errors, info.type, None)
    if isinstance(cls, type) and issubclass(cls, WebPhoneError):
        exc = cls.__new__(cls)  # some classes build their message in __init__: keep the real's
        Exception.__init__(exc, info.message)
        return exc
    return WebPhoneError(f"{info.type}: {info.message}" if info.message else info.type)


def _reconnect_delays() -> Iterator[float]:
    """At once, then 10 ms doubling up to 0.5 s: a hub (re)starts within milliseconds, and
    the cap is one default heartbeat interval, so a member is never away much longer than the
    hub would take to notice."""
    return backoff(initial=0.01, cap=0.5)


def _member_id() -> str:
    host = socket.gethostname()[:60] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"[:MAX_ID_CHARS]


class GroupMember:
    """One member's connection to its group (see the module docstring).

    `hub_timeout` (default: the transport's `heartbeat_timeout`) is how long the hub may stay
    silent before it is considered hung; `action_timeout` is the default deadline for an action
    to find a ready real.
    """

    def __init__(
        self,
        transport: GroupTransport,
        group: str,
        listener: MemberListener,
        *,
        hub_timeout: float | None = None,
        action_timeout: float = 10.0,
        member_id: str | None = None,
    ) -> None:
        self.transport = transport
        self.group = group
        self.listener = listener
        options = transport.options
        self.heartbeat_interval = options.heartbeat_interval
        self.heartbeat_timeout = options.heartbeat_timeout
        base = hub_timeout if hub_timeout is not None else options.heartbeat_timeout
        self.hub_timeout = base * random.uniform(1.0, 1.5)
        self.action_timeout = action_timeout
        self.member_id = member_id or _member_id()
        self.view = MemberView()
        self.pid = os.getpid()
        self.host = socket.gethostname()[:255] or "localhost"
        self.started_at = time.time()
        self.hubs_seen = 0  # welcomes received (1 + number of reconnects)
        self._token: LinkToken | None = None
        self._connected = asyncio.Event()
        self._closed = False
        self._leaving = False
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._queries: deque[asyncio.Future[tuple[MemberInfo, ...]]] = deque()
        self._seq = 0
        self._last_state: dict[str, Any] | None = None
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._loop.time()  # for hub-hang detection (bumped after our stall)
        self._last_frame = self._loop.time()  # when a frame really arrived (never bumped)
        self._last_tick = self._loop.time()
        self._heard = asyncio.Event()
        # after our own stall, nothing we knew counts until the hub answered a heartbeat sent
        # after the stall (or welcomed a hello sent after it): see `_stalled`
        self._stall_pending = False
        self._stall_mark: tuple[LinkToken | None, int] = (None, 0)
        self._stall_seen_at = 0.0
        #: set on every welcome and role frame (who is real may have changed)
        self.view_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connector: asyncio.Task[None] | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._released: asyncio.Future[Released] = self._loop.create_future()
        self._left: asyncio.Future[None] = self._loop.create_future()
        self._fatal: BaseException | None = None
        self._rejoin_at = 0.0  # after `resign`: not back in the group before this loop time
        #: the continuity plane: our owner's callbacks if it implements them (see plane.py)
        self.plane: PlaneListener | None = listener if isinstance(listener, PlaneListener) else None
        self.continuity = ContinuityView()  # the newest continuity state we know
        self._delegations = Delegations(self._loop)
        self._last_continuity: dict[str, dict[str, Any]] | None = None
        self._continuity_seq = 0

    # -- state -----------------------------------------------------------------------------------

    @property
    def role(self) -> Role | None:
        """Our role as the hub last told it (None before the first welcome)."""
        return self.view.role

    @property
    def epoch(self) -> int:
        """The newest group epoch we know."""
        return self.view.epoch

    @property
    def connected(self) -> bool:
        """True while welcomed on a live link."""
        return self._connected.is_set()

    @property
    def peer_pid(self) -> int | None:
        """The pid of the hub process we are connected to (local transport), else None."""
        token = self._token
        return token.link.peer_pid if token and token.link else None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and wait for the first welcome (raises if none within `timeout`)."""
        self._heartbeats = asyncio.create_task(self._heartbeat_loop(), name="webphone-heartbeat")
        self._connector = asyncio.create_task(self._connect_loop(), name="webphone-connect")
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({waiter, self._connector}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self._connected.is_set():
            await self.close()
            if self._fatal is not None:
                raise self._fatal
            cause = getattr(self, "_last_error", None)
            raise WebPhoneError(f"could not join group {self.group!r} within {timeout:g} s"
                                + (f" (last error: {cause})" if cause else ""))

    async def close(self) -> None:
        """Stop everything and close the link (no frames sent; `leave` first for a graceful
        exit). Pending actions end with ActionInterruptedError or NoRealPhoneError."""
        if self._closed:
            return
        self._closed = True
        self._connected.clear()
        for task in (self._connector, self._heartbeats, *self._tasks):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        token, self._token = self._token, None
        if token is not None and token.link is not None:
            token.link.close()
        for pending in list(self._pending.values()):
            if pending.token is None:
                self._finish(pending, NoRealPhoneError("the group member was closed before "
                                                       "the action could be sent"))
            else:
                self._finish(pending, ActionInterruptedError(
                    "the group member was closed before the action's outcome arrived"))
        while self._queries:
            query = self._queries.popleft()
            if not query.done():
                query.set_exception(ConnectionError("closed"))
        self._delegations.reign_ended("the group member was closed")

    def abort(self) -> None:
        """Close abruptly, like a crash (tests): nothing is sent, nothing awaited."""
        self._closed = True
        for task in (self._connector, self._heartbeats, *self._tasks):
            if task is not None:
                task.cancel()
        token, self._token = self._token, None
        if token is not None and token.link is not None:
            token.link.close()

    def resign(self, rejoin_after: float = 0.0) -> None:
        """Give up the real role (a promotion that could not register): from now on we are a
        dummy, and the link is closed, which every transport treats like a crash of the real
        (seen at once: another member is promoted). We come back as a dummy, without claiming
        the role, after `rejoin_after` seconds."""
        if self._closed or self.view.role != "real":
            return
        self._set_role("dummy", self.view.epoch)  # the listener fences; the next hello is plain
        self._rejoin_at = self._loop.time() + rejoin_after
        token = self._token
        if token is not None:
            if token.link is not None:
                token.link.close()
            self._on_lost(token, "gave up the real role")

    async def leave(self, timeout: float) -> Released | None:
        """Leave gracefully. A dummy is gone at once (None). A real hands over: returns the
        hub's `released` (unregister or not), or None if none came within `timeout`."""
        self._leaving = True
        was_real = self.view.role in ("real", "handing_over")
        if self.view.released is not None:
            return self.view.released
        try:
            await asyncio.wait_for(self._connected.wait(), min(timeout, self.hub_timeout))
        except TimeoutError:
            return None
        token = self._token
        if token is None or token.link is None:
            return None
        with contextlib.suppress(GroupLinkClosed):
            token.link.send(Leave())
        if not was_real:
            return None
        waiters: set[asyncio.Future[Any]] = {self._released, self._left}
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return self._released.result() if self._released.done() else None

    # -- connection ------------------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        delays = _reconnect_delays()
        while not self._closed:
            delay = max(next(delays), self._rejoin_at - self._loop.time())
            if delay > 0:
                await asyncio.sleep(delay)  # backoff between attempts
            token = LinkToken(welcomed=self._loop.create_future(), opened_at=self._loop.time())
            try:
                link = await self.transport.connect(
                    self.group,
                    functools.partial(self._on_frame, token),
                    functools.partial(self._on_lost, token),
                )
            except OSError as exc:
                log.debug("cannot reach the hub of %r yet: %s", self.group, exc)
                self._last_error = f"{type(exc).__name__}: {exc}"  # said if the join times out
                continue
            except WebPhoneError as exc:  # not retryable (insecure directory, wrong user...)
                self._fatal = exc
                log.error("cannot join group %r: %s", self.group, exc)
                return
            token.link = link
            self._token = token
            self._last_heard = self._loop.time()
            try:
                link.send(self._hello())
                assert token.welcomed is not None
                await asyncio.wait_for(asyncio.shield(token.welcomed), self.hub_timeout)
            except (GroupLinkClosed, ConnectionError):
                continue
            except TimeoutError:
                if not token.lost:
                    log.warning("the hub of %r did not answer hello in %.1f s", self.group,
                                self.hub_timeout)
                    await self.transport.recover_hung(link)
                    self._on_lost(token, "no welcome")
                continue
            delays = _reconnect_delays()  # the next loss starts over: at once
            # Stay here until this link is lost, then loop to reconnect.
            await self._wait_lost(token)

    async def _wait_lost(self, token: LinkToken) -> None:
        await token.ended.wait()

    def _hello(self) -> Hello:
        claim = self.view.role == "real" and not self._stalled()
        if self.view.role == "real" and not claim:
            log.warning("we stalled for more than %.1f s while the hub was lost: coming back as "
                        "a dummy (we may have been replaced)", self.heartbeat_timeout)
            self._set_role("dummy", self.view.epoch)
        return Hello(self.member_id, self.pid, self.host, self.group, self.started_at,
                     epoch=self.view.epoch, real=claim and self.view.epoch > 0)

    def stalled(self) -> bool:
        """True while our loop stalled longer than the heartbeat timeout (SIGSTOP, a blocked
        loop: F14) and the hub has not confirmed our role since."""
        return self._stalled()

    def _stalled(self) -> bool:
        """True if our loop did not run for longer than the heartbeat timeout (SIGSTOP, a
        blocked loop, suspend: F14) and the hub has not confirmed our role since."""
        if self._loop.time() - self._last_tick > self.heartbeat_timeout:
            self._note_stall()  # noticed here before the heartbeat loop ran
        return self._stall_pending

    def _note_stall(self) -> None:
        now = self._loop.time()
        if now - self._last_tick > self.heartbeat_timeout:
            token = self._token
            self._stall_pending = True
            self._stall_mark = (token, token.heartbeats_sent if token else 0)
            self._stall_seen_at = now
            self._last_heard = max(self._last_heard, now)  # the silence was ours, not the hub's
            self._last_tick = now

    def _on_lost(self, token: LinkToken, reason: str) -> None:
        if token.lost:
            return
        token.lost = True
        token.ended.set()
        self._heard.set()  # wakes confirm_real: the next hub's welcome decides
        if token.welcomed is not None and not token.welcomed.done():
            token.welcomed.set_exception(ConnectionError(reason))
            token.welcomed.exception()
        self._delegations.link_lost(token, reason)
        if token is not self._token:
            return
        self._token = None
        self._connected.clear()
        if not self._closed:
            log.info("lost the hub of %r: %s", self.group, reason)
        for pending in list(self._pending.values()):
            if pending.token is token:
                self._finish(pending, ActionInterruptedError(
                    f"the connection to the group hub was lost ({reason}) after the action "
                    f"{pending.name!r} was sent; it may or may not have run, and is not re-sent"))
        while self._queries:
            query = self._queries.popleft()
            if not query.done():
                query.set_exception(ConnectionError(reason))
        token.ended.set()

    # -- frames from the hub ---------------------------------------------------------------------

    def _on_frame(self, token: LinkToken, frame: Frame) -> None:
        if token is not self._token or token.lost:
            return
        self._last_heard = self._last_frame = self._loop.time()
        self._heard.set()
        # the two frames of every action first (frame classes are final: `type() is` is exact)
        if type(frame) is ActionResult:
            self._on_result(frame)
            return
        if type(frame) is Action:
            if self.view.may_act and not self._leaving:
                self.listener.on_action(frame, token)
            # else: the hub answers the caller (interrupted) once it learns we are not real
            return
        if isinstance(frame, Heartbeat):
            token.echoes += 1
            mark_token, mark = self._stall_mark
            if self._stall_pending and mark_token is token and token.echoes > mark:
                self._stall_pending = False
            return
        if isinstance(frame, Welcome):
            self._on_welcome(token, frame)
        elif isinstance(frame, RoleChange):
            self._set_role(frame.role, frame.epoch, frame.real_id)
            self.view_changed.set()
        elif isinstance(frame, Snapshot):
            if self.view.apply(frame):
                self.listener.on_snapshot(frame)
        elif isinstance(frame, ActionAccepted):
            pending = self._pending.get(frame.action_id)
            if pending is not None:
                pending.accepted = True
        elif isinstance(frame, Released):
            self.view.apply(frame)
            if not self._released.done():
                self._released.set_result(frame)
            self.listener.on_released(frame)
        elif isinstance(frame, Members):
            if self._queries:
                query = self._queries.popleft()
                if not query.done():
                    query.set_result(frame.members)
        elif isinstance(frame, Error):
            self._on_error(frame)
        else:
            self._on_plane_frame(token, frame)

    def _on_plane_frame(self, token: LinkToken, frame: Frame) -> None:
        if isinstance(frame, Delegate):
            if self.plane is not None:
                self.plane.on_delegate(frame, token)
            else:
                self.send_delegate_result(token, frame, error=ErrorInfo(
                    "WebPhoneError", "this member takes no delegates (no continuity listener)"))
        elif isinstance(frame, DelegateResult):
            error = error_from_info(frame.error) if frame.error is not None else None
            self._delegations.result(frame, error)
        elif isinstance(frame, MemberLost):
            if self.plane is not None and self.view.may_act:
                self.plane.on_member_lost(frame.member_id, frame.reason)
        elif (isinstance(frame, Continuity) and self.continuity.offer(frame)
              and self.plane is not None):
            self.plane.on_continuity(frame)

    def _on_welcome(self, token: LinkToken, welcome: Welcome) -> None:
        if self._stall_pending and token.opened_at >= self._stall_seen_at:
            self._stall_pending = False  # an answer to a hello sent after the stall
        old_role = self.view.role
        claimed_real = old_role == "real"
        self.view.member_id = welcome.member_id
        self.heartbeat_interval = welcome.heartbeat_interval  # the hub's pace, not ours
        if welcome.snapshot is not None and self.view.snapshots.offer(welcome.snapshot):
            self.listener.on_snapshot(welcome.snapshot)
        self.hubs_seen += 1
        self._set_role(welcome.role, welcome.epoch, welcome.real_id, force=True,
                       adopted=claimed_real and welcome.role == "real")
        self._connected.set()
        self.view_changed.set()
        if token.welcomed is not None and not token.welcomed.done():
            token.welcomed.set_result(welcome)
        if self.view.role == "real":
            self._send_state()
            self._send_continuity()
        for pending in list(self._pending.values()):
            if pending.token is None:
                self._send_action(pending)

    def _set_role(self, role: Role, epoch: int, real_id: str | None = None, *,
                  force: bool = False, adopted: bool = False) -> None:
        update = self.view.set_role(role, epoch, real_id, force=force)  # the rules: views.py
        if update is None:
            return  # stale
        if role == "dummy" and not self._left.done() and self._leaving:
            self._left.set_result(None)  # left as real, then told dummy: no release will come
        if role != "real" or update.epoch != update.old_epoch:
            # what we delegated as the real of an older epoch has no outcome coming to us, and
            # what we published then is not re-sent for a later reign (the new one publishes)
            self._delegations.reign_ended(
                f"this member stopped being the real of epoch {update.old_epoch}")
            self._last_continuity = None
        if update.news or adopted:
            self.listener.on_role(update.old, role, update.epoch)

    def _on_result(self, frame: ActionResult) -> None:
        pending = self._pending.get(frame.action_id)
        if pending is None:
            return
        if frame.ok:
            self._finish(pending, value=frame.value)
        else:
            assert frame.error is not None
            self._finish(pending, error_from_info(frame.error))

    def _on_error(self, frame: Error) -> None:
        log.warning("the hub of %r refused a frame: %s: %s", self.group, frame.code,
                    frame.message)
        if frame.code == "duplicate_member":
            self.member_id = _member_id()  # the hub closes us; the reconnect uses a new id
        elif frame.code in ("group", "full") and not self._connected.is_set():
            self._fatal = WebPhoneError(f"the group hub refused us: {frame.message}")

    # -- heartbeats ------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.heartbeat_interval)
            now = self._loop.time()
            self._note_stall()  # our own loop stalled (F14)? then do not blame the hub
            self._last_tick = now
            token = self._token
            if token is None or token.link is None or not self._connected.is_set():
                continue
            if now - self._last_heard > self.hub_timeout:
                log.warning("the hub of %r was silent for %.1f s: replacing it", self.group,
                            now - self._last_heard)
                await self.transport.recover_hung(token.link)
                self._on_lost(token, "hub silent")
                continue
            self._send_heartbeat(token)

    def _send_heartbeat(self, token: LinkToken) -> None:
        if token.link is None:
            return
        with contextlib.suppress(GroupLinkClosed):
            token.link.send(Heartbeat())
            token.heartbeats_sent += 1

    async def ping(self, timeout: float = 2.0) -> bool:
        """One heartbeat round trip with the hub on the current link: True if it answered."""
        token = self._token
        if token is None or token.link is None or token.lost:
            return False
        self._send_heartbeat(token)
        target = token.heartbeats_sent
        deadline = self._loop.time() + timeout
        while token.echoes < target and not token.lost:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            self._heard.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heard.wait(), remaining)
        return token.echoes >= target and not token.lost

    async def confirm_real(self, max_age: float | None = None, timeout: float = 4.0) -> bool:
        """True if we are the group's real (the SIP client asks before every REGISTER).

        When our latest frame from the hub is older than `max_age` (default two heartbeat
        intervals) or we stalled, first get a heartbeat echo from the hub: it answers in order,
        so a pending `role` frame (deposed) is read before the echo; if the link is lost
        meanwhile, the welcome of the next hub decides. With no hub reachable for `timeout` s we
        trust what we last heard, unless we stalled since (then: not real)."""
        if self.view.role != "real" or self.view.released is not None:
            return False
        limit = max_age or 2 * self.heartbeat_interval
        if not self._stalled() and self._loop.time() - self._last_frame <= limit:
            return True
        deadline = self._loop.time() + timeout
        while self.view.role == "real":
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                log.warning("could not confirm our role with the hub within %.1f s", timeout)
                break
            try:
                await asyncio.wait_for(self._connected.wait(), remaining)
            except TimeoutError:
                continue
            token = self._token
            if token is None or token.link is None:
                continue
            sent_at = self._loop.time()
            self._send_heartbeat(token)
            target = token.heartbeats_sent
            while token.echoes < target and not token.lost and self.view.role == "real":
                self._heard.clear()
                try:
                    await asyncio.wait_for(self._heard.wait(),
                                           max(deadline - self._loop.time(), 0.001))
                except TimeoutError:
                    break
            if token.echoes >= target and not token.lost:
                return self.view.role == "real" and self._last_frame >= sent_at
        return self.view.role == "real" and self.view.released is None and not self._stalled()

    # -- actions ---------------------------------------------------------------------------------

    async def request(self, name: str, call_id: str | None, args: dict[str, Any],
                      timeout: float | None = None) -> Any:
        """Run action `name` on the group's real; its result, or its error raised here."""
        if self._closed:
            raise NoRealPhoneError("this group member is closed")
        wait = self.action_timeout if timeout is None else timeout
        action_id = f"a{next(self._ids)}"
        # build the frame now: an invalid action fails here, before anything is queued
        frame = Action(action_id, name, call_id, args, wait)
        pending = _Pending(action_id, name, call_id, args, self._loop.time() + wait,
                           self._loop.create_future())
        self._pending[action_id] = pending
        if not (self._connected.is_set() and self._send_action(pending, frame)):
            pending.timer = self._loop.call_at(pending.deadline, self._local_deadline, pending)
        future = pending.future
        del pending
        try:
            return await future
        finally:
            # An error raised here carries a traceback that holds this frame; with the future
            # still in it, that is a cycle (frame -> future -> error -> traceback -> frame) of
            # a dozen objects per failed action, left to the cycle collector (a gen-0 pass
            # every ~60 failed actions, measured). Without it, they go by reference counting.
            del future

    def _send_action(self, pending: _Pending, frame: Action | None = None) -> bool:
        token = self._token
        if token is None or token.link is None:
            return False
        if frame is None:
            remaining = max(pending.deadline - self._loop.time(), 0.0)
            frame = Action(pending.action_id, pending.name, pending.call_id, pending.args,
                           remaining)
        try:
            token.link.send(frame)
        except GroupLinkClosed:
            return False
        pending.token = token
        if pending.timer is not None:
            pending.timer.cancel()  # from now on the hub owns the deadline
            pending.timer = None
        return True

    def _local_deadline(self, pending: _Pending) -> None:
        if pending.token is None:
            self._finish(pending, NoRealPhoneError(
                f"no connection to the group hub of {self.group!r} within the action's "
                "deadline"))

    def _finish(self, pending: _Pending, error: BaseException | None = None,
                value: Any = None) -> None:
        self._pending.pop(pending.action_id, None)
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(value)

    def send_result(self, token: LinkToken, action_id: str, *, value: Any = None,
                    error: ErrorInfo | None = None) -> bool:
        """Answer an action received on `token`'s link (only there: hub ids are per hub).
        Returns False if that link is gone (the caller got ActionInterruptedError)."""
        if token is not self._token or token.lost or token.link is None:
            return False
        try:
            frame = ActionResult(action_id, self.view.epoch, error is None, value, error)
        except GroupProtocolError as exc:  # a result value that is not plain JSON
            frame = ActionResult(action_id, self.view.epoch, False, None, error_info(exc))
        try:
            token.link.send(frame)
        except GroupLinkClosed:
            return False
        return True

    # -- real's duties ---------------------------------------------------------------------------

    def registered(self, epoch: int) -> None:
        """Tell the hub we registered as the real of `epoch` (make-before-break)."""
        token = self._token
        if token is not None and token.link is not None:
            with contextlib.suppress(GroupLinkClosed):
                token.link.send(Registered(epoch))

    def publish(self, state: dict[str, Any]) -> None:
        """Publish the real's state (sent now if connected, else after the reconnect)."""
        self._last_state = state
        self._send_state()

    def _send_state(self) -> None:
        token = self._token
        if (self._last_state is None or token is None or token.link is None
                or self.view.role != "real" or self.view.epoch < 1):
            return
        self._seq += 1
        with contextlib.suppress(GroupLinkClosed):
            token.link.send(Snapshot(self.view.epoch, self._seq, self._last_state))

    # -- the continuity plane (plane.py) --------------------------------------------------------

    async def delegate(self, to: str, op: str, call_id: str, args: dict[str, Any],
                       timeout: float = 10.0) -> Any:
        """(real only) Ask member `to` to do `op` (`actions.DELEGATE_OPS`) for call `call_id`;
        its result, or its error raised here. Exactly one outcome: the member's, or
        MemberLostError (it was lost first, or is not in the group), DelegateTimeoutError (no
        answer within `timeout`), ActionInterruptedError (we stopped being the real, or our
        link to the hub was lost, before the outcome came: it may or may not have been done).
        Invalid arguments raise GroupProtocolError before anything is sent."""
        delegate_id = f"d{next(self._ids)}"
        frame = Delegate(id=delegate_id, to=to, call_id=call_id, op=op, args=args,
                         epoch=max(self.view.epoch, 1), timeout=timeout)
        deadline = self._loop.time() + timeout
        while True:
            if not self.view.may_act or self._closed:
                raise ActionInterruptedError(
                    f"this member is not the real of group {self.group!r} (role "
                    f"{self.view.role}): only the real delegates; {op!r} was not sent")
            token = self._token
            if self._connected.is_set() and token is not None and token.link is not None:
                break
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise DelegateTimeoutError(f"no connection to the group hub of {self.group!r} "
                                           f"within {timeout:g} s; {op!r} was not sent")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), remaining)
        frame = Delegate(id=delegate_id, to=to, call_id=call_id, op=op, args=args,
                         epoch=self.view.epoch, timeout=max(deadline - self._loop.time(), 0.0))
        future = self._delegations.started(frame, token, backstop=self.hub_timeout)
        try:
            token.link.send(frame)
        except GroupLinkClosed:
            self._delegations.link_lost(token, "closed")
        return await future

    def send_delegate_result(self, token: LinkToken, request: Delegate, *, value: Any = None,
                             error: BaseException | ErrorInfo | None = None) -> bool:
        """Answer delegate `request`, received on `token`'s link (only there: its id is the
        hub's). `error` (an exception or ErrorInfo) makes it a failure. False if that link is
        gone: the real has then been told MemberLostError or will time out."""
        if token is not self._token or token.lost or token.link is None:
            return False
        info = error_info(error) if isinstance(error, BaseException) else error
        try:
            frame = DelegateResult(id=request.id, ok=info is None,
                                   value=value if info is None else None, error=info)
        except GroupProtocolError as exc:  # a value that is not plain JSON, or too long
            frame = DelegateResult(id=request.id, ok=False, error=error_info(exc))
        try:
            token.link.send(frame)
        except GroupLinkClosed:
            return False
        return True

    def publish_continuity(self, calls: dict[str, dict[str, Any]]) -> None:
        """(real only) Publish the continuity state, `{call_id: record}`: members-only, newest
        wins, re-sent after every reconnect while we stay the real (ignored on any other
        member). Raises GroupProtocolError (naming the field) if it is not plain JSON, names a
        secret, or is too large; nothing is sent then."""
        Continuity(epoch=max(self.view.epoch, 1), seq=0, calls=calls)  # check before keeping
        if not self.view.may_act:
            return  # not (or no longer) the real: the group's state is someone else's
        self._last_continuity = calls
        self._send_continuity()

    def _send_continuity(self) -> None:
        token = self._token
        if (self._last_continuity is None or token is None or token.link is None
                or not self.view.may_act or self.view.epoch < 1):
            return
        self._continuity_seq += 1
        frame = Continuity(epoch=self.view.epoch, seq=self._continuity_seq,
                           calls=self._last_continuity)
        self.continuity.offer(frame)
        with contextlib.suppress(GroupLinkClosed):
            token.link.send(frame)

    # -- queries ---------------------------------------------------------------------------------

    async def members(self, timeout: float = 5.0) -> tuple[MemberInfo, ...]:
        """Who is in the group (the hub's view, oldest first); `HubTimeoutError` if the hub
        did not answer within `timeout` s (reconnects meanwhile are waited for)."""
        deadline = self._loop.time() + timeout
        try:
            while not self._closed:
                await asyncio.wait_for(self._connected.wait(), deadline - self._loop.time())
                token = self._token
                if token is None or token.link is None:
                    continue
                query: asyncio.Future[tuple[MemberInfo, ...]] = self._loop.create_future()
                self._queries.append(query)
                try:
                    token.link.send(MembersQuery())
                    return await asyncio.wait_for(query,
                                                  max(deadline - self._loop.time(), 0.001))
                except (ConnectionError, GroupLinkClosed):
                    continue  # that link was lost: ask the next one, within the deadline
        except TimeoutError:
            raise HubTimeoutError(f"the hub of group {self.group!r} did not answer a members "
                                  f"query within {timeout:g} s") from None
        raise WebPhoneError(f"the member of group {self.group!r} is closed")
