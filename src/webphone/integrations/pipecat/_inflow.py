"""A bound on the call's audio that waits inside a pipeline, and what it cost.

Theory of operation. pipecat queues frames without a bound: the input transport's audio queue
and every processor's input queue. A pipeline slower than real time (a Silero VAD on a busy
core, a slow speech-to-text) would grow memory, and its lag behind the caller, for as long as
the call lasts. So the input transport counts the audio frames it handed downstream that the
next processor has not processed yet (`AudioInflow.pending`; pipecat's public
``on_after_process_frame`` event of that processor says when). At `max_pending` its reader
stops taking frames from the call's `received_audio()` stream, which keeps the newest
`audio_in_max_frames` frames and drops the oldest (`AudioStream.dropped`). So:

* memory: at most ``audio_in_max_pending + audio_in_max_frames`` frames of 20 ms wait;
* lag: the pipeline hears audio at most that many frames old, the newest when it catches up;
* what it missed is counted (`InputStats.frames_dropped`) and logged once per overload.

Pending counts from the hand-off to pipecat (`push_audio_frame`), so the transport's own
audio queue is inside the bound. Where a frame may never reach the next processor (an
`audio_in_filter`, which may buffer; `audio_in_passthrough` off; paused by a `StopFrame`)
nothing is counted and the bound does not apply; `reset()` forgets what is pending when the
input pauses or stops.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("webphone.pipecat")

__all__ = ["AudioInflow", "InputStats"]

#: Default of `WebPhoneParams.audio_in_max_pending`: 10 frames (200 ms) handed to the pipeline
#: and not yet taken by the processor after the input (the VAD); well above what a pipeline
#: keeping up holds (1-2 frames), well below what a caller notices as lag.
DEFAULT_MAX_PENDING = 10


@dataclass(kw_only=True)
class InputStats:
    """The call's received audio on its way into the pipeline (20 ms frames)."""

    frames_in: int = 0  #: handed to the pipeline
    frames_dropped: int = 0  #: dropped, oldest first, while the pipeline was behind
    pending: int = 0  #: handed on, not yet processed by the next processor
    pending_max: int = 0  #: the most that ever were
    waits: int = 0  #: times the reader waited for the pipeline to catch up


class AudioInflow:
    """The pending count of one input transport (see the module docstring)."""

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self.stats = InputStats()
        self._pending: dict[int, Any] = {}  # id -> the frame (held by pipecat's queues anyway)
        self._room = asyncio.Event()
        self._room.set()
        self._level = logging.WARNING  # the first overload is a warning, the next ones debug

    def sent(self, frame: Any) -> None:
        """`frame` was pushed to the next processor."""
        self._pending[id(frame)] = frame
        self.stats.frames_in += 1
        self._count()

    def processed(self, frame: Any) -> None:
        """The next processor is done with `frame` (any frame: ours are recognised)."""
        if self._pending.pop(id(frame), None) is not None:
            self._count()

    async def room(self, stream: Any, call_id: str) -> None:
        """Return once fewer than `max_pending` frames are pending. Meanwhile `stream` (the
        call's `AudioStream`) keeps the newest frames; what it dropped is logged."""
        if self._room.is_set():
            return
        self.stats.waits += 1
        dropped = stream.dropped
        await self._room.wait()
        if stream.dropped > dropped:
            level, self._level = self._level, logging.DEBUG
            log.log(level, "%s: the pipeline fell behind the call's audio: %d frames (20 ms) "
                    "dropped, oldest first, while it caught up (%d handed on so far)",
                    call_id, stream.dropped - dropped, self.stats.frames_in)

    def reset(self) -> None:
        """The input stopped: whatever is pending will not be processed for us."""
        self._pending.clear()
        self._count()

    def _count(self) -> None:
        pending = self.stats.pending = len(self._pending)
        self.stats.pending_max = max(self.stats.pending_max, pending)
        if pending < self.max_pending:
            self._room.set()
        else:
            self._room.clear()
