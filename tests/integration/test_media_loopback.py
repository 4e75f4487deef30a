"""Two MediaSessions in one process over 127.0.0.1 (no SIP): real ICE, DTLS-SRTP, opus/PCMU,
tones detected by frequency, mute, hold by renegotiation, RFC 4733 DTMF, bounded receiving.

Every wait has a deadline; silence and absence are judged over a counted number of packets or
frames, never after a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from support.wait import wait_until
from webphone.media import (
    AudioStream,
    DtmfNotAvailableError,
    MediaError,
    MediaSession,
    detect_tone,
    ice_servers,
    rms,
    sine_wave,
    tone_levels,
)
from webphone.sip.sdp import audio_codecs, media_protocol, telephone_events

pytestmark = pytest.mark.timeout(60)

RATE = 16000  # receive_sample_rate of both sides
WINDOW = 10  # frames (200 ms) per analysis window
CANDIDATES = [440, 700, 1000, 1500]


async def connect(a: MediaSession, b: MediaSession) -> None:
    """Offer from a, answer from b, applied by a."""
    answer = await b.create_answer(await a.create_offer())
    await a.apply_answer(answer)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[MediaSession, MediaSession]]:
    a = MediaSession(loopback_only=True, receive_sample_rate=RATE)
    b = MediaSession(loopback_only=True, receive_sample_rate=RATE)
    try:
        await connect(a, b)
        await asyncio.gather(a.wait_connected(5), b.wait_connected(5))
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


async def window(stream: AudioStream, frames: int = WINDOW) -> bytes:
    pcm = b""
    for _ in range(frames):
        pcm += (await anext(stream)).pcm
    return pcm


async def wait_for_tone(stream: AudioStream, freq: float, timeout: float = 5.0) -> bytes:
    """Read windows until `freq` dominates one; returns that window's PCM."""
    async with asyncio.timeout(timeout):
        while True:
            pcm = await window(stream)
            if detect_tone(pcm, RATE, CANDIDATES) == freq:
                return pcm


async def wait_for_silence(stream: AudioStream, timeout: float = 5.0) -> float:
    async with asyncio.timeout(timeout):
        while True:
            level = rms(await window(stream, 5))
            if level < 0.003:
                return level


@contextlib.asynccontextmanager
async def playing(play: Awaitable[bool]) -> AsyncIterator[asyncio.Task[bool]]:
    task = asyncio.ensure_future(play)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- tests -----------------------------------------------------------------------------------


async def test_loopback_only_offer_and_no_implicit_stun() -> None:
    assert ice_servers([]) == []
    assert [s.urls for s in ice_servers(["stun1.example.com:19302", "stun:x.example:3478"])] == [
        "stun:stun1.example.com:19302",
        "stun:x.example:3478",
    ]
    with pytest.raises(MediaError):
        ice_servers([":19302"])
    with_stun = MediaSession(stun_servers=["stun1.example.com:19302"])
    assert with_stun.ice_server_urls == ["stun:stun1.example.com:19302"]
    await with_stun.close()
    assert MediaSession(loopback_only=True, stun_servers=["a:1"]).ice_server_urls == []
    media = MediaSession(loopback_only=True)
    try:
        offer = await media.create_offer()
        candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" 127.0.0.1 " in line for line in candidates)
        assert telephone_events(offer) == {48000: 110, 8000: 126}
        assert media.ice_server_urls == []
        assert " typ srflx" not in offer
        again = await media.create_offer()
        assert again.splitlines()[1].split()[1:3] == [
            offer.splitlines()[1].split()[1],  # same session id
            str(int(offer.splitlines()[1].split()[2]) + 1),  # version + 1
        ]
    finally:
        await media.close()


async def test_tone_is_received_at_its_frequency_both_ways(
    pair: tuple[MediaSession, MediaSession],
) -> None:
    a, b = pair
    at_b, at_a = b.received_audio(), a.received_audio()
    started = time.monotonic()
    async with playing(a.play_tone(1000, 10)), playing(b.play_tone(440, 10)):
        await wait_for_tone(at_b, 1000)
        detected_after = time.monotonic() - started
        levels = tone_levels(await window(at_b, 25), RATE, [1000, 440])
        assert levels[1000] > 0.9, levels
        assert levels[440] < 0.01, levels
        await wait_for_tone(at_a, 440)
        reverse = tone_levels(await window(at_a, 25), RATE, [1000, 440])
        assert reverse[440] > 0.9 and reverse[1000] < 0.01, reverse
    latency = b.stats.first_frame_latency
    assert latency is not None and latency < 2.0
    print(
        f"\nfirst frame {latency * 1000:.0f} ms after answer; 1000 Hz detected after "
        f"{detected_after * 1000:.0f} ms; share at 1000 Hz {levels[1000]:.4f}, at 440 Hz "
        f"{levels[440]:.2e}"
    )


