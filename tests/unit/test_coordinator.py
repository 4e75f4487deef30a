"""Scenarios for the group coordinator, one rule each. F-numbers are the failure modes of
../shared/reference/coordination-anchors.md (A6) that a test defends against."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TypeVar

import pytest

from webphone.shared.coordinator import Close, Coordinator, Effect, MemberState, Send
from webphone.shared.protocol import (
    Action,
    ActionAccepted,
    ActionResult,
    Error,
    Frame,
    Heartbeat,
    Hello,
    Leave,
    Members,
    MembersQuery,
    Registered,
    Released,
    RoleChange,
    Snapshot,
    Welcome,
)
from webphone.shared.views import MemberView, SnapshotView

T0 = 1000.0
F = TypeVar("F", bound=Frame)


def state(*call_ids: str) -> dict[str, Any]:
    return {"calls": [{"id": c, "direction": "inbound", "state": "ringing"} for c in call_ids]}


class Hub:
    """A coordinator plus an inbox per connection; time moves only through `advance`."""

    def __init__(self, **options: Any) -> None:
        self.now = T0
        options.setdefault("heartbeat_interval", 1.0)
        options.setdefault("heartbeat_timeout", 5.0)
        self.c = Coordinator("g", now=self.now, **options)
        self.inbox: dict[str, list[Frame]] = defaultdict(list)
        self.closed: dict[str, str] = {}

    def run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                assert effect.conn not in self.closed, "sent to a closed connection"
                self.inbox[effect.conn].append(effect.frame)
            else:
                assert isinstance(effect, Close)
                self.closed[effect.conn] = effect.reason

    def join(self, name: str, **hello: Any) -> str:
        self.run(self.c.connection_made(name, self.now))
        fields = {"member_id": name, "pid": 1, "host": "host", "group": "g", "started_at": T0}
        self.send(name, Hello(**{**fields, **hello}))
        return name

    def send(self, conn: str, frame: Frame) -> None:
        self.run(self.c.frame_received(conn, frame, self.now))

    def crash(self, conn: str) -> None:
        self.run(self.c.connection_lost(conn, self.now))

    def advance(self, seconds: float, alive: tuple[str, ...] = ()) -> None:
        """Move time in 1 s steps; the `alive` members heartbeat at every step."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(self.now + 1.0, end)
            for conn in alive:
                self.send(conn, Heartbeat())
            self.run(self.c.tick(self.now))

    def take(self, conn: str, kind: type[F]) -> list[F]:
        """The frames of type `kind` in `conn`'s inbox (removed from it)."""
        found = [f for f in self.inbox[conn] if isinstance(f, kind)]
        self.inbox[conn] = [f for f in self.inbox[conn] if not isinstance(f, kind)]
        return found

    def last(self, conn: str, kind: type[F]) -> F:
        found = self.take(conn, kind)
        assert found, f"{conn} got no {kind.__name__}: {self.inbox[conn]}"
        return found[-1]

    def ready_real(self, name: str) -> str:
        conn = self.join(name)
        assert self.c.real == conn
        self.send(conn, Registered(self.c.epoch))
        assert self.c.real_ready
        return conn


def action(action_id: str, name: str = "hold", timeout: float = 10.0, **args: Any) -> Action:
    call_id = None if name == "call" else "call-1"
    return Action(action_id, name, call_id, args, timeout)


def outcome(hub: Hub, conn: str) -> ActionResult:
    results = hub.take(conn, ActionResult)
    assert len(results) == 1, results
    return results[0]


# -- roles ----------------------------------------------------------------------------------------


def test_first_member_is_real_and_later_ones_are_dummies() -> None:
    hub = Hub()
    a, b = hub.join("a"), hub.join("b")
    wa, wb = hub.last(a, Welcome), hub.last(b, Welcome)
    assert (wa.role, wb.role) == ("real", "dummy")
    assert wa.epoch == wb.epoch >= 1
    assert wb.real_id == "a"
    assert hub.c.state_of(a) is MemberState.REAL and hub.c.state_of(b) is MemberState.DUMMY
    assert [m.member_id for m in wb.members] == ["a", "b"]


def test_members_query_lists_pid_host_role_and_times() -> None:
    hub = Hub()
    hub.join("a")
    hub.advance(2, alive=("a",))
    b = hub.join("b", pid=4242)
    hub.send(b, MembersQuery())
    members = hub.last(b, Members).members
    assert [(m.member_id, m.role, m.pid, m.host) for m in members] == [
        ("a", "real", 1, "host"), ("b", "dummy", 4242, "host")]
    assert members[0].joined_at == T0 and members[1].joined_at == T0 + 2
    assert members[1].role_since == T0 + 2


