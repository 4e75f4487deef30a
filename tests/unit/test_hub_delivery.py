"""The hub shell tells the coordinator which actions never left (issue 13 item 9).

A pure unit of `Hub` (the transport side is a recording peer): an action forwarded to a real
whose connection had already failed, before the hub saw that loss, is queued for the next real
instead of ending ActionInterruptedError.
"""

from __future__ import annotations

from typing import Any

from webphone.shared.hub import Hub
from webphone.shared.protocol import (
    Action,
    ActionResult,
    Frame,
    Hello,
    Registered,
    RoleChange,
    Welcome,
)
from webphone.shared.transports.base import HubOptions


class Peer:
    """A member connection that records frames; once `dead`, sends fail like on EPIPE."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.dead = False

    def send(self, *frames: Frame) -> bool:
        if self.dead:
            return False
        self.frames.extend(frames)
        return True

    def buffered(self) -> int:
        return 0

    def close(self) -> None:
        self.dead = True

    def last(self, kind: type[Any]) -> Any:
        found = [f for f in self.frames if isinstance(f, kind)]
        assert found, f"no {kind.__name__} in {self.frames}"
        return found[-1]


def join(hub: Hub, name: str) -> tuple[Peer, str]:
    peer = Peer()
    conn = hub.open(peer)
    hello = Hello(member_id=name, pid=1, host="h", group="g", started_at=1.0)
    hub.frame(conn, hello.to_json())
    return peer, conn


async def test_an_action_that_never_reached_a_dead_real_runs_on_the_successor() -> None:
    """Sent after the real died, before its EOF was read: re-queued, answered by the next."""
    hub = Hub("g", HubOptions())
    a, conn_a = join(hub, "a")
    assert a.last(Welcome).role == "real"
    hub.frame(conn_a, Registered(hub.coordinator.epoch).to_json())
    b, conn_b = join(hub, "b")
    c, conn_c = join(hub, "c")
    a.dead = True  # SIGKILLed: the kernel closed its socket, the hub has not read the EOF yet
    hub.frame(conn_c, Action("c1", "hold", "call-1", {}, 10.0).to_json())
    hub.lost(conn_a)
    assert not [f for f in c.frames if isinstance(f, ActionResult)]  # not interrupted
    assert b.last(RoleChange).role == "real"
    hub.frame(conn_b, Registered(hub.coordinator.epoch).to_json())
    forwarded = b.last(Action)
    assert forwarded.name == "hold"
    hub.frame(conn_b, ActionResult(forwarded.action_id, hub.coordinator.epoch, True, 7).to_json())
    result = c.last(ActionResult)
    assert result.action_id == "c1" and result.ok and result.value == 7
    hub.close()
