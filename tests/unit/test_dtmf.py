"""Pure media helpers: RFC 4733 payloads, RTP rewriting, the DTMF sender/receiver state
machines, the Goertzel tone detector; and the promise that they (and `import webphone`) never
load aiortc."""

from __future__ import annotations

import asyncio
import math
import struct
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone.media.dtmf import (
    DTMF_EVENTS,
    DtmfReceiver,
    DtmfSender,
    DtmfStep,
    TelephoneEvent,
    decode_event,
    digit_to_event,
    encode_event,
    event_to_digit,
    is_rtcp,
    parse_rtp_header,
    rewrite_rtp,
    validate_tones,
)
from webphone.media.errors import DtmfNotAvailableError, MediaError
from webphone.media.rtp import RtpPath
from webphone.media.tone import (
    detect_tone,
    goertzel_ratio,
    pcm_samples,
    rms,
    sine_chunks,
    sine_wave,
    tone_levels,
)

# -- payload ---------------------------------------------------------------------------------


def test_payload_layout() -> None:
    # RFC 4733 figure 1: event 11 (#), E=1, volume 10, duration 800
    assert encode_event(11, True, 10, 800) == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert decode_event(bytes([5, 10, 0, 160])) == TelephoneEvent(5, False, 10, 160)
    assert decode_event(bytes([11, 0x8A, 0x03, 0x20, 99])).end  # extra bytes ignored
    with pytest.raises(ValueError):
        decode_event(b"\x01\x02\x03")
    for bad in ((256, 0, 0), (1, 64, 0), (1, 0, 0x10000), (-1, 0, 0)):
        with pytest.raises(ValueError):
            encode_event(bad[0], False, bad[1], bad[2])


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_payload_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    assert decode_event(encode_event(event, end, volume, duration)) == TelephoneEvent(
        event, end, volume, duration
    )


def test_digits() -> None:
    assert [digit_to_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_to_event("a") == 12
    assert event_to_digit(11) == "#"
    assert event_to_digit(16) is None  # flash
    assert validate_tones("12,a#") == "12,A#"
    for bad in ("", "1x", "12 3", "**E"):
        with pytest.raises(ValueError):
            validate_tones(bad)


# -- RTP -------------------------------------------------------------------------------------


def rtp(
    pt: int = 96,
    seq: int = 1000,
    ts: int = 123456,
    ssrc: int = 0xDEADBEEF,
    payload: bytes = b"\x01\x02\x03",
    marker: bool = True,
    csrcs: int = 0,
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    first = 0x80 | csrcs | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    data = bytes([first, (0x80 if marker else 0) | pt]) + struct.pack("!HII", seq, ts, ssrc)
    data += b"".join(struct.pack("!I", 1000 + i) for i in range(csrcs))
    if extension is not None:
        data += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    data += payload
    if padding:
        data += bytes(padding - 1) + bytes([padding])
    return data


def test_parse_and_rewrite_keeps_sequence_ssrc_and_extensions() -> None:
    packet = rtp(csrcs=2, extension=b"\x10\xaa\x00\x00", padding=4)
    header = parse_rtp_header(packet)
    assert header is not None
    assert (header.payload_type, header.marker, header.sequence_number) == (96, True, 1000)
    assert (header.timestamp, header.ssrc) == (123456, 0xDEADBEEF)
    assert packet[header.payload_offset : header.payload_end] == b"\x01\x02\x03"
    out = rewrite_rtp(packet, 110, False, 99, b"EVNT")
    new = parse_rtp_header(out)
    assert new is not None
    assert (new.payload_type, new.marker, new.timestamp) == (110, False, 99)
    assert (new.sequence_number, new.ssrc) == (1000, 0xDEADBEEF)
    assert out[new.payload_offset : new.payload_end] == b"EVNT"
    assert out[8 : new.payload_offset] == packet[8 : header.payload_offset]  # SSRC, CSRC, ext
    assert not out[0] & 0x20  # padding dropped


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=40),
    csrcs=st.integers(0, 15),
    ext_words=st.none() | st.integers(0, 4),
    padding=st.integers(0, 8),
)
def test_rtp_header_properties(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    csrcs: int,
    ext_words: int | None,
    padding: int,
) -> None:
    extension = None if ext_words is None else bytes(4 * ext_words)
    packet = rtp(pt, seq, ts, ssrc, payload, False, csrcs, extension, padding)
    header = parse_rtp_header(packet)
    assert header is not None
    assert (header.payload_type, header.sequence_number, header.timestamp) == (pt, seq, ts)
    assert packet[header.payload_offset : header.payload_end] == payload
    out = rewrite_rtp(packet, 101, True, ts ^ 1, b"abcd")
    again = parse_rtp_header(out)
    assert again is not None and again.sequence_number == seq and again.ssrc == ssrc