def test_heartbeats_are_echoed_so_members_see_a_hung_hub() -> None:  # F13
    hub = Hub()
    a = hub.join("a")
    hub.send(a, Heartbeat())
    assert hub.take(a, Heartbeat) == [Heartbeat()]


# -- crash, hang, stall ---------------------------------------------------------------------------


def test_crash_of_the_real_promotes_the_oldest_dummy_at_once() -> None:  # F1
    hub = Hub()
    a, b, c = hub.ready_real("a"), hub.join("b"), hub.join("c")
    epoch = hub.c.epoch
    hub.crash(a)
    assert hub.c.real == b and hub.c.epoch > epoch
    assert hub.last(b, RoleChange) == RoleChange("real", hub.c.epoch, "b")
    assert hub.last(c, RoleChange) == RoleChange("dummy", hub.c.epoch, "b")
    assert not hub.c.real_ready  # b must register first


def test_crash_of_a_dummy_changes_nothing_else() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    epoch = hub.c.epoch
    hub.crash(b)
    assert hub.c.real == a and hub.c.epoch == epoch and hub.take(a, RoleChange) == []


def test_a_silent_real_is_deposed_after_the_heartbeat_timeout() -> None:  # F2
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.advance(4, alive=(b,))
    assert hub.c.real == a  # not before the timeout
    hub.advance(2, alive=(b,))
    assert hub.c.real == b
    assert hub.last(a, RoleChange).role == "dummy"
    assert hub.last(b, RoleChange) == RoleChange("real", hub.c.epoch, "b")
    assert a not in hub.closed  # kept so that it reads its role when it wakes


def test_a_woken_deposed_real_is_fenced() -> None:  # F3, F11
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    old = hub.c.epoch
    hub.send(a, Snapshot(old, 1, state("x")))
    hub.advance(6, alive=(b,))  # a hangs and is replaced
    hub.send(b, Registered(hub.c.epoch))
    hub.send(b, Snapshot(hub.c.epoch, 0, state()))
    hub.take(a, RoleChange)
    hub.take(b, Snapshot)
    cached = hub.c.snapshot
    # a wakes up and carries on as if it were still real
    hub.send(a, Snapshot(old, 2, state("y")))
    hub.send(a, Registered(old))
    hub.send(a, ActionResult("h1", old, True, "done"))
    assert hub.c.snapshot == cached and hub.c.real == b and hub.c.real_ready
    reminders = hub.take(a, RoleChange)
    assert len(reminders) == 3 and all(r.role == "dummy" for r in reminders)
    assert all(r.epoch == hub.c.epoch and r.real_id == "b" for r in reminders)
    assert hub.take(b, Snapshot) == []


def test_a_deposed_member_is_promoted_again_only_once_heard_from() -> None:  # F4
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.advance(6, alive=(b,))
    assert hub.c.real == b
    hub.crash(b)
    assert hub.c.real is None  # a is still silent: promoting it would promote a hung member
    assert hub.last(a, RoleChange) == RoleChange("dummy", hub.c.epoch, None)
    hub.send(a, Heartbeat())  # a wakes up
    assert hub.c.real == a
    assert hub.last(a, RoleChange) == RoleChange("real", hub.c.epoch, "a")


def test_a_woken_deposed_real_does_not_take_the_role_back() -> None:  # F4
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.advance(6, alive=(b,))
    hub.send(a, Heartbeat())
    hub.advance(10, alive=(a, b))
    assert hub.c.real == b and hub.c.state_of(a) is MemberState.DUMMY


def test_a_deposed_real_that_stays_silent_is_dropped_and_may_rejoin_as_new() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.advance(12, alive=(b,))
    assert a in hub.closed and hub.c.state_of(a) is None
    hub.join("a-again", epoch=1, real=True)  # it says it was real at an old epoch
    assert hub.last("a-again", Welcome).role == "dummy" and hub.c.real == b


def test_silent_dummies_are_dropped() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.advance(6, alive=(a,))
    assert hub.closed[b] == "heartbeat timeout" and hub.c.real == a
    assert [m.member_id for m in hub.c.members()] == ["a"]


