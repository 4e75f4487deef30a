"""A diagnostic for group members: play a tone into every call whose media this process holds
and report, by frequency, what it hears (`member_cli --tone`, `webphone phone --tone`). Tests,
benchmarks and `webphone demo` tell from the tone who holds a call's audio, at both ends, across
media moves and adoptions.

Reports go to `out(event, **fields)`: ``holding`` {call_id, tone} when this process starts to
hold a call's media, ``heard`` {call_id, hz, at} when the dominant tone (of `hear`, per 100 ms
window) of what it receives changes (hz None: none of them).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["TonePlayer", "local_media"]

#: events of a SharedWebPhone after which a call's media may be (newly) held here
_EVENTS = ("inbound_call", "outbound_call", "call_changed", "media_moved", "adopted")


def local_media(session: Any) -> Any:
    """The session's `MediaSession` when this process holds the call's media, else None (a
    dummy's proxy, or the real's stand-in for media held by another member)."""
    media = getattr(session, "media", None)
    module = sys.modules.get("webphone.media")
    if module is None or not isinstance(media, module.MediaSession) or media.closed:
        return None
    return media


class TonePlayer:
    """Plays `tone` into each call whose media is held here; reports what comes back."""

    WINDOW_S = 0.1

    def __init__(self, tone: float | None, hear: tuple[float, ...],
                 out: Callable[..., None]) -> None:
        self.tone = tone
        self.hear = hear
        self.out = out
        self.held: dict[str, Any] = {}
        self.hearing: dict[str, float | None] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    def attach(self, phone: Any) -> None:
        """Check every call `phone` (a SharedWebPhone) tells about."""
        for event in _EVENTS:
            phone.on(event, lambda session, *_: self.check(session))

    def check(self, session: Any) -> None:
        """Start playing and listening when `session`'s media is (newly) held here."""
        media = local_media(session)
        if media is None or self.tone is None or self.held.get(session.call_id) is media:
            return
        self.held[session.call_id] = media
        self.out("holding", call_id=session.call_id, tone=self.tone)
        self.play(media, self.tone)
        self._listen(session.call_id, media)

    def play(self, media: Any, hz: float) -> None:
        """Play `hz` into `media` for as long as the call lasts."""
        task = asyncio.ensure_future(media.play_tone(hz, 24 * 3600))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def holds(self) -> dict[str, float | None]:
        """{call_id: the tone heard now} of the calls whose media is held here."""
        return {call_id: self.hearing.get(call_id) for call_id, media in self.held.items()
                if not media.closed}

    def _listen(self, call_id: str, media: Any) -> None:
        from webphone.media import detect_tone

        pcm = bytearray()
        self.hearing[call_id] = None

        def on_audio(frame: Any) -> None:
            pcm.extend(frame.pcm)
            if len(pcm) < int(frame.sample_rate * self.WINDOW_S) * 2:
                return
            hz = detect_tone(bytes(pcm), frame.sample_rate, self.hear)
            pcm.clear()
            if hz != self.hearing.get(call_id) and media is self.held.get(call_id):
                self.hearing[call_id] = hz
                self.out("heard", call_id=call_id, hz=hz, at=frame.received_at)

        media.on("audio", on_audio)
