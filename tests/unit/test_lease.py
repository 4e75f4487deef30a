"""The lease core (webphone.shared.lease): holder validity, renewals, candidates, the store's
rules, the acknowledgement rule of replicated stores, and stateful property tests: whatever the
delays, pauses, crashes, clock rates, store restarts and (with a replica) failovers to a replica
that missed the newest writes, no two members ever consider themselves the holder at the same
instant, and no two members ever act on the same epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from webphone.shared.lease import (
    Candidate,
    HolderState,
    LeaseHolder,
    LeaseStore,
    LeaseTimings,
    ReplicatedStore,
    acknowledged,
    fresh_acquire_allowed,
)

T = LeaseTimings()


# -- timings ---------------------------------------------------------------------------------


def test_default_timings_are_the_documented_ones() -> None:
    assert (T.ttl, T.renew_interval, T.renew_deadline) == (3.0, 1.0, 2.0)
    assert T.ttl_ms == 3000
    assert LeaseTimings.from_heartbeat_timeout(3.0) == T


@pytest.mark.parametrize("hb", [0.3, 0.9, 1.5, 3.0, 10.0, 60.0])
def test_timings_scale_with_the_heartbeat_timeout(hb: float) -> None:
    t = LeaseTimings.from_heartbeat_timeout(hb)
    assert t.ttl == hb and t.renew_interval < t.renew_deadline < t.ttl
    assert t.command_timeout <= t.renew_deadline - t.renew_interval


@pytest.mark.parametrize("kwargs", [
    {"renew_deadline": 3.0},  # deadline must be below the ttl
    {"renew_interval": 2.0},  # interval below the deadline
    {"retry_interval": 0.0},
    {"command_timeout": 1.5},  # a renewal sent on time must be answered before the deadline
    {"jitter": -1.0},
])
def test_inconsistent_timings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LeaseTimings(**kwargs)


# -- the holder ------------------------------------------------------------------------------


def test_validity_counts_from_when_the_request_was_sent() -> None:
    h = LeaseHolder(T)
    h.acquired(7, sent_at=100.0)
    assert h.valid(101.99) and not h.valid(102.0)
    assert h.next_renewal() == 101.0 and h.next_deadline() == 102.0


def test_a_late_renewal_answer_never_shortens_validity() -> None:
    h = LeaseHolder(T)
    h.acquired(1, 100.0)
    h.renewed(1, 101.0)
    h.renewed(1, 100.5)  # answer to an older request arriving late
    assert h.valid_until == 103.0


def test_after_the_deadline_only_a_new_acquisition_makes_it_valid_again() -> None:
    h = LeaseHolder(T)
    h.acquired(1, 100.0)
    assert h.check(101.0) is False
    assert h.check(102.0) is True  # step down now
    assert h.check(102.5) is False  # only once
    assert h.state is HolderState.EXPIRED
    h.renewed(1, 101.9)  # a renewal answered after we stepped down does not revive it
    assert not h.valid(102.5) and h.next_renewal() is None
    h.acquired(2, 103.0)
    assert h.valid(104.0)


def test_renewals_for_another_epoch_are_ignored() -> None:
    h = LeaseHolder(T)
    h.acquired(3, 100.0)
    h.renewed(2, 101.5)
    assert h.valid_until == 102.0


def test_a_failed_renewal_is_retried_after_retry_interval() -> None:
    h = LeaseHolder(T)
    h.acquired(1, 100.0)
    h.renew_failed(101.0)
    assert h.next_renewal() == pytest.approx(101.2)
    h.renewed(1, 101.2)
    assert h.next_renewal() == pytest.approx(102.2)


def test_lost_and_released() -> None:
    h = LeaseHolder(T)
    h.acquired(1, 0.0)
    h.lost()
    assert h.state is HolderState.LOST and not h.valid(0.1)
    h.released()
    assert h.state is HolderState.IDLE and h.next_deadline() is None


def test_candidate_tries_when_the_record_expires_plus_jitter() -> None:
    c = Candidate(T)
    assert c.observed(10.0, 2500, 0.5) == pytest.approx(12.5 + 0.025)
    assert c.observed(10.0, None, 0.0) == 10.0
    assert c.observed(10.0, -2, 0.99) == pytest.approx(10.0 + 0.99 * T.jitter)
    c.cancel()
    assert c.next_attempt is None


def test_fresh_acquisition_waits_for_a_ttl_of_store_uptime() -> None:
    assert not fresh_acquire_allowed(10.0, 8.0, 3.0)
    assert fresh_acquire_allowed(11.0, 8.0, 3.0)
    assert not fresh_acquire_allowed(11.0, None, 3.0)


# -- the store's rules -------------------------------------------------------------------------


def test_store_grants_a_free_lease_once_and_epochs_grow() -> None:
    s = LeaseStore(3.0)
    assert s.acquire("a", 0.0) == 1
    assert s.acquire("b", 1.0) is None
    assert s.renew("a", 1, 2.0) and not s.renew("b", 1, 2.0) and not s.renew("a", 2, 2.0)
    assert s.acquire("b", 4.9) is None  # renewed at 2.0: lives until 5.0
    assert s.acquire("b", 5.0) == 2


def test_store_handover_and_release() -> None:
    s = LeaseStore(3.0)
    s.acquire("a", 0.0)
    assert not s.hand_over("b", 1, 0.1)
    assert s.hand_over("a", 1, 0.1)
    assert s.acquire("a", 0.2) is None  # not to itself
    assert s.acquire("b", 0.2) == 2
    assert not s.release("a", 1, 0.3) and s.release("b", 2, 0.3)
    assert s.acquire("c", 0.3) == 3


def test_store_restart_reclaim_and_grace() -> None:
    s = LeaseStore(3.0)
    s.acquire("a", 0.0, known_epoch=4)
    assert s.record is not None and s.record.epoch == 5  # never below a reported epoch
    s.restart(1.0)
    assert s.acquire("b", 1.1, known_epoch=5, fresh_ok=False) is None
    assert s.acquire("a", 1.2, known_epoch=5, reclaim_epoch=5, fresh_ok=False) == 6
    assert s.acquire("a", 1.3, reclaim_epoch=5) is None  # a reclaim names the current epoch


# -- the property ------------------------------------------------------------------------------


@dataclass
class _Member:
    name: str
    rate: float  # its clock runs at this rate relative to the store's
    offset: float
    holder: LeaseHolder
    known: int = 0
    crashed: bool = False
    paused: bool = False
    inflight: bool = False
    inbox: list[tuple[str, float, int | bool | str, bool]] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)

    def local(self, t: float) -> float:
        return self.offset + self.rate * t


@dataclass(order=True)
class _Request:
    process_at: float
    respond_at: float
    member: str = field(compare=False)
    kind: str = field(compare=False)  # acquire | reclaim | renew | release | handover
    sent_local: float = field(compare=False)
    epoch: int = field(compare=False)
    fresh_ok: bool = field(compare=False, default=True)
    processed: bool = field(compare=False, default=False)
    offset: int = field(compare=False, default=0)  # the write's replication offset
    answer: int | bool | None = field(compare=False, default=None)


#: request delays: mostly the interesting boundaries, sometimes anything
delays = st.one_of(st.sampled_from([0.0, 0.001, 0.3, 0.99, 1.01, 1.9, 2.5]),
                   st.floats(0.0, 2.5, allow_nan=False))
NAMES = ("a", "b", "c")


class LeaseSafety(RuleBasedStateMachine):
    """Members acquire, renew, release and hand over leases through a store with arbitrary
    request/response delays; they pause (SIGSTOP), crash, and the store restarts. Every member
    follows LeaseHolder; the store follows LeaseStore and the grace rule. Rules never reject:
    a rule that does not apply to the member drawn does nothing, so every step counts."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0
        self.store = LeaseStore(T.ttl, now=-100.0)  # up for a while: no grace at first
        self.members: dict[str, _Member] = {}
        self.requests: list[_Request] = []
        self.grants: list[tuple[int, int]] = []  # (store incarnation, epoch)
        self.incarnation = 0
        self.era = 0  # bumped when the store loses its data (a restart, not a failover)
        self.acted: dict[tuple[int, int], str] = {}  # (era, epoch) -> the member that held it

    @initialize(rates=st.lists(st.floats(0.9, 1.1), min_size=3, max_size=3),
                offsets=st.lists(st.floats(0, 1e4), min_size=3, max_size=3))
    def setup(self, rates: list[float], offsets: list[float]) -> None:
        for name, rate, offset in zip(NAMES, rates, offsets, strict=True):
            self.members[name] = _Member(name, rate, offset, LeaseHolder(T))

    def _active(self, name: str) -> _Member | None:
        m = self.members[name]
        return None if m.crashed or m.paused else m

    # -- members act -----------------------------------------------------------------------

    def _send(self, m: _Member, kind: str, d1: float, d2: float, epoch: int = 0) -> None:
        # INFO uptime (whole seconds) read just now, on the member's clock
        uptime = math.floor(self.t - self.store.started_at)
        started_local = m.local(self.t) - uptime
        fresh = fresh_acquire_allowed(m.local(self.t), started_local, T.ttl)
        self.requests.append(_Request(self.t + d1, self.t + d1 + d2, m.name, kind,
                                      m.local(self.t), epoch, fresh))
        m.inflight = True

    @rule(name=st.sampled_from(NAMES), d1=delays, d2=delays)
    def acquire(self, name: str, d1: float, d2: float) -> None:
        m = self._active(name)
        if m is not None and not m.inflight and not m.holder.valid(m.local(self.t)):
            self._send(m, "acquire", d1, d2)

    @rule(name=st.sampled_from(NAMES), d1=delays, d2=delays, reclaim=st.booleans())
    def renew_or_reclaim(self, name: str, d1: float, d2: float, reclaim: bool) -> None:
        m = self._active(name)
        if m is None or m.inflight:
            return
        if m.holder.valid(m.local(self.t)):
            self._send(m, "reclaim" if reclaim else "renew", d1, d2, m.holder.epoch)
        elif m.holder.state is HolderState.PENDING:  # confirm an unacknowledged grant
            self._send(m, "renew", d1, d2, m.holder.epoch)

    @rule(name=st.sampled_from(NAMES), d1=delays, handover=st.booleans(), go=st.integers(0, 3))
    def release(self, name: str, d1: float, handover: bool, go: int) -> None:
        m = self._active(name)
        if m is not None and go == 0 and m.holder.valid(m.local(self.t)):
            self.requests.append(_Request(self.t + d1, self.t + d1, m.name,
                                          "handover" if handover else "release",
                                          m.local(self.t), m.holder.epoch))
            m.holder.released()  # it stops acting before it asks

    # disruptions: drawn as often as the rest, but only one draw in four acts, so that runs
    # are long enough to build up leases, renewals and handovers before they are disturbed
    @rule(name=st.sampled_from(NAMES), go=st.integers(0, 3))
    def pause(self, name: str, go: int) -> None:
        m = self._active(name)
        if m is not None and go == 0:
            m.paused = True

    @rule(name=st.sampled_from(NAMES))
    def resume(self, name: str) -> None:
        m = self.members[name]
        if m.paused and not m.crashed:
            m.paused = False
            m.holder.check(m.local(self.t))  # what it does first when it runs again
            self._deliver(m)

    @rule(name=st.sampled_from(NAMES), go=st.integers(0, 3))
    def crash(self, name: str, go: int) -> None:
        if go == 0:
            self.members[name].crashed = True

    @rule(go=st.integers(0, 3))
    def restart_store(self, go: int) -> None:
        if go == 0:
            self.store.restart(self.t)
            self.incarnation += 1
            self.era += 1
            # the connections die with the server: a request not processed yet never will be
            # (the link checked *this* server's uptime for its fresh_ok and never silently
            # reconnects), and an answer not delivered yet is lost: both sides see an error
            for r in self.requests:
                if r.kind in ("release", "handover"):
                    continue
                if not r.processed:
                    r.processed, r.answer = True, None
                    r.respond_at = r.process_at
                else:
                    r.answer = None

    # -- time --------------------------------------------------------------------------------

    @rule(dt=st.one_of(st.sampled_from([0.001, 0.3, 1.0, 2.0]), st.floats(0.001, 3.5)))
    def advance(self, dt: float) -> None:
        end = self.t + dt
        while True:
            due = [r for r in self.requests if (not r.processed and r.process_at <= end)
                   or (r.processed and r.respond_at <= end)]
            if not due:
                break
            r = min(due, key=lambda r: r.respond_at if r.processed else r.process_at)
            if not r.processed:
                self.t = max(self.t, r.process_at)
                self._process(r)
            else:
                self.t = max(self.t, r.respond_at)
                self.requests.remove(r)
                m = self.members[r.member]
                m.inbox.append((r.kind, r.sent_local,
                                "error" if r.answer is None else r.answer, self._acked(r)))
                m.inflight = False
                if not m.paused and not m.crashed:
                    self._deliver(m)
            self._check_all()
        self.t = end
        for m in self.members.values():
            if not m.crashed and not m.paused:
                m.holder.check(m.local(self.t))  # the deadline timer

    def _process(self, r: _Request) -> None:
        r.processed = True
        m = self.members[r.member]
        s = self.store
        if r.kind == "acquire":
            r.answer = s.acquire(r.member, self.t, m.known, fresh_ok=r.fresh_ok)
        elif r.kind == "reclaim":
            r.answer = s.acquire(r.member, self.t, m.known, reclaim_epoch=r.epoch,
                                 fresh_ok=False)
        elif r.kind == "renew":
            r.answer = s.renew(r.member, r.epoch, self.t)
        elif r.kind == "release":
            s.release(r.member, r.epoch, self.t)
        else:
            s.hand_over(r.member, r.epoch, self.t)
        if r.kind in ("acquire", "reclaim") and isinstance(r.answer, int):
            assert r.answer > m.known, "an epoch at or below one the member already knew"
            self.grants.append((self.incarnation, r.answer))
        self._wrote(r)

    def _wrote(self, r: _Request) -> None:
        """The store applied `r` (a replicated store gives it a replication offset)."""

    def _acked(self, r: _Request) -> bool:
        """Did enough replicas acknowledge `r` by the time its answer arrives? (one server:
        every answer counts)"""
        return True

    def _deliver(self, m: _Member) -> None:
        now = m.local(self.t)
        m.holder.check(now)
        for kind, sent_local, answer, acked in m.inbox:
            if kind in ("acquire", "reclaim") and isinstance(answer, int) and answer:
                m.holder.acquired(answer, sent_local, acked=acked)
                m.known = max(m.known, answer)
            elif kind == "renew":
                if answer is None or answer == "error":
                    m.holder.renew_failed(now)
                elif answer:
                    m.holder.renewed(m.holder.epoch, sent_local, acked=acked)
                else:
                    m.holder.lost()
            m.holder.check(now)
            self._note_acting(m)
        m.inbox.clear()

    def _note_acting(self, m: _Member) -> None:
        """Record the epoch a member acts on (a valid holder): never another member's."""
        if m.holder.state is HolderState.HELD and (not m.epochs or m.epochs[-1] !=
                                                   m.holder.epoch):
            m.epochs.append(m.holder.epoch)
            owner = self.acted.setdefault((self.era, m.holder.epoch), m.name)
            assert owner == m.name, f"{m.name} and {owner} both acted on epoch {m.holder.epoch}"

    # -- invariants --------------------------------------------------------------------------

    def _check_all(self) -> None:
        valid = [m for m in self.members.values()
                 if not m.crashed and m.holder.valid(m.local(self.t))]
        assert len(valid) <= 1, f"two valid holders at t={self.t}: {[m.name for m in valid]}"
        record = self.store.live(self.t)
        for m in valid:
            ends = (m.holder.valid_until - m.offset) / m.rate  # on the store's clock
            if record is not None:  # the store's holder, and it stops before the record ends
                # (a re-claim's new epoch is in the store before its answer reaches the member)
                assert record.holder == m.name and record.epoch >= m.holder.epoch, \
                    f"{m.name} is valid but the store's record names {record.holder}"
                assert ends <= record.expires_at + 1e-9, "valid after the record expires"
            else:  # forgotten by a restart: it stops before the store grants anyone anew
                assert ends <= self.store.started_at + T.ttl + 1e-9

    @invariant()
    def one_valid_holder_at_most(self) -> None:
        self._check_all()

    @invariant()
    def epochs_grow(self) -> None:
        for m in self.members.values():
            assert m.epochs == sorted(set(m.epochs))
        by_incarnation: dict[int, list[int]] = {}
        for inc, epoch in self.grants:
            by_incarnation.setdefault(inc, []).append(epoch)
        for epochs in by_incarnation.values():
            assert epochs == sorted(set(epochs))