def test_a_healthy_real_is_never_timed_out_by_a_long_action() -> None:  # F5
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(b, action("1", "call", timeout=1.0, callee="101"))
    hub.advance(120, alive=(a, b))
    assert hub.take(b, ActionResult) == [] and hub.c.real == a
    hub.send(a, ActionResult(hub.last(a, Action).action_id, hub.c.epoch, True, "call-9"))
    assert outcome(hub, b).value == "call-9"


def test_a_stalled_hub_does_not_depose_everyone_on_waking() -> None:  # F14
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.now += 60  # the hub process was stopped for a minute
    hub.run(hub.c.tick(hub.now))
    assert hub.c.real == a and not hub.closed
    hub.advance(6, alive=(b,))  # but a real that stays silent afterwards is replaced
    assert hub.c.real == b


def test_a_connection_that_never_says_hello_is_closed() -> None:
    hub = Hub(hello_timeout=2.0)
    hub.run(hub.c.connection_made("x", hub.now))
    hub.advance(3)
    assert "x" in hub.closed and hub.c.next_deadline() is None


def test_next_deadline_tracks_the_earliest_timer() -> None:
    hub = Hub()
    assert hub.c.next_deadline() is None
    a = hub.join("a")
    assert hub.c.next_deadline() == T0 + 1.0  # at most one heartbeat interval away
    hub.send(a, action("1", timeout=0.5))  # queued: a has not registered
    assert hub.c.next_deadline() == T0 + 0.5


# -- make-before-break ----------------------------------------------------------------------------


def test_graceful_leave_is_make_before_break() -> None:  # invariant 6
    hub = Hub()
    a, b, c = hub.ready_real("a"), hub.join("b"), hub.join("c")
    hub.send(a, Leave())
    assert hub.last(a, RoleChange) == RoleChange("handing_over", hub.c.epoch, "b")
    assert hub.last(b, RoleChange) == RoleChange("real", hub.c.epoch, "b")
    assert hub.take(a, Released) == []  # a keeps its socket and registration meanwhile
    hub.send(c, action("1"))
    assert hub.take(b, Action) == []  # b is not registered yet: the action waits
    hub.send(b, Registered(hub.c.epoch))
    assert hub.last(a, Released) == Released(hub.c.epoch, unregister=False)
    assert hub.c.state_of(a) is None
    assert hub.last(b, Action).name == "hold"


def test_the_last_real_to_leave_unregisters() -> None:  # F10
    hub = Hub()
    a = hub.ready_real("a")
    hub.send(a, Leave())
    assert hub.last(a, Released).unregister is True
    assert hub.c.real is None and hub.c.state_of(a) is MemberState.UNREGISTERING
    hub.crash(a)  # it closes after unregistering
    assert hub.c.members() == ()


def test_nobody_is_promoted_while_the_last_real_may_still_unregister() -> None:  # F11
    hub = Hub(handover_timeout=3.0)
    a = hub.ready_real("a")
    hub.send(a, Leave())
    b = hub.join("b")  # joins before a has closed: a's unregister must not hit b's binding
    assert hub.last(b, Welcome).role == "dummy" and hub.c.real is None
    hub.send(a, Heartbeat())  # a checks the hub still answers before it unregisters
    assert hub.take(a, Heartbeat) == [Heartbeat()]
    hub.crash(a)
    assert hub.c.real == b and hub.last(b, RoleChange).role == "real"


def test_an_unregistering_real_that_never_closes_is_dropped() -> None:
    hub = Hub(handover_timeout=3.0)
    a = hub.ready_real("a")
    hub.send(a, Leave())
    b = hub.join("b")
    hub.advance(4, alive=(a, b))
    assert a in hub.closed and hub.c.real == b


def test_successor_lost_during_handover_hands_over_to_the_next() -> None:
    hub = Hub()
    a, b, c = hub.ready_real("a"), hub.join("b"), hub.join("c")
    hub.send(a, Leave())
    hub.crash(b)
    assert hub.c.real == c and hub.take(a, Released) == []
    hub.send(c, Registered(hub.c.epoch))
    assert hub.last(a, Released).unregister is False


def test_no_successor_left_during_handover_releases_with_unregister() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(a, Leave())
    hub.crash(b)
    assert hub.last(a, Released).unregister is True
    assert hub.c.state_of(a) is MemberState.UNREGISTERING


def test_a_handover_that_never_completes_releases_without_unregister() -> None:
    hub = Hub(handover_timeout=3.0)
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(a, Leave())
    hub.advance(4, alive=(a, b))  # b stays alive but never registers
    assert hub.last(a, Released).unregister is False


