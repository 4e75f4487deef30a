"""RFC 4733 DTMF (telephone-event), pure: payload codec, RTP rewriting, sender and receiver
state machines. No aiortc, no asyncio, no clock: `webphone.media.session` feeds these with
the RTP packets it sees and applies what they return.

How sending works (see `DtmfSender`): while a digit is being sent, each outgoing 20 ms audio
packet of our stream is *replaced* by a telephone-event packet on the same SSRC, keeping its
sequence number, so sequence numbers stay contiguous and the event clock is the audio clock
(RFC 4733 §2.1: same SSRC, same timestamp clock). All packets of one event carry the timestamp
of the first (the event start); the first has the marker bit; the duration grows by one packet
per packet; the final packet has the E bit and is sent three times in total (§2.5.1.4); then
`gap_ms` of plain audio passes before the next digit.

How receiving works (see `DtmfReceiver`): an event is identified by (SSRC, RTP timestamp); a
digit is reported once, on the first packet seen of an event (so a lost first packet or lost end
packets do not lose the digit), and retransmitted end packets and the continuation segments of
a long event (§2.5.1.3) are not reported again.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "DTMF_EVENTS",
    "DtmfReceiver",
    "DtmfSender",
    "DtmfStep",
    "RtpHeader",
    "TelephoneEvent",
    "decode_event",
    "digit_to_event",
    "encode_event",
    "event_to_digit",
    "is_rtcp",
    "parse_rtp_header",
    "rewrite_rtp",
    "validate_tones",
]

DTMF_EVENTS = "0123456789*#ABCD"
"""RFC 4733 §3.2 event codes 0-15, in order: digits, *, #, A-D."""

END_PACKETS = 3
MAX_DURATION = 0xFFFF
PAUSE_MS = 2000
"""A ',' in a tone string pauses for 2 s (as WebRTC `insertDTMF` does)."""
MIN_DURATION_MS, MAX_DURATION_MS = 40, 1000
MIN_GAP_MS, MAX_GAP_MS = 30, 5000


# -- payload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 payload: event code, end bit, volume (-dBm0, 0..63), duration."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        return event_to_digit(self.event)


def encode_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """The 4-byte payload `|event|E|R|volume|duration|` (R is always 0)."""
    if not 0 <= event <= 255:
        raise ValueError(f"telephone-event code must be 0..255, got {event}")
    if not 0 <= volume <= 63:
        raise ValueError(f"telephone-event volume must be 0..63, got {volume}")
    if not 0 <= duration <= MAX_DURATION:
        raise ValueError(f"telephone-event duration must be 0..65535, got {duration}")
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


def decode_event(payload: bytes) -> TelephoneEvent:
    """Parse the first 4 bytes (RFC 4733 allows several events per packet; the first one is
    the current event); `ValueError` when shorter."""
    if len(payload) < 4:
        raise ValueError(f"telephone-event payload needs 4 bytes, got {len(payload)}")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def event_to_digit(event: int) -> str | None:
    """'0'-'9', '*', '#', 'A'-'D' for events 0-15; None for others (flash, tones, ...)."""
    return DTMF_EVENTS[event] if 0 <= event < len(DTMF_EVENTS) else None


def digit_to_event(digit: str) -> int:
    """Event code of a DTMF digit (case-insensitive A-D); `ValueError` otherwise."""
    index = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"not a DTMF digit: {digit!r} (allowed: {DTMF_EVENTS} and ',')")
    return index


def validate_tones(tones: str) -> str:
    """Upper-cased tone string; `ValueError` if empty or with anything but DTMF digits and ','."""
    if not tones:
        raise ValueError("no DTMF tones given")
    for char in tones:
        if char != ",":
            digit_to_event(char)
    return tones.upper()


# -- RTP header plumbing ---------------------------------------------------------------------


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing: RTCP packet types 192..223 in the second byte."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class RtpHeader(NamedTuple):
    """The fields of an RTP header the call's path needs (a tuple: two are made per 20 ms of a
    call, and a frozen dataclass costs three times as much to build)."""

    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int
    payload_offset: int
    payload_end: int