TestLeaseSafety = LeaseSafety.TestCase
TestLeaseSafety.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


class ReplicatedLeaseSafety(LeaseSafety):
    """The same members on a primary with one asynchronous replica (Sentinel, Cluster): the
    replica catches up at arbitrary moments, the primary dies and the replica is promoted with
    whatever it has (in-flight requests and unsent answers die with the primary's
    connections), and a new replica attaches later. Members follow the acknowledgement rule:
    a grant or renewal counts only when the replica acknowledged it (WAIT 1)."""

    require_acks = True

    def __init__(self) -> None:
        super().__init__()
        self.repl = ReplicatedStore(T.ttl, now=-100.0)
        self.store = self.repl.primary

    def _wrote(self, r: _Request) -> None:
        r.offset = self.repl.wrote()

    def _acked(self, r: _Request) -> bool:
        if r.kind not in ("acquire", "reclaim", "renew") or not self.require_acks:
            return True
        return acknowledged(self.repl.acks(r.offset), 1)

    # replication lags: one draw in two catches the replica up
    @rule(go=st.integers(0, 1))
    def replicate(self, go: int) -> None:
        if go == 0:
            self.repl.sync()

    @rule(go=st.integers(0, 2))
    def fail_over(self, go: int) -> None:
        if go != 0 or not self.repl.promote():
            return
        self.store = self.repl.primary
        self.incarnation += 1  # the store-side counter may repeat an unacknowledged epoch
        for r in self.requests:  # the primary's connections are gone, as in a restart
            if r.kind in ("release", "handover"):
                continue
            if not r.processed:
                r.processed, r.answer = True, None
                r.respond_at = r.process_at
            else:
                r.answer = None

    @rule(go=st.integers(0, 1))
    def attach_replica(self, go: int) -> None:
        if go == 0 and self.repl.replica is None:
            self.repl.attach()

    @rule(go=st.integers(0, 3))
    def restart_store(self, go: int) -> None:
        super().restart_store(go)
        if go == 0 and self.repl.replica is not None:
            self.repl.attach()  # the replica resynchronises from the emptied primary


