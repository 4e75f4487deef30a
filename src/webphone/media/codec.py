"""Audio codecs run inline in the event loop (PyAV/libavcodec), for the per-call media path.

aiortc encodes each outgoing frame in a thread pool (`run_in_executor`, one hand-off per 20 ms
frame, plus an RFC 6465 audio level computed sample by sample in Python) and decodes in a thread
of its own per call (a queue in, a coroutine scheduled back per frame). For audio these hand-offs
cost more than the codecs: Opus encodes a 20 ms frame in ~0.1 ms, G.711 in ~0.01 ms. So:

* `InlineEncoder` encodes 48 kHz mono s16 into an `av.Packet` that our outgoing track returns
  from `recv()`; aiortc then only packs it (its sender's documented path for pre-encoded media:
  no executor, no audio level).
* `InlineDecoder` decodes one RTP payload into mono s16 at the rate the program asked for, with
  a native resampler (libswresample) that keeps its state between frames.

Opus is encoded mono (RFC 7587 §3.4: a receiver must accept either; the voice is mono anyway),
at 32 kb/s with `application=voip`. Codecs outside `INLINE_CODECS` are left to aiortc.

G.711 costs less still, as it is sample by sample (ITU-T G.711) with no state of its own:
* decoding is a table lookup, done with `bytes.translate` (no packet, no frame, no codec call:
  at 8 kHz ~4 us instead of ~10 us a packet); at other rates the resampler (~7 us) remains;
* encoding the same 20 ms of PCM as the last two frames (silence, a tone whose period divides
  20 ms) gives the same payload as the last one, which is sent again without resampling and
  encoding (~25 us a frame): the resampler's state after two identical frames is the same as
  after one, as its filter is far shorter than a frame (libswresample: 32 taps of the 8 kHz side,
  192 samples of a 960-sample frame), so the output is exactly what encoding would give
  (tests/unit/test_inline_encoder.py compares them).
"""

from __future__ import annotations

import fractions
import sys
from typing import Any, Literal, cast

import av

__all__ = ["INLINE_CODECS", "FrameResampler", "InlineDecoder", "InlineEncoder"]

#: codec name (lower case) -> (libavcodec encoder/decoder, sample rate of the codec)
INLINE_CODECS: dict[str, tuple[str, int]] = {
    "opus": ("libopus", 48000),
    "pcmu": ("pcm_mulaw", 8000),
    "pcma": ("pcm_alaw", 8000),
}
SOURCE_RATE = 48000
_SOURCE_TIME_BASE = fractions.Fraction(1, SOURCE_RATE)  # made once: a Fraction costs ~2 us
OPUS_BITRATE = 32000


def _context(name: str, mode: Literal["r", "w"]) -> tuple[str, Any]:
    """(codec key, an s16 mono libavcodec context for it, at the codec's own rate)."""
    key = name.lower()
    if key not in INLINE_CODECS:
        raise ValueError(f"no inline codec for {name!r}; have {sorted(INLINE_CODECS)}")
    codec_name, rate = INLINE_CODECS[key]
    context: Any = cast(Any, av.CodecContext.create(codec_name, mode))
    context.format = "s16"
    context.layout = "mono"
    context.sample_rate = rate
    return key, context


#: codecs without state of their own (G.711): see the module docstring
STATELESS = frozenset({"pcmu", "pcma"})