async def test_mute_sends_silence_and_unmute_resumes(
    pair: tuple[MediaSession, MediaSession],
) -> None:
    a, b = pair
    stream = b.received_audio()
    heard: list[float] = []
    b.on("audio", lambda frame: heard.append(rms(frame.pcm)))  # the callback way
    async with playing(a.play_tone(1000, 15)):
        await wait_for_tone(stream, 1000)
        assert heard and max(heard) > 0.1
        a.mute()
        assert a.muted
        level = await wait_for_silence(stream)
        frames = b.stats.frames_received
        assert rms(await window(stream, 10)) < 0.003  # and it stays silent
        assert b.stats.frames_received > frames  # RTP still flows while muted
        a.unmute()
        await wait_for_tone(stream, 1000)
    print(f"\nmuted level {level:.5f} of full scale")


async def renegotiate(a: MediaSession, b: MediaSession, direction: str) -> None:
    a.set_direction(direction)
    await connect(a, b)


async def wait_frames_produced(media: MediaSession, count: int) -> None:
    """Until `media`'s outgoing track produced `count` more 20 ms frames (sent or held)."""
    target = media.stats.frames_sent + count
    await wait_until(lambda: media.stats.frames_sent >= target, 5, message="frames produced")


async def test_hold_stops_audio_and_unhold_resumes(
    pair: tuple[MediaSession, MediaSession],
) -> None:
    a, b = pair
    at_b, at_a = b.received_audio(), a.received_audio()
    async with playing(a.play_tone(1000, 20)), playing(b.play_tone(440, 20)):
        await wait_for_tone(at_b, 1000)
        await wait_for_tone(at_a, 440)

        # RingCentral-style hold: we offer sendonly, so only the far end stops sending
        await renegotiate(a, b, "sendonly")
        assert (a.negotiated_direction, b.negotiated_direction) == ("sendonly", "recvonly")
        await wait_frames_produced(b, 3)  # packets in flight are through
        received = a.stats.frames_received
        await wait_frames_produced(b, 15)  # 300 ms more of b's audio held back
        assert a.stats.frames_received - received <= 1
        await wait_for_tone(at_b, 1000)  # a -> b still flows

        await renegotiate(a, b, "inactive")
        assert (a.negotiated_direction, b.negotiated_direction) == ("inactive", "inactive")
        await wait_frames_produced(a, 3)
        received = b.stats.frames_received
        await wait_frames_produced(a, 15)
        assert b.stats.frames_received - received <= 1

        await renegotiate(a, b, "sendrecv")
        assert (a.negotiated_direction, b.negotiated_direction) == ("sendrecv", "sendrecv")
        await wait_for_tone(at_b, 1000)
        await wait_for_tone(at_a, 440)


async def test_an_offer_of_the_peer_after_an_abandoned_re_offer(
    pair: tuple[MediaSession, MediaSession],
) -> None:
    """Our re-offer on the connection in use is never answered (a hold refused with 491, the
    peer re-offering at the same time): it is rolled back, so the peer's offer is answered on
    the same connection (no new endpoint) and the tones go on both ways."""
    a, b = pair
    at_b, at_a = b.received_audio(), a.received_audio()
    async with playing(a.play_tone(1000, 20)), playing(b.play_tone(440, 20)):
        await wait_for_tone(at_b, 1000)
        a.set_direction("sendonly")
        await a.create_offer()  # refused: never applied
        a.set_direction("sendrecv")
        await connect(b, a)  # b offers, a answers
        assert a.stats.endpoint_changes == 0 and b.stats.endpoint_changes == 0
        assert (a.negotiated_direction, b.negotiated_direction) == ("sendrecv", "sendrecv")
        await wait_for_tone(at_b, 1000)
        await wait_for_tone(at_a, 440)


async def test_an_offer_of_the_peer_after_an_abandoned_renewed_offer(
    pair: tuple[MediaSession, MediaSession],
) -> None:
    """Our offer from a new peer connection is never answered (the far party's re-offer after
    a media holder moved, refused while a newer INVITE was in progress): the peer's own offer
    is still answered (from a fresh connection: aiortc has no rollback) and the tones flow both
    ways again."""
    a, b = pair
    at_b, at_a = b.received_audio(), a.received_audio()
    async with playing(a.play_tone(1000, 20)), playing(b.play_tone(440, 20)):
        await wait_for_tone(at_b, 1000)
        await a.create_offer(renew=True)  # never delivered
        await connect(b, a)  # b offers, a answers
        assert a.stats.endpoint_changes == 2
        await wait_for_tone(at_b, 1000)
        await wait_for_tone(at_a, 440)