@given(st.binary(max_size=40))
def test_parse_garbage_never_crashes(data: bytes) -> None:
    parse_rtp_header(data)
    is_rtcp(data)


def test_rtcp_demux() -> None:
    assert is_rtcp(bytes([0x80, 200, 0, 6]))  # SR
    assert is_rtcp(bytes([0x81, 205, 0, 3]))  # RTPFB
    assert not is_rtcp(rtp(pt=110, marker=True))  # 0xEE
    assert not is_rtcp(rtp(pt=96, marker=False))
    assert parse_rtp_header(b"\x00" * 12) is None  # version 0


# -- sender ----------------------------------------------------------------------------------


def run_sender(
    sender: DtmfSender, rate: int, packets: int, start_ts: int = 1000, ptime: float = 0.02
) -> list[tuple[int, DtmfStep]]:
    """Feed `packets` audio timestamps; returns (audio_ts, step) pairs."""
    step_units = int(rate * ptime)
    out = []
    for i in range(packets):
        ts = (start_ts + i * step_units) % 2**32
        out.append((ts, sender.poll(ts, rate)))
    return out


def test_one_digit_at_8khz() -> None:
    sender = DtmfSender()
    batch = sender.insert("5", duration_ms=100, gap_ms=70)
    steps = run_sender(sender, 8000, 9)
    events = [(ts, s) for ts, s in steps if s.payload is not None]
    decoded = [decode_event(s.payload) for _, s in events]
    assert [e.duration for e in decoded] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in decoded] == [False] * 4 + [True] * 3
    assert {e.event for e in decoded} == {5}
    assert {e.volume for e in decoded} == {10}
    assert [s.marker for _, s in events] == [True] + [False] * 6
    assert {s.timestamp for _, s in events} == {1000}
    finished = [s.finished for _, s in steps if s.finished]
    assert finished == [(batch,)]
    assert steps[6][1].finished == (batch,)
    assert sender.busy  # still in the 70 ms gap
    run_sender(sender, 8000, 2, start_ts=1000 + 9 * 160)
    assert not sender.busy  # 4 packets (80 ms >= 70 ms) of audio after the last end packet


def test_digits_are_separated_by_audio_and_use_new_timestamps() -> None:
    sender = DtmfSender()
    sender.insert("12", duration_ms=60, gap_ms=40)
    steps = run_sender(sender, 48000, 20)
    kinds = "".join("E" if s.payload else "a" for _, s in steps)
    # 60 ms = 3 packets, 2 more end packets, 40 ms gap = 2 audio packets, then the next digit
    assert kinds.startswith("EEEEEaaEEEEE")
    firsts = [s.timestamp for _, s in steps if s.marker]
    assert firsts == [1000, 1000 + 7 * 960]


def test_pause() -> None:
    sender = DtmfSender()
    batch = sender.insert("1,", duration_ms=40, gap_ms=30)
    steps = run_sender(sender, 8000, 130)
    kinds = "".join("E" if s.payload else "a" for _, s in steps)
    assert kinds.startswith("EEEEaa" + "a" * 100)  # 40 ms tone, 2 ends, 30 ms gap, 2 s pause
    finished = [i for i, (_, s) in enumerate(steps) if s.finished]
    assert finished == [4 + 2 + 100 - 1]  # the batch ends with the pause
    assert steps[finished[0]][1].finished == (batch,)
    assert not sender.busy


def test_cancel_lets_the_current_digit_end_and_reset_does_not() -> None:
    sender = DtmfSender()
    b1 = sender.insert("12")
    b2 = sender.insert("3")
    steps = run_sender(sender, 8000, 2)  # digit 1 in progress
    assert sender.cancel() == (b1, b2)
    steps = run_sender(sender, 8000, 12, start_ts=1000 + 2 * 160)
    assert [decode_event(s.payload).duration for _, s in steps if s.payload] == [480, 640] + [
        800
    ] * 3
    assert not sender.busy
    b3 = sender.insert("9")
    run_sender(sender, 8000, 1)
    assert sender.reset() == (b3,)
    assert not sender.busy
    assert sender.poll(99999, 8000).payload is None