def _ulaw_sample(code: int) -> int:
    """ITU-T G.711 μ-law code -> linear 16-bit sample (what libavcodec's pcm_mulaw gives)."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def _alaw_sample(code: int) -> int:
    """ITU-T G.711 A-law code -> linear 16-bit sample (what libavcodec's pcm_alaw gives)."""
    code ^= 0x55
    segment = (code & 0x70) >> 4
    magnitude = ((code & 0x0F) << 4) + (8 if segment == 0 else 0x108)
    if segment > 1:
        magnitude <<= segment - 1
    return magnitude if code & 0x80 else -magnitude


def _byte_tables(sample: Any) -> tuple[bytes, bytes]:
    """(first byte, second byte) of each code's s16 sample in native order, as `bytes.translate`
    tables: two translations interleaved are the decoded PCM."""
    raw = [sample(code).to_bytes(2, sys.byteorder, signed=True) for code in range(256)]
    return bytes(b[0] for b in raw), bytes(b[1] for b in raw)


_G711_TABLES = {"pcmu": _byte_tables(_ulaw_sample), "pcma": _byte_tables(_alaw_sample)}


def _pcm(frame: Any) -> bytes:
    size = frame.samples * 2 * len(frame.layout.channels)
    return bytes(frame.planes[0])[:size]


class FrameResampler:
    """libswresample (PyAV's filter graph) for a stream of frames: mono s16 at `rate` out.

    `av.AudioResampler.resample` pulls from its graph until the graph says EAGAIN, which PyAV
    raises as an exception: ~12 us of the ~35 us one 20 ms frame costs, on every frame. Here
    each frame in is one push and one pull: the graph (abuffer -> aformat -> abuffersink, the
    resampler FFmpeg inserts converts frame by frame) gives at most one frame per frame pushed,
    shorter at first while its filter fills (tests/integration/test_media_inline.py pins it).
    A new input format (rate, layout) starts a new graph.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._graph: Any = None
        self._key: tuple[str, str, int] | None = None

    def resample(self, frame: Any) -> Any | None:
        """`frame` converted (an `av.AudioFrame`), or None while the filter still fills."""
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self._key:
            self._graph, self._key = self._new_graph(*key), key
        frame.pts = None
        self._graph.push(frame)
        try:
            return self._graph.pull()
        except BlockingIOError:  # av's EAGAIN: nothing out for this frame
            return None

    def _new_graph(self, sample_format: str, layout: str, rate: int) -> Any:
        graph = av.filter.Graph()
        source = graph.add("abuffer", sample_rate=str(rate), sample_fmt=sample_format,
                           channel_layout=layout)
        convert = graph.add("aformat", sample_rates=str(self.rate), sample_fmts="s16",
                            channel_layouts="mono")
        sink = graph.add("abuffersink")
        source.link_to(convert)
        convert.link_to(sink)
        graph.configure()
        return graph


class InlineEncoder:
    """20 ms of 48 kHz mono s16 in, one `av.Packet` out (pts in the codec's RTP clock).

    reuse_repeats: for G.711, send the last payload again for a frame equal to the two before
    it instead of encoding it (the same bytes, see the module docstring).
    """

    def __init__(self, name: str, clock_rate: int, *, reuse_repeats: bool = True) -> None:
        self.name, self._context = _context(name, "w")
        rate = self._context.sample_rate
        self.clock_rate = clock_rate
        self._context.time_base = fractions.Fraction(1, rate)
        if self.name == "opus":
            self._context.bit_rate = OPUS_BITRATE
            self._context.options = {"application": "voip"}
        self._time_base = fractions.Fraction(1, clock_rate)
        self._resampler = None if rate == SOURCE_RATE else FrameResampler(rate)
        self._frame_pts = 0
        self._reuse = reuse_repeats and self.name in STATELESS
        self._last_pcm = b""
        self._repeats = 0  # how many frames in a row equalled the one before
        self._last_payload: bytes | None = None

    def encode(self, pcm: bytes, pts: int) -> Any | None:
        """One 20 ms chunk (960 samples at 48 kHz) whose first sample is number `pts` of the
        stream (48 kHz) -> an `av.Packet` stamped in the codec's RTP clock, or None while the
        codec still buffers (these codecs do not)."""
        if self._reuse:
            if pcm == self._last_pcm:
                self._repeats += 1
            else:
                self._last_pcm, self._repeats, self._last_payload = pcm, 0, None
            if self._repeats >= 2 and self._last_payload is not None:
                self._frame_pts += len(pcm) // 2
                return self._stamped(av.Packet(self._last_payload), pts)
        frame: Any = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate = SOURCE_RATE
        frame.time_base = _SOURCE_TIME_BASE
        frame.pts = self._frame_pts
        self._frame_pts += frame.samples
        if self._resampler is not None:  # G.711: 48 kHz -> 8 kHz, one push + one pull
            frame = self._resampler.resample(frame)
        packets = self._context.encode(frame) if frame is not None else []
        if not packets:
            return None
        # one packet per 20 ms (both codecs): hand it on as it is, no copy into a new one
        packet = packets[0] if len(packets) == 1 else av.Packet(b"".join(map(bytes, packets)))
        if self._reuse and self._repeats:
            self._last_payload = bytes(packet)
        return self._stamped(packet, pts)

    def _stamped(self, packet: Any, pts: int) -> Any:
        packet.pts = pts * self.clock_rate // SOURCE_RATE
        packet.time_base = self._time_base
        return packet


class InlineDecoder:
    """RTP payloads of one codec in, mono s16 PCM at `rate` out; `silence()` for a lost one."""

    def __init__(self, name: str, rate: int) -> None:
        self.name, self._context = _context(name, "r")
        self.rate = rate
        self._resampler = FrameResampler(rate)
        self._silence = bytes(2 * rate // 50)
        self._tables = _G711_TABLES.get(self.name)

    def decode(self, payload: bytes) -> bytes:
        """One RTP payload -> PCM (mono s16 at `rate`); b"" for a payload the codec rejects."""
        if self._tables is not None:
            return self._decode_g711(payload, self._tables)
        try:
            frames = self._context.decode(av.Packet(payload))
        except av.FFmpegError:
            return b""
        out = b""
        for frame in frames:
            if (frame.format.name, frame.layout.name, frame.sample_rate) != ("s16", "mono",
                                                                               self.rate):
                frame = self._resampler.resample(frame)
            if frame is not None:
                out += _pcm(frame)
        return out

    def _decode_g711(self, payload: bytes, tables: tuple[bytes, bytes]) -> bytes:
        pcm = bytearray(2 * len(payload))
        pcm[0::2] = payload.translate(tables[0])
        pcm[1::2] = payload.translate(tables[1])
        if self.rate == INLINE_CODECS[self.name][1] or not payload:
            return bytes(pcm)
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(payload))
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = INLINE_CODECS[self.name][1]
        out = self._resampler.resample(frame)
        return b"" if out is None else _pcm(out)

    def silence(self) -> bytes:
        """20 ms of silence at `rate` (what a lost packet becomes)."""
        return self._silence
