"""Garbage-collector settings for a process that carries calls: `tune_for_realtime()`.

A call's audio runs on 20 ms timers in the event loop, so any pause of the loop longer than a
frame or two shows up as a gap in what the far end hears. CPython's cyclic garbage collector
pauses the loop in proportion to the objects it examines; a full (generation-2) collection
examines every tracked object of the process: ~48 000 once aiortc and webphone are imported,
plus ~900 per call. Measured with 40 PCMU calls in one process: 85 000 objects, 52 ms of CPU
for one full collection, i.e. a gap of more than two frames in every call at once. And full
collections come often there: aiortc keeps each sent RTP packet for 2.5 s (its retransmission
history), long enough to be promoted to the oldest generation, which then grows by thousands
of objects a second and triggers CPython's "25 % new long-lived objects" rule.

`tune_for_realtime()` is an explicit choice of the host program (a library must not change a
process's collector behind its back; the CLI and the benchmarks call it):

1. one full collection now (a pause now, at a moment the caller chose, e.g. after start-up or
   after a batch of calls connected; it also keeps today's garbage out of step 2);
2. `gc.freeze()`: every object alive now moves to the permanent generation, which collections
   never examine again (refcounting still frees such objects when they die);
3. full collections only every `full_every` (100, CPython's default is 10) collections of
   generation 1, so the oldest generation's pauses come 10x less often.

The cost: reference cycles among frozen objects that die later (a closed call leaves ~700
objects in cycles) are not reclaimed while frozen. Calling `tune_for_realtime()` again first
unfreezes and collects them, then freezes what is alive; `restore()` undoes everything.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

__all__ = ["GcTuning", "restore", "tune_for_realtime"]

#: generation-1 collections between two full ones (CPython's default: 10)
FULL_EVERY = 100


@dataclass(frozen=True, kw_only=True)
class GcTuning:
    """What `tune_for_realtime()` did: the thresholds it replaced (for `restore`), how many
    objects it froze, and the CPU time (ms) of the full collection it ran."""

    previous_thresholds: tuple[int, int, int]
    frozen: int
    collect_ms: float


_original: tuple[int, int, int] | None = None  # the host's own thresholds, before any tuning


def tune_for_realtime(full_every: int = FULL_EVERY) -> GcTuning:
    """Collect once, freeze every object alive, and make full collections `full_every` times
    rarer than generation-1 ones (see the module docstring for why and at what cost).
    Call it at a moment when one pause is harmless; calling it again re-freezes."""
    global _original
    if full_every < 1:
        raise ValueError(f"full_every must be >= 1 (generation-1 collections), got {full_every}")
    previous = gc.get_threshold()
    if _original is None:
        _original = previous
    gc.unfreeze()  # what died since the last call is collected below, not kept frozen
    started = time.thread_time()
    gc.collect()
    collect_ms = 1000 * (time.thread_time() - started)
    gc.freeze()
    gc.set_threshold(previous[0], previous[1], full_every)
    return GcTuning(previous_thresholds=previous, frozen=gc.get_freeze_count(),
                    collect_ms=round(collect_ms, 2))


def restore() -> None:
    """Undo `tune_for_realtime()`: unfreeze and put back the host's thresholds. Nothing
    happens when it was not tuned (a host's own `gc.freeze()` stays as it is)."""
    global _original
    if _original is None:
        return
    gc.unfreeze()
    gc.set_threshold(*_original)
    _original = None
