"""Leadership by lease, for groups without a hub (the Redis transport). Pure: no I/O, no clock.

Three parties, each with its own clock, and one rule that keeps them apart:

* **The store** (Redis) keeps one lease record per group: holder, epoch, state. The record
  expires `ttl` after the store *processed* the last acquire or renew (its own clock). An
  acquisition succeeds only on a free record (absent, expired, released, or handed over), and
  every acquisition draws a new epoch from a counter that only grows: the fencing token.
* **The holder** counts its validity from the moment it *sent* the request that acquired or
  renewed the lease (its own monotonic clock), for `renew_deadline` < `ttl`. A request is
  processed after it was sent, so the holder's validity always ends at least
  `ttl - renew_deadline` before the store can hand the lease to anyone else. When it cannot
  renew before its deadline it steps down on its own (fences its SIP client) without waiting to
  hear anything: silence is enough.
* **Candidates** never judge the holder with their own clocks: they ask the store, which refuses
  them until the record is free. A candidate only schedules its next attempt for when the store
  said the record would expire (`Candidate`).

Only clock *rates* matter, never offsets: the holder is safe as long as its clock does not run
more than ``ttl / renew_deadline`` times slower than the store's (1.5x with the defaults).
Pauses (SIGSTOP, a blocked loop, a suspended VM) are covered because the holder checks its
validity before it acts and a paused process does not act; the margin `ttl - renew_deadline`
covers a pause that falls between that check and the act. A store that restarted may have
forgotten a live lease: `restart_grace` (see `fresh_acquire_allowed`) keeps it from granting a
*new* lease during its first `ttl` of uptime; only the holder that can prove it still holds one
(`LeaseHolder.valid`) may re-claim then.

**Replicated stores** (Redis Sentinel, Redis Cluster) fail over to a replica, and replication
is asynchronous: a promoted replica may miss the newest writes, among them a grant or a renewal
whose answer the holder already has. Hence the *acknowledgement rule*: a grant or renewal counts
only once at least `required` replicas acknowledged it (Redis: ``WAIT required timeout`` on the
same connection, after the script; `acknowledged`). An unacknowledged grant leaves the member
`PENDING` (not valid: it acts on nothing, and confirms the grant with a renewal that is
acknowledged); an unacknowledged renewal extends nothing (retried like a failed one). A replica
that acknowledged a write holds every earlier write too (replication is one ordered stream), so
whatever a valid holder relies on survives the promotion of that replica: the record, its
expiry and the epoch counter. `ReplicatedStore` models a primary and its replica; the tests
promote replicas at arbitrary moments. `required` 0 (a single server) accepts every answer.

`LeaseStore` is the store's rules as a plain object (the Lua scripts of
`webphone.shared.transports.redis` do the same on Redis); the tests drive it together with
`LeaseHolder` through random delays, pauses, crashes and restarts and check that at no instant
two holders consider themselves valid.
"""

from __future__ import annotations

import copy
import enum
import math
from dataclasses import dataclass

__all__ = [
    "Candidate",
    "HolderState",
    "LeaseHolder",
    "LeaseRecord",
    "LeaseStore",
    "LeaseTimings",
    "ReplicatedStore",
    "acknowledged",
    "fresh_acquire_allowed",
]