def test_members_show_who_is_handing_over() -> None:
    hub = Hub()
    a = hub.ready_real("a")
    hub.join("b")
    hub.send(a, Leave())
    hub.send(a, Leave())  # a second leave changes nothing
    assert [(m.member_id, m.role) for m in hub.c.members()] == [
        ("a", "handing_over"), ("b", "real")]


def test_a_dummy_that_leaves_is_forgotten() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(b, Leave())
    assert hub.c.state_of(b) is None and hub.c.real == a and b not in hub.closed


# -- actions: exactly one outcome -----------------------------------------------------------------


def test_an_action_goes_to_the_real_and_its_result_to_the_caller_only() -> None:  # F12
    hub = Hub()
    a, b, c = hub.ready_real("a"), hub.join("b"), hub.join("c")
    hub.send(b, action("b1", "send_dtmf", digits="12#"))
    assert hub.last(b, ActionAccepted) == ActionAccepted("b1")
    forwarded = hub.last(a, Action)
    assert forwarded.name == "send_dtmf" and forwarded.args == {"digits": "12#"}
    assert hub.take(c, Action) == []
    hub.send(a, ActionResult(forwarded.action_id, hub.c.epoch, True, None))
    result = outcome(hub, b)
    assert result.ok and result.action_id == "b1"
    assert hub.take(c, ActionResult) == [] and hub.c.pending_actions() == 0


def test_errors_from_the_real_reach_the_caller() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(b, action("b1", "answer"))
    forwarded = hub.last(a, Action)
    hub.send(a, ActionResult(forwarded.action_id, hub.c.epoch, False,
                             error={"type": "CallError", "message": "no such call"}))
    result = outcome(hub, b)
    assert not result.ok and result.error is not None and result.error.type == "CallError"


def test_actions_wait_until_the_real_has_registered() -> None:
    hub = Hub()
    a, b = hub.join("a"), hub.join("b")
    hub.send(b, action("b1"))
    assert hub.take(a, Action) == [] and hub.take(b, ActionAccepted) == []
    hub.send(a, Registered(hub.c.epoch))
    assert len(hub.take(a, Action)) == 1 and len(hub.take(b, ActionAccepted)) == 1


def test_without_a_real_an_action_waits_then_fails_with_no_real_phone() -> None:  # F6
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(a, Leave())
    hub.take(b, RoleChange)
    hub.send(b, Leave())
    c = hub.join("c", epoch=1)  # promoted, never registers
    hub.send(c, action("c1", timeout=3.0))
    hub.advance(2, alive=(c,))
    assert hub.take(c, ActionResult) == []
    hub.advance(2, alive=(c,))
    result = outcome(hub, c)
    assert result.error is not None and result.error.type == "NoRealPhoneError"


def test_an_action_queued_in_the_interregnum_runs_on_the_next_real() -> None:  # F6
    hub = Hub()
    a, b, c = hub.ready_real("a"), hub.join("b"), hub.join("c")
    hub.crash(a)
    hub.send(c, action("c1"))
    hub.send(b, Registered(hub.c.epoch))
    forwarded = hub.last(b, Action)
    hub.send(b, ActionResult(forwarded.action_id, hub.c.epoch, True, 1))
    assert outcome(hub, c).value == 1


def test_a_real_lost_after_accepting_gives_interrupted_and_no_rerun() -> None:  # F7
    hub = Hub()
    a, b, c = hub.ready_real("a"), hub.join("b"), hub.join("c")
    hub.send(c, action("c1"))
    assert len(hub.take(a, Action)) == 1
    hub.crash(a)
    result = outcome(hub, c)
    assert result.error is not None and result.error.type == "ActionInterruptedError"
    hub.send(b, Registered(hub.c.epoch))
    assert hub.take(b, Action) == []  # never forwarded to the next real


def test_a_deposed_real_interrupts_what_it_accepted() -> None:
    hub = Hub()
    hub.ready_real("a")
    b = hub.join("b")
    hub.send(b, action("b1"))
    hub.advance(6, alive=(b,))
    result = outcome(hub, b)
    assert result.error is not None and result.error.type == "ActionInterruptedError"


def test_a_leaving_real_interrupts_what_it_had_not_answered() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(b, action("b1"))
    hub.send(a, Leave())
    result = outcome(hub, b)
    assert result.error is not None and result.error.type == "ActionInterruptedError"