def parse_rtp_header(data: bytes) -> RtpHeader | None:
    """The fixed header, CSRC list and header extension of an RTP packet (RFC 3550 §5.1);
    None when `data` is not a well-formed RTP version 2 packet."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    csrc_count = data[0] & 0x0F
    offset = 12 + 4 * csrc_count
    if data[0] & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if data[0] & 0x20:  # padding: the last byte counts the padding bytes
        end -= data[-1]
    if offset > end or (data[0] & 0x20 and data[-1] == 0):
        return None
    sequence, timestamp, ssrc = struct.unpack_from("!HII", data, 2)
    return RtpHeader(data[1] & 0x7F, bool(data[1] & 0x80), sequence, timestamp, ssrc, offset, end)


def rewrite_rtp(
    data: bytes, payload_type: int, marker: bool, timestamp: int, payload: bytes
) -> bytes:
    """`data` with a new payload type, marker, timestamp and payload; version, sequence number,
    SSRC, CSRCs and header extensions are kept, padding is dropped."""
    header = parse_rtp_header(data)
    if header is None:
        raise ValueError("not an RTP packet")
    if not 0 <= payload_type <= 127:
        raise ValueError(f"RTP payload type must be 0..127, got {payload_type}")
    first = data[0] & ~0x20 & 0xFF
    second = (0x80 if marker else 0) | payload_type
    head = bytes([first, second]) + data[2:4] + struct.pack("!I", timestamp & 0xFFFFFFFF)
    return head + data[8 : header.payload_offset] + payload


# -- sender ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    event: int | None  # None: a pause
    duration_ms: int
    gap_ms: int
    batch: int
    last: bool


@dataclass(frozen=True)
class DtmfStep:
    """What to do with one outgoing audio packet.

    `payload` is None: send the audio packet unchanged. Otherwise rewrite it (`rewrite_rtp`)
    to `payload_type` (the caller's), `marker`, `timestamp` and `payload`. `finished` lists the
    batches (ids from `DtmfSender.insert`) whose last tone ended with this packet.
    """

    payload: bytes | None = None
    marker: bool = False
    timestamp: int = 0
    finished: tuple[int, ...] = ()


_NOTHING = DtmfStep()


class DtmfSender:
    """Turns queued tones into telephone-event packets, one outgoing audio packet at a time.

    Call `poll(timestamp, clock_rate)` for every outgoing audio packet of the stream, with the
    packet's RTP timestamp and the clock rate of its codec; apply the returned `DtmfStep`.
    """

    def __init__(self, volume: int = 10) -> None:
        if not 0 <= volume <= 63:
            raise ValueError(f"volume must be 0..63 (-dBm0), got {volume}")
        self.volume = volume
        self._queue: deque[_Item] = deque()
        self._batches = 0
        self._state = "idle"  # idle | tone | end | gap
        self._item: _Item | None = None
        self._start_ts = 0
        self._duration = 0
        self._ends_sent = 0
        self._gap_left = 0
        self._last_ts: int | None = None
        self._packet_units = 0

    @property
    def busy(self) -> bool:
        """True while a tone, its end packets, a gap or queued tones remain."""
        return self._state != "idle" or bool(self._queue)

    def insert(self, tones: str, duration_ms: int = 100, gap_ms: int = 70) -> int:
        """Queue `tones` (DTMF digits and ',' for a 2 s pause); returns the batch id that
        `DtmfStep.finished` will report. `ValueError` for bad tones or timings."""
        tones = validate_tones(tones)
        if not MIN_DURATION_MS <= duration_ms <= MAX_DURATION_MS:
            raise ValueError(
                f"DTMF duration must be {MIN_DURATION_MS}..{MAX_DURATION_MS} ms, got {duration_ms}"
            )
        if not MIN_GAP_MS <= gap_ms <= MAX_GAP_MS:
            raise ValueError(f"DTMF gap must be {MIN_GAP_MS}..{MAX_GAP_MS} ms, got {gap_ms}")
        self._batches += 1
        for i, char in enumerate(tones):
            last = i == len(tones) - 1
            if char == ",":
                self._queue.append(_Item(None, PAUSE_MS, 0, self._batches, last))
            else:
                self._queue.append(
                    _Item(digit_to_event(char), duration_ms, gap_ms, self._batches, last)
                )
        return self._batches

    def cancel(self) -> tuple[int, ...]:
        """Drop the tones not yet started; returns their batch ids. A tone in progress still
        ends properly (its end packets), so the far end never sees an unterminated event."""
        items = list(self._queue)
        self._queue.clear()
        if self._state == "gap":
            if self._item is not None and self._item.event is None:
                items.insert(0, self._item)  # a pause in progress is simply cut short
            self._state = "idle"
        return tuple(dict.fromkeys(item.batch for item in items))

    def reset(self) -> tuple[int, ...]:
        """Drop everything, the tone in progress included (when the stream cannot carry
        events any more); returns the batch ids that will never finish."""
        items = ([self._item] if self._item is not None and self._state != "idle" else []) + list(
            self._queue
        )
        self._queue.clear()
        self._state = "idle"
        return tuple(dict.fromkeys(item.batch for item in items))

    def poll(self, timestamp: int, clock_rate: int) -> DtmfStep:
        """Decide the fate of the outgoing audio packet with RTP `timestamp`."""
        self._learn_packet_size(timestamp, clock_rate)
        if self._state == "idle":
            if not self._queue:
                return _NOTHING  # every packet of a call without DTMF: no object made
            self._item = self._queue.popleft()
            if self._item.event is None:  # a pause: this packet is its first
                self._state = "gap"
                self._gap_left = self._units(self._item.duration_ms, clock_rate)
            else:
                self._state = "tone"
                self._start_ts = timestamp
        if self._state == "gap":
            self._gap_left -= self._packet_units
            if self._gap_left > 0:
                return DtmfStep()
            self._state = "idle"
            assert self._item is not None
            if self._item.event is None and self._item.last:
                return DtmfStep(finished=(self._item.batch,))
            return DtmfStep()
        item = self._item
        assert item is not None and item.event is not None
        if self._state == "tone":
            first = timestamp == self._start_ts
            elapsed = (timestamp - self._start_ts) % 2**32 + self._packet_units
            target = min(
                max(self._packet_units, self._units(item.duration_ms, clock_rate)), MAX_DURATION
            )
            self._duration = min(elapsed, target, MAX_DURATION)
            if self._duration < target:
                return self._event_step(item.event, False, first)
            self._state, self._ends_sent = "end", 0
        self._ends_sent += 1
        step = self._event_step(item.event, True, first=timestamp == self._start_ts)
        if self._ends_sent < END_PACKETS:
            return step
        self._state = "gap"
        self._gap_left = self._units(item.gap_ms, clock_rate)
        if item.last:
            return DtmfStep(step.payload, step.marker, step.timestamp, (item.batch,))
        return step

    def _event_step(self, event: int, end: bool, first: bool) -> DtmfStep:
        payload = encode_event(event, end, self.volume, self._duration)
        return DtmfStep(payload, marker=first, timestamp=self._start_ts)

    def _learn_packet_size(self, timestamp: int, clock_rate: int) -> None:
        if self._last_ts is not None:
            delta = (timestamp - self._last_ts) % 2**32
            if 0 < delta <= clock_rate // 5:  # a plausible packet (<= 200 ms)
                self._packet_units = delta
        if self._packet_units == 0:
            self._packet_units = clock_rate // 50  # 20 ms until we know better
        self._last_ts = timestamp

    @staticmethod
    def _units(ms: int, clock_rate: int) -> int:
        return ms * clock_rate // 1000


# -- receiver --------------------------------------------------------------------------------


@dataclass
class _Seen:
    event: int
    timestamp: int
    duration: int
    ended: bool


class DtmfReceiver:
    """Reports each received DTMF event once; `feed()` returns the digit or None."""

    def __init__(self, memory: int = 32) -> None:
        self._seen: deque[tuple[int, int]] = deque(maxlen=memory)
        self._last: dict[int, _Seen] = {}

    def feed(self, payload: bytes, timestamp: int, ssrc: int = 0) -> str | None:
        try:
            event = decode_event(payload)
        except ValueError:
            return None
        key = (ssrc, timestamp)
        last = self._last.get(ssrc)
        if key in self._seen:
            if last is not None and last.timestamp == timestamp:
                last.duration = max(last.duration, event.duration)
                last.ended = last.ended or event.end
            return None
        is_segment = (
            last is not None
            and last.event == event.event
            and not last.ended
            and (timestamp - last.timestamp) % 2**32 == last.duration
        )
        self._seen.append(key)
        self._last[ssrc] = _Seen(event.event, timestamp, event.duration, event.end)
        if is_segment:
            return None
        return event.digit
