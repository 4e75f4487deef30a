"""In-memory transport: several group members in one process and one event loop.

For tests and for embedding (several phones of one extension inside one program). The hub is a
`webphone.shared.hub.Hub` object, created on demand per group. Frames still travel as bytes and
are decoded and schema-checked on both ends, and every delivery is a separate loop callback, so
the members see the same ordering and validation as with the local transport.

Test hooks (what a process transport gets from signals):

* `MemoryLink.freeze()` / `thaw()`: hold every frame in both directions, as a SIGSTOPped member
  would (its heartbeats stop reaching the hub; what the hub sends waits). Give such members a
  large `hub_timeout` so they do not give up on the hub meanwhile.
* `MemoryLink.sever()`: drop the connection on both ends as a crash would (the hub sees EOF at
  once; the member is told `on_lost`).
* `MemoryTransport.kill_hub(group)`: the hub vanishes; every member's link is lost, and the next
  `connect()` starts a fresh, empty hub.
"""

from __future__ import annotations

import asyncio
from collections import deque

from webphone.errors import GroupProtocolError
from webphone.shared.hub import Hub
from webphone.shared.protocol import (
    HUB_FRAMES,
    MAX_FRAME_BYTES,
    Frame,
    MemberInfo,
    Members,
    MembersQuery,
    decode_frame,
)
from webphone.shared.transports.base import (
    FrameHandler,
    GroupLink,
    GroupLinkClosed,
    GroupTransport,
    HubOptions,
    LostHandler,
)

__all__ = ["MemoryLink", "MemoryTransport"]


class _HubEnd:
    """The hub's side of one in-memory connection (`hub.HubPeer`)."""

    def __init__(self, link: MemoryLink) -> None:
        self.link = link

    def send(self, *frames: Frame) -> bool:
        if self.link.closed:
            return False
        for frame in frames:
            self.link._to_member(frame.to_json())
        return True

    def buffered(self) -> int:
        return self.link._held_bytes

    def close(self) -> None:
        self.link._hub_closed()


class MemoryLink(GroupLink):
    """A member's in-memory connection to a hub (see the module docstring for the test hooks)."""

    def __init__(self, hub: Hub, on_frame: FrameHandler, on_lost: LostHandler) -> None:
        self._hub = hub
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._frozen = False
        self._to_hub_held: deque[bytes] = deque()
        self._to_member_held: deque[bytes] = deque()
        self._held_bytes = 0
        self.peer_pid = None
        self._conn = hub.open(_HubEnd(self))

    # -- GroupLink -------------------------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        if self._closed:
            raise GroupLinkClosed("the link to the group hub is closed")
        data = frame.to_json()
        if self._frozen:
            self._to_hub_held.append(data)
        else:
            self._loop.call_soon(self._deliver_to_hub, data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon(self._hub.lost, self._conn)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- test hooks ------------------------------------------------------------------------------

    def freeze(self) -> None:
        """Hold all frames both ways (a hung member)."""
        self._frozen = True

    def thaw(self) -> None:
        """Deliver what was held, in order, and resume."""
        self._frozen = False
        while self._to_hub_held:
            self._loop.call_soon(self._deliver_to_hub, self._to_hub_held.popleft())
        while self._to_member_held:
            data = self._to_member_held.popleft()
            self._held_bytes -= len(data)
            self._loop.call_soon(self._deliver_to_member, data)

    def sever(self) -> None:
        """Drop the connection like a crash: the hub sees EOF, the member `on_lost`."""
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon(self._hub.lost, self._conn)
        self._loop.call_soon(self._on_lost, "connection severed")

    # -- delivery --------------------------------------------------------------------------------

    def _deliver_to_hub(self, data: bytes) -> None:
        # frames sent before close() still arrive (in order, before the loss), like a socket's
        if len(data) <= MAX_FRAME_BYTES:
            self._hub.frame(self._conn, data)

    def _to_member(self, data: bytes) -> None:
        if self._closed:
            return
        if self._frozen:
            self._to_member_held.append(data)
            self._held_bytes += len(data)
        else:
            self._loop.call_soon(self._deliver_to_member, data)

    def _deliver_to_member(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            frame = decode_frame(data)
        except GroupProtocolError as exc:
            self._lose(f"malformed frame from the hub: {exc}")
            return
        if type(frame) not in HUB_FRAMES:
            self._lose(f"the hub sent a {frame.TYPE!r} frame")
            return
        self._on_frame(frame)

    def _hub_closed(self) -> None:
        # the hub closes after flushing what it sent: deliver the rest first, then the loss
        self._loop.call_soon(self._lose, "closed by the hub")

    def _lose(self, reason: str) -> None:
        if self._closed:
            return
        if self._frozen:  # a hung member notices only when it runs again
            self._loop.call_later(0.01, self._lose, reason)
            return
        self._closed = True
        self._hub.lost(self._conn)
        self._on_lost(reason)


class MemoryTransport(GroupTransport):
    """Groups whose members all live in this process (see the module docstring)."""

    name = "memory"

    def __init__(self, options: HubOptions | None = None) -> None:
        super().__init__(options)
        self.hubs: dict[str, Hub] = {}
        self._links: dict[str, list[MemoryLink]] = {}
        self.hubs_started = 0

    def _hub(self, group: str) -> Hub:
        hub = self.hubs.get(group)
        if hub is None or hub.closed:
            hub = Hub(group, self.options, on_idle=lambda: self._idle(group))
            self.hubs[group] = hub
            self._links[group] = []
            self.hubs_started += 1
        return hub

    def _idle(self, group: str) -> None:
        hub = self.hubs.pop(group, None)
        if hub is not None:
            hub.close()
        self._links.pop(group, None)

    async def connect(self, group: str, on_frame: FrameHandler, on_lost: LostHandler) -> GroupLink:
        link = MemoryLink(self._hub(group), on_frame, on_lost)
        self._links[group] = [lk for lk in self._links[group] if not lk.closed] + [link]
        return link

    async def query_members(
        self, group: str, timeout: float = 2.0
    ) -> tuple[MemberInfo, ...] | None:
        hub = self.hubs.get(group)
        if hub is None or hub.closed:
            return None
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[MemberInfo, ...]] = loop.create_future()

        def on_frame(frame: Frame) -> None:
            if isinstance(frame, Members) and not answer.done():
                answer.set_result(frame.members)

        link = MemoryLink(hub, on_frame, lambda reason: None)
        try:
            link.send(MembersQuery())
            return await asyncio.wait_for(answer, timeout)
        finally:
            link.close()

    def kill_hub(self, group: str) -> None:
        """The group's hub dies: every link is lost; the next connect starts a new hub."""
        hub = self.hubs.pop(group, None)
        links = self._links.pop(group, [])
        if hub is None:
            return
        hub.closed = True
        hub.close()
        for link in links:
            if not link.closed:
                link._closed = True
                asyncio.get_running_loop().call_soon(link._on_lost, "hub died")

    async def recover_hung(self, link: GroupLink) -> None:
        link.close()
        for group, links in list(self._links.items()):
            if link in links:
                self.kill_hub(group)

    async def aclose(self) -> None:
        for group in list(self.hubs):
            self.kill_hub(group)