def test_a_duplicate_action_id_is_refused() -> None:  # F7
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(b, action("b1"))
    hub.send(b, action("b1"))
    assert hub.last(b, Error).code == "duplicate_action"
    assert len(hub.take(a, Action)) == 1
    c = hub.join("c")
    hub.send(c, action("b1"))  # ids are per member
    assert len(hub.take(a, Action)) == 1


def test_an_action_id_is_not_reusable_after_it_finished() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(b, action("b1"))
    hub.send(a, ActionResult(hub.last(a, Action).action_id, hub.c.epoch, True))
    hub.send(b, action("b1"))
    assert hub.last(b, Error).code == "duplicate_action" and hub.take(a, Action) == []


def test_results_for_unknown_actions_or_gone_callers_are_dropped() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(a, ActionResult("nope", hub.c.epoch, True))
    hub.send(b, action("b1"))
    forwarded = hub.last(a, Action)
    hub.crash(b)
    hub.send(a, ActionResult(forwarded.action_id, hub.c.epoch, True))
    assert all(not isinstance(f, ActionResult) for box in hub.inbox.values() for f in box)
    assert hub.c.pending_actions() == 0


def test_a_result_from_a_dummy_is_not_taken() -> None:
    hub = Hub()
    a, b, c = hub.ready_real("a"), hub.join("b"), hub.join("c")
    hub.send(c, action("c1"))
    forwarded = hub.last(a, Action)
    hub.send(b, ActionResult(forwarded.action_id, hub.c.epoch, True, "forged"))
    assert hub.take(c, ActionResult) == [] and hub.last(b, RoleChange).role == "dummy"


def test_too_many_pending_actions_are_answered_not_queued() -> None:
    hub = Hub(max_pending_actions=2)
    hub.join("a")
    b = hub.join("b")
    for i in range(3):
        hub.send(b, action(f"b{i}"))
    result = outcome(hub, b)
    assert result.action_id == "b2" and result.error is not None
    assert result.error.type == "GroupProtocolError"


def test_action_ids_towards_the_real_carry_the_hub_instance() -> None:
    hub = Hub(instance="b7f3")
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(b, action("b1"))
    forwarded = hub.last(a, Action)
    assert forwarded.action_id.startswith("b7f3")
    # a result the real still owed a previous hub (ids restart there) matches nothing here
    hub.send(a, ActionResult("h1", hub.c.epoch, True, "late"))
    assert hub.take(b, ActionResult) == [] and hub.c.pending_actions() == 1


# -- snapshots ------------------------------------------------------------------------------------


def test_snapshots_fan_out_and_late_joiners_get_the_current_one() -> None:  # F8
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    snap = Snapshot(hub.c.epoch, 1, state("x"))
    hub.send(a, snap)
    assert hub.take(b, Snapshot) == [snap] and hub.take(a, Snapshot) == []
    c = hub.join("c")
    assert hub.last(c, Welcome).snapshot == snap


def test_a_snapshot_that_is_not_newer_is_not_taken() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.send(a, Snapshot(hub.c.epoch, 5, state("x")))
    hub.send(a, Snapshot(hub.c.epoch, 5, state("y")))
    hub.send(a, Snapshot(hub.c.epoch, 4, state("z")))
    assert [s.seq for s in hub.take(b, Snapshot)] == [5]


def test_the_cached_snapshot_stays_until_the_new_real_publishes() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    old = Snapshot(hub.c.epoch, 9, state("x"))
    hub.send(a, old)
    hub.crash(a)
    assert hub.last(hub.join("c"), Welcome).snapshot == old
    new = Snapshot(hub.c.epoch, 0, state())
    hub.send(b, new)
    assert hub.c.snapshot == new and new.version > old.version


def test_a_snapshot_from_a_dummy_is_refused() -> None:  # F12
    hub = Hub()
    hub.ready_real("a")
    b = hub.join("b")
    hub.send(b, Snapshot(hub.c.epoch, 1, state("forged")))
    assert hub.c.snapshot is None and hub.last(b, RoleChange).role == "dummy"


# -- protocol errors ------------------------------------------------------------------------------


def test_malformed_bytes_close_that_connection_and_the_hub_lives_on() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.run(hub.c.data_received(b, b'{"v":1,"type":"action","name":"exec"}', hub.now))
    assert hub.last(b, Error).code == "protocol" and b in hub.closed
    assert hub.c.real == a and hub.c.state_of(b) is None


