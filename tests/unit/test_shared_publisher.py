"""What a real publishes (shared/publisher.py): one publish per loop turn, only on change, ended
calls kept for a while, the server connection; and a dummy's mirror of it (shared/mirror.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from webphone._events import EventEmitter
from webphone.shared.mirror import CallMirror
from webphone.shared.proxy import server_state
from webphone.shared.publisher import StatePublisher


class Session(EventEmitter):
    """The attributes `call_state` reads, and events."""

    def __init__(self, call_id: str, state: str = "ringing") -> None:
        super().__init__()
        self.call_id, self.state, self.direction = call_id, state, "inbound"


async def test_events_of_one_turn_make_one_publish_and_an_unchanged_state_none() -> None:
    """Three session events in one turn of the loop: one snapshot; the same state again: none."""
    published: list[dict[str, Any]] = []
    changes: list[None] = []
    publisher = StatePublisher(changed=lambda: changes.append(None))
    session = Session("c1")
    sessions = [session]
    publisher.watch(session)
    publisher.watch(session)  # once per session

    def flush() -> None:
        publisher.flush(sessions, published.append)

    for event in ("ringing", "answered", "held"):
        session.emit(event)
        publisher.schedule(flush)
    assert publisher.pending and len(changes) == 3
    await asyncio.sleep(0)  # one loop turn: the scheduled flush runs
    assert [c["calls"][0]["id"] for c in published] == ["c1"] and not publisher.pending
    flush()
    assert len(published) == 1  # nothing changed


async def test_an_ended_call_stays_in_snapshots_with_how_it_ended() -> None:
    """A disposed call is gone from the phone but stays (as "failed"/"disposed") for a while."""
    published: list[dict[str, Any]] = []
    publisher = StatePublisher(changed=lambda: None)
    session = Session("c2", state="answered")
    publisher.watch(session)
    session.emit("failed")
    publisher.flush([], published.append)  # the phone no longer lists it
    assert [(c["id"], c["state"]) for c in published[-1]["calls"]] == [("c2", "failed")]
    publisher.server = server_state(False, "closed by server")
    publisher.flush([], published.append)
    assert published[-1]["server"] == {"connected": False, "reason": "closed by server"}
    publisher.reset()
    assert publisher.ended == {}


async def test_the_mirror_turns_snapshots_into_proxies_and_events() -> None:
    """New call -> inbound_call; change -> the proxy's event and call_changed; gone -> disposed;
    server down and back -> disconnected / reconnected."""
    seen: list[tuple[Any, ...]] = []
    mirror = CallMirror(run=_never, emit=lambda *args: seen.append(args))
    call = {"id": "c3", "direction": "inbound", "state": "ringing"}
    mirror.sync({"calls": [call]})
    proxy = mirror.proxies["c3"]
    assert seen == [("inbound_call", proxy)]
    proxy_events: list[str] = []
    proxy.on("answered", lambda: proxy_events.append("answered"))
    mirror.sync({"calls": [{**call, "state": "answered"}],
                 "server": server_state(False, "gone")})
    assert proxy_events == ["answered"]
    assert seen[1:] == [("call_changed", proxy), ("disconnected", "gone")]
    mirror.sync({"calls": [], "server": server_state(True)})
    assert proxy.state == "disposed" and mirror.live() == []
    assert seen[3:] == [("call_changed", proxy), ("reconnected",)]
    assert (await mirror.proxy_for("never-seen", wait=0.01)).state == "disposed"


async def test_the_mirror_says_which_calls_the_real_ended() -> None:
    """`ended(call_id)` (the holder closes the call's media) when a snapshot says the call is
    over, never for a call that is only missing from one snapshot (a promotion's)."""
    ended: list[str] = []
    mirror = CallMirror(run=_never, emit=lambda *args: None, ended=ended.append)
    call = {"id": "c4", "direction": "inbound", "state": "answered"}
    mirror.sync({"calls": [call, {**call, "id": "c5"}]})
    mirror.sync({"calls": [call]})  # c5 missing: disposed in the view, media kept
    assert ended == []
    mirror.sync({"calls": [{**call, "state": "disposed"}]})
    assert ended == ["c4"]


async def _never(name: str, call_id: str | None, args: dict[str, Any]) -> Any:
    raise AssertionError("no action in this test")