@dataclass(frozen=True)
class LeaseTimings:
    """How long a lease lasts and how its holder keeps it (seconds). All configurable.

    Defaults for a 3 s lease (`from_heartbeat_timeout(3.0)`) and why:

    * `ttl` 3 s: how long a crashed real blocks the group (a crash is only visible as a lease
      that stops being renewed). Same reasoning as the hub's heartbeat timeout: GC pauses,
      blocking calls and busy 2-core machines stall a loop for a second or two, so a shorter
      lease would depose live reals (F3), while k8s (15 s) and broadcast-channel (about 4.2 s)
      are slower. Redis itself answers in well under a millisecond.
    * `renew_interval` 1 s (ttl / 3): two renewals may fail before the deadline.
    * `renew_deadline` 2 s (2/3 ttl): the holder stops 1 s before anyone else can take over;
      that margin absorbs clock rate errors and a pause between checking and acting (k8s uses
      the same ratio, 10 s of 15 s).
    * `retry_interval` 0.2 s (ttl / 15): after a failed renewal, try again quickly.
    * `command_timeout` 0.5 s (min(ttl / 6, 0.5)): a Redis command that takes longer counts as
      failed, so that a hung Redis costs at most one retry before the deadline.
    * `jitter` 0.05 s: candidates wait a random 0..jitter after the expiry before they try,
      so that they do not all hit the store at once (it decides anyway: SET NX semantics).
    * `ack_timeout` 0.25 s (command_timeout / 2): how long a replicated store waits for its
      replicas to acknowledge a grant or renewal (Redis WAIT's timeout); below the command
      timeout, so that the wait ends with an answer, not a dropped connection. Replicas on a
      LAN acknowledge within a millisecond; a replica slower than this counts as missing.
    """

    ttl: float = 3.0
    renew_interval: float = 1.0
    renew_deadline: float = 2.0
    retry_interval: float = 0.2
    command_timeout: float = 0.5
    jitter: float = 0.05
    ack_timeout: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.renew_interval < self.renew_deadline < self.ttl:
            raise ValueError("need 0 < renew_interval < renew_deadline < ttl")
        if not 0 < self.retry_interval <= self.renew_interval:
            raise ValueError("need 0 < retry_interval <= renew_interval")
        if not 0 < self.command_timeout <= self.renew_deadline - self.renew_interval:
            raise ValueError("need 0 < command_timeout <= renew_deadline - renew_interval "
                             "(a renewal sent on time must be answered before the deadline)")
        if self.jitter < 0:
            raise ValueError("jitter must not be negative")
        if not 0 < self.ack_timeout < self.command_timeout:
            raise ValueError("need 0 < ack_timeout < command_timeout (the replicas' wait must "
                             "end before the command times out)")

    @classmethod
    def from_heartbeat_timeout(cls, heartbeat_timeout: float) -> LeaseTimings:
        """The defaults scaled to a group's heartbeat timeout (the lease replaces it)."""
        ttl = heartbeat_timeout
        command_timeout = min(ttl / 6, 0.5)
        return cls(ttl=ttl, renew_interval=ttl / 3, renew_deadline=ttl * 2 / 3,
                   retry_interval=ttl / 15, command_timeout=command_timeout,
                   jitter=min(0.05, ttl / 30), ack_timeout=command_timeout / 2)

    @property
    def ttl_ms(self) -> int:
        """`ttl` in whole milliseconds, rounded up (what PEXPIRE gets)."""
        return math.ceil(self.ttl * 1000)


class HolderState(enum.Enum):
    """The holder's side of one lease."""

    IDLE = "idle"  # never held one, or released it
    PENDING = "pending"  # granted, but not acknowledged by the replicas yet: not valid
    HELD = "held"  # valid until `valid_until`
    EXPIRED = "expired"  # the deadline passed without a renewal: stepped down
    LOST = "lost"  # the store said someone else holds it (or nobody)


