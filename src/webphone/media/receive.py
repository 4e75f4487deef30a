"""Received audio, decoded inline: RTP payload -> jitter buffer -> decoder -> PCM callback.

`AudioReceiver.feed(...)` is called by the call's RTP path (`RtpPath.incoming`) for every audio
packet of a codec it can decode (`webphone.media.codec.INLINE_CODECS`); aiortc's receiver never
sees those packets, so its per-call decoder thread stays idle and no frame crosses a thread.
Packets of other codecs still go to aiortc, which decodes them as before.

What leaves the jitter buffer (`webphone.media.jitter`) is decoded in order; a packet given up
as lost becomes 20 ms of silence so the received timeline stays continuous. A new SSRC (the far
end restarted its stream) starts a new buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .codec import InlineDecoder
from .jitter import JitterBuffer

__all__ = ["AudioReceiver", "ReceiveCounters"]


@dataclass(kw_only=True)
class ReceiveCounters:
    """What the receive path saw, summed over the buffers it had."""

    packets: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0


class AudioReceiver:
    """Jitter buffer + decoders of one call's incoming audio.

    rate: PCM rate handed out; deliver(pcm, now): called per 20 ms of decoded audio, with None
    instead of the PCM while `wanted()` is false (nobody listens: nothing is decoded).
    `configure` tells it the payload types it may decode.
    """

    def __init__(self, rate: int, deliver: Callable[[bytes | None, float], None],
                 wanted: Callable[[], bool] = lambda: True, min_depth: int = 2) -> None:
        self.rate = rate
        self._deliver = deliver
        self._wanted = wanted
        self.min_depth = min_depth
        self._codecs: dict[int, tuple[str, int]] = {}
        self._decoders: dict[int, InlineDecoder] = {}
        self._buffer: JitterBuffer | None = None
        self._ssrc: int | None = None
        self._closed_counters = ReceiveCounters()

    def configure(self, codecs: dict[int, tuple[str, int]]) -> None:
        """The payload types (and their codec, clock rate) this receiver decodes from now on."""
        self._codecs = dict(codecs)
        self._decoders = {pt: d for pt, d in self._decoders.items() if pt in codecs}

    def accepts(self, payload_type: int) -> bool:
        return payload_type in self._codecs

    @property
    def jitter_ms(self) -> float:
        return self._buffer.jitter_ms if self._buffer is not None else 0.0

    @property
    def depth(self) -> int:
        return self._buffer.depth if self._buffer is not None else self.min_depth

    @property
    def counters(self) -> ReceiveCounters:
        total = ReceiveCounters(**vars(self._closed_counters))
        if self._buffer is not None:
            total.lost += self._buffer.lost
            total.late += self._buffer.late
            total.duplicates += self._buffer.duplicates
        return total

    def feed(self, payload_type: int, seq: int, timestamp: int, ssrc: int, payload: bytes,
             now: float) -> int:
        """One received packet of an accepted payload type; returns its codec's clock rate."""
        self._closed_counters.packets += 1
        clock_rate = self._codecs[payload_type][1]
        if self._buffer is None or ssrc != self._ssrc:
            self._restart(ssrc, clock_rate, now)
        assert self._buffer is not None
        for item in self._buffer.push(seq, timestamp, bytes([payload_type]) + payload, now):
            self._play(item.payload, now)
        return clock_rate

    def flush(self, now: float) -> None:
        """Decode and hand out whatever is still held (the stream ended)."""
        if self._buffer is not None:
            for item in self._buffer.flush():
                self._play(item.payload, now)

    def _restart(self, ssrc: int, clock_rate: int, now: float) -> None:
        if self._buffer is not None:
            self.flush(now)
            for name in ("lost", "late", "duplicates"):
                setattr(self._closed_counters, name,
                        getattr(self._closed_counters, name) + getattr(self._buffer, name))
        self._ssrc = ssrc
        self._buffer = JitterBuffer(clock_rate=clock_rate, min_depth=self.min_depth)

    def _play(self, tagged: bytes | None, now: float) -> None:
        if not self._wanted():
            self._deliver(None, now)
            return
        if tagged is None:
            self._deliver(bytes(2 * self.rate // 50), now)
            return
        payload_type = tagged[0]
        decoder = self._decoders.get(payload_type)
        if decoder is None:
            codec = self._codecs.get(payload_type)
            if codec is None:
                return
            decoder = self._decoders[payload_type] = InlineDecoder(codec[0], self.rate)
        pcm = decoder.decode(tagged[1:])
        if pcm:
            self._deliver(pcm, now)
