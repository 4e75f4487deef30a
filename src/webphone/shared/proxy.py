"""What a dummy shows of the group's calls, and what the real publishes about them.

`call_state(session)` turns a real `CallSession` into the derived fields a snapshot carries (never
SIP messages, SDP or secrets). `ProxyCallSession` is the dummy's side: the same attributes, built
from snapshots, and the same methods, each forwarded to the real as an action of the allow-list.
A proxy knows nothing of `SharedWebPhone`: it is given two callables (`RunAction`, `FindProxy`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from webphone._events import EventEmitter
from webphone.errors import WebPhoneError
from webphone.shared.schema import MAX_STATE_STRING

__all__ = ["FINAL_STATES", "FindProxy", "ProxyCallSession", "ProxyWarmTransfer", "RunAction",
           "Taker", "call_id_of", "call_state", "jsonable", "server_events", "server_state"]

#: what a proxy needs from its group to act: run action `name` on the real for `call_id` with
#: `args`, returning the real's result or raising its error (`SharedWebPhone._request`)
RunAction = Callable[[str, "str | None", "dict[str, Any]"], Awaitable[Any]]
#: and the proxy of another call of the group once the real reported it (a warm transfer's
#: consult call; `SharedWebPhone._proxy_for`)
FindProxy = Callable[[str], Awaitable["ProxyCallSession"]]
#: the member id to name as the media holder of a call this member answers (None: the real's
#: policy decides alone)
Taker = Callable[[], "str | None"]

FINAL_STATES = ("failed", "disposed")
_STATES = ("init", "ringing", "answered", "failed", "disposed")


class ProxyWarmTransfer:
    """A warm transfer started from a dummy: `session` is the consult call."""

    def __init__(self, original: ProxyCallSession, session: ProxyCallSession) -> None:
        self.original = original
        self.session = session

    async def complete(self) -> None:
        """Connect the original party with the consulted one (runs on the real)."""
        await self.original._act("complete_warm_transfer")

    async def cancel(self) -> None:
        """Hang up the consult call and resume the original one (runs on the real)."""
        await self.original._act("cancel_warm_transfer")


class ProxyCallSession(EventEmitter):
    """A call of the group as a dummy sees it: the real's state, the real's methods.

    Attributes mirror `CallSession` (call_id, direction, state, remote_number, local_number,
    remote_name, local_name, held, muted, remote_held, started_at, answered_at, ended_at,
    session_id, party_id). Every method forwards to the real phone as an action and returns its
    result or raises its error (`NoRealPhoneError`, `ActionInterruptedError` as in the module
    doc). Events: ``ringing``, ``answered``, ``failed``, ``disposed``, ``held``, ``unheld``.

    `media`: the call's `MediaSession` when THIS member holds the call's media (it answered
    or placed the call, or the media moved here; None otherwise), with its full API (play,
    record, `received_audio()`, DTMF). Events ``media_moved(media)`` when it comes here and
    ``dtmf(digit)`` for DTMF it hears.
    """

    def __init__(self, data: Mapping[str, Any], *, run: RunAction, find: FindProxy,
                 taker: Taker | None = None) -> None:
        super().__init__()
        self._run = run
        self._find = find
        self._taker = taker
        self.media: Any = None  # a MediaSession while this member holds the call's media
        self.call_id: str = str(data["id"])
        self.direction: str = str(data.get("direction", "inbound"))
        self.state: str = "init"
        self.remote_number: str | None = None
        self.local_number: str | None = None
        self.remote_name: str | None = None
        self.local_name: str | None = None
        self.held = False
        self.muted = False
        self.remote_held = False
        self.recording = False
        self.started_at: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.session_id: str | None = None
        self.party_id: str | None = None
        self._update(data)

    def _update(self, data: Mapping[str, Any]) -> list[str]:
        """Apply one call's snapshot fields; returns the events this change means."""
        events: list[str] = []
        state = str(data.get("state", self.state))
        if state != self.state and self.state not in FINAL_STATES:
            self.state = state
            events.append(state)
        for name in ("remote_number", "local_number", "remote_name", "local_name",
                     "session_id", "party_id"):
            value = data.get(name)
            setattr(self, name, value if isinstance(value, str) else None)
        held = bool(data.get("held", False))
        if held != self.held:
            events.append("held" if held else "unheld")
        self.held = held
        self.muted = bool(data.get("muted", False))
        self.remote_held = bool(data.get("remote_held", False))
        self.recording = bool(data.get("recording", False))
        for name in ("started_at", "answered_at", "ended_at"):
            value = data.get(name)
            setattr(self, name, value if isinstance(value, int | float) else None)
        return events

    def __repr__(self) -> str:
        return (f"<ProxyCallSession {self.call_id} {self.direction} {self.state} "
                f"remote={self.remote_number}>")

    async def _act(self, name: str, **args: Any) -> Any:
        return await self._run(name, self.call_id, args)

    # the session actions of webphone.shared.actions, by name
    async def answer(self) -> None:
        """Answer (inbound); with the "taker" placement this member holds the call's media
        (`media`) once it returns."""
        holder = self._taker() if self._taker is not None else None
        await self._act("answer", **({"holder": holder} if holder else {}))

    async def decline(self) -> None:
        """Decline (inbound)."""
        await self._act("decline")

    async def to_voicemail(self) -> None:
        """Send to voicemail (inbound, RingCentral)."""
        await self._act("to_voicemail")

    async def forward(self, target: str) -> None:
        """Forward to `target` (inbound, RingCentral)."""
        await self._act("forward", target=target)

    async def start_reply(self) -> None:
        """Start a reply (inbound, RingCentral)."""
        await self._act("start_reply")

    async def reply(self, message: str | Mapping[str, Any]) -> Any:
        """Reply with a text or reply options (inbound, RingCentral)."""
        return await self._act("reply", message=dict(message) if isinstance(message, Mapping)
                               else message)

    async def hangup(self) -> None:
        """End the call."""
        await self._act("hangup")

    async def cancel(self) -> None:
        """Cancel (outbound, before answer)."""
        await self._act("cancel")

    async def hold(self) -> None:
        """Put on hold."""
        await self._act("hold")

    async def unhold(self) -> None:
        """Resume from hold."""
        await self._act("unhold")

    async def mute(self) -> None:
        """Mute the real's microphone for this call."""
        await self._act("mute")

    async def unmute(self) -> None:
        """Unmute."""
        await self._act("unmute")

    async def send_dtmf(self, digits: str, duration: float | None = None) -> None:
        """Send DTMF digits."""
        args: dict[str, Any] = {"digits": digits}
        if duration is not None:
            args["duration"] = duration
        await self._act("send_dtmf", **args)

    async def transfer(self, target: str) -> None:
        """Blind transfer to `target`."""
        await self._act("transfer", target=target)

    async def warm_transfer(self, target: str) -> ProxyWarmTransfer:
        """Hold this call and call `target`; `complete()` or `cancel()` the result."""
        value = await self._act("warm_transfer", target=target)
        consult = await self._find(call_id_of(value))
        return ProxyWarmTransfer(self, consult)

    async def complete_warm_transfer(self) -> None:
        """Complete the warm transfer started from this call."""
        await self._act("complete_warm_transfer")

    async def start_recording(self) -> Any:
        """Start recording (RingCentral); the real's result."""
        return await self._act("start_recording")

    async def stop_recording(self) -> Any:
        """Stop recording (RingCentral)."""
        return await self._act("stop_recording")

    async def flip(self, target: str | int) -> Any:
        """Flip the call (RingCentral)."""
        return await self._act("flip", target=target)

    async def park(self) -> Any:
        """Park the call (RingCentral)."""
        return await self._act("park")

    async def re_invite(self) -> None:
        """Renegotiate media (re-INVITE) on the real."""
        await self._act("re_invite")