@pytest.mark.parametrize(
    ("tones", "duration", "gap"), [("", 100, 70), ("1", 39, 70), ("1", 100, 29), ("x", 100, 70)]
)
def test_sender_rejects(tones: str, duration: int, gap: int) -> None:
    with pytest.raises(ValueError):
        DtmfSender().insert(tones, duration, gap)


# -- receiver --------------------------------------------------------------------------------


def test_receiver_reports_once_per_event() -> None:
    receiver = DtmfReceiver()
    start = encode_event(1, False, 10, 160)
    end = encode_event(1, True, 10, 800)
    assert receiver.feed(start, 1000, ssrc=7) == "1"
    assert receiver.feed(encode_event(1, False, 10, 320), 1000, ssrc=7) is None
    assert [receiver.feed(end, 1000, ssrc=7) for _ in range(3)] == [None] * 3
    assert receiver.feed(end, 5000, ssrc=7) == "1"  # a new event, first packets lost
    assert receiver.feed(start, 1000, ssrc=8) == "1"  # other source
    assert receiver.feed(encode_event(16, False, 10, 160), 9000) is None  # flash: not DTMF
    assert receiver.feed(b"\x01", 9999) is None


def test_receiver_long_event_segments_are_one_digit() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(encode_event(0, False, 10, 0xFFFF), 100) == "0"
    assert receiver.feed(encode_event(0, False, 10, 960), 100 + 0xFFFF) is None
    assert receiver.feed(encode_event(0, True, 10, 1920), 100 + 0xFFFF) is None
    assert receiver.feed(encode_event(0, False, 10, 960), 100 + 0xFFFF + 50000) == "0"


