"""`MediaHost`: on every member, the media of the calls this member holds, driven by the real.

The real keeps each call's SIP dialog; the call's `MediaSession` lives on its media holder
(issue #11, "two planes"). On the real such a call's media is a `remote_media.RemoteMedia`,
whose operations arrive here as delegates of the continuity plane (`actions.DELEGATE_OPS`).
Arguments and values are plain JSON; SDP bodies are bounded by the group protocol (64 KiB):

=================== ============================================== ===========================
op                  args                                           value
=================== ============================================== ===========================
media.take          {"record": continuity record | None}           {}  (new or resumed media)
media.offer         {"renew": bool, "ice_restart": bool,           {"sdp": offer}
                    "direction": str | None}
media.answer        {"offer": sdp}                                 {"sdp": answer}
media.apply_answer  {"answer": sdp}                                {}
media.update        {"direction"?, "muted"?, "dtmf"?: {"digits",   {}, {"after": s}, or
                    "duration", "gap"}, "wait_first_audio"?: s,    {"frames_received": n,
                    "counters"?: true}                             "dtmf_received": n}
media.close         {}                                             {}
=================== ============================================== ===========================

Each call's delegates run one at a time in the order they came (the real's `RemoteMedia`
sends them in its call layer's order). Bad arguments give a `GroupProtocolError` naming the
field, media failures a `MediaError`: always an error result, never a crash of the member.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webphone.shared.remote_media import media_error
from webphone.shared.schema import fail
from webphone.sip.sdp import DIRECTIONS

if TYPE_CHECKING:
    from webphone.media import MediaSession

__all__ = ["LocalMedia", "MediaHost", "MediaMaker", "Reply", "import_media_stack"]

log = logging.getLogger("webphone.shared.media")

#: make the media of call `call_id`: resumed from `record`, or new when it is None
MediaMaker = Callable[[str, "Mapping[str, Any] | None"], "MediaSession"]
#: answer one delegate: `reply(value, None)` or `reply(None, error)`
Reply = Callable[["dict[str, Any] | None", "BaseException | None"], object]
#: told when a call's media starts (`taken`) or stops (`dropped`) living here
Notify = Callable[[str, "MediaSession"], None]

#: what making a call's media imports: aiortc, PyAV, cryptography (0.5-1 s of CPU)
MEDIA_STACK = "webphone.media.session"

_DTMF = re.compile(r"[0-9A-Da-d*#,]{1,64}")
_UPDATES = ("direction", "muted", "dtmf", "wait_first_audio", "counters")
#: the longest first-audio wait the real may ask for (its renew fallback waits ~1 s)
MAX_FIRST_AUDIO_WAIT = 60.0


class MediaHost:
    """The `MediaSession`s of the calls this member holds, by call id (module docstring).

    `make` creates a call's media (the member's media options: loopback, STUN servers,
    `media_factory`); `taken` / `dropped` tell the owner when one starts or stops living here.
    """

    def __init__(self, make: MediaMaker, *, taken: Notify | None = None,
                 dropped: Notify | None = None) -> None:
        self._make = make
        self._taken = taken
        self._dropped = dropped
        self.sessions: dict[str, MediaSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stack_loaded = False

    def serve(self, op: str, call_id: str, args: Mapping[str, Any], reply: Reply) -> None:
        """Run one delegate in the background (after the call's earlier ones) and `reply`. A
        bare first-audio wait or counters report runs beside them: the offer/answer that ends
        the wait must not queue behind it, nor a report behind an offer."""
        waiting = op == "media.update" and set(args) in ({"wait_first_audio"}, {"counters"})
        lock = asyncio.Lock() if waiting else self._locks.setdefault(call_id, asyncio.Lock())
        task = asyncio.get_running_loop().create_task(self._serve(lock, op, call_id, args, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, lock: asyncio.Lock, op: str, call_id: str, args: Mapping[str, Any],
                     reply: Reply) -> None:
        async with lock:
            try:
                value = await self.handle(op, call_id, args)
            except Exception as exc:  # every failure is the delegate's outcome
                log.info("%s for call %s failed: %s: %s", op, call_id, type(exc).__name__, exc)
                reply(None, exc)
            else:
                reply(value, None)
        if call_id not in self.sessions and not lock.locked():
            self._locks.pop(call_id, None)

    async def handle(self, op: str, call_id: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Do delegate `op` for `call_id`; its value (see the module docstring's table)."""
        if op == "media.take":
            await self._load_stack()
            return self._take(call_id, args)
        if op == "media.close":
            await self.close(call_id)
            return {}
        media = self.sessions.get(call_id)
        if media is None:
            raise media_error(f"{op}: this member holds no media for call {call_id!r} "
                               "(media.take first)")
        if op == "media.offer":
            _only(args, op, ("renew", "ice_restart", "direction"))
            direction = args.get("direction")
            if direction is not None:
                media.set_direction(_direction(direction, f"{op}.args.direction"))
            sdp = await media.create_offer(ice_restart=_flag(args, op, "ice_restart"),
                                           renew=_flag(args, op, "renew"))
            return {"sdp": sdp}
        if op == "media.answer":
            _only(args, op, ("offer",))
            return {"sdp": await media.create_answer(_sdp(args, op, "offer"))}
        if op == "media.apply_answer":
            _only(args, op, ("answer",))
            await media.apply_answer(_sdp(args, op, "answer"))
            return {}
        if op == "media.update":
            return await self._update(media, args)
        fail(f"{op}", "not a media operation this member runs")

    async def _load_stack(self) -> None:
        """Import the media stack in a worker thread before the first take: imported on the
        event loop (a dummy does not preload it) it stalled the member's heartbeats for
        0.5-1 s, and under load for longer than the heartbeat timeout, so the hub judged the
        holder hung and the call it was answering failed."""
        if not self._stack_loaded:
            await asyncio.to_thread(import_media_stack)
            self._stack_loaded = True

    def _take(self, call_id: str, args: Mapping[str, Any]) -> dict[str, Any]:
        _only(args, "media.take", ("record",))
        record = args.get("record")
        if record is not None and not isinstance(record, dict):
            fail("media.take.args.record", f"expected a continuity record (an object) or null, "
                 f"got {type(record).__name__}")
        if call_id in self.sessions:
            raise media_error(f"media.take: this member already holds the media of call "
                               f"{call_id!r}")
        media = self._make(call_id, record)  # MediaError naming a bad record field
        self.sessions[call_id] = media
        if self._taken is not None:
            self._taken(call_id, media)
        return {}

    async def _update(self, media: MediaSession, args: Mapping[str, Any]) -> dict[str, Any]:
        op = "media.update"
        _only(args, op, _UPDATES)
        if "direction" in args:
            media.set_direction(_direction(args["direction"], f"{op}.args.direction"))
        if "muted" in args:
            if _flag(args, op, "muted"):
                media.mute()
            else:
                media.unmute()
        if "dtmf" in args:
            digits, duration, gap = _dtmf(args["dtmf"])
            await media.send_dtmf(digits, duration=duration, gap=gap)
        if _flag(args, op, "counters"):  # the real's RTP inactivity check reads them
            stats = media.stats
            return {"frames_received": stats.frames_received,
                    "dtmf_received": stats.dtmf_received}
        if "wait_first_audio" in args:
            wait = _seconds(args["wait_first_audio"], f"{op}.args.wait_first_audio",
                            MAX_FIRST_AUDIO_WAIT)
            loop = asyncio.get_running_loop()
            started = loop.time()
            heard_at = await media.wait_first_audio(wait)
            return {"after": max(heard_at - started, 0.0)}
        return {}

    async def close(self, call_id: str) -> None:
        """Stop the media of `call_id` here (nothing if we hold none)."""
        media = self.sessions.pop(call_id, None)
        if media is None:
            return
        try:
            await media.close()
        finally:
            if self._dropped is not None:
                self._dropped(call_id, media)

    def hand_over(self, call_id: str) -> MediaSession | None:
        """This member became the real and adopts the call: its media (if held here and open)
        leaves the host for the call's own session; delegates no longer reach it."""
        media = self.sessions.pop(call_id, None)
        self._locks.pop(call_id, None)
        if media is None or media.closed:
            return None
        return media

    async def close_all(self) -> None:
        """Stop every call's media here (the member leaves)."""
        for task in list(self._tasks):
            task.cancel()
        # all at once: each peer connection's close takes its own round of DTLS/ICE teardown
        await asyncio.gather(*(self.close(call_id) for call_id in list(self.sessions)),
                             return_exceptions=True)


@dataclass(frozen=True, kw_only=True)
class LocalMedia:
    """How this member makes a call's `MediaSession`: the options `WebPhone._new_media` uses
    (`loopback_media`, the account's STUN servers, `media_factory`).

    `factory(session)` (the application's `media_factory`) makes new media when given; media
    resumed from a continuity record always comes from `MediaSession.resume` with the loopback
    and STUN options (a factory cannot resume)."""

    loopback_only: bool = False
    stun_servers: tuple[str, ...] = ()
    factory: Callable[[Any], MediaSession] | None = None

    def new(self, session: Any) -> MediaSession:
        """New media for `session` (a CallSession on the real, the ProxyCallSession or None on
        another holder)."""
        if self.factory is not None:
            return self.factory(session)
        from webphone.media import MediaSession  # aiortc is heavy: only where media lives

        return MediaSession(loopback_only=self.loopback_only, stun_servers=self.stun_servers)

    def make(self, record: Mapping[str, Any] | None, session: Any = None) -> MediaSession:
        """`resume(record)`, or `new(session)` when there is no record."""
        return self.new(session) if record is None else self.resume(record)

    def resume(self, record: Mapping[str, Any]) -> MediaSession:
        """Media continuing `record` (`MediaSession.resume`; MediaError naming a bad field)."""
        from webphone.media import MediaSession

        return MediaSession.resume(record, loopback_only=self.loopback_only,
                                   stun_servers=self.stun_servers)


def import_media_stack() -> None:
    """Import what making media needs (`MEDIA_STACK`); in a worker thread, never on the event
    loop. A failure (aiortc missing, ...) is only logged: making the media reports it."""
    try:
        importlib.import_module(MEDIA_STACK)
    except Exception as exc:
        log.debug("importing %s failed: %s", MEDIA_STACK, exc)


# -- argument checks (GroupProtocolError naming the field) --------------------------------------


def _only(args: Mapping[str, Any], op: str, names: tuple[str, ...]) -> None:
    for name in args:
        if name not in names:
            fail(f"{op}.args", f"unknown argument {str(name)[:40]!r} (takes {', '.join(names)})")


def _flag(args: Mapping[str, Any], op: str, name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        fail(f"{op}.args.{name}", f"expected true or false, got {str(value)[:40]!r}")
    return value


def _direction(value: object, where: str) -> str:
    if value not in DIRECTIONS:
        fail(where, f"expected one of {', '.join(DIRECTIONS)}, got {str(value)[:40]!r}")
    return str(value)


def _sdp(args: Mapping[str, Any], op: str, name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value.startswith("v=0"):
        fail(f"{op}.args.{name}", f"expected SDP text (v=0 ...), got {str(value)[:40]!r}")
    return value


def _seconds(value: object, where: str, most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= most:
        fail(where, f"expected seconds between 0 and {most:g}, got {str(value)[:40]!r}")
    return float(value)


def _dtmf(value: object) -> tuple[str, float, float]:
    where = "media.update.args.dtmf"
    if not isinstance(value, dict):
        fail(where, f"expected an object with digits, duration, gap; got {type(value).__name__}")
    _only(value, "media.update.dtmf", ("digits", "duration", "gap"))
    digits = value.get("digits")
    if not isinstance(digits, str) or not _DTMF.fullmatch(digits):
        fail(f"{where}.digits", "expected 1..64 DTMF characters out of 0-9 A-D * # ,")
    duration = _seconds(value.get("duration", 0.1), f"{where}.duration", 10.0)
    gap = _seconds(value.get("gap", 0.07), f"{where}.gap", 10.0)
    if duration < 0.01:
        fail(f"{where}.duration", "expected at least 0.01 s")
    return digits, duration, gap
