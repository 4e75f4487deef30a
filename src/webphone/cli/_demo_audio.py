"""What `webphone demo` hears at the tone party: which member's tone, and when (each member
plays its own, `webphone phone --tone`), so that it can print the gap a fault left and who holds
the call's audio afterwards (split from `demo.py`, which tells the story)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from ._demo_procs import poll

__all__ = ["AudioWatch", "member_tone"]

#: no member tone for this long, then one: the audio "came back"
RESUMED_AFTER = 0.1
TONES = (1000.0, 1200.0, 1400.0, 1600.0, 1800.0)


def member_tone(index: int) -> float:
    """The tone the index-th member of the demo plays into the calls whose audio it holds."""
    return TONES[index % len(TONES)]


class AudioWatch:
    """The frames of a party's received audio that carry a member's tone (by frequency), with
    their arrival time (event-loop clock = time.monotonic()) and tone."""

    def __init__(self, media: Any) -> None:
        from webphone.media import detect_tone

        self.heard: list[tuple[float, float]] = []

        def on_audio(frame: Any) -> None:
            hz = detect_tone(frame.pcm, frame.sample_rate, TONES)
            if hz is not None:
                self.heard.append((frame.received_at, hz))

        media.on("audio", on_audio)

    async def flowing(self, seconds: float, timeout: float) -> bool:
        """Wait until a member's tone has been heard for `seconds` (False: not in time)."""
        heard = self.heard
        return bool(await poll(lambda: heard and heard[-1][0] - heard[0][0] >= seconds,
                               timeout + seconds))

    async def gap(self, since: float, until: float) -> float:
        """The longest stretch without a member's tone in [since, until], in ms (waits for
        `until`)."""
        await poll(lambda: self.heard and self.heard[-1][0] >= until, until - since + 1.0)
        inside = [t for t, _ in self.heard if since <= t <= until]
        edges = [since, *inside, until]
        return max((b - a for a, b in itertools.pairwise(edges)), default=0.0) * 1000

    async def resumed(self, after: float, timeout: float) -> tuple[float, float] | None:
        """(when, tone): a member's tone heard again after a silence of `RESUMED_AFTER` s that
        began after `after` (None: not within `timeout`)."""

        def back() -> float | None:
            later = [t for t, _ in self.heard if t > after]
            for a, b in itertools.pairwise([after, *later]):
                if b - a >= RESUMED_AFTER:
                    return b
            return None

        began: float | None = await poll(back, timeout)
        if began is None:
            return None
        # the tone of the next 200 ms: the party's jitter buffer may first play out a few
        # frames the dead holder sent before it died
        await poll(lambda: self.heard[-1][0] >= began + 0.2, 1.0)
        tones = Counter(hz for t, hz in self.heard if began <= t <= began + 0.2)
        return began, tones.most_common(1)[0][0]