def call_id_of(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("call_id"), str):
        return str(value["call_id"])
    raise WebPhoneError(f"the real phone answered {value!r} instead of a call id")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text[:MAX_STATE_STRING]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def call_state(session: Any) -> dict[str, Any]:
    """What a snapshot says about one call: derived fields only (never SIP, SDP or secrets)."""
    state = getattr(session, "state", "init")
    return {
        "id": _text(session.call_id),
        "direction": getattr(session, "direction", "inbound"),
        "state": state if state in _STATES else "init",
        "remote_number": _text(getattr(session, "remote_number", None)),
        "local_number": _text(getattr(session, "local_number", None)),
        "remote_name": _text(getattr(session, "remote_name", None)),
        "local_name": _text(getattr(session, "local_name", None)),
        "held": bool(getattr(session, "held", False)),
        "muted": bool(getattr(session, "muted", False)),
        "remote_held": bool(getattr(session, "remote_held", False)),
        "recording": bool(getattr(session, "recording", False)),
        "created_at": _number(getattr(session, "started_at", None)),
        "started_at": _number(getattr(session, "started_at", None)),
        "answered_at": _number(getattr(session, "answered_at", None)),
        "ended_at": _number(getattr(session, "ended_at", None)),
        "session_id": _text(getattr(session, "session_id", None)),
        "party_id": _text(getattr(session, "party_id", None)),
    }


def server_state(connected: bool, reason: str | None = None) -> dict[str, Any]:
    """What a snapshot says about the real's connection to the SIP server (its "server" key)."""
    return {"connected": connected, "reason": None if connected else _text(reason)}


def server_events(seen: Mapping[str, Any], published: object) -> tuple[dict[str, Any],
                                                                       list[tuple[Any, ...]]]:
    """A dummy's side: the new server state to remember, and the events (``disconnected``
    with a reason, ``reconnected``) its change from `seen` means. A snapshot without a valid
    "server" key changes nothing."""
    if not isinstance(published, Mapping) or not isinstance(published.get("connected"), bool):
        return dict(seen), []
    connected = bool(published["connected"])
    state = server_state(connected, published.get("reason") if not connected else None)
    if connected == bool(seen.get("connected", True)):
        return state, []
    if connected:
        return state, [("reconnected",)]
    return state, [("disconnected", state["reason"] or "the real phone lost the SIP server")]


def jsonable(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if depth > 8:
        return str(value)[:1000]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    return str(value)[:1000]