class LeaseHolder:
    """The holder's view of its lease (see the module docstring). Times are the holder's own
    monotonic clock; every method takes `now` or the time a request was sent."""

    def __init__(self, timings: LeaseTimings) -> None:
        self.timings = timings
        self.state = HolderState.IDLE
        self.epoch = 0
        self.valid_until = 0.0
        self._last_sent = 0.0  # send time of the newest successful acquire/renew
        self._retry_at: float | None = None  # after a failed renewal

    def acquired(self, epoch: int, sent_at: float, *, acked: bool = True) -> None:
        """The store granted the lease at `epoch` to a request sent at `sent_at`. Not `acked`
        (the replicas did not acknowledge it): `PENDING`, not valid, and `next_renewal()` says
        when to confirm it with a renewal."""
        self.epoch = epoch
        if not acked:
            self.state = HolderState.PENDING
            self._retry_at = sent_at + self.timings.retry_interval
            return
        self.state = HolderState.HELD
        self.valid_until = sent_at + self.timings.renew_deadline
        self._last_sent = sent_at
        self._retry_at = None

    def renewed(self, epoch: int, sent_at: float, *, acked: bool = True) -> None:
        """The store renewed the lease for a request sent at `sent_at`. A late answer never
        shortens validity, and an answer for another epoch or after the deadline is ignored:
        once stepped down, only a new acquisition makes the holder valid again. Not `acked`:
        it extends nothing and is retried soon. An acknowledged renewal of a `PENDING` grant
        makes it valid (the replicas that have the renewal have the grant before it)."""
        if epoch != self.epoch:
            return
        if self.state is HolderState.PENDING:
            if acked:
                self.acquired(epoch, sent_at)
            else:
                self._retry_at = sent_at + self.timings.retry_interval
            return
        if self.state is not HolderState.HELD:
            return
        if not acked:
            self._retry_at = sent_at + self.timings.retry_interval
            return
        self.valid_until = max(self.valid_until, sent_at + self.timings.renew_deadline)
        self._last_sent = max(self._last_sent, sent_at)
        self._retry_at = None

    def renew_failed(self, now: float) -> None:
        """A renewal got no answer (timeout, connection error): retry soon."""
        if self.state is HolderState.HELD:
            self._retry_at = now + self.timings.retry_interval

    def lost(self) -> None:
        """The store says we do not hold the lease (any more)."""
        if self.state in (HolderState.HELD, HolderState.PENDING):
            self.state = HolderState.LOST

    def released(self) -> None:
        """We gave the lease up (or handed it over)."""
        self.state = HolderState.IDLE

    def valid(self, now: float) -> bool:
        """True while we may act as the holder: held, and before the renew deadline."""
        return self.state is HolderState.HELD and now < self.valid_until

    def check(self, now: float) -> bool:
        """Call before acting and at `next_deadline()`: True exactly once, when the deadline
        has just passed (the holder must step down now)."""
        if self.state is HolderState.HELD and now >= self.valid_until:
            self.state = HolderState.EXPIRED
            return True
        return False

    def next_renewal(self) -> float | None:
        """When to send the next renewal (None: not holding): `renew_interval` after the last
        successful one, or `retry_interval` after a failed or unacknowledged one (also the
        confirmation of a `PENDING` grant)."""
        if self.state is HolderState.PENDING:
            return self._retry_at
        if self.state is not HolderState.HELD:
            return None
        if self._retry_at is not None:
            return self._retry_at
        return self._last_sent + self.timings.renew_interval

    def next_deadline(self) -> float | None:
        """When `check()` must run (None: not holding)."""
        return self.valid_until if self.state is HolderState.HELD else None


class Candidate:
    """When a member that does not hold the lease tries to acquire it next.

    The store tells it how long the current record still lives (PTTL); the candidate tries
    right after that, plus a random jitter (the caller draws it: this stays deterministic).
    A free or handed-over record is tried at once (plus jitter)."""

    def __init__(self, timings: LeaseTimings) -> None:
        self.timings = timings
        self.next_attempt: float | None = None

    def observed(self, now: float, pttl_ms: int | None, jitter_sample: float) -> float:
        """The store said the record expires in `pttl_ms` (None or <= 0: free now). Returns the
        time of the next attempt; `jitter_sample` is in [0, 1)."""
        wait = 0.0 if pttl_ms is None or pttl_ms <= 0 else pttl_ms / 1000
        self.next_attempt = now + wait + jitter_sample * self.timings.jitter
        return self.next_attempt

    def cancel(self) -> None:
        """No attempt pending (we hold the lease, or we are leaving)."""
        self.next_attempt = None


def acknowledged(acks: int | None, required: int) -> bool:
    """The acknowledgement rule (see the module docstring): may a grant or renewal be acted
    on? `acks` is how many replicas acknowledged it (Redis WAIT's answer; None: not asked),
    `required` how many the group requires (0: a single server, every answer counts)."""
    return required <= 0 or (acks is not None and acks >= required)


def fresh_acquire_allowed(now: float, server_started_at: float | None, ttl: float) -> bool:
    """May a *new* holder be granted the lease? Not during the store's first `ttl` of uptime:
    a store that restarted (without persistence, or from an old snapshot) may have forgotten a
    lease whose holder is still valid. `server_started_at` is the store's start on the
    caller's clock (None: unknown, assume it just started)."""
    if server_started_at is None:
        return False
    return now >= server_started_at + ttl


# -- the store's rules, as a model -------------------------------------------------------------


