"""Property-based test of the group coordinator: random joins, leaves, crashes, hangs, wake-ups,
actions, results, snapshots and time, checking the multi-instance invariants 1-4 after every step;
and the continuity plane: every delegate ends in exactly one outcome at the real that asked while
it is connected, a stale real's delegate or continuity never takes effect, no member is ever sent
an older continuity state than one it had, and no snapshot or welcome carries continuity data.

The simulated members follow the member-side rules of `webphone.shared.views.MemberView`, except
when they wake from a hang: then they first send what a zombie real would (a snapshot, results,
`registered` at their old epoch) before reading what the hub told them meanwhile.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from webphone.shared.coordinator import Close, Coordinator, Effect, MemberState, Send
from webphone.shared.protocol import (
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
    MemberLost,
    Registered,
    Released,
    RoleChange,
    Snapshot,
    Welcome,
)
from webphone.shared.views import MemberView

INTERVAL, TIMEOUT = 1.0, 3.0
ACTION_TIMEOUTS = (0.5, 2.0, 5.0)
REAL_OUTCOMES = {"ok", "CallError"}  # what a real answers; the rest come from the hub
DELEGATE_OUTCOMES = REAL_OUTCOMES | {"MemberLostError", "DelegateTimeoutError",
                                     "ActionInterruptedError"}
MARKER = "CONTINUITY-ONLY"  # in every continuity record: must never show up in a snapshot


@dataclass
class Sim:
    """One simulated member process."""

    conn: str
    view: MemberView = field(default_factory=MemberView)
    hung: bool = False
    closed: bool = False
    buffer: list[Frame] = field(default_factory=list)
    registered_epoch: int = 0
    seq: int = 0
    running: dict[str, int] = field(default_factory=dict)  # hub action id -> epoch it came at
    outstanding: dict[str, bool] = field(default_factory=dict)  # my action id -> accepted?
    action_ids: itertools.count[int] = field(default_factory=itertools.count)
    delegated: dict[str, int] = field(default_factory=dict)  # my delegate id -> my epoch then
    serving: list[str] = field(default_factory=list)  # hub delegate ids sent to me, unanswered
    continuity: tuple[int, int] | None = None  # the newest continuity version I was sent
    continuity_seq: int = 0

    @property
    def active(self) -> bool:
        return not self.hung and not self.closed


class GroupMachine(RuleBasedStateMachine):
    """The coordinator against a crowd of simulated members."""

    members = Bundle("members")

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.c = Coordinator("g", now=self.now, heartbeat_interval=INTERVAL,
                             heartbeat_timeout=TIMEOUT, handover_timeout=4.0)
        self.sims: dict[str, Sim] = {}
        self.names = itertools.count()
        self.executed: Counter[str] = Counter()  # hub action id -> times sent to any real
        self.real_of_epoch: dict[int, str] = {}
        self.published: dict[str, Snapshot] = {}  # conn -> the last snapshot it published

    # -- plumbing ----------------------------------------------------------------------------------

    def run(self, effects: list[Effect]) -> None:
        for effect in effects:
            sim = self.sims[effect.conn]
            assert not sim.closed, f"effect for closed {effect.conn}: {effect}"
            if isinstance(effect, Close):
                sim.closed = True
            elif sim.hung:
                sim.buffer.append(effect.frame)
            else:
                self.deliver(sim, effect.frame)

    def send(self, sim: Sim, frame: Frame) -> list[Effect]:
        effects = self.c.frame_received(sim.conn, frame, self.now)
        self.run(effects)
        return effects

    def deliver(self, sim: Sim, frame: Frame) -> None:
        """What a member does with a frame from the hub."""
        before = sim.view.snapshots.version
        if isinstance(frame, Welcome | RoleChange) and frame.role == "real":
            assert self.real_of_epoch.setdefault(frame.epoch, sim.conn) == sim.conn, "two reals"
        sim.view.apply(frame)
        after = sim.view.snapshots.version
        assert before is None or (after is not None and after >= before), "view went backwards"
        if isinstance(frame, Snapshot | Welcome):
            assert MARKER.encode() not in frame.to_json(), "continuity data in a snapshot"
        if isinstance(frame, Delegate):
            assert frame.to == sim.conn, "a delegate went to the wrong member"
            sim.serving.append(frame.id)
        elif isinstance(frame, DelegateResult):
            assert frame.id in sim.delegated, "a delegate outcome for nothing, or a second one"
            del sim.delegated[frame.id]
            kind = "ok" if frame.ok else frame.error.type if frame.error else "?"
            assert kind in DELEGATE_OUTCOMES, kind
            event(f"delegate outcome {kind}")
        elif isinstance(frame, MemberLost):
            assert frame.member_id != sim.conn, "told of its own loss"
        elif isinstance(frame, Continuity):
            assert sim.continuity is None or frame.version > sim.continuity, "stale continuity"
            sim.continuity = frame.version
        if isinstance(frame, Action):
            assert sim.view.may_act, "an action went to a member that is not the real"
            self.executed[frame.action_id] += 1
            sim.running[frame.action_id] = sim.view.epoch
        elif isinstance(frame, ActionAccepted):
            assert sim.outstanding[frame.action_id] is False
            sim.outstanding[frame.action_id] = True
        elif isinstance(frame, ActionResult):
            self.check_outcome(sim, frame)
        elif isinstance(frame, Released):
            event(f"released unregister={frame.unregister}")
            if frame.unregister:  # the member's rule: unregister only if the hub still answers
                echo = self.c.frame_received(sim.conn, Heartbeat(), self.now)
                if echo:
                    assert self.c.real is None, "an unregister would hit a newer real's binding"
                self.run(echo)
            if not sim.closed:
                sim.closed = True  # it closes its socket now
                self.run(self.c.connection_lost(sim.conn, self.now))

    def check_outcome(self, sim: Sim, result: ActionResult) -> None:
        assert result.action_id in sim.outstanding, "an outcome for nothing, or a second one"
        accepted = sim.outstanding.pop(result.action_id)
        kind = "ok" if result.ok else result.error.type if result.error else "?"
        event(f"outcome {kind}")
        if kind in REAL_OUTCOMES or kind == "ActionInterruptedError":
            assert accepted, f"{kind} for an action that never reached a real"
        else:
            assert not accepted and kind in {"NoRealPhoneError", "GroupProtocolError"}, kind

    def wake(self, sim: Sim) -> None:
        """A hung member runs again. If it still thinks it is real it acts as a zombie would,
        before it reads what the hub sent meanwhile (which stays queued, in order)."""
        if not sim.closed and sim.view.may_act:
            for frame in self.zombie_frames(sim):
                self.send_stale(sim, frame)
        sim.hung = False
        while sim.buffer and not sim.closed:
            self.deliver(sim, sim.buffer.pop(0))

    def zombie_frames(self, sim: Sim) -> list[Frame]:
        sim.seq += 1
        frames: list[Frame] = [Snapshot(sim.view.epoch, sim.seq, state(sim.conn))]
        frames += [ActionResult(a, e, True, "zombie") for a, e in sim.running.items()]
        frames.append(Registered(sim.view.epoch))
        sim.continuity_seq += 1
        frames.append(Continuity(epoch=sim.view.epoch, seq=sim.continuity_seq,
                                 calls={"c": {"m": MARKER, "by": sim.conn}}))
        return frames

    def send_stale(self, sim: Sim, frame: Frame) -> None:
        """Send a frame of a real that may be stale; if it is, it must not take effect."""
        epoch = getattr(frame, "epoch", None)
        stale = self.c.real != sim.conn or self.c.epoch != epoch
        before = (self.c.snapshot, self.c.real_ready, self.c.pending_actions(),
                  self.c.continuity, self.c.pending_delegates())
        effects = self.send(sim, frame)
        event(f"{'stale' if stale else 'current'} {frame.TYPE}")
        if not stale:
            if isinstance(frame, Snapshot):
                self.published[sim.conn] = frame
            elif isinstance(frame, ActionResult):
                sim.running.pop(frame.action_id, None)
            return
        took = ActionResult | Snapshot | Continuity | Delegate | DelegateResult
        assert not any(isinstance(e, Send) and isinstance(e.frame, took)
                       for e in effects), "a stale frame took effect"
        assert (self.c.snapshot, self.c.real_ready) == before[:2], "a stale frame took effect"
        assert self.c.pending_actions() <= before[2]
        assert self.c.continuity == before[3] and self.c.pending_delegates() <= before[4]
        sim.delegated.pop(getattr(frame, "id", ""), None)  # fenced: no outcome will come

    # -- rules -------------------------------------------------------------------------------------

    @initialize(target=members)
    def first(self) -> str:
        return self.join()

    @rule(target=members)
    def join(self) -> str:
        sim = Sim(f"m{next(self.names)}")
        self.sims[sim.conn] = sim
        self.run(self.c.connection_made(sim.conn, self.now))
        self.send(sim, Hello(sim.conn, 1, "h", "g", self.now))
        return sim.conn

    @rule(conn=consumes(members))
    def crash(self, conn: str) -> None:
        sim = self.sims[conn]
        if not sim.closed:
            sim.closed = True
            self.run(self.c.connection_lost(conn, self.now))

    @rule(conn=members)
    def leave(self, conn: str) -> None:
        sim = self.sims[conn]
        if sim.active and sim.view.role in ("real", "dummy"):
            was_dummy = self.c.state_of(conn) is MemberState.DUMMY
            self.send(sim, Leave())
            if was_dummy:
                sim.closed = True
                self.run(self.c.connection_lost(conn, self.now))

    @rule(conn=members)
    def hang(self, conn: str) -> None:
        self.sims[conn].hung = True

    @precondition(lambda self: self.c.real is not None)
    @rule()
    def real_hangs_past_the_timeout(self) -> None:
        assert self.c.real is not None
        self.sims[self.c.real].hung = True
        for _ in range(int(TIMEOUT) + 1):
            self.time_passes(1.0)

    @precondition(lambda self: any(sim.hung for sim in self.sims.values()))
    @rule(data=st.data())
    def wake_up(self, data: st.DataObject) -> None:
        hung = sorted(conn for conn, sim in self.sims.items() if sim.hung)
        self.wake(self.sims[data.draw(st.sampled_from(hung))])

    @rule(conn=members, timeout=st.sampled_from(ACTION_TIMEOUTS),
          name=st.sampled_from(["hold", "call", "answer"]))
    def act(self, conn: str, timeout: float, name: str) -> None:
        sim = self.sims[conn]
        if sim.active and sim.view.role is not None:
            action_id = f"{conn}-{next(sim.action_ids)}"
            sim.outstanding[action_id] = False
            args = {"callee": "101"} if name == "call" else {}
            self.send(sim, Action(action_id, name, None if name == "call" else "c", args,
                                  timeout))

    @rule(conn=members)
    def repeat_an_action_id(self, conn: str) -> None:
        sim = self.sims[conn]
        if sim.active and sim.outstanding:
            effects = self.send(sim, Action(next(iter(sim.outstanding)), "hold", "c", {}, 1.0))
            assert [type(e.frame) for e in effects if isinstance(e, Send)] == [Error]

    @rule()
    def real_registers(self) -> None:
        for sim in self.sims.values():
            if sim.active and sim.view.may_act and sim.registered_epoch != sim.view.epoch:
                sim.registered_epoch = sim.view.epoch
                self.send_stale(sim, Registered(sim.view.epoch))

    @rule(ok=st.booleans())
    def real_answers(self, ok: bool) -> None:
        for sim in self.sims.values():
            if sim.active and sim.running:
                hub_id, epoch = sim.running.popitem()
                error = None if ok else ErrorInfo("CallError", "no such call")
                sim.running[hub_id] = epoch
                self.send_stale(sim, ActionResult(hub_id, epoch, ok, None, error))
                sim.running.pop(hub_id, None)
                return

    @rule(calls=st.integers(0, 3))
    def real_publishes(self, calls: int) -> None:
        for sim in self.sims.values():
            if sim.active and sim.view.may_act:
                sim.seq += 1
                snap = Snapshot(sim.view.epoch, sim.seq, state(*(f"c{i}" for i in range(calls))))
                self.send_stale(sim, snap)

    @rule(member=members, timeout=st.sampled_from((1.0, 5.0)), data=st.data())
    def real_delegates(self, member: str, timeout: float, data: st.DataObject) -> None:
        for sim in self.sims.values():
            if sim.active and sim.view.may_act:
                to = data.draw(st.sampled_from([member, "nobody"]))
                delegate_id = f"{sim.conn}-d{next(sim.action_ids)}"
                sim.delegated[delegate_id] = sim.view.epoch
                self.send_stale(sim, Delegate(id=delegate_id, to=to, call_id="c",
                                              op="media.offer", args={}, epoch=sim.view.epoch,
                                              timeout=timeout))
                return

    @rule(ok=st.booleans())
    def member_answers_delegate(self, ok: bool) -> None:
        for sim in self.sims.values():
            if sim.active and sim.serving:
                error = None if ok else ErrorInfo("CallError", "no such call")
                self.send(sim, DelegateResult(id=sim.serving.pop(0), ok=ok, error=error))
                return

    @rule(calls=st.integers(0, 2))
    def real_publishes_continuity(self, calls: int) -> None:
        for sim in self.sims.values():
            if sim.active and sim.view.may_act:
                sim.continuity_seq += 1
                records = {f"c{i}": {"m": MARKER} for i in range(calls)}
                frame = Continuity(epoch=sim.view.epoch, seq=sim.continuity_seq, calls=records)
                self.send_stale(sim, frame)
                if self.c.continuity == frame:
                    sim.continuity = frame.version

    @rule(dt=st.sampled_from([0.25, 1.0, 2.0, 2.9]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        for sim in list(self.sims.values()):
            if sim.active and sim.view.role is not None:
                self.send(sim, Heartbeat())
        self.run(self.c.tick(self.now))

    @rule()
    def hub_stalls(self) -> None:
        real = self.c.real
        # a handover deadline that passes during the stall is not a judgement of silence: a
        # released real that did not close in time is dropped, and then someone is promoted
        leaving = any(self.c.state_of(c) in (MemberState.HANDING_OVER, MemberState.UNREGISTERING)
                      for c in self.sims)
        self.now += 10 * TIMEOUT
        self.run(self.c.tick(self.now))
        assert leaving or self.c.real == real, "a stalled hub deposed the real on the stall alone"

    # -- invariants --------------------------------------------------------------------------------

    @invariant()
    def at_most_one_real(self) -> None:
        reals = [c for c, s in self.sims.items() if self.c.state_of(c) is MemberState.REAL]
        assert len(reals) <= 1 and reals == ([self.c.real] if self.c.real else [])

    @invariant()
    def at_most_one_member_acts_as_real(self) -> None:
        """Members that run (not hung) agree with the hub: only its real may act. A hung one may
        still believe it is real; the fencing checks in `send_stale` cover what it then does."""
        acting = [conn for conn, sim in self.sims.items() if sim.active and sim.view.may_act]
        assert acting == ([self.c.real] if self.c.real in acting else []), acting

    @invariant()
    def no_action_runs_twice(self) -> None:
        assert all(n == 1 for n in self.executed.values())

    @invariant()
    def views_converge_and_follow_the_real(self) -> None:
        cached = self.c.snapshot
        for conn, sim in self.sims.items():
            if sim.active and self.c.state_of(conn) is MemberState.DUMMY:
                assert sim.view.snapshots.snapshot == cached, f"{conn} did not converge"
        real = self.c.real
        mine = self.published.get(real) if real else None
        if mine is not None and mine.epoch == self.c.epoch:
            assert cached == mine, "the cache is not the real's latest snapshot"

    def teardown(self) -> None:
        """Wake everyone, let the real work, run past every deadline: all outcomes arrived."""
        for sim in list(self.sims.values()):
            if sim.hung:
                self.wake(sim)
        for _ in range(int(max(ACTION_TIMEOUTS) + 2 * TIMEOUT) + 2):
            self.real_registers()
            while any(s.active and s.running for s in self.sims.values()):
                self.real_answers(True)
            while any(s.active and s.serving for s in self.sims.values()):
                self.member_answers_delegate(True)
            self.time_passes(1.0)
        for sim in self.sims.values():
            if not sim.closed:
                assert not sim.outstanding, f"{sim.conn} never got outcomes: {sim.outstanding}"
                assert not sim.delegated, f"{sim.conn}: delegates without outcome {sim.delegated}"
        assert self.c.pending_actions() == 0 and self.c.pending_delegates() == 0


def state(*call_ids: str) -> dict[str, Any]:
    return {"calls": [{"id": c, "direction": "inbound", "state": "ringing"} for c in call_ids]}


GroupMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGroup = GroupMachine.TestCase