async def test_dtmf_arrives_in_order_once_each(pair: tuple[MediaSession, MediaSession]) -> None:
    a, b = pair
    got_b: list[str] = []
    got_a: list[str] = []
    b.on("dtmf", got_b.append)
    a.on("dtmf", got_a.append)
    assert a.can_send_dtmf and b.can_send_dtmf
    started = time.monotonic()
    arrival: list[float] = []
    b.on("dtmf", lambda _digit: arrival.append(time.monotonic() - started))
    async with playing(a.play_tone(1000, 10)):  # DTMF replaces audio packets while it lasts
        await a.send_dtmf("123#")
        sent = time.monotonic() - started
        await wait_until(lambda: len(got_b) >= 4, 3, message="4 digits at b")
    assert got_b == ["1", "2", "3", "#"]
    assert a.stats.dtmf_sent == 4 and b.stats.dtmf_received == 4
    await b.send_dtmf("A*9", duration=0.06, gap=0.04)
    await wait_until(lambda: len(got_a) >= 3, 3, message="3 digits at a")
    assert got_a == ["A", "*", "9"]
    assert got_b == ["1", "2", "3", "#"]  # nothing extra from retransmitted end packets
    print(
        "\nDTMF '123#': send_dtmf returned after "
        f"{sent * 1000:.0f} ms; digits arrived at "
        + ", ".join(f"{t * 1000:.0f}" for t in arrival)
        + " ms"
    )


async def test_dtmf_over_pcmu_and_not_without_telephone_event() -> None:
    a = MediaSession(loopback_only=True, codecs=["PCMU"])
    b = MediaSession(loopback_only=True)
    try:
        with pytest.raises(DtmfNotAvailableError):
            await a.send_dtmf("1")  # nothing negotiated yet
        await connect(a, b)
        assert [c.name for c in audio_codecs(a.local_sdp or "")] == ["pcmu", "telephone-event"]
        assert telephone_events(b.local_sdp or "") == {8000: 126}
        await asyncio.gather(a.wait_connected(5), b.wait_connected(5))
        got: list[str] = []
        b.on("dtmf", got.append)
        await a.send_dtmf("0#")
        await wait_until(lambda: len(got) >= 2, 3, message="2 digits")
        assert got == ["0", "#"]
        with pytest.raises(MediaError):
            await a.send_dtmf("1x")
    finally:
        await asyncio.gather(a.close(), b.close())
    with pytest.raises(MediaError):
        await a.send_dtmf("1")


async def test_answer_prefers_a_codec_dtmf_can_use() -> None:
    """An offer with opus but telephone-event/8000 only (as RingCentral sends): the answer
    picks an 8 kHz-clock codec so that DTMF works."""
    a = MediaSession(loopback_only=True, telephone_event_payload_types={8000: 101})
    b = MediaSession(loopback_only=True)
    try:
        offer = await a.create_offer()
        assert telephone_events(offer) == {8000: 101}
        answer = await b.create_answer(offer)
        assert audio_codecs(answer)[0].clock_rate == 8000
        await a.apply_answer(answer)
        assert a.can_send_dtmf and b.can_send_dtmf
    finally:
        await asyncio.gather(a.close(), b.close())


# A real RingCentral INVITE's SDP (upstream fixture), its address moved to 127.0.0.1 so that
# the ICE checks this answer starts stay on this machine.
RC_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 7066956197903366029 7997658033229634982 IN IP4 127.0.0.1",
        "s=SmcSip",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 29768 RTP/SAVPF 109 111 18 0 8 9 96 101",
        "a=rtpmap:109 OPUS/16000",
        "a=fmtp:109 useinbandfec=1",
        "a=rtpmap:111 OPUS/48000/2",
        "a=fmtp:111 useinbandfec=1",
        "a=rtpmap:18 g729/8000",
        "a=rtpmap:0 pcmu/8000",
        "a=rtpmap:8 pcma/8000",
        "a=rtpmap:9 g722/8000",
        "a=rtpmap:96 ilbc/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=sendrecv",
        "a=rtcp:29769",
        "a=rtcp-mux",
        "a=setup:actpass",
        "a=fingerprint:sha-1 8E:C8:DB:21:CE:E5:F8:5A:F9:73:EC:08:B8:4D:5C:2A:96:BA:27:26",
        "a=ice-ufrag:mqlmHMAU",
        "a=ice-pwd:QTEEF1lt81VyKvJvEHhabIh9JZ",
        "a=candidate:Mjq5KtrBWhOTFixu 1 UDP 2130706431 127.0.0.1 29768 typ host",
        "",
    ]
)


