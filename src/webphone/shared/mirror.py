"""A dummy's mirror of the group: the real's calls as `ProxyCallSession`s and the real's SIP
connection, rebuilt from every snapshot, with the events each change means.

`CallMirror` knows nothing of `SharedWebPhone`: it is given the callable that runs an action on
the real (for its proxies) and the `emit` of the object whose listeners hear ``inbound_call``,
``outbound_call``, ``call_changed``, ``disconnected``, ``reconnected`` and ``media_moved``; and
`held()`, the media this member holds by call id (`MediaHost.sessions`), which it gives to the
proxies of those calls (`ProxyCallSession.media`), and `ended(call_id)`, told when the real
reports a call ended (the media held here for it is closed, should the real's own
``media.close`` not have come).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from webphone.shared.proxy import (
    FINAL_STATES,
    ProxyCallSession,
    RunAction,
    Taker,
    server_events,
    server_state,
)

__all__ = ["CallMirror", "Emit"]

#: emit an event with its arguments on the mirror's owner (`EventEmitter.emit`)
Emit = Callable[..., None]


class CallMirror:
    """What a dummy shows: `proxies` by call id and the real's `server` connection state."""

    def __init__(self, *, run: RunAction, emit: Emit, taker: Taker | None = None,
                 held: Callable[[], Mapping[str, Any]] | None = None,
                 ended: Callable[[str], None] | None = None) -> None:
        self._run = run
        self._emit = emit
        self._taker = taker
        self._held = held
        self._ended = ended
        self.proxies: dict[str, ProxyCallSession] = {}
        #: the real's SIP connection as the latest snapshot said (`server_state`)
        self.server = server_state(True)
        self._changed = asyncio.Event()

    def live(self) -> list[ProxyCallSession]:
        """The calls that have not ended."""
        return [p for p in self.proxies.values() if p.state not in FINAL_STATES]

    def clear(self) -> None:
        """Forget everything (this member became the real: its own sessions replace these)."""
        self.proxies.clear()

    def sync(self, state: Mapping[str, Any]) -> None:
        """Apply a snapshot's state: new calls, changed ones, calls gone from the real (they
        end as "disposed"), the server connection; then emit what changed, in that order."""
        calls = [c for c in state.get("calls", []) if isinstance(c, dict) and "id" in c]
        seen = set()
        emits: list[tuple[Emit, tuple[Any, ...]]] = []
        for data in calls:
            call_id = str(data["id"])
            seen.add(call_id)
            proxy = self.proxies.get(call_id)
            if proxy is None:
                proxy = self.proxies[call_id] = self.new_proxy(data)
                if proxy.state not in FINAL_STATES:
                    event = "outbound_call" if proxy.direction == "outbound" else "inbound_call"
                    emits.append((self._emit, (event, proxy)))
                continue
            events = proxy._update(data)
            emits.extend((proxy.emit, (event,)) for event in events)
            if events:
                emits.append((self._emit, ("call_changed", proxy)))
            if self._ended is not None and any(e in FINAL_STATES for e in events):
                # the real says the call ended (a call merely missing from one snapshot, as
                # during a promotion, is not enough): media held here for it goes too
                emits.append((self._ended, (call_id,)))
        for call_id in [c for c in self.proxies if c not in seen]:
            proxy = self.proxies.pop(call_id)
            if proxy.state not in FINAL_STATES:
                proxy.state = "disposed"
                emits.append((proxy.emit, ("disposed",)))
                emits.append((self._emit, ("call_changed", proxy)))
        self._changed.set()
        self.server, server_news = server_events(self.server, state.get("server"))
        emits.extend((self._emit, args) for args in server_news)  # the real's own events
        for emit, args in emits:
            emit(*args)
        self.attach_media()

    def attach_media(self) -> None:
        """Each proxy of a call whose media this member holds gets it (`held()`):
        ``media_moved`` on the proxy (the MediaSession) and on the owner (the proxy)."""
        for call_id, media in (self._held() if self._held is not None else {}).items():
            proxy = self.proxies.get(call_id)
            if proxy is not None and proxy.media is not media:
                proxy.media = media
                proxy.emit("media_moved", media)
                self._emit("media_moved", proxy)

    def detach_media(self, call_id: str, media: Any) -> None:
        """`media` no longer lives here (closed, or moved away)."""
        proxy = self.proxies.get(call_id)
        if proxy is not None and proxy.media is media:
            proxy.media = None

    def relay(self, call_id: str, event: str, *args: Any) -> None:
        """An event of a call's held media on its proxy (``dtmf`` heard by the holder)."""
        proxy = self.proxies.get(call_id)
        if proxy is not None:
            proxy.emit(event, *args)

    async def proxy_for(self, call_id: str, wait: float = 2.0) -> ProxyCallSession:
        """The proxy of `call_id` once a snapshot brought it (at most `wait` s); a disposed
        one if the call ended before its first snapshot reached us."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while call_id not in self.proxies and loop.time() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
        proxy = self.proxies.get(call_id)
        if proxy is None:
            proxy = self.new_proxy({"id": call_id, "direction": "outbound", "state": "disposed"})
        return proxy

    def new_proxy(self, data: Mapping[str, Any]) -> ProxyCallSession:
        """A proxy of one call of the group, acting through the real."""
        return ProxyCallSession(data, run=self._run, find=self.proxy_for, taker=self._taker)
