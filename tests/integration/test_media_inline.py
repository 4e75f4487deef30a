"""The lean media path: codecs inline in the event loop (tones checked by frequency after a real
encode/decode), the native resampler, `media.stats`, the `overloaded` event (media and phone),
and the aiortc internals the path relies on (they fail loudly here when aiortc changes)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from importlib.metadata import version

import av
import pytest

from support.sandbox_server import sandbox_users
from support.tones import heard
from webphone import SipInfo, WebPhone
from webphone.media import MediaSession, detect_tone
from webphone.media.audio import PcmConverter
from webphone.media.codec import FrameResampler, InlineDecoder, InlineEncoder
from webphone.media.tone import sine_chunks, sine_wave
from webphone.sandbox import Sandbox

pytestmark = pytest.mark.timeout(60)

RATE = 16000
CANDIDATES = [440, 700, 1000, 1500]


# -- the aiortc internals we use --------------------------------------------------------------


def test_the_aiortc_internals_of_the_media_path_are_still_there() -> None:
    """Fails loudly (instead of audio silently going missing) when an aiortc release changes
    what `webphone.media._hooks` and the inline codec path rely on; pyproject pins the range."""
    import aioice.ice
    from aiortc import RTCPeerConnection, rtcrtpsender
    from aiortc.codecs.g711 import PcmEncoder
    from aiortc.codecs.opus import OpusEncoder
    from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport

    major, minor = (int(x) for x in version("aiortc").split(".")[:2])
    assert (1, 9) <= (major, minor) < (1, 17), "aiortc outside the tested range: re-check hooks"
    assert list(inspect.signature(RTCDtlsTransport._send_rtp).parameters) == ["self", "data"]
    assert list(inspect.signature(RTCDtlsTransport._handle_rtp_data).parameters) == [
        "self", "data", "arrival_time_ms"]
    assert callable(RTCCertificate._create_ssl_context)
    # rollback_local_offer: the two members setLocalDescription sets for an offer
    pc_source = inspect.getsource(RTCPeerConnection.setLocalDescription)
    assert "self.__pendingLocalDescription = description" in pc_source
    assert 'self.__setSignalingState("have-local-offer")' in pc_source
    assert callable(RTCPeerConnection._RTCPeerConnection__setSignalingState)  # type: ignore[attr-defined]
    assert callable(aioice.ice.get_host_addresses)
    # a track may hand the sender encoded packets: it packs them (no executor, no level)
    source = inspect.getsource(rtcrtpsender.RTCRtpSender._next_encoded_frame)
    assert "isinstance(data, Frame)" in source and ".pack(data)" in source
    assert callable(OpusEncoder.pack) and callable(PcmEncoder.pack)


# -- inline codecs and the resampler ----------------------------------------------------------


@pytest.mark.parametrize("codec", ["opus", "PCMU", "PCMA"])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_inline_codecs_carry_a_tone_to_any_receive_rate(codec: str, rate: int) -> None:
    clock = 48000 if codec == "opus" else 8000
    encoder, decoder = InlineEncoder(codec, clock), InlineDecoder(codec, rate)
    pcm = b""
    for n, chunk in enumerate(sine_chunks(1000, 0.6, 48000, 0.4)):
        packet = encoder.encode(chunk, n * 960)
        assert packet is not None and packet.pts == n * clock // 50
        pcm += decoder.decode(bytes(packet))
    assert abs(len(pcm) - 2 * round(0.6 * rate)) <= 2 * rate // 50
    assert detect_tone(pcm[-2 * rate // 5:], rate, CANDIDATES) == 1000
    assert isinstance(decoder.decode(b""), bytes)  # an empty payload: no exception
    assert len(decoder.silence()) == 2 * rate // 50


@pytest.mark.parametrize(("layout", "rate_in", "rate_out"), [
    ("mono", 48000, 16000), ("mono", 48000, 8000), ("stereo", 48000, 16000),
    ("mono", 8000, 16000), ("mono", 8000, 48000), ("mono", 16000, 48000),
])
def test_the_frame_resampler_gives_one_frame_per_frame_and_keeps_the_tone(
    layout: str, rate_in: int, rate_out: int
) -> None:
    """Pins what `FrameResampler` relies on: FFmpeg's graph holds nothing back after the one
    pull per frame (else every frame would wait for the next one)."""
    resampler = FrameResampler(rate_out)
    channels = 2 if layout == "stereo" else 1
    mono = sine_wave(1000, 0.02, rate_in, 0.4)
    pcm = mono if channels == 1 else b"".join(mono[i:i + 2] * 2 for i in range(0, len(mono), 2))
    out = b""
    for n in range(50):
        frame = av.AudioFrame(format="s16", layout=layout, samples=rate_in // 50)
        frame.planes[0].update(pcm)
        frame.sample_rate = rate_in
        converted = resampler.resample(frame)
        assert converted is not None or n == 0
        if converted is not None:
            assert (converted.sample_rate, converted.layout.name) == (rate_out, "mono")
            out += bytes(converted.planes[0])[:2 * converted.samples]
        with pytest.raises(BlockingIOError):  # nothing left behind in the graph
            resampler._graph.pull()
    assert 50 * rate_out // 50 - rate_out // 50 <= len(out) // 2 <= 50 * rate_out // 50
    assert detect_tone(out[-2 * rate_out // 5:], rate_out, CANDIDATES) == 1000


def test_the_native_resampler_converts_chunk_by_chunk_keeping_the_tone() -> None:
    converter = PcmConverter(48000)
    source = sine_wave(700, 1.0, 44100, 0.4)
    stereo = b"".join(source[i:i + 2] * 2 for i in range(0, len(source), 2))
    out = b""
    for i in range(0, len(stereo), 4 * 4410):  # 100 ms chunks, state kept between them
        out += converter.convert_pcm(stereo[i:i + 4 * 4410], 44100, channels=2)
    out += converter.flush()
    assert abs(len(out) - 2 * 48000) <= 2 * 480
    assert detect_tone(out, 48000, CANDIDATES) == 700
    with pytest.raises(ValueError, match="mono or stereo"):
        converter.convert_pcm(b"\0" * 12, 8000, channels=3)


# -- sessions ---------------------------------------------------------------------------------


async def connect(a: MediaSession, b: MediaSession) -> None:
    answer = await b.create_answer(await a.create_offer())
    await a.apply_answer(answer)
    await asyncio.gather(a.wait_connected(5), b.wait_connected(5))


async def played_and_heard(a: MediaSession, b: MediaSession, freq: float) -> None:
    """a plays `freq` until b hears it (by frequency)."""
    stream = b.received_audio()
    player = asyncio.ensure_future(a.play_tone(freq, 5, 0.4))
    try:
        await heard(stream, freq)
    finally:
        player.cancel()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[MediaSession, MediaSession]]:
    a = MediaSession(loopback_only=True, receive_sample_rate=RATE, codecs=["PCMU"])
    b = MediaSession(loopback_only=True, receive_sample_rate=RATE, codecs=["PCMU"])
    try:
        await connect(a, b)
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_stats_count_frames_jitter_and_depth(
    pair: tuple[MediaSession, MediaSession],
) -> None:
    a, b = pair
    await played_and_heard(a, b, 700)
    stats = b.stats
    assert stats.frames_received >= 10 and stats.frames_sent >= 10
    assert stats.jitter_depth >= 2 and stats.jitter_ms >= 0
    assert stats.frames_late >= 0 and stats.frames_lost >= 0 and stats.frames_dropped >= 0
    assert a.stats.frames_sent >= stats.frames_received
    # packets decoded inline still count in aiortc's reception statistics (RTCP reports)
    report = await b.peer_connection.getTransceivers()[0].receiver.getStats()
    inbound = [s for s in report.values() if s.type == "inbound-rtp"]
    assert inbound and inbound[0].packetsReceived >= stats.frames_received - 5


async def test_a_lagging_loop_is_reported_as_overloaded(
    pair: tuple[MediaSession, MediaSession],
) -> None:
    a, _b = pair
    told: asyncio.Queue[dict[str, float]] = asyncio.Queue()
    a.on("overloaded", told.put_nowait)
    await asyncio.sleep(0)
    time.sleep(0.25)  # the stimulus: this event loop blocked for 250 ms (not synchronisation)
    reason = await asyncio.wait_for(told.get(), 5)
    assert reason["loop_lag_ms"] >= 40 or reason["frames_dropped"] > 0
    assert a.stats.loop_lag_ms >= 40 or a.stats.frames_dropped > 0


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test") as sandbox:
        yield sandbox


async def test_the_phone_says_overloaded_for_its_call(sb: Sandbox) -> None:
    async with WebPhone(SipInfo.from_dict(sb.sip_info("101")), instance_id="wp-ovl",
                        loopback_media=True) as phone:
        told: asyncio.Queue[tuple[object, dict[str, float]]] = asyncio.Queue()
        phone.on("overloaded", lambda session, reason: told.put_nowait((session, reason)))
        session = await phone.call("900")
        if session.state != "answered":
            await session.wait_for("answered", timeout=30)
        assert session.media is not None
        await session.media.wait_connected()
        time.sleep(0.25)  # the stimulus: the phone's event loop blocked for 250 ms
        who, reason = await asyncio.wait_for(told.get(), 5)
        assert who is session and reason["loop_lag_ms"] >= 40
        await session.hangup()


async def test_asking_for_the_audio_level_leaves_encoding_to_aiortc() -> None:
    a = MediaSession(loopback_only=True, receive_sample_rate=RATE, send_audio_level=True)
    b = MediaSession(loopback_only=True, receive_sample_rate=RATE)
    try:
        await connect(a, b)
        assert a._track.encoder is None and b._track.encoder is not None
        await played_and_heard(a, b, 1500)
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_codec_without_an_inline_path_still_goes_through_aiortc() -> None:
    a = MediaSession(loopback_only=True, receive_sample_rate=RATE, codecs=["G722"])
    b = MediaSession(loopback_only=True, receive_sample_rate=RATE, codecs=["G722"])
    try:
        await connect(a, b)
        assert a._track.encoder is None and not b._rtp.audio_receive
        await played_and_heard(a, b, 440)
        assert b.stats.frames_received > 0
    finally:
        await asyncio.gather(a.close(), b.close())