async def test_answer_to_a_ringcentral_offer() -> None:
    media = MediaSession(loopback_only=True)
    try:
        answer = await media.create_answer(RC_OFFER)
    finally:
        await media.close()
    assert media_protocol(answer) == "RTP/SAVPF"  # the offer's proto
    codecs = audio_codecs(answer)
    assert (codecs[0].name, codecs[0].payload_type) == ("pcmu", 0)  # DTMF-capable first
    assert telephone_events(answer) == {8000: 101}
    assert "a=setup:active" in answer


async def test_slow_consumer_memory_stays_bounded(pair: tuple[MediaSession, MediaSession]) -> None:
    a, b = pair
    stream = b.received_audio(max_frames=5)
    start = b.stats.frames_received
    await wait_until(lambda: b.stats.frames_received >= start + 40, 5, message="40 frames")
    assert len(stream) <= 5 and stream.high_water <= 5
    assert stream.dropped >= 30
    frames = [await anext(stream) for _ in range(5)]  # the newest ones are there
    assert all(f.sample_rate == RATE and f.samples == RATE // 50 for f in frames)
    # a's side has no consumer at all: frames are decoded and discarded, nothing is kept
    await wait_until(lambda: a.stats.frames_discarded >= 40, 5, message="discarded at a")
    assert a.stats.frames_discarded == a.stats.frames_received
    stream.close()
    assert [f async for f in stream] == []


async def test_pcm_source_wav_file_and_recording(
    pair: tuple[MediaSession, MediaSession], tmp_path: Path
) -> None:
    a, b = pair

    async def source() -> AsyncIterator[bytes]:  # 8 kHz PCM in odd-sized chunks
        pcm = sine_wave(700, 1.5, 8000, amplitude=0.4)
        for i in range(0, len(pcm), 333):
            yield pcm[i : i + 333]

    stream = b.received_audio()
    async with playing(a.play_pcm(source(), 8000)) as task:
        await wait_for_tone(stream, 700)
        assert await asyncio.wait_for(task, 5) is True  # played to the end

    wav_in = tmp_path / "in.wav"
    with wave.open(str(wav_in), "wb") as out:  # 16 kHz stereo
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        mono = sine_wave(1500, 2.0, 16000, amplitude=0.4)
        out.writeframes(b"".join(mono[i : i + 2] * 2 for i in range(0, len(mono), 2)))
    recorded = tmp_path / "far-end.wav"
    async with playing(a.play_wav(wav_in)):
        await wait_for_tone(stream, 1500)
        b.start_wav_recording(recorded)
        await window(stream, 25)
        assert b.stop_wav_recording() == recorded
    with wave.open(str(recorded), "rb") as rec:
        assert (rec.getnchannels(), rec.getframerate()) == (1, RATE)
        pcm = rec.readframes(rec.getnframes())
    assert len(pcm) >= RATE * 2 * 0.4
    assert detect_tone(pcm, RATE, CANDIDATES) == 1500

    with pytest.raises(MediaError):
        await a.play_wav(tmp_path / "missing.wav")
    interrupted = asyncio.ensure_future(a.play_tone(440, 5))
    await wait_until(lambda: a.playing, 2)
    a.stop_playback()
    assert await asyncio.wait_for(interrupted, 2) is False


async def test_bad_input_and_closed_session() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b""

    media = MediaSession(loopback_only=True)
    with pytest.raises(MediaError, match="no \\(accepted\\) m=audio"):
        await media.create_answer("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")
    with pytest.raises(MediaError, match="invalid media direction"):
        media.set_direction("sideways")
    for bad in ((0, 1), (30000, 1), (440, -1)):
        with pytest.raises(MediaError, match="bad tone"):
            await media.play_tone(*bad)
    with pytest.raises(MediaError, match="unsupported PCM"):
        await media.play_pcm(source(), 8000, channels=3)
    with pytest.raises(MediaError, match="unknown audio codec"):
        MediaSession(codecs=["speex"])
    with pytest.raises(MediaError):
        await media.apply_answer("garbage")
    await media.close()
    await media.close()  # idempotent
    assert media.closed
    with pytest.raises(MediaError, match="closed"):
        await media.create_offer()
    assert [f async for f in media.received_audio()] == []
