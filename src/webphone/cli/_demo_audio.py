"""What `webphone demo` hears at the tone party: when audio frames arrived from the group, so
that it can print the gap a fault left (split from `demo.py`, which tells the story)."""

from __future__ import annotations

import importlib.util
import itertools
from typing import Any

from ._demo_procs import poll

__all__ = ["AudioWatch", "continuity_available"]

#: no frame for this long, then one: the audio "came back"
RESUMED_AFTER = 0.1


def continuity_available() -> bool:
    """Can calls outlive the real here (media placement and adoption are installed)?"""
    return all(importlib.util.find_spec(f"webphone.shared.{name}") is not None
               for name in ("media_host", "adoption"))


class AudioWatch:
    """Arrival times (event-loop clock = time.monotonic()) of the audio frames a party's
    `MediaSession` receives. The group's media holder sends a frame every 20 ms while it lives
    (silence included), so a stretch without frames is a stretch the call had no audio."""

    def __init__(self, media: Any) -> None:
        self.times: list[float] = []
        media.on("audio", lambda frame: self.times.append(frame.received_at))

    async def gap(self, since: float, until: float) -> float:
        """The longest stretch without a frame in [since, until], in ms (waits for `until`)."""
        await poll(lambda: self.times and self.times[-1] >= until, until - since + 1.0)
        inside = [t for t in self.times if since <= t <= until]
        edges = [since, *inside, until]
        return max((b - a for a, b in itertools.pairwise(edges)), default=0.0) * 1000

    async def resumed(self, after: float, timeout: float) -> float | None:
        """When frames came again after a silence of `RESUMED_AFTER` s that began after
        `after` (None: not within `timeout`)."""

        def back() -> float | None:
            later = [t for t in self.times if t > after]
            for a, b in itertools.pairwise(later):
                if b - a >= RESUMED_AFTER:
                    return b
            return None

        value: float | None = await poll(back, timeout)
        return value
