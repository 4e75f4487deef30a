"""The group's rules as a pure state machine: members, roles, epochs, actions, snapshots.

Sans-I/O in the style of h11 and websockets: the hub feeds inputs in and carries effects out.
Nothing here touches a socket, a clock or asyncio; every input takes `now` (seconds, from one
monotonic clock of the hub's choosing). The hub shell loops::

    effects = coordinator.connection_made(conn, now)       # a socket was accepted
    effects = coordinator.data_received(conn, data, now)   # one frame's bytes arrived
    effects = coordinator.connection_lost(conn, now)       # EOF / reset: a crash is seen at once
    effects = coordinator.tick(now)                        # call at next_deadline() (or sooner)

and performs each effect in order: `Send(conn, frame)` writes `frame.to_json()` to that
connection, `Close(conn, reason)` closes it. The coordinator forgets a connection when it emits
`Close`, sends `Released`, or sees `Leave` from a dummy; later input from it is ignored.

Rules (invariants 1-4 and 6 of ARCHITECTURE.md):

* Roles: the first member is real, later ones dummies, at most one real at any instant. When the
  real is lost (crash: at once; silent for `heartbeat_timeout`; leave) the oldest live dummy is
  promoted. Silent dummies are dropped. A deposed real is kept one more timeout so that it reads
  its `role` frame when it wakes, and is promoted again only after it has been heard from.
* Fencing: the epoch grows on every promotion and every loss of the real. Snapshots, results and
  `registered` count only from the current real at the current epoch; any other sender is told
  its role again and the frame is dropped.
* Make-before-break: a real that leaves is "handing_over" (keeps its registration, runs nothing)
  until its successor reports `registered`, then `released` (unregister=false). With nobody to
  take over it is released with unregister=true, and nobody is promoted until it has closed, so a
  late unregister can never delete a newer real's binding. Calls in progress: the member side
  drains (a real with calls serves them and sends `leave` when they ended).
* Actions: queued until a real is ready (registered), sent to it exactly once (`action_accepted`
  to the caller), ended by one outcome: the real's result, NoRealPhoneError at the deadline while
  queued, or ActionInterruptedError if that real is lost first. Results reach only the caller.
* Snapshots: the newest (epoch, seq) is cached, fanned out to dummies, put in every `welcome`, and
  kept across a promotion until the new real publishes.
* Continuity plane (docs/shared.md): a `delegate` from the current real at the current epoch
  goes to its target member and ends in exactly one `delegate_result` to that real (see
  `routing.py`); the real is told `member_lost` for every member that crashes, hangs or leaves
  (losses while there is no real are kept for the next one); the newest `continuity` (epoch,
  seq) from the current real is cached, fanned out to every other member, sent right after every
  `welcome`, and kept across a promotion until the new real publishes. It is never put in a
  snapshot.
* Stalls (F14): if the hub itself did not run for `heartbeat_timeout`, nobody is judged on the gap.
* Hub restart: a member that was real says so in `hello`; it is adopted, still registered, unless
  a newer epoch was seen. A group that existed (some hello epoch > 0) waits `rejoin_grace` for it.

Without a central process (the Redis transport) the same rules map onto a lease: the real holds a
lease key whose TTL is the heartbeat timeout; every acquisition INCRs the epoch atomically (the
fencing token); the real stops acting once its renew deadline (< TTL) passed; snapshots, results
and `registered` go through a script that refuses an epoch other than the current one (as
`_from_current_real` does); an action is claimed with the claimer's epoch, answered
ActionInterruptedError by whoever sees the epoch move on first, NoRealPhoneError if unclaimed at
its deadline; make-before-break is a "successor" field in the lease record, the old real being
released once the successor acquired and marked itself registered.

The module is longer than ~500 lines on purpose: it is the group's one state machine (h11's
rule: every transition in one file); the action and delegate routers live in routing.py.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass

from webphone.errors import GroupProtocolError
from webphone.shared.protocol import (
    MEMBER_FRAMES,
    PROTOCOL_VERSION,
    Action,
    ActionResult,
    Continuity,
    Delegate,
    DelegateResult,
    Error,
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
    decode_frame,
)
from webphone.shared.routing import ActionRouter, DelegateRouter, Out

__all__ = ["Close", "Coordinator", "Effect", "MemberState", "Send"]


@dataclass(frozen=True)
class Send:
    """Effect: write `frame` to connection `conn`."""

    conn: str
    frame: Frame


@dataclass(frozen=True)
class Close:
    """Effect: close connection `conn` (after writing what was sent before)."""

    conn: str
    reason: str


Effect = Send | Close


class MemberState(enum.Enum):
    """Where one connection stands."""

    PENDING = "pending"  # connected, no hello yet
    DUMMY = "dummy"
    REAL = "real"
    HANDING_OVER = "handing_over"  # left as real; waits for the successor's registration
    UNREGISTERING = "unregistering"  # released to unregister; nobody is promoted until it closes


@dataclass
class _Member:
    conn: str
    state: MemberState
    last_heard: float
    order: int  # join order: the oldest dummy (lowest order) is promoted first
    hello: Hello | None = None
    joined_at: float = 0.0
    role_since: float = 0.0
    deposed: bool = False  # deposed for silence and not heard from since: never promote
    handover_deadline: float | None = None
    loss_told: bool = False  # the real was told `member_lost` for it (deposed for silence)

    @property
    def member_id(self) -> str:
        return self.hello.member_id if self.hello else self.conn

    @property
    def role(self) -> Role:
        if self.state is MemberState.REAL:
            return "real"
        if self.state in (MemberState.HANDING_OVER, MemberState.UNREGISTERING):
            return "handing_over"
        return "dummy"


class Coordinator:
    """The group state machine run by the hub; one instance per group. See the module doc.

    Parameters (seconds): `heartbeat_interval` is what members are told to use; a member silent
    for `heartbeat_timeout` is deposed (real) or dropped (others); a handover whose successor has
    not registered after `handover_timeout` releases the old real anyway, without unregistering;
    `hello_timeout` bounds a connection that never says hello; `rejoin_grace` is how long a
    restarted hub waits for the group's real to come back (default: `heartbeat_timeout`).
    `instance` is a short random token per hub process (e.g. `secrets.token_hex(4)`): it
    prefixes the action ids the real sees, so a late result meant for a previous hub's action
    can never match one of this hub's.
    """

    def __init__(
        self,
        group: str,
        *,
        now: float,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
        handover_timeout: float = 10.0,
        hello_timeout: float = 5.0,
        rejoin_grace: float | None = None,
        max_members: int = 1024,
        max_pending_actions: int = 256,
        instance: str = "",
    ) -> None:
        if not 0 < heartbeat_interval < heartbeat_timeout:
            raise ValueError("need 0 < heartbeat_interval < heartbeat_timeout")
        self.group = group
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.handover_timeout = handover_timeout
        self.hello_timeout = hello_timeout
        self.max_members = max_members
        grace = heartbeat_timeout if rejoin_grace is None else rejoin_grace
        self._grace_until = now + grace
        self._real_adopted = False  # the real came back in a hello (hub restart), not promoted
        self._group_existed = False  # a hello carried epoch > 0: wait for its real (grace)
        self._epoch = 0
        self._real: _Member | None = None
        self._ready = False
        self._snapshot: Snapshot | None = None
        self._members: dict[str, _Member] = {}
        self._actions = ActionRouter(group, max_pending_actions, id_prefix=f"{instance[:32]}h")
        self._delegates = DelegateRouter(max_pending_actions, id_prefix=f"{instance[:32]}d")
        self._continuity: Continuity | None = None
        self._losses: list[MemberLost] = []  # for the real; kept while there is none
        self._order = itertools.count()
        self._last_now = now
        self._announce_due = False  # the real or the epoch changed: tell everyone
        self._out: list[Effect] = []

    # -- read-only views ---------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The group epoch (fencing token); grows on every change of the real."""
        return self._epoch

    @property
    def real(self) -> str | None:
        """The connection of the current real, or None."""
        return self._real.conn if self._real else None

    @property
    def real_ready(self) -> bool:
        """True once the current real reported `registered` for the current epoch."""
        return self._ready

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest accepted snapshot (possibly from an earlier epoch)."""
        return self._snapshot

    @property
    def continuity(self) -> Continuity | None:
        """The newest accepted continuity state (possibly from an earlier epoch)."""
        return self._continuity

    def pending_delegates(self) -> int:
        """How many delegates are in flight."""
        return len(self._delegates)

    def state_of(self, conn: str) -> MemberState | None:
        """The state of one connection, or None if the coordinator does not know it."""
        member = self._members.get(conn)
        return member.state if member else None

    def members(self) -> tuple[MemberInfo, ...]:
        """Members that said hello, oldest first."""
        joined = sorted((m for m in self._members.values() if m.hello), key=lambda m: m.order)
        return tuple(self._info(m) for m in joined)

    def pending_actions(self) -> int:
        """How many actions are queued or running."""
        return len(self._actions)

    def next_deadline(self) -> float | None:
        """When `tick` must run next (None: nothing to time). While anyone is connected this is
        at most `heartbeat_interval` away, which is also how the coordinator tells a stalled hub
        from silent members."""
        if not self._members:
            return None
        times = [self._last_now + self.heartbeat_interval]
        times.extend(self._member_deadline(m) for m in self._members.values())
        times.extend(m.handover_deadline for m in self._members.values() if m.handover_deadline)
        for deadline in (self._actions.next_deadline(), self._delegates.next_deadline()):
            if deadline is not None:
                times.append(deadline)
        if self._real is None and self._group_existed:
            times.append(self._grace_until)
        return min(times)

    # -- inputs ----------------------------------------------------------------------------------

    def connection_made(self, conn: str, now: float) -> list[Effect]:
        """A member connected; it must send `hello` within `hello_timeout`."""
        self._observe(now)
        if conn in self._members:
            raise ValueError(f"connection {conn!r} is already known")
        self._members[conn] = _Member(conn, MemberState.PENDING, now, next(self._order))
        return self._take()

    def data_received(self, conn: str, data: bytes, now: float) -> list[Effect]:
        """One frame's bytes from `conn`; a malformed frame closes that connection."""
        try:
            frame = decode_frame(data)
        except GroupProtocolError as exc:
            self._observe(now)
            if conn in self._members:
                self._protocol_error(self._members[conn], str(exc), now)
            return self._take()
        return self.frame_received(conn, frame, now)

    def frame_received(self, conn: str, frame: Frame, now: float) -> list[Effect]:
        """One decoded frame from `conn`."""
        self._observe(now)
        member = self._members.get(conn)
        if member is None:
            return self._take()  # forgotten (closed, released, left): ignore
        member.last_heard = now
        if type(frame) not in MEMBER_FRAMES:
            self._protocol_error(member, f"{frame.TYPE!r} is not a member frame", now)
        elif member.hello is None:
            if isinstance(frame, Hello):
                self._on_hello(member, frame, now)
            else:
                self._protocol_error(member, f"expected hello, got {frame.TYPE!r}", now)
        else:
            self._dispatch(member, frame, now)
            if member.deposed and member.conn in self._members:
                member.deposed = False  # awake again: it may be promoted like anyone else
                member.loss_told = False  # a later loss is news again
                self._settle(now)
        return self._take()

    def connection_lost(self, conn: str, now: float) -> list[Effect]:
        """The connection closed (EOF, reset, or closed by the hub). A real is replaced at once."""
        self._observe(now)
        member = self._members.get(conn)
        if member is not None:
            self._forget(member, now)
        return self._take()

    def action_undelivered(self, conn: str, action_id: str, now: float) -> list[Effect]:
        """The shell could not hand the action `action_id` (the id the real sees) to `conn`:
        its connection had already failed. The real never read it, so it is queued again for
        the next real rather than ended interrupted (invariant 3 holds: it runs at most once)."""
        self._observe(now)
        self._actions.undelivered(conn, action_id)
        return self._take()

    def tick(self, now: float) -> list[Effect]:
        """Run timers: hello and heartbeat timeouts, handovers, the rejoin grace, deadlines."""
        self._observe(now)
        # Silent non-reals go first, so that a deposed real is never replaced by a silent dummy.
        for member in list(self._members.values()):
            if member is not self._real and self._member_deadline(member) <= now:
                reason = "no hello in time" if member.hello is None else "heartbeat timeout"
                self._drop(member, now, reason, loss="hung")
        if self._real is not None and self._member_deadline(self._real) <= now:
            self._depose(self._real, now)
        for member in list(self._members.values()):
            deadline = member.handover_deadline
            if deadline is None or deadline > now:
                continue
            if member.state is MemberState.UNREGISTERING:
                self._drop(member, now, "did not unregister and close in time", loss="left")
            else:
                self._release(member, now, unregister=False)
        self._settle(now)
        self._route(self._actions.expire(now, self._epoch))
        self._route(self._delegates.expire(now))
        return self._take()

    # -- frames ----------------------------------------------------------------------------------

    def _dispatch(self, member: _Member, frame: Frame, now: float) -> None:
        if isinstance(frame, Heartbeat):
            self._send(member, Heartbeat())
        elif isinstance(frame, Action):
            self._on_action(member, frame, now)
        elif isinstance(frame, Snapshot):
            self._on_snapshot(member, frame)
        elif isinstance(frame, ActionResult):
            self._on_result(member, frame)
        elif isinstance(frame, Registered):
            self._on_registered(member, frame)
        elif isinstance(frame, Leave):
            self._on_leave(member, now)
        elif isinstance(frame, MembersQuery):
            self._send(member, Members(self.members()))
        elif isinstance(frame, Delegate):
            self._on_delegate(member, frame, now)
        elif isinstance(frame, DelegateResult):
            self._route(self._delegates.result(member.conn, frame))
        elif isinstance(frame, Continuity):
            self._on_continuity(member, frame)
        else:  # a second hello
            self._protocol_error(member, "hello was already received", now)

    def _on_hello(self, member: _Member, hello: Hello, now: float) -> None:
        refusal = self._refuse_hello(member, hello)
        if refusal:
            code, message = refusal
            self._send(member, Error(code, message))
            self._drop(member, now, message)
            return
        member.hello, member.joined_at, member.role_since = hello, now, now
        member.state = MemberState.DUMMY
        if hello.epoch > 0:
            self._group_existed = True
        if hello.epoch > self._epoch and self._may_learn_epoch(now):
            self._learn_epoch(hello.epoch, now)
        if hello.real and hello.epoch == self._epoch and self._real is None:
            # The real of this epoch, back after a hub restart: it is still registered.
            self._make_real(member, now, ready=True)
        self._settle(now, quiet=member)  # the first member becomes real here
        self._send(member, self._welcome(member))
        if self._continuity is not None:  # separate: welcome + continuity may pass a frame
            self._send(member, self._continuity)
        self._flush_queue(now)

    def _refuse_hello(self, member: _Member, hello: Hello) -> tuple[str, str] | None:
        if hello.group != self.group:
            return "group", f"this hub serves group {self.group!r}, not {hello.group!r}"
        if hello.protocol < PROTOCOL_VERSION:
            return "protocol", f"protocol {hello.protocol} is older than {PROTOCOL_VERSION}"
        if any(m.hello and m.hello.member_id == hello.member_id for m in self._members.values()):
            return "duplicate_member", f"member id {hello.member_id!r} is already connected"
        if sum(1 for m in self._members.values() if m.hello) >= self.max_members:
            return "full", f"the group already has {self.max_members} members"
        return None

    def _may_learn_epoch(self, now: float) -> bool:
        """A hello's epoch is a claim. It is believed only while a restarted hub gathers its
        group (the first `rejoin_grace`) and before a real of this hub's own making exists: a
        real promoted here, or one whose heartbeats are current after the grace, is never
        demoted by what a newcomer says (a hello with `real: true, epoch: 2**48` would be)."""
        return now < self._grace_until and (self._real is None or self._real_adopted)

    def _learn_epoch(self, epoch: int, now: float) -> None:
        """A restarted hub met a member that knows a newer epoch: any real it adopted is stale."""
        if self._real is not None:
            self._depose(self._real, now, settle=False)
        self._epoch = max(self._epoch, epoch)

    def _on_snapshot(self, member: _Member, snap: Snapshot) -> None:
        if not self._from_current_real(member, snap.epoch):
            return
        if self._snapshot is not None and snap.version <= self._snapshot.version:
            return  # not newer: a member never goes backwards
        self._snapshot = snap
        for other in self._members.values():
            if other.state is MemberState.DUMMY:
                self._send(other, snap)

    def _on_continuity(self, member: _Member, frame: Continuity) -> None:
        if not self._from_current_real(member, frame.epoch):
            return
        if self._continuity is not None and frame.version <= self._continuity.version:
            return  # not newer: never goes backwards
        self._continuity = frame
        for other in self._members.values():
            if other is not member and other.hello and other.state is not MemberState.PENDING:
                self._send(other, frame)

    def _on_delegate(self, member: _Member, frame: Delegate, now: float) -> None:
        if not self._from_current_real(member, frame.epoch):
            return
        if self._delegates.is_duplicate(member.conn, frame.id):
            self._send(member, Error("duplicate_action", f"delegate id {frame.id!r} is in use"))
            return
        target = next((m.conn for m in self._members.values()
                       if m.hello and m.hello.member_id == frame.to), None)
        self._route(self._delegates.received(member.conn, frame, target, now, self._epoch))

    def _on_registered(self, member: _Member, frame: Registered) -> None:
        if not self._from_current_real(member, frame.epoch) or self._ready:
            return
        self._ready = True
        for other in list(self._members.values()):
            if other.state is MemberState.HANDING_OVER:
                self._release(other, self._last_now, unregister=False)
        self._flush_queue(self._last_now)

    def _from_current_real(self, member: _Member, epoch: int) -> bool:
        """Fencing: only the current real at the current epoch acts for the group."""
        if member is self._real and epoch == self._epoch:
            return True
        self._send(member, RoleChange(member.role, self._epoch, self._real_id()))
        return False

    def _on_leave(self, member: _Member, now: float) -> None:
        if member is self._real:
            # Drain policy: the member sends leave only once its calls ended. Anything sent to
            # it meanwhile is interrupted now, because a leaving real runs nothing new.
            self._end_reign()
            member.state, member.role_since = MemberState.HANDING_OVER, now
            member.handover_deadline = now + self.handover_timeout
            self._settle(now)
        elif member.state is MemberState.DUMMY:
            self._forget(member, now, loss="left")

    # -- roles -----------------------------------------------------------------------------------

    def _settle(self, now: float, quiet: _Member | None = None) -> None:
        """After any change: promote if there is no real; release leavers if nobody can be.

        `quiet` is a member about to get its welcome, which tells it everything already.
        """
        if self._real is None and not self._in_grace(now) and not self._unregistering():
            successor = self._successor()
            if successor is not None:
                self._epoch += 1
                self._make_real(successor, now, ready=False)
            else:
                for member in list(self._members.values()):
                    if member.state is MemberState.HANDING_OVER:
                        self._release(member, now, unregister=True)  # the last one unregisters
        if self._announce_due:
            self._announce(quiet)

    def _unregistering(self) -> bool:
        # While a released real may still send its unregister, promoting anyone could let that
        # unregister delete the new real's binding (both use the group's instance id).
        return any(m.state is MemberState.UNREGISTERING for m in self._members.values())

    def _in_grace(self, now: float) -> bool:
        return self._group_existed and now < self._grace_until

    def _successor(self) -> _Member | None:
        """The oldest live dummy: heard from within the timeout, and not deposed since."""
        live = [m for m in self._members.values() if m.state is MemberState.DUMMY
                and not m.deposed and self._member_deadline(m) > self._last_now]
        return min(live, key=lambda m: m.order, default=None)

    def _make_real(self, member: _Member, now: float, *, ready: bool) -> None:
        member.state, member.role_since = MemberState.REAL, now
        self._real, self._ready = member, ready
        self._real_adopted = ready  # only a real adopted from its hello starts out ready
        self._group_existed = False  # the rejoin grace is over once there is a real
        self._announce_due = True

    def _announce(self, quiet: _Member | None) -> None:
        """Tell every member but `quiet` its role, the new epoch and who is real."""
        self._announce_due = False
        for other in self._members.values():
            if other is not quiet and other.hello and other.state is not MemberState.UNREGISTERING:
                self._send(other, RoleChange(other.role, self._epoch, self._real_id()))

    def _end_reign(self) -> None:
        """The real stops being real: what it accepted is interrupted, its epoch is fenced."""
        if self._real is not None:
            self._route(self._actions.real_lost(self._real.conn, self._real.member_id, self._epoch))
            self._route(self._delegates.real_ended(self._real.conn))
        self._real, self._ready = None, False
        self._epoch += 1
        self._announce_due = True

    def _depose(self, member: _Member, now: float, *, settle: bool = True) -> None:
        """The real is hung (or stale): replace it, keep it one more timeout to read its role.
        For the continuity plane it is lost ("hung"): its delegates end, the next real is told."""
        self._end_reign()
        if settle:  # not a stale real met by a restarted hub: that one is not hung
            self._lose(member, "hung")
            member.loss_told = True
        member.state, member.role_since, member.deposed = MemberState.DUMMY, now, True
        member.last_heard = now
        if settle:
            self._settle(now)
        if self._snapshot is not None:  # as a dummy it shows the group's state, not its own
            self._send(member, self._snapshot)

    def _release(self, member: _Member, now: float, *, unregister: bool) -> None:
        """Let a handing-over real go. With `unregister` it stays known until it closes."""
        self._send(member, Released(self._epoch, unregister))
        if unregister:
            member.state, member.role_since = MemberState.UNREGISTERING, now
            member.handover_deadline = now + self.handover_timeout
        else:
            self._remove(member, "left")

    def _forget(self, member: _Member, now: float, loss: str = "crashed") -> None:
        """The connection is gone: drop its actions; a lost real is replaced at once."""
        self._remove(member, loss)
        if member is self._real:
            self._end_reign()
        self._settle(now)

    def _remove(self, member: _Member, loss: str) -> None:
        del self._members[member.conn]
        self._actions.forget_caller(member.conn)  # results for it, if any arrive, find nothing
        if member.hello is not None and not (member.loss_told and loss == "hung"):
            self._lose(member, loss)

    def _lose(self, member: _Member, reason: str) -> None:
        """Member `member` is lost for the continuity plane: end what was delegated to it and
        tell the real (now, or the next one: see `_take`)."""
        self._route(self._delegates.member_lost(member.conn, reason))
        self._losses.append(MemberLost(member_id=member.member_id, reason=reason))
        del self._losses[:-self.max_members]  # bounded while there is no real to tell

    def _drop(self, member: _Member, now: float, reason: str, loss: str = "crashed") -> None:
        self._out.append(Close(member.conn, reason))
        self._forget(member, now, loss)

    def _protocol_error(self, member: _Member, message: str, now: float) -> None:
        self._send(member, Error("protocol", message[:2000]))
        self._drop(member, now, message)

    # -- actions (the rules live in routing.py) ----------------------------------------------

    def _on_action(self, member: _Member, frame: Action, now: float) -> None:
        if self._actions.is_duplicate(member.conn, frame.action_id):
            message = f"action id {frame.action_id!r} was already used"
            self._send(member, Error("duplicate_action", message))
            return
        real = self._real.conn if self._real and self._ready else None
        self._route(self._actions.received(member.conn, frame, now, real, self._epoch))

    def _on_result(self, member: _Member, result: ActionResult) -> None:
        if self._from_current_real(member, result.epoch):
            self._route(self._actions.result(member.conn, result))

    def _flush_queue(self, now: float) -> None:
        if self._real is not None and self._ready:
            self._route(self._actions.real_ready(self._real.conn, now, self._epoch))
        else:
            self._route(self._actions.expire(now, self._epoch))

    def _route(self, outs: list[Out]) -> None:
        self._out.extend(Send(conn, frame) for conn, frame in outs)

    # -- helpers ---------------------------------------------------------------------------------

    def _observe(self, now: float) -> None:
        """Track the hub's own clock; after a stall nobody is judged on the gap (F14)."""
        if now - self._last_now > self.heartbeat_timeout:
            for member in self._members.values():
                member.last_heard = max(member.last_heard, now)
        self._last_now = max(self._last_now, now)

    def _member_deadline(self, member: _Member) -> float:
        if member.state is MemberState.PENDING:
            return member.last_heard + self.hello_timeout
        return member.last_heard + self.heartbeat_timeout

    def _real_id(self) -> str | None:
        return self._real.member_id if self._real else None

    def _info(self, m: _Member) -> MemberInfo:
        assert m.hello is not None
        return MemberInfo(m.hello.member_id, m.hello.pid, m.hello.host, m.role,
                          m.joined_at, m.role_since)

    def _welcome(self, member: _Member) -> Welcome:
        return Welcome(member.member_id, member.role, self._epoch, self._real_id(),
                       self.heartbeat_interval, self._snapshot, self.members())

    def _send(self, member: _Member, frame: Frame) -> None:
        self._out.append(Send(member.conn, frame))

    def _take(self) -> list[Effect]:
        if self._losses and self._real is not None:
            real = self._real
            for lost in self._losses:
                if lost.member_id != real.member_id:
                    self._send(real, lost)
            self._losses.clear()
        out, self._out = self._out, []
        return out
