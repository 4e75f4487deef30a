"""`InlineEncoder`: one packet per 20 ms frame, stamped in the codec's RTP clock, that decodes
back to the tone that went in (G.711 resamples 48 kHz -> 8 kHz, one push and pull per frame)."""

from __future__ import annotations

import pytest

from webphone.media.codec import InlineDecoder, InlineEncoder
from webphone.media.tone import detect_tone, sine_chunks


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