def test_a_malformed_frame_from_the_real_replaces_it() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.run(hub.c.data_received(a, b"not json", hub.now))
    assert a in hub.closed and hub.c.real == b


def test_hub_frames_from_a_member_and_frames_before_hello_are_refused() -> None:
    hub = Hub()
    a = hub.ready_real("a")
    hub.send(a, Released(1, True))
    assert a in hub.closed
    hub.run(hub.c.connection_made("x", hub.now))
    hub.send("x", Heartbeat())
    assert "x" in hub.closed


def test_bytes_decode_to_the_same_handling_as_frames() -> None:
    hub = Hub()
    a, b = hub.ready_real("a"), hub.join("b")
    hub.run(hub.c.data_received(b, action("b1").to_json(), hub.now))
    assert hub.last(a, Action).name == "hold"


@pytest.mark.parametrize(
    ("hello", "code"),
    [({"group": "other"}, "group"), ({"member_id": "a"}, "duplicate_member")],
)
def test_hellos_that_cannot_join_are_refused(hello: dict[str, Any], code: str) -> None:
    hub = Hub()
    hub.join("a")
    hub.run(hub.c.connection_made("x", hub.now))
    fields = {"member_id": "x", "pid": 1, "host": "h", "group": "g", "started_at": T0, **hello}
    hub.send("x", Hello(**fields))
    assert hub.last("x", Error).code == code and "x" in hub.closed


def test_a_full_group_refuses_more_members() -> None:
    hub = Hub(max_members=1)
    hub.join("a")
    hub.join("b")
    assert hub.last("b", Error).code == "full"


# -- hub restart ----------------------------------------------------------------------------------


def test_a_restarted_hub_adopts_the_returning_real_without_re_registration() -> None:
    hub = Hub()
    b = hub.join("b", epoch=7)  # a dummy of the old hub comes back first
    assert hub.c.real is None  # waits for the real (rejoin grace)
    hub.send(b, action("b1"))
    a = hub.join("a", epoch=7, real=True)
    assert hub.last(a, Welcome).role == "real" and hub.c.epoch == 7 and hub.c.real_ready
    assert hub.last(b, RoleChange) == RoleChange("dummy", 7, "a")
    assert hub.last(a, Action).name == "hold"  # the queued action went to it at once


def test_a_restarted_hub_promotes_a_dummy_after_the_grace() -> None:
    hub = Hub(rejoin_grace=3.0)
    b = hub.join("b", epoch=7)
    hub.advance(4, alive=(b,))
    assert hub.c.real == b and hub.c.epoch > 7


def test_a_restarted_hub_deposes_an_adopted_real_when_a_newer_epoch_shows_up() -> None:
    hub = Hub()
    a = hub.join("a", epoch=4, real=True)  # a zombie from before a promotion
    assert hub.c.real == a
    b = hub.join("b", epoch=5, real=True)
    assert hub.c.real == b and hub.c.epoch == 5
    assert hub.last(a, RoleChange).role == "dummy"
    hub.send(a, Snapshot(4, 100, state()))
    assert hub.c.snapshot is None


def test_a_brand_new_group_has_no_grace() -> None:
    hub = Hub()
    assert hub.last(hub.join("a"), Welcome).role == "real"


# -- member-side views ----------------------------------------------------------------------------


def test_snapshot_view_never_goes_backwards() -> None:
    view = SnapshotView()
    assert view.offer(Snapshot(2, 5, state("a")))
    assert not view.offer(Snapshot(2, 5, state("b")))
    assert not view.offer(Snapshot(1, 99, state("c")))
    assert view.offer(Snapshot(3, 0, state()))
    assert view.version == (3, 0) and view.state == state()


def test_member_view_follows_roles_and_ignores_stale_ones() -> None:
    view = MemberView()
    snap = Snapshot(1, 1, state("x"))
    assert view.apply(Welcome("m", "real", 1, "m", 1.0, snap, ()))
    assert view.may_act and view.snapshots.version == (1, 1)
    assert view.apply(RoleChange("dummy", 3, "n")) and not view.may_act
    assert not view.apply(RoleChange("real", 2, "m"))  # stale: never act again for epoch 2
    assert not view.may_act and view.epoch == 3
    assert view.apply(RoleChange("real", 5, "m")) and view.may_act
    assert view.apply(Released(6, unregister=False)) and not view.may_act
    assert not view.should_unregister
    assert not view.apply(Heartbeat())