@given(
    tones=st.text(alphabet=DTMF_EVENTS, min_size=1, max_size=6),
    rate=st.sampled_from([8000, 16000, 48000]),
    start=st.integers(0, 2**32 - 1),
    duration=st.integers(40, 300),
    gap=st.integers(30, 200),
    lose=st.integers(0, 7),
)
def test_sender_to_receiver(
    tones: str, rate: int, start: int, duration: int, gap: int, lose: int
) -> None:
    """Whatever the timings and clock (wrapping timestamps included), and losing one packet
    in every `lose`, the receiver reports exactly the digits sent, in order."""
    sender = DtmfSender()
    sender.insert(tones, duration, gap)
    receiver = DtmfReceiver()
    got = []
    count = 0
    for ts, step in run_sender(sender, rate, len(tones) * ((duration + gap) // 20 + 8), start):
        assert ts is not None
        if step.payload is None:
            continue
        count += 1
        if lose and count % (lose + 7) == 0 and not decode_event(step.payload).end:
            continue  # lost in transit
        digit = receiver.feed(step.payload, step.timestamp, ssrc=1)
        if digit:
            got.append(digit)
    assert "".join(got) == tones
    assert not sender.busy or sender.cancel() == ()


# -- tones -----------------------------------------------------------------------------------


def test_goertzel_tells_1000_from_440() -> None:
    pcm = sine_wave(1000, 0.2, 16000, amplitude=0.3)
    levels = tone_levels(pcm, 16000, [440, 1000, 2000])
    assert levels[1000] > 0.95
    assert levels[440] < 0.01 and levels[2000] < 0.01
    assert detect_tone(pcm, 16000, [440, 1000]) == 1000
    assert detect_tone(bytes(3200), 16000, [440, 1000]) is None
    assert detect_tone(sine_wave(440, 0.1, 8000), 8000, [440, 1000]) == 440
    # two tones of equal power: each holds half of the energy
    high, low = (pcm_samples(sine_wave(f, 0.2, 16000, 0.2)) for f in (1000, 440))
    both = [a + b for a, b in zip(high, low, strict=True)]
    assert 0.4 < goertzel_ratio(both, 16000, 1000) < 0.6


def test_rms_and_chunks() -> None:
    assert math.isclose(
        rms(sine_wave(1000, 0.1, 48000, amplitude=0.5)), 0.5 / math.sqrt(2), rel_tol=0.01
    )
    assert rms(b"") == 0.0
    assert b"".join(sine_chunks(700, 0.1, 8000, 0.4, chunk=0.013)) == sine_wave(700, 0.1, 8000, 0.4)
    with pytest.raises(ValueError):
        sine_wave(5000, 0.1, 8000)
    with pytest.raises(ValueError):
        sine_wave(100, 0.1, 8000, amplitude=2)


@given(st.floats(200, 3000), st.sampled_from([8000, 16000, 48000]))
def test_detects_any_tone_among_far_candidates(freq: float, rate: int) -> None:
    pcm = sine_wave(freq, 0.1, rate, amplitude=0.25)
    assert detect_tone(pcm, rate, [freq, freq * 1.5, freq / 1.7]) == freq


# -- lazy import -----------------------------------------------------------------------------


def test_pure_modules_and_package_import_do_not_load_aiortc() -> None:
    code = (
        "import sys, webphone, webphone.media, webphone.media.dtmf, webphone.media.tone, "
        "webphone.media.rtp, webphone.media.errors, "
        "webphone.sip.sdp, webphone.sip.rc\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('aiortc', 'av', 'aioice'))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- RtpPath: the per-call RTP path (no aiortc needed) ---------------------------------------

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96 0 110 126\r\n"
    "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n"
)
ANSWER_PCMU = (
    "v=0\r\no=- 2 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 0 126\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n"
)


def make_path(may_send: bool = True) -> tuple[RtpPath, list[str]]:
    digits: list[str] = []
    path = RtpPath(lambda: 0xDEADBEEF, lambda: may_send, lambda: True, digits.append)
    path.configure(OFFER, ANSWER_PCMU, ANSWER_PCMU)  # we offered, they answered PCMU
    return path, digits


async def test_rtp_path_sends_dtmf_on_our_stream() -> None:
    path, _ = make_path()
    assert path.can_send_dtmf
    task = asyncio.ensure_future(path.send_dtmf("7", 0.04, 0.03, timeout=5))
    await asyncio.sleep(0)
    out = []
    for i in range(8):
        packet = rtp(pt=0, seq=100 + i, ts=8000 + 160 * i)
        out.append(path.outgoing(packet))
    await asyncio.wait_for(task, 1)
    headers = [parse_rtp_header(p) for p in out if p is not None]
    assert [h.payload_type for h in headers if h] == [126] * 4 + [0] * 4
    assert [h.sequence_number for h in headers if h] == list(range(100, 108))
    assert path.counters.dtmf_sent == 1
    assert path.outgoing(bytes([0x80, 200, 0, 6]) + bytes(24)) is not None  # RTCP untouched
    other = rtp(pt=0, ssrc=1)
    assert path.outgoing(other) == other  # not our SSRC


async def test_rtp_path_gates_and_times_out() -> None:
    path, _ = make_path(may_send=False)
    assert path.outgoing(rtp(pt=0)) is None
    assert path.counters.packets_held == 1
    with pytest.raises(MediaError, match="not sent in time"):
        await path.send_dtmf("1", 0.1, 0.07, timeout=0.05)
    path.configure(OFFER, OFFER, "v=0\r\nm=audio 9 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n")
    assert path.can_send_dtmf  # opus at 48000 with telephone-event/48000 offered
    path.configure(OFFER, ANSWER_PCMU.replace(" 126", ""), ANSWER_PCMU)
    with pytest.raises(DtmfNotAvailableError):
        await path.send_dtmf("1", 0.1, 0.07, None)
    closing, _ = make_path()
    pending = asyncio.ensure_future(closing.send_dtmf("12", 0.1, 0.07, timeout=5))
    await asyncio.sleep(0)
    closing.close()
    with pytest.raises(MediaError, match="closed"):
        await pending


def test_rtp_path_receives_events_once() -> None:
    path, digits = make_path()
    event = encode_event(3, False, 10, 160)
    end = encode_event(3, True, 10, 800)
    assert path.incoming(rtp(pt=126, ts=500, payload=event))
    for _ in range(3):
        assert path.incoming(rtp(pt=126, ts=500, payload=end))
    assert not path.incoming(rtp(pt=0, payload=b"audio"))  # audio goes on to aiortc
    assert not path.incoming(bytes([0x80, 201]) + bytes(30))  # RTCP too
    assert digits == ["3"]
    assert path.counters.dtmf_received == 1
