"""The transport boundary of a group: how a member reaches its group's coordinator.

A member (`webphone.shared.member.GroupMember`) speaks the frames of `webphone.shared.protocol`
and nothing else. It does not know where the coordinator runs; a transport does. Two kinds fit
behind this one interface:

* **Hub transports** (`local`: a Unix socket to a hub process; `memory`: a hub object in this
  process). The coordinator of `webphone.shared.coordinator` runs inside a hub; the transport
  carries frames between the member and that hub, and starts a hub when there is none.
* **Hubless transports** (`redis`, issue 7). There is no central process: `connect()` returns a
  link object that *is* the member's local stand-in for a hub. It turns the member's frames into
  Redis operations and Redis events back into hub frames, following the lease mapping written in
  the coordinator's module docstring:

  ==================  ==============================================================
  member sends        what a Redis link does
  ==================  ==============================================================
  ``hello``           add itself to the membership (hash + heartbeat key with TTL); answer
                      ``welcome`` with the stored epoch, real and snapshot; if the lease is
                      free, acquire it (SET NX PX + INCR epoch in one script) and deliver
                      ``role(real, epoch)``. A hello with ``real=true`` re-claims only if the
                      lease record still names this member at that epoch.
  ``heartbeat``       renew membership (and, for the real, the lease: holder-checked script);
                      deliver a ``heartbeat`` echo when Redis answered. No answer before the
                      renew deadline: deliver ``role(dummy, epoch+1)`` (step down) at once.
  ``snapshot``        epoch-checked write of the latest snapshot + publish
  ``action``          XADD to the group's action stream with a deadline; ``action_accepted``
                      when the real of epoch E claimed it (claim records E)
  ``action_result``   epoch-checked; routed to the caller's inbox
  ``registered``      mark the epoch ready (make-before-break: releases a handing-over real)
  ``leave``           dummy: remove membership; real: write "handing_over" into the lease
                      record, wait for the successor's ``registered``, deliver ``released``
  ``members_query``   read the membership hash, deliver ``members``
  ==================  ==============================================================

  A link that loses Redis reports `on_lost`; the member reconnects with backoff exactly as it
  does after a hub crash, and re-claims with (epoch, real) in its new hello.

The contract, whatever the transport:

1. `GroupTransport.connect(group, on_frame, on_lost)` returns a connected `GroupLink`. It
   raises `OSError` (retryable: no coordinator yet, starting one) or `GroupTransportError`
   (not retryable: insecure runtime directory, wrong peer user, bad URL...).
2. `on_frame(frame)` is called for every frame from the coordinator, in order, from the event
   loop, synchronously (no frame is processed concurrently with another). Frames were already
   decoded and schema-checked (`protocol.decode_frame`); a malformed frame from the coordinator
   closes the link.
3. `on_lost(reason)` is called exactly once when the link ends for any reason other than
   `GroupLink.close()` (EOF, reset, malformed frame, coordinator gone). After it, `send` raises
   `GroupLinkClosed`.
4. `GroupLink.send(frame)` never blocks: it queues the frame (the member is an asyncio program
   and must never stall on a slow coordinator). Frames sent on one link arrive in order.
5. A crash of the member must be visible to the coordinator *at once* (a Unix socket's EOF; a
   Redis link can only offer the heartbeat TTL, which is why the Redis failover target is "lease
   expiry + one REGISTER").
6. `GroupTransport.query_members(group)` answers `members()` *without joining* (for
   ``webphone status``): None when no coordinator runs for that group.
7. `GroupTransport.recover_hung(link)` is called when the coordinator stayed silent for the hub
   timeout (it echoes every heartbeat, so silence means hung, F13). A hub transport replaces the
   hub (the local transport kills a hung hub process so a new one can take the lock); a Redis
   link treats it as a lost connection.
8. Hub options (`HubOptions`) are the group's timing, given to the coordinator when a transport
   starts one; a member joining an existing hub gets the hub's heartbeat interval in `welcome`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from webphone.errors import WebPhoneError
from webphone.shared.protocol import Frame, MemberInfo

__all__ = [
    "FrameHandler",
    "GroupLink",
    "GroupLinkClosed",
    "GroupTransport",
    "GroupTransportError",
    "HubOptions",
    "LostHandler",
]

FrameHandler = Callable[[Frame], None]
LostHandler = Callable[[str], None]


class GroupTransportError(WebPhoneError):
    """The group cannot be reached in a way that retrying will not fix (for example an insecure
    runtime directory, a hub socket owned by another user, or an unknown hub URL)."""


class GroupLinkClosed(WebPhoneError, ConnectionError):
    """A frame was sent on a link that is closed."""


@dataclass(frozen=True)
class HubOptions:
    """The group's timing, used when this member starts the coordinator (seconds).

    Defaults and why:

    * `heartbeat_interval` 0.5 s and `heartbeat_timeout` 3.0 s: six missed beats before a silent
      real is deposed. RingCentral's Tabbie found 2 s too short and uses 3 s with 1 s beats in
      throttled browser tabs; a Python process is not throttled, but GC pauses, blocking calls
      in async code and loaded 2-core CI machines stall a loop for a second or two, so 3 s keeps
      false failovers (F3) away while a hang is still replaced far faster than k8s (15 s) or
      broadcast-channel (about 4.2 s). Crashes do not wait for it: EOF is seen at once.
    * `handover_timeout` 10 s: a successor's connect + REGISTER with one digest round and the
      client's 5 s request timeout fit inside it.
    * `rejoin_grace` (None: `heartbeat_timeout`): how long a restarted hub waits for the old real
      to re-claim before promoting a dummy; members reconnect within milliseconds.
    * `idle_timeout` 10 s: a hub with no members for that long exits (and unlinks its socket).
    """

    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 3.0
    handover_timeout: float = 10.0
    hello_timeout: float = 5.0
    rejoin_grace: float | None = None
    idle_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.heartbeat_timeout:
            raise ValueError("need 0 < heartbeat_interval < heartbeat_timeout")
        if self.handover_timeout <= 0 or self.hello_timeout <= 0 or self.idle_timeout < 0:
            raise ValueError("timeouts must be positive")


class GroupLink(abc.ABC):
    """One member's connection to its group's coordinator (see the module docstring)."""

    #: pid of the process on the other end when the transport knows it (a local hub), else None
    peer_pid: int | None = None

    @abc.abstractmethod
    def send(self, frame: Frame) -> None:
        """Queue `frame` for the coordinator; `GroupLinkClosed` if the link is closed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the link; `on_lost` is not called for a close asked for here."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once the link ended (closed here or lost)."""


class GroupTransport(abc.ABC):
    """How members of a group reach its coordinator (see the module docstring)."""

    #: a short name for logs and `members()` ("local", "memory", "redis")
    name: str = ""

    def __init__(self, options: HubOptions | None = None) -> None:
        self.options = options or HubOptions()

    @abc.abstractmethod
    async def connect(self, group: str, on_frame: FrameHandler, on_lost: LostHandler) -> GroupLink:
        """Connect to the coordinator of `group`, starting one if none runs."""

    @abc.abstractmethod
    async def query_members(
        self, group: str, timeout: float = 2.0
    ) -> tuple[MemberInfo, ...] | None:
        """The members of `group` without joining it; None if no coordinator runs."""

    async def recover_hung(self, link: GroupLink) -> None:
        """The coordinator behind `link` stopped answering heartbeats: make way for a new one.

        The default only closes the link; the caller then reconnects as after a loss."""
        link.close()

    async def aclose(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release what the transport holds (nothing by default)."""
