"""The real's side of the snapshots: what they say, and when they are sent.

A snapshot carries the real's calls (`proxy.call_state`: derived fields, never SIP, SDP or
secrets), the calls that ended in the last `ENDED_RETENTION` seconds (so that every dummy sees
whether a call failed or was disposed, even one that joins late), and the real's connection to
the SIP server (`proxy.server_state`). `StatePublisher` builds it, checks it
(`schema.check_state`), and sends it only when it changed, at most once per turn of the event
loop however many session events arrive together. It knows nothing of `SharedWebPhone`: the
caller gives it the sessions and the function that publishes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from webphone.errors import WebPhoneError
from webphone.shared.proxy import FINAL_STATES, call_state, server_state
from webphone.shared.schema import MAX_CALLS, check_state

__all__ = ["ENDED_RETENTION", "SESSION_EVENTS", "StatePublisher"]

log = logging.getLogger("webphone.shared.publisher")

#: how long an ended call stays in snapshots, in seconds (every dummy sees "failed" vs
#: "disposed"; ten heartbeat intervals of the default hub)
ENDED_RETENTION = 10.0
#: session events that change what a snapshot shows
SESSION_EVENTS = ("ringing", "answered", "failed", "disposed", "held", "unheld")


class StatePublisher:
    """What the real publishes (see the module docstring). `changed` is called on every session
    event of a watched call (the owner schedules a publish and wakes what waits for calls)."""

    def __init__(self, *, changed: Callable[[], None]) -> None:
        self._changed = changed
        #: call id -> (loop time until which it stays, its last state): recently ended calls
        self.ended: dict[str, tuple[float, dict[str, Any]]] = {}
        #: the real's SIP connection as it is published
        self.server = server_state(True)
        self._watched: set[int] = set()
        self._last: dict[str, Any] | None = None
        self._handle: asyncio.Handle | None = None

    @property
    def pending(self) -> bool:
        """True while a publish is scheduled and has not run."""
        return self._handle is not None

    def reset(self) -> None:
        """Forget what was published and watched (this member is no longer the real)."""
        self._last = None
        self.ended.clear()
        self._watched.clear()

    def watch(self, session: Any) -> None:
        """Follow `session`'s events (once per session)."""
        if id(session) in self._watched:
            return
        self._watched.add(id(session))
        for event in SESSION_EVENTS:
            session.on(event, lambda *args, s=session, e=event: self._session_event(s, e))

    def _session_event(self, session: Any, event: str) -> None:
        if event in FINAL_STATES:
            self._watched.discard(id(session))
            data = call_state(session)
            data["state"] = event
            until = asyncio.get_running_loop().time() + ENDED_RETENTION
            self.ended[session.call_id] = (until, data)
        self._changed()

    def schedule(self, flush: Callable[[], None]) -> None:
        """Run `flush` soon (once, however often this is called before it runs)."""
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(flush)

    def cancel(self) -> None:
        """Drop a scheduled publish."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def flush(self, sessions: Iterable[Any], publish: Callable[[dict[str, Any]], None]) -> None:
        """Publish the state of `sessions` (and of recently ended calls) if it changed."""
        self._handle = None
        state = self.state(sessions)
        if state == self._last:
            return
        try:
            check_state(state)
        except WebPhoneError as exc:
            log.error("not publishing an invalid snapshot: %s", exc)
            return
        self._last = state
        publish(state)

    def state(self, sessions: Iterable[Any]) -> dict[str, Any]:
        """The snapshot state: live and recently ended calls (at most `MAX_CALLS`), server."""
        calls: dict[str, dict[str, Any]] = {}
        now = asyncio.get_running_loop().time()
        for call_id, (until, data) in list(self.ended.items()):
            if until < now:
                del self.ended[call_id]
            else:
                calls[call_id] = data
        for session in sessions:
            data = call_state(session)
            if data["id"]:
                calls[data["id"]] = data
        return {"calls": list(calls.values())[-MAX_CALLS:], "server": dict(self.server)}