TestReplicatedLeaseSafety = ReplicatedLeaseSafety.TestCase
TestReplicatedLeaseSafety.settings = settings(max_examples=300, stateful_step_count=60,
                                              deadline=None)


# -- the dangerous interleavings, spelled out (each fails if its rule is broken) -------------


def _machine() -> LeaseSafety:
    m = LeaseSafety()
    m.setup([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    return m


def test_after_a_store_restart_nobody_else_gets_the_lease_while_the_holder_is_valid() -> None:
    m = _machine()
    m.acquire("a", 0.0, 0.0)
    m.advance(0.5)
    m.restart_store(0)  # forgets a's lease; a is valid for 1.5 s more
    m.acquire("b", 0.0, 0.0)  # refused: the store is younger than a lease ttl
    m.advance(0.01)
    assert not m.members["b"].holder.valid(m.t)
    m.renew_or_reclaim("a", 0.0, 0.0, True)  # a re-claims its forgotten lease
    m.advance(0.01)
    assert m.members["a"].holder.valid(m.t) and m.store.record is not None
    assert m.store.record.holder == "a"


def test_an_acquire_in_flight_across_a_store_restart_is_lost() -> None:
    m = _machine()
    m.acquire("a", 0.0, 0.0)
    m.advance(0.5)
    m.acquire("b", 0.3, 0.0)  # sent to the old store (old enough: fresh_ok) ...
    m.restart_store(0)  # ... which dies with the connection before processing it
    m.advance(0.5)
    assert not m.members["b"].holder.valid(m.t)


def test_slow_answers_never_extend_validity_past_the_record() -> None:
    m = _machine()
    m.acquire("a", 0.0, 2.5)  # granted at once (record until 3.0), answered at 2.5
    m.advance(2.6)
    assert not m.members["a"].holder.valid(m.t)  # valid only until 2.0: sent at 0
    m.advance(0.5)
    m.acquire("b", 0.0, 0.0)  # a's record expired at 3.0: b holds it from 3.1
    m.advance(0.1)
    m.renew_or_reclaim("b", 0.0, 1.5, False)  # renewed at once (until 6.2), answered at 4.7
    m.advance(1.0)
    m.acquire("a", 0.0, 0.0)  # refused: b's record lives
    m.advance(1.0)  # 4.7: b is valid until 5.2 (sent at 3.2), not until 6.7
    assert m.members["b"].holder.valid_until == pytest.approx(5.2)
    assert m.store.record is not None and m.store.record.holder == "b"
    assert not m.members["a"].holder.valid(m.t)


# -- the acknowledgement rule (replicated stores) --------------------------------------------


def test_acknowledged_counts_replicas_only_when_some_are_required() -> None:
    assert acknowledged(None, 0) and acknowledged(0, 0)  # a single server: every answer
    assert not acknowledged(0, 1) and not acknowledged(None, 1)
    assert acknowledged(1, 1) and acknowledged(2, 1) and not acknowledged(1, 2)


def test_an_unacknowledged_grant_is_pending_until_a_renewal_is_acknowledged() -> None:
    h = LeaseHolder(T)
    h.acquired(4, 100.0, acked=False)
    assert h.state is HolderState.PENDING and not h.valid(100.1)
    assert h.next_renewal() == pytest.approx(100.0 + T.retry_interval)
    assert h.next_deadline() is None and not h.check(200.0)
    h.renewed(4, 100.2, acked=False)  # still not acknowledged: try again
    assert h.state is HolderState.PENDING and h.next_renewal() == pytest.approx(100.4)
    h.renewed(3, 100.4)  # another epoch: ignored
    assert h.state is HolderState.PENDING
    h.renewed(4, 100.4)  # acknowledged: valid from when that renewal was sent
    assert h.state is HolderState.HELD and h.valid_until == pytest.approx(102.4)
    h.lost()
    assert h.state is HolderState.LOST


def test_an_unacknowledged_renewal_extends_nothing_and_is_retried() -> None:
    h = LeaseHolder(T)
    h.acquired(1, 100.0)
    h.renewed(1, 101.0, acked=False)
    assert h.valid_until == 102.0 and h.next_renewal() == pytest.approx(101.2)
    h.renewed(1, 101.2)
    assert h.valid_until == pytest.approx(103.2)


def test_timings_refuse_an_ack_timeout_longer_than_the_command_timeout() -> None:
    with pytest.raises(ValueError, match="ack_timeout"):
        LeaseTimings(ack_timeout=0.5)
    assert LeaseTimings.from_heartbeat_timeout(1.5).ack_timeout == pytest.approx(0.125)


def test_replicated_store_acks_promotion_and_attach() -> None:
    r = ReplicatedStore(3.0)
    assert r.primary.acquire("a", 0.0) == 1
    w = r.wrote()
    assert r.acks(w) == 0
    r.sync()
    assert r.acks(w) == 1
    assert r.primary.renew("a", 1, 1.0)
    r.wrote()
    assert r.promote() and r.replica is None  # the renewal at 1.0 was not replicated
    assert r.primary.record is not None and r.primary.record.expires_at == 3.0
    assert not r.promote() and r.acks(r.offset) == 0
    r.attach()
    assert r.acks(r.offset) == 1


def _replicated(require_acks: bool) -> ReplicatedLeaseSafety:
    m = ReplicatedLeaseSafety()
    m.require_acks = require_acks
    m.setup([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    return m


def _grant_lost_in_a_failover(m: ReplicatedLeaseSafety) -> None:
    m.acquire("a", 0.0, 0.1)  # granted on the primary at 0, answered at 0.1, never replicated
    m.advance(0.2)
    m.fail_over(0)  # the replica, promoted, never saw a's grant
    m.acquire("b", 0.0, 0.0)
    m.advance(0.1)


def test_without_the_ack_rule_a_promoted_replica_makes_two_holders() -> None:
    """The rule is needed: acting on an unreplicated grant fails the invariant."""
    with pytest.raises(AssertionError, match=r"two valid holders|both acted|record names"):
        _grant_lost_in_a_failover(_replicated(require_acks=False))


def test_with_the_ack_rule_an_unreplicated_grant_is_never_acted_on() -> None:
    m = _replicated(require_acks=True)
    _grant_lost_in_a_failover(m)
    assert m.members["a"].holder.state is HolderState.PENDING
    assert m.members["b"].holder.state is HolderState.PENDING  # no replica: b waits too
    m.attach_replica(0)
    m.renew_or_reclaim("b", 0.0, 0.05, False)  # b confirms its grant ...
    m.advance(0.01)
    m.replicate(0)  # ... which reaches the replica before the answer
    m.advance(0.1)
    assert m.members["b"].holder.valid(m.t)
    m.renew_or_reclaim("a", 0.0, 0.0, False)  # a's confirmation is refused: b holds it
    m.advance(0.1)
    assert m.members["a"].holder.state is HolderState.LOST
