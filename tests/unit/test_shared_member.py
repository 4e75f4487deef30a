"""GroupMember against an in-memory hub (no SIP): roles, re-claims, stalls, fencing checks, and
the exactly-one-outcome rule for actions as the caller sees it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from typing import Any

import pytest

from webphone.errors import (
    ActionInterruptedError,
    CallError,
    NoRealPhoneError,
    TooManyContactsError,
    WebPhoneError,
)
from webphone.shared.member import GroupMember, LinkToken, error_from_info, error_info
from webphone.shared.protocol import Action, ErrorInfo, Released, Role, Snapshot
from webphone.shared.transports.base import HubOptions
from webphone.shared.transports.memory import MemoryLink, MemoryTransport

OPTIONS = HubOptions(heartbeat_interval=0.05, heartbeat_timeout=0.4, idle_timeout=5.0)


class Listener:
    """Records everything; as the real, registers at once and answers actions by a table."""

    def __init__(self, name: str, answers: dict[str, Any] | None = None,
                 register: bool = True) -> None:
        self.name = name
        self.member: GroupMember | None = None
        self.roles: list[tuple[Role | None, Role, int]] = []
        self.snapshots: list[Snapshot] = []
        self.actions: list[Action] = []
        self.released: list[Released] = []
        self.answers = answers or {}
        self.register = register
        self.hold_actions = False
        self.changed = asyncio.Event()

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        self.roles.append((old, new, epoch))
        if new == "real" and self.register and self.member is not None:
            self.member.registered(epoch)
        self.changed.set()

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        self.changed.set()

    def on_action(self, action: Action, token: LinkToken) -> None:
        self.actions.append(action)
        self.changed.set()
        if self.hold_actions:
            return
        answer = self.answers.get(action.name, {"ran": action.name, "by": self.name})
        assert self.member is not None
        if isinstance(answer, BaseException):
            self.member.send_result(token, action.action_id, error=error_info(answer))
        else:
            self.member.send_result(token, action.action_id, value=answer)

    def on_released(self, released: Released) -> None:
        self.released.append(released)

    @property
    def role(self) -> Role | None:
        return self.roles[-1][1] if self.roles else None

    async def wait(self, predicate: Any, timeout: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: condition not met; roles {self.roles}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):  # also re-check what other members did
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.05))


async def join(transport: MemoryTransport, name: str, **kwargs: Any) -> tuple[GroupMember,
                                                                             Listener]:
    listener = Listener(name, **{k: kwargs.pop(k) for k in ("answers", "register")
                                 if k in kwargs})
    member = GroupMember(transport, "g", listener, member_id=name, **kwargs)
    listener.member = member
    await member.start(timeout=3)
    return member, listener


@pytest.fixture
async def transport() -> Any:
    t = MemoryTransport(OPTIONS)
    yield t
    await t.aclose()


def link_of(member: GroupMember) -> MemoryLink:
    token = member._token
    assert token is not None and isinstance(token.link, MemoryLink)
    return token.link


async def test_first_member_is_real_later_ones_dummies(transport: MemoryTransport) -> None:
    a, la = await join(transport, "a")
    await la.wait(lambda: la.role == "real")
    b, lb = await join(transport, "b")
    assert lb.role == "dummy" and b.view.real_id == "a"
    infos = await b.members()
    assert [(m.member_id, m.role) for m in infos] == [("a", "real"), ("b", "dummy")]
    assert await transport.query_members("g") == infos  # a status probe does not join
    assert len(await a.members()) == 2
    await a.close()
    await b.close()


async def test_action_results_and_errors_reach_the_caller(transport: MemoryTransport) -> None:
    a, la = await join(transport, "a", answers={
        "hold": CallError("no such call"), "park": TooManyContactsError("x"),
        "flip": ValueError("odd")})
    await la.wait(lambda: la.role == "real")
    b, _ = await join(transport, "b")
    assert await b.request("answer", "c1", {}) == {"ran": "answer", "by": "a"}
    with pytest.raises(CallError, match="no such call"):
        await b.request("hold", "c1", {})
    with pytest.raises(TooManyContactsError):
        await b.request("park", "c1", {})
    with pytest.raises(WebPhoneError, match="ValueError: odd") as info:
        await b.request("flip", "c1", {"target": 1})
    assert type(info.value) is WebPhoneError
    assert [x.name for x in la.actions] == ["answer", "hold", "park", "flip"]
    await a.close()
    await b.close()


async def test_a_failed_action_leaves_no_reference_cycle(transport: MemoryTransport) -> None:
    # the error raised in the caller holds request()'s frame (its traceback); if that frame
    # still held the action's future, which holds the error, only the cycle collector could
    # free them: with it off, the error must die once nothing runs that could hold it
    a, la = await join(transport, "a", answers={"hold": CallError("no such call")})
    await la.wait(lambda: la.role == "real")
    b, _ = await join(transport, "b")
    gc.disable()
    try:
        try:
            await b.request("hold", "c1", {})
        except CallError as exc:
            ref = weakref.ref(exc)
        await asyncio.sleep(0)  # the loop's handle that woke us holds the future until then
        assert ref() is None
    finally:
        gc.enable()
    await a.close()
    await b.close()


async def test_no_ready_real_within_the_deadline_is_no_real_phone_error(
    transport: MemoryTransport,
) -> None:
    a, la = await join(transport, "a", register=False)  # promoted, never registers
    await la.wait(lambda: la.role == "real")
    b, _ = await join(transport, "b")
    with pytest.raises(NoRealPhoneError):
        await b.request("answer", "c1", {}, timeout=0.2)
    assert la.actions == []  # never sent to a real that is not ready
    await a.close()
    await b.close()


async def test_real_lost_after_accepting_is_interrupted_and_not_rerun(
    transport: MemoryTransport,
) -> None:
    a, la = await join(transport, "a")
    await la.wait(lambda: la.role == "real")
    b, lb = await join(transport, "b")
    la.hold_actions = True
    pending = asyncio.ensure_future(b.request("hangup", "c1", {}))
    await la.wait(lambda: len(la.actions) == 1)
    link_of(a).sever()  # the real crashes with the action in hand
    with pytest.raises(ActionInterruptedError):
        await pending
    await lb.wait(lambda: lb.role == "real")  # the dummy took over ...
    assert lb.actions == []  # ... and the interrupted action was not run again
    await a.close()
    await b.close()


async def test_actions_sent_before_a_hub_crash_are_interrupted(transport: MemoryTransport) -> None:
    a, la = await join(transport, "a")
    await la.wait(lambda: la.role == "real")
    b, _ = await join(transport, "b")
    la.hold_actions = True
    pending = asyncio.ensure_future(b.request("hangup", "c1", {}))
    await la.wait(lambda: len(la.actions) == 1)
    transport.kill_hub("g")
    with pytest.raises(ActionInterruptedError, match="connection to the group hub was lost"):
        await pending
    await a.close()
    await b.close()


async def test_a_restarted_hub_readopts_the_real_without_a_new_promotion(
    transport: MemoryTransport,
) -> None:
    a, la = await join(transport, "a")
    await la.wait(lambda: la.role == "real")
    b, lb = await join(transport, "b")
    epoch = a.epoch
    a.publish({"calls": []})
    await lb.wait(lambda: len(lb.snapshots) == 1)
    transport.kill_hub("g")
    await la.wait(lambda: a.hubs_seen == 2 and b.hubs_seen == 2)
    await lb.wait(lambda: b.hubs_seen == 2)
    assert transport.hubs_started == 2
    assert a.role == "real" and a.epoch == epoch  # re-claimed, same epoch: no new REGISTER
    assert la.roles[-1] == ("real", "real", epoch)  # told "adopted", never demoted
    assert b.role == "dummy" and b.view.real_id == "a"
    assert await b.request("answer", "c1", {}) == {"ran": "answer", "by": "a"}
    await a.close()
    await b.close()


async def test_a_stalled_real_does_not_reclaim_after_the_hub_is_gone(
    transport: MemoryTransport,
) -> None:
    a, la = await join(transport, "a")
    await la.wait(lambda: la.role == "real")
    old_epoch = a.epoch
    b, lb = await join(transport, "b")
    # a's loop "stalled" past the heartbeat timeout (as after SIGSTOP) while the hub died
    a._last_tick -= 10
    transport.kill_hub("g")
    await la.wait(lambda: la.role == "dummy")
    assert la.roles[1][:2] == ("real", "dummy")  # stood down before anything else
    # the new hub promotes someone (after its rejoin grace) at a NEW epoch: no re-claim
    await la.wait(lambda: "real" in (a.role, b.role) and max(a.epoch, b.epoch) > old_epoch,
                  timeout=5)
    real = a if a.role == "real" else b
    assert real.epoch > old_epoch and (la if real is a else lb).roles[-1][:2] == ("dummy", "real")
    await a.close()
    await b.close()


async def test_confirm_real_reads_a_pending_depose_before_answering(
    transport: MemoryTransport,
) -> None:
    a, la = await join(transport, "a", hub_timeout=60)
    await la.wait(lambda: la.role == "real")
    b, lb = await join(transport, "b")
    assert await a.confirm_real() is True  # fresh news: no round trip needed
    link_of(a).freeze()  # a hangs: the hub deposes it and promotes b
    await lb.wait(lambda: lb.role == "real", timeout=5)
    a._last_tick -= 10  # a's loop did not run meanwhile
    confirming = asyncio.ensure_future(a.confirm_real(timeout=3))
    link_of(a).thaw()  # a wakes: the role frame waiting for it comes before the echo
    assert await confirming is False
    assert la.role == "dummy"
    await a.close()
    await b.close()


async def test_leave_as_last_real_is_released_with_unregister(transport: MemoryTransport) -> None:
    a, la = await join(transport, "a")
    await la.wait(lambda: la.role == "real")
    released = await a.leave(timeout=2)
    assert released is not None and released.unregister is True
    assert await a.ping() is True  # the hub still answers while we unregister
    await a.close()


async def test_leave_with_a_successor_is_make_before_break(transport: MemoryTransport) -> None:
    a, la = await join(transport, "a")
    await la.wait(lambda: la.role == "real")
    b, lb = await join(transport, "b", register=False)
    leaving = asyncio.ensure_future(a.leave(timeout=3))
    await lb.wait(lambda: lb.role == "real")
    # A round trip through the hub on the leaving member's own connection: whatever the hub had
    # sent it has arrived, and no release was in it (the successor has not registered yet).
    assert await a.ping() is True
    assert not leaving.done()
    b.registered(b.epoch)
    released = await leaving
    assert released is not None and released.unregister is False
    await a.close()
    await b.close()


async def test_invalid_actions_fail_before_sending(transport: MemoryTransport) -> None:
    a, la = await join(transport, "a")
    await la.wait(lambda: la.role == "real")
    with pytest.raises(WebPhoneError, match="not an allowed action"):
        await a.request("__class__", None, {})
    with pytest.raises(WebPhoneError, match="takes no argument"):
        await a.request("hold", "c1", {"evil": 1})
    assert la.actions == []
    await a.close()


def test_error_info_round_trip() -> None:
    info = error_info(CallError("busy\r\nX-Injected: 1"))
    assert info == ErrorInfo("CallError", "busy \nX-Injected: 1")
    assert isinstance(error_from_info(info), CallError)
    unknown = error_from_info(ErrorInfo("KeyError", "'x'"))
    assert type(unknown) is WebPhoneError and "KeyError" in str(unknown)
    assert type(error_from_info(ErrorInfo("os.system", "x"))) is WebPhoneError
