"""The direct action link's rules (transports/local_direct.py) over real Unix sockets in one
process: each side is driven with the frames its hub link would carry, and what it hands to
its member or back to the hub is recorded."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.wait import wait_until
from webphone.shared.protocol import (
    Action,
    ActionResult,
    Frame,
    Hello,
    Leave,
    Registered,
    Role,
    RoleChange,
    Snapshot,
    Welcome,
)
from webphone.shared.transports.local_direct import DirectActions

GROUP = "direct-test"
INTERVAL = 0.2


class Side:
    """One member's `DirectActions` and what it gave its member and its hub."""

    def __init__(self, runtime_dir: Path, member_id: str) -> None:
        self.member_id = member_id
        self.to_member: list[Frame] = []
        self.to_hub: list[Frame] = []
        self.direct = DirectActions(runtime_dir, GROUP, self.to_member.append,
                                    self.to_hub.append, heartbeat_timeout=10 * INTERVAL)
        hello = Hello(member_id, os.getpid(), "host", GROUP, 1.0)
        assert not self.direct.to_hub(hello)

    def welcome(self, role: Role, epoch: int, real_id: str) -> None:
        self.direct.from_hub(Welcome(self.member_id, role, epoch, real_id, INTERVAL, None, ()))

    def send(self, action: Action) -> bool:
        """The member sends `action`: True if it went direct."""
        went = self.direct.to_hub(action)
        if not went:
            self.to_hub.append(action)
        return went

    def actions(self) -> list[Action]:
        return [f for f in self.to_member if isinstance(f, Action)]

    def results(self) -> list[ActionResult]:
        return [f for f in self.to_member if isinstance(f, ActionResult)]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Side, Side]]:
    runtime_dir = tmp_path / "run"
    os.mkdir(runtime_dir, 0o700)
    real, dummy = Side(runtime_dir, "r1"), Side(runtime_dir, "d1")
    real.welcome("real", 1, "r1")
    assert not real.direct.to_hub(Registered(1))
    dummy.welcome("dummy", 1, "r1")
    await wait_until(lambda: list(runtime_dir.glob("*.act")), 5, interval=0.01)
    # the first action goes through the hub and opens the direct link
    assert not dummy.send(Action("a0", "hold", "c", {}, 5.0))
    dummy.direct.from_hub(ActionResult("a0", 1, True, None))  # its outcome, from the hub
    await wait_until(lambda: dummy.direct._client is not None, 5, interval=0.01)
    yield real, dummy
    real.direct.close()
    dummy.direct.close()


def heard(side: Side) -> None:
    """A heartbeat echo from the hub."""
    side.direct.from_hub(RoleChange("real", 1, "r1"))


async def test_an_action_goes_direct_and_its_result_follows_the_newest_snapshot(
    pair: tuple[Side, Side],
) -> None:
    """One hop each way, under the real's own id towards its member; the snapshot the real
    published before answering reaches the dummy before the result."""
    real, dummy = pair
    heard(real)
    assert dummy.send(Action("a1", "hold", "c", {}, 5.0))
    await wait_until(real.actions, 5, interval=0.01)
    (got,) = real.actions()
    assert got.action_id != "a1" and got.name == "hold"
    snap = Snapshot(1, 7, {"calls": []})
    assert not real.direct.to_hub(snap)  # it still goes to the hub as well
    assert real.direct.to_hub(ActionResult(got.action_id, 1, True, {"x": 1}))
    await wait_until(dummy.results, 5, interval=0.01)
    assert [type(f).__name__ for f in dummy.to_member] == ["Snapshot", "ActionResult"]
    assert dummy.results()[0].action_id == "a1" and dummy.results()[0].value == {"x": 1}
    assert [f.action_id for f in dummy.to_hub if isinstance(f, Action)] == ["a0"]


async def test_a_real_that_has_not_heard_from_the_hub_refuses_and_the_action_goes_to_the_hub(
    pair: tuple[Side, Side],
) -> None:
    """Silence from the hub for more than two heartbeat intervals (a stall, a dead hub): the
    real does not run it; the dummy sends it through the hub, once."""
    real, dummy = pair
    await asyncio.sleep(3 * INTERVAL)  # the condition under test: time without hub frames
    assert dummy.send(Action("a1", "hold", "c", {}, 5.0))
    await wait_until(lambda: [f for f in dummy.to_hub
                              if isinstance(f, Action) and f.action_id == "a1"], 5, interval=0.01)
    assert real.actions() == [] and dummy.results() == []
    heard(real)
    dummy.direct.from_hub(ActionResult("a1", 1, True, None))  # the hub path's outcome
    assert dummy.send(Action("a2", "hold", "c", {}, 5.0))  # fresh again: direct
    await wait_until(real.actions, 5, interval=0.01)


async def test_the_real_gone_or_replaced_ends_what_is_in_flight_interrupted_once(
    pair: tuple[Side, Side],
) -> None:
    """The link lost (the real crashed or stopped serving), or the hub naming another real:
    every action in flight ends ActionInterruptedError, exactly once."""
    real, dummy = pair
    heard(real)
    assert dummy.send(Action("a1", "hold", "c", {}, 5.0))
    await wait_until(real.actions, 5, interval=0.01)
    real.direct.close()
    await wait_until(dummy.results, 5, interval=0.01)
    (result,) = dummy.results()
    assert result.action_id == "a1" and result.error is not None
    assert result.error.type == "ActionInterruptedError"
    # a new reign: the hub names another real; nothing was in flight, nothing more comes
    dummy.direct.from_hub(RoleChange("dummy", 2, "r2"))
    assert not dummy.send(Action("a2", "hold", "c", {}, 5.0))  # through the hub
    assert len(dummy.results()) == 1


async def test_a_real_that_leaves_closes_its_links_and_actions_go_through_the_hub(
    pair: tuple[Side, Side],
) -> None:
    """A leaving real (handing over) serves nothing more: its dummies' links close, and their
    next actions go through the hub (queued there until the successor is ready)."""
    real, dummy = pair
    assert not real.direct.to_hub(Leave())
    await wait_until(lambda: dummy.direct._client is None, 5, interval=0.01)
    assert not dummy.send(Action("a1", "hold", "c", {}, 5.0))
    assert real.actions() == [] and dummy.results() == []