@dataclass
class LeaseRecord:
    """One group's lease in the store."""

    holder: str
    epoch: int
    expires_at: float
    state: str = "real"  # "real" | "handing" (holder leaves) | "unregistering"


class LeaseStore:
    """The store's side (what the Redis scripts do), on the store's own clock.

    `started_at` is when the store (re)started; `restart()` forgets everything, as a Redis
    without persistence does. The epoch counter never goes below an epoch a member reports."""

    def __init__(self, ttl: float, now: float = 0.0) -> None:
        self.ttl = ttl
        self.record: LeaseRecord | None = None
        self.counter = 0
        self.started_at = now

    def live(self, now: float) -> LeaseRecord | None:
        """The record if it has not expired."""
        if self.record is not None and now >= self.record.expires_at:
            self.record = None
        return self.record

    def acquire(self, member: str, now: float, known_epoch: int = 0,
                reclaim_epoch: int = 0, fresh_ok: bool = True) -> int | None:
        """Grant the lease to `member` if it is free (or handed over, or a re-claim by its
        holder); returns the new epoch, or None. `reclaim_epoch`: the member says it held the
        lease at that epoch and still considers itself valid (after a reconnect or a store
        restart); `fresh_ok`: the caller checked `fresh_acquire_allowed`."""
        record = self.live(now)
        if record is not None:
            mine = reclaim_epoch > 0 and record.holder == member and record.epoch == reclaim_epoch
            if not mine and not (record.state == "handing" and record.holder != member):
                return None
        elif reclaim_epoch == 0 and not fresh_ok:
            return None
        self.counter = max(self.counter + 1, known_epoch + 1)
        self.record = LeaseRecord(member, self.counter, now + self.ttl)
        return self.counter

    def renew(self, member: str, epoch: int, now: float) -> bool:
        """Compare-and-pexpire: only the holder at `epoch` extends the record."""
        record = self.live(now)
        if record is None or record.holder != member or record.epoch != epoch:
            return False
        record.expires_at = now + self.ttl
        return True

    def release(self, member: str, epoch: int, now: float) -> bool:
        """Compare-and-delete (graceful leave, or a holder that stepped down)."""
        record = self.live(now)
        if record is None or record.holder != member or record.epoch != epoch:
            return False
        self.record = None
        return True

    def hand_over(self, member: str, epoch: int, now: float) -> bool:
        """The holder leaves: a successor may take the record over before it expires."""
        record = self.live(now)
        if record is None or record.holder != member or record.epoch != epoch:
            return False
        record.state = "handing"
        return True

    def restart(self, now: float) -> None:
        """The store lost everything (a restart without persistence)."""
        self.record = None
        self.counter = 0
        self.started_at = now


class ReplicatedStore:
    """A primary `LeaseStore` and one asynchronous replica, as a model (Sentinel, Cluster).

    Every request the primary processes is one write at the next replication `offset`; the
    replica holds a prefix of them (`sync()` catches it up). `acks(offset)` is WAIT's answer
    for a write. `promote()` makes the replica the primary (it keeps its uptime, so the
    restart grace does not apply) and leaves no replica until `attach()` (a full sync from the
    new primary, as a restarted old primary rejoining as a replica)."""

    def __init__(self, ttl: float, now: float = 0.0) -> None:
        self.primary = LeaseStore(ttl, now)
        self.replica: LeaseStore | None = copy.deepcopy(self.primary)
        self.offset = 0
        self.replica_offset = 0

    def wrote(self) -> int:
        """The primary applied one write: its replication offset."""
        self.offset += 1
        return self.offset

    def sync(self) -> None:
        """The replica receives everything written so far."""
        if self.replica is not None:
            self.replica = copy.deepcopy(self.primary)
            self.replica_offset = self.offset

    def acks(self, offset: int) -> int:
        """How many replicas hold the write at `offset` (what WAIT answers)."""
        return int(self.replica is not None and self.replica_offset >= offset)

    def promote(self) -> bool:
        """The primary is gone; its replica takes over with what it has. False: no replica."""
        if self.replica is None:
            return False
        self.primary, self.replica = self.replica, None
        self.offset = self.replica_offset
        return True

    def attach(self) -> None:
        """A new replica joins with a full copy of the primary."""
        self.replica = copy.deepcopy(self.primary)
        self.replica_offset = self.offset
