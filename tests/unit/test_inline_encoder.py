"""`InlineEncoder`: one packet per 20 ms frame, stamped in the codec's RTP clock, that decodes
back to the tone that went in (G.711 resamples 48 kHz -> 8 kHz, one push and pull per frame)."""

from __future__ import annotations

import random

import av
import pytest

from webphone.media.codec import FrameResampler, InlineDecoder, InlineEncoder
from webphone.media.tone import detect_tone, sine_chunks, sine_wave


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_frames_are_one_packet_each_and_keep_the_tone(codec: str) -> None:
    encoder, decoder = InlineEncoder(codec, 8000), InlineDecoder(codec, 8000)
    encoded = [encoder.encode(chunk, n * 960)
               for n, chunk in enumerate(sine_chunks(1000, 1.0, 48000, 0.4))]
    packets = [p for p in encoded if p is not None]
    assert len(packets) == 50
    assert [p.pts for p in packets] == [n * 160 for n in range(50)]
    assert {len(bytes(p)) for p in packets[1:]} == {160}  # the first: the filter filling
    pcm = b"".join(decoder.decode(bytes(p)) for p in packets)
    assert detect_tone(pcm[-3200:], 8000, (1000, 440), min_ratio=0.8) == 1000


def test_opus_frames_keep_the_tone() -> None:
    encoder, decoder = InlineEncoder("opus", 48000), InlineDecoder("opus", 16000)
    packets = [encoder.encode(chunk, n * 960)
               for n, chunk in enumerate(sine_chunks(1000, 1.0, 48000, 0.4))]
    assert [p.pts for p in packets if p is not None] == [n * 960 for n in range(50)]
    pcm = b"".join(decoder.decode(bytes(p)) for p in packets if p is not None)
    assert detect_tone(pcm[-6400:], 16000, (1000, 440), min_ratio=0.8) == 1000


def _frames(*parts: tuple[bytes, int]) -> list[bytes]:
    return [chunk for chunk, times in parts for _ in range(times)]


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_repeated_frames_give_exactly_what_encoding_gives(codec: str) -> None:
    """A frame equal to the two before it is not encoded again: the payload sent is the last
    one, which is byte for byte what the resampler and encoder would have produced."""
    silence = bytes(1920)
    tone = sine_wave(1000, 0.02, 48000, 0.4)  # 20 periods a frame: every frame the same
    other = sine_wave(700, 0.02, 48000, 0.3)  # 14 periods a frame
    drifting = list(sine_chunks(1234, 0.2, 48000, 0.4))  # no two frames alike
    noise = random.Random(7).randbytes(1920)
    frames = (_frames((silence, 4), (tone, 5), (other, 3), (noise, 3), (silence, 3), (tone, 4))
              + drifting + _frames((tone, 3)))
    reusing, encoding = InlineEncoder(codec, 8000), InlineEncoder(codec, 8000, reuse_repeats=False)
    resampled: list[int] = []
    assert reusing._resampler is not None
    resample = reusing._resampler.resample
    reusing._resampler.resample = lambda frame: resampled.append(1) or resample(frame)  # type: ignore[method-assign]
    for n, pcm in enumerate(frames):
        ours, theirs = reusing.encode(pcm, n * 960), encoding.encode(pcm, n * 960)
        assert ours is not None and theirs is not None
        assert (bytes(ours), ours.pts, ours.time_base) == (
            bytes(theirs), theirs.pts, theirs.time_base), f"frame {n}"
    # encoded: the first two of each of the 7 runs of equal frames, and every drifting one
    assert len(resampled) == 7 * 2 + len(drifting)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_g711_table_decoding_equals_libavcodec(codec: str, rate: int) -> None:
    context = av.CodecContext.create({"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}[codec], "r")
    context.format, context.layout, context.sample_rate = "s16", "mono", 8000
    reference, ours = FrameResampler(rate), InlineDecoder(codec, rate)
    payloads = [bytes(range(256))[:160], bytes(range(96, 256)),
                *(random.Random(n).randbytes(160) for n in range(8))]
    for payload in payloads:
        frame = context.decode(av.Packet(payload))[0]
        if rate != 8000:
            frame = reference.resample(frame)
        expected = b"" if frame is None else bytes(frame.planes[0])[:2 * frame.samples]
        assert ours.decode(payload) == expected
