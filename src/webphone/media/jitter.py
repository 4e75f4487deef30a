"""An adaptive RTP jitter buffer for audio, pure (no I/O, no clock of its own).

`JitterBuffer.push(seq, timestamp, payload, arrival)` takes one received RTP packet and returns
the packets that are now due, in sequence order, each a `Released` whose `payload` is None for
a packet given up as lost.

* **Depth.** A packet is released once `depth` newer packets have arrived after it: with 20 ms
  packets, `depth` 2 holds a packet 40 ms (aiortc's own buffer holds 4, 80 ms). `depth` starts
  at `min_depth` and follows the measured interarrival jitter J (RFC 3550 §6.4.1, in RTP clock
  units): `ceil(3 J / packet duration)`, at least `min_depth`, at most `max_depth`. A late
  packet (see below) raises a floor by one packet, which decays by one after `calm_packets`
  packets without lateness: the buffer deepens at once when the network jitters more than J
  predicted, and shrinks slowly.
* **Loss.** When the next expected packet is missing and `depth` newer ones are already here, it
  is given up: `Released(payload=None)` (the receive path turns it into 20 ms of silence, so the
  timeline of the received audio stays continuous), counted in `lost`.
* **Late.** A packet arriving after its slot was given up (or older than the first packet) is
  dropped and counted in `late`; a duplicate (of a packet held or already released) is dropped
  and counted in `duplicates`.
* **Resync.** A sequence number more than `max_misorder` away from the expected one (a new
  sender, a long gap) flushes what is held and starts over from that packet (`resyncs`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["JitterBuffer", "Released"]


class Released(NamedTuple):
    """One packet leaving the buffer; `payload` None: it was lost. (A tuple: one is made per
    received packet, at half the cost of a frozen dataclass.)"""

    seq: int
    timestamp: int
    payload: bytes | None


class JitterBuffer:
    """Reorders RTP packets and holds them `depth` packets long (see the module docstring).

    clock_rate: the RTP clock of the stream (Hz); packet_ms: the duration of one packet (the
    unit in which the jitter becomes a depth).
    """

    def __init__(
        self,
        *,
        clock_rate: int,
        min_depth: int = 2,
        max_depth: int = 10,
        packet_ms: int = 20,
        max_misorder: int = 100,
        calm_packets: int = 500,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {clock_rate}")
        if not 1 <= min_depth <= max_depth:
            raise ValueError(f"need 1 <= min_depth <= max_depth, got {min_depth}, {max_depth}")
        self.clock_rate = clock_rate
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.max_misorder = max_misorder
        self.calm_packets = calm_packets
        self._packet_ticks = clock_rate * packet_ms // 1000
        self._held: dict[int, tuple[int, bytes]] = {}  # extended seq -> (timestamp, payload)
        self._next: int | None = None  # extended seq of the next packet to release
        self._start = 0  # the first extended seq since the last (re)start
        self._given_up: set[int] = set()  # recent slots released as lost (late arrivals)
        self._last_ext: int | None = None
        self._jitter = 0.0  # RFC 3550 J, in clock ticks
        self._transit: int | None = None
        self._floor = 0
        self._calm = 0
        self.lost = 0
        self.late = 0
        self.duplicates = 0
        self.resyncs = 0
        self.released = 0

    # -- what it measured --------------------------------------------------------------------

    @property
    def jitter_ms(self) -> float:
        """The interarrival jitter estimate (RFC 3550 §6.4.1), in milliseconds."""
        return 1000.0 * self._jitter / self.clock_rate

    @property
    def depth(self) -> int:
        """How many newer packets a packet waits for (its delay is `depth` packets)."""
        by_jitter = math.ceil(3 * self._jitter / self._packet_ticks) if self._packet_ticks else 0
        wanted = max(by_jitter, self.min_depth + self._floor)
        return max(self.min_depth, min(self.max_depth, wanted))

    def __len__(self) -> int:
        return len(self._held)

    # -- input -------------------------------------------------------------------------------

    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> list[Released]:
        """One received packet (`arrival` in seconds, any monotonic origin); what is due now."""
        ext = self._extend(seq & 0xFFFF)
        self._measure(timestamp, arrival)
        if self._next is None or abs(ext - self._next) > self.max_misorder:
            out: list[Released] = []
            if self._next is not None:
                self.resyncs += 1
                out = self.flush()
            self._next = self._start = ext
            self._held[ext] = (timestamp, payload)
            return out + self._due()
        if ext < self._next:
            if ext >= self._start and ext not in self._given_up:  # released: a duplicate
                self.duplicates += 1
                return []
            self._given_up.discard(ext)
            self.late += 1
            self._floor = min(self._floor + 1, self.max_depth - self.min_depth)
            self._calm = 0
            return []
        if ext in self._held:
            self.duplicates += 1
            return []
        self._held[ext] = (timestamp, payload)
        self._calm += 1
        if self._calm >= self.calm_packets and self._floor:
            self._floor -= 1
            self._calm = 0
        return self._due()

    def flush(self) -> list[Released]:
        """Everything held, in order (the stream ends or restarts); gaps are not reported."""
        out = [Released(seq=ext & 0xFFFF, timestamp=ts, payload=data)
               for ext, (ts, data) in sorted(self._held.items())]
        self.released += len(out)
        self._held.clear()
        self._next = None
        return out

    # -- internals ---------------------------------------------------------------------------

    def _extend(self, seq: int) -> int:
        """The 16-bit sequence number extended with a cycle count (RFC 3550 §A.1)."""
        if self._last_ext is None:
            self._last_ext = seq
            return seq
        last = self._last_ext
        ext = (last & ~0xFFFF) | seq
        if ext < last - 0x8000:
            ext += 0x10000
        elif ext > last + 0x8000:
            ext -= 0x10000
        self._last_ext = max(last, ext)
        return ext

    def _measure(self, timestamp: int, arrival: float) -> None:
        """RFC 3550 §6.4.1 and §A.8: J += (|D| - J) / 16, D the change in transit time."""
        transit = round(arrival * self.clock_rate) - timestamp
        if self._transit is not None:
            delta = abs(transit - self._transit)
            if delta < self.clock_rate * 10:  # not a timestamp jump of a new talk spurt/sender
                self._jitter += (delta - self._jitter) / 16.0
        self._transit = transit

    def _due(self) -> list[Released]:
        out: list[Released] = []
        depth = self.depth
        while self._held and self._next is not None:
            newer = len(self._held) - (1 if self._next in self._held else 0)
            if newer < depth:
                break
            item = self._held.pop(self._next, None)
            if item is None:
                self.lost += 1
                self._given_up.add(self._next)
                if len(self._given_up) > 4 * self.max_misorder:
                    self._given_up = {x for x in self._given_up if x > self._next - 1000}
                out.append(Released(seq=self._next & 0xFFFF, timestamp=-1, payload=None))
            else:
                out.append(Released(seq=self._next & 0xFFFF, timestamp=item[0], payload=item[1]))
                self.released += 1
            self._next += 1
        return out
