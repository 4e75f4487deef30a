"""`MediaSession`: the audio of one call, one aiortc `RTCPeerConnection`.

Signalling stays outside: a call session asks for SDP (`create_offer`, `create_answer`),
applies the peer's (`apply_answer`) and carries both in SIP. Everything about audio is here:
ICE configuration (only the STUN servers given, never aiortc's Google default; optionally
loopback-only), playback of tones/WAV/PCM, received audio as a bounded stream, callback and/or
WAV file, mute, direction (hold) and RFC 4733 DTMF both ways.

Create it inside a running event loop; always `await media.close()`.

The module is longer than ~500 lines because it is the one owner of an aiortc peer connection
and keeps it consistent through offer/answer, hold, peer changes and close; what can live
without it does (`rtp`, `receive`, `jitter`, `codec`, `audio`, `load`, `_interop`, `_hooks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import wave
import weakref
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from .._events import EventEmitter
from ..sip.sdp import (
    DIRECTIONS,
    Direction,
    SdpError,
    add_telephone_events,
    audio_codecs,
    has_audio,
    keep_extmap_ids,
    keep_payload_types,
    media_ids,
    media_protocol,
    parse_origin,
    set_media_protocol,
    set_origin,
    telephone_events,
)
from ._hooks import RtpTap, allow_rsa_dtls, count_received, host_addresses, rollback_local_offer
from ._interop import (
    drop_empty_groups,
    fill_missing_mids,
    fingerprints,
    fix_answer_setup,
    keep_candidates,
    networks,
)
from ._remote_filter import ignore_remote_outside
from .audio import (
    SEND_RATE,
    OutgoingAudioTrack,
    PcmConverter,
    Playback,
    converted,
    tone_source,
    wav_chunks,
)
from .codec import INLINE_CODECS, InlineEncoder
from .continuity import MediaContinuity, continuity_record
from .dtmf import RtpHeader
from .errors import MediaError
from .load import Probe, monitor
from .receive import AudioReceiver
from .received import AudioFrame, AudioStream, WavRecorder
from .rtp import RtpPath

log = logging.getLogger("webphone.media")
#: seconds a peer connection gets to close (ICE, DTLS and SRTP teardown take milliseconds)
PC_CLOSE_TIMEOUT = 5.0

__all__ = ["MediaSession", "MediaStats", "ice_servers"]

DEFAULT_TELEPHONE_EVENTS: Mapping[int, int] = {48000: 110, 8000: 126}
"""Payload types we offer for telephone-event per clock rate (the numbers Chrome uses)."""


def ice_servers(stun_servers: Sequence[str]) -> list[RTCIceServer]:
    """`["host:port", ...]` (or `stun:` URLs) as aiortc ICE servers; empty when none, since
    aiortc's own default (Google's STUN server) must never be used implicitly."""
    servers = []
    for entry in stun_servers:
        url = entry if entry.startswith(("stun:", "stuns:")) else f"stun:{entry}"
        host = url.split(":", 1)[1]
        if not host or host.startswith(":"):
            raise MediaError(f"invalid STUN server {entry!r}; expected 'host:port'")
        servers.append(RTCIceServer(urls=url))
    return servers


def _codec_capabilities(names: Sequence[str]) -> list[Any]:
    """aiortc codec capabilities for codec names ("opus", "PCMU", ...), in that order."""
    capabilities = RTCRtpSender.getCapabilities("audio").codecs
    prefs = []
    for name in names:
        matches = [c for c in capabilities if c.mimeType.lower() == f"audio/{name.lower()}"]
        if not matches:
            known = [c.mimeType.split("/")[1] for c in capabilities]
            raise MediaError(f"unknown audio codec {name!r}; aiortc has {known}")
        prefs.extend(matches)
    return prefs


@dataclass
class MediaStats:
    """Counters of one media session (times are `loop.time()` values).

    Overload shows as `frames_dropped` (outgoing frames never sent: the event loop fell more
    than 100 ms behind), `frames_late` (received packets that came after the jitter buffer gave
    up their slot) and `loop_lag_ms`; the session then emits "overloaded".
    """

    frames_sent: int = 0  # 20 ms frames our outgoing track produced (sent, or held on hold)
    frames_received: int = 0  # decoded from the far end (a lost packet counts: as silence)
    frames_discarded: int = 0  # received, then thrown away (no consumer, or on hold)
    frames_dropped: int = 0  # outgoing frames skipped: the track fell behind real time
    frames_trimmed: int = 0  # live audio dropped unsent: it came in a burst (latency kept)
    frames_late: int = 0  # received after their slot in the jitter buffer: dropped
    frames_lost: int = 0  # never received (played as 20 ms of silence)
    send_lag_max_ms: float = 0.0  # the worst lateness of an outgoing frame
    jitter_ms: float = 0.0  # interarrival jitter of the received stream (RFC 3550 §6.4.1)
    jitter_depth: int = 0  # packets the jitter buffer holds now (2 = 40 ms, adapts to jitter)
    loop_lag_ms: float = 0.0  # the worst event-loop lag of the last second in this process
    packets_held: int = 0  # RTP dropped by our tap as the direction excludes sending (aiortc
    # 1.16+ already stops encoding then, so this stays 0 there; older aiortc needs the tap)
    dtmf_sent: int = 0  # digits whose end packets went out
    dtmf_received: int = 0
    endpoint_changes: int = 0  # new peer connections: a re-offer came from another endpoint
    answer_applied_at: float | None = None  # offer/answer completed (either side)
    connected_at: float | None = None
    first_frame_at: float | None = None

    @property
    def first_frame_latency(self) -> float | None:
        """Seconds from the completed offer/answer to the first decoded far-end frame."""
        if self.first_frame_at is None or self.answer_applied_at is None:
            return None
        return self.first_frame_at - self.answer_applied_at


class MediaSession(EventEmitter):
    """The audio of one call.

    Options:
      stun_servers: "host:port" strings (sip_info.stun_servers); none -> no STUN at all.
      loopback_only: gather only 127.0.0.1 host candidates (tests, a local SIP server);
        STUN servers are then ignored, and so are the peer's candidates outside loopback (no
        connectivity check ever leaves 127.0.0.0/8).
      ice_networks: the same restriction for other interfaces: "address/prefix" of local
        interfaces (e.g. ["10.77.0.1/30"], a test network namespace's veth); host candidates
        are gathered on these addresses only, no STUN, and the peer's candidates outside these
        networks are ignored.
      remote_networks: networks ("address/prefix") the peer's addresses must be in: its SDP
        candidates elsewhere are never checked, and its checks from elsewhere are ignored (no
        peer-reflexive candidate is learnt there). Default: the networks of loopback_only /
        ice_networks, else no restriction. Gathering and STUN are not affected.
      ice_gather_timeout: bound on candidate gathering in seconds (aioice itself gives up on
        an unanswered STUN server after 5 s and continues with host candidates).
      receive_sample_rate: rate of the PCM handed to programs (received_audio, "audio"
        callbacks, WAV recording); mono s16.
      codecs: preferred audio codecs in order, e.g. ["opus", "PCMU"]; others are not offered.
        None: aiortc's order (opus, G722, PCMU, PCMA).
      dtmf_codec_fallback: when answering an offer whose telephone-event clock rates do not
        match the codec we would pick (RingCentral offers opus/48000 with telephone-event/8000
        only), prefer a common codec whose rate matches, so DTMF can be sent.
      send_audio_level: put the RFC 6464 audio level in our RTP headers (for conference
        servers that pick active speakers by it). It costs ~3 ms of CPU per call-second: aiortc
        then encodes our audio itself (`webphone.media.codec` explains the inline path).

    Events (`on(event, handler)`): "dtmf" (digit: str), "audio" (AudioFrame),
    "connection_state" (state: str), "overloaded" (reason: dict, see `webphone.media.load`),
    "renegotiation_needed" () (see `apply_answer`), "closed" ().
    """

    def __init__(
        self,
        *,
        stun_servers: Sequence[str] = (),
        loopback_only: bool = False,
        ice_networks: Sequence[str] | None = None,
        remote_networks: Sequence[str] | None = None,
        ice_gather_timeout: float = 10.0,
        receive_sample_rate: int = 16000,
        codecs: Sequence[str] | None = None,
        dtmf_codec_fallback: bool = True,
        telephone_event_payload_types: Mapping[int, int] = DEFAULT_TELEPHONE_EVENTS,
        send_audio_level: bool = False,
    ) -> None:
        super().__init__()
        self.send_audio_level = send_audio_level
        self.loopback_only = loopback_only
        specs = ["127.0.0.1/8"] if loopback_only else list(ice_networks or [])
        try:
            self._ice_networks = networks(specs) if specs else None
            self._host_addresses = [str(ipaddress.ip_interface(x).ip) for x in specs] or None
        except ValueError as exc:
            raise MediaError(f"invalid ice_networks {ice_networks!r}: {exc}") from None
        try:
            self._remote_networks = (
                networks(remote_networks) if remote_networks is not None else self._ice_networks
            )
        except ValueError as exc:
            raise MediaError(f"invalid remote_networks {remote_networks!r}: {exc}") from None
        self.ice_gather_timeout = ice_gather_timeout
        self.receive_sample_rate = receive_sample_rate
        self.dtmf_codec_fallback = dtmf_codec_fallback
        self._stats = MediaStats()
        self._codec_prefs = None if codecs is None else _codec_capabilities(codecs)
        servers = [] if self._ice_networks is not None else ice_servers(stun_servers)
        allow_rsa_dtls()  # SIP peers with RSA certificates (baresip, ...): see _hooks.py
        self.ice_server_urls: list[str] = [str(server.urls) for server in servers]
        self._servers = servers
        self._track = OutgoingAudioTrack()
        self._pc, self._transceiver = self._new_peer_connection("sendrecv")
        self._playback = Playback(self._track)
        self._te_offer = dict(telephone_event_payload_types)
        self._direction: Direction = "sendrecv"
        self._lock = asyncio.Lock()
        self._closed = False
        self._local_sdp: str | None = None
        self._remote_sdp: str | None = None
        self._answer_sdp: str | None = None
        self._negotiated_sdp: str | None = None  # the peer's last SDP; kept across new pcs
        self._session_id: str | None = None
        self._version: int | None = None
        self._tap: RtpTap | None = None
        self._rtp = RtpPath(
            ssrc=lambda: getattr(self._transceiver.sender, "_ssrc", None),
            may_send=lambda: self._may("sendonly"),
            may_receive=lambda: self._may("recvonly"),
            on_digit=lambda digit: self.emit("dtmf", digit),
            on_audio=self._on_rtp_audio,
        )
        self._receiver = AudioReceiver(receive_sample_rate, self._on_pcm, self._wanted)
        self._probe = Probe(counters=self._load_counters, tell=self._overloaded)
        self._streams: weakref.WeakSet[AudioStream] = weakref.WeakSet()
        self._recorder: WavRecorder | None = None
        self._converter = PcmConverter(receive_sample_rate)
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._first_audio = asyncio.Event()
        self._first_audio_at = 0.0
        self._stale = False  # the far end moved while this peer connection stayed up

    @classmethod
    def resume(cls, record: Mapping[str, Any], **options: Any) -> MediaSession:
        """A new media session continuing another one's (`continuity()` of a session in any
        process, e.g. a media holder that died): issue #11 item 3.

        It keeps the session's SDP lineage (RFC 3264 §8: the o= session id with a version
        above any its holders may have sent, `continuity.RESUME_GAP`; §8.3.2 and RFC 8285:
        payload types and header extension ids; the mid where the far party offers it), the
        direction asked for (hold) and mute, and has its own new certificate and ICE
        credentials. Then, as the call layer decides:
        (a) the far party offers (a re-INVITE without SDP; its offer in the 200):
        `create_answer(offer)`, which answers `a=setup:active` to `actpass`, so we are the
        DTLS client and Chromium is back in 0.14-0.5 s; or
        (b) `create_offer()` (always `actpass`: Chromium refuses `active`, docs/dtls-roles.md)
        for a re-INVITE with SDP, then `apply_answer`.
        `wait_first_audio(timeout)` tells whether the far party is heard again; after (a)
        without audio, (b) with `create_offer(renew=True)` (a fresh endpoint) is the fallback.
        `options` are the constructor's (network restrictions, codecs, ...);
        `receive_sample_rate` comes from the record. `MediaError` names a bad record field.
        """
        kept = MediaContinuity.from_record(record)
        media = cls(receive_sample_rate=kept.receive_sample_rate, **options)
        # RFC 3264 §8: above any version the far party may have seen from the session's
        # holders, not only the record's (`RESUME_GAP`)
        media._session_id, media._version = kept.session_id, kept.resume_version
        media._negotiated_sdp = kept.remote_sdp
        media.set_direction(kept.direction)
        if kept.muted:
            media.mute()
        return media

    def continuity(self) -> dict[str, Any]:
        """The JSON record of this call's negotiated media for `MediaSession.resume` in
        another process (fields: `webphone.media.continuity.continuity_record`). No secret: the
        DTLS key stays here. `MediaError` before the first completed offer/answer."""
        local, remote = self._local_sdp, self._negotiated_sdp
        if local is None or remote is None or self._answer_sdp is None:
            raise MediaError("no continuity record before the first completed offer/answer")
        return continuity_record(
            local_sdp=local, remote_sdp=remote, direction=self._direction,
            muted=self.muted, receive_sample_rate=self.receive_sample_rate,
            dtmf_payload_type=self._rtp.dtmf_payload_type,
        )

    def _new_peer_connection(self, direction: str) -> tuple[RTCPeerConnection, Any]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._servers))
        transceiver = pc.addTransceiver(self._track, direction=direction)
        if self._remote_networks is not None:  # nor accept checks from elsewhere (prflx)
            ice = transceiver.receiver.transport.transport
            ignore_remote_outside(ice.iceGatherer._connection, self._remote_networks)
        if self._codec_prefs is not None:
            transceiver.setCodecPreferences(self._codec_prefs)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
        return pc, transceiver

    # -- properties --------------------------------------------------------------------------

    @property
    def peer_connection(self) -> RTCPeerConnection:
        """The aiortc peer connection (for stats or advanced use; do not renegotiate on it).
        A new one replaces it when a re-offer comes from another media endpoint."""
        return self._pc

    @property
    def stats(self) -> MediaStats:
        """Live counters (the same object every time)."""
        self._stats.frames_sent = self._track.frames_sent
        self._stats.packets_held = self._rtp.counters.packets_held
        self._stats.dtmf_sent = self._rtp.counters.dtmf_sent
        self._stats.dtmf_received = self._rtp.counters.dtmf_received
        self._stats.frames_dropped = self._track.frames_skipped
        self._stats.frames_trimmed = self._track.live_dropped
        self._stats.send_lag_max_ms = round(1000 * self._track.max_lag, 1)
        received = self._receiver.counters
        self._stats.frames_late = received.late
        self._stats.frames_lost = received.lost
        self._stats.jitter_ms = round(self._receiver.jitter_ms, 2)
        self._stats.jitter_depth = self._receiver.depth
        self._stats.loop_lag_ms = round(1000 * monitor().loop_lag, 1)
        return self._stats

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def local_sdp(self) -> str | None:
        """The last SDP we produced (offer or answer), exactly as returned."""
        return self._local_sdp

    @property
    def remote_sdp(self) -> str | None:
        return self._remote_sdp

    @property
    def origin_version(self) -> int | None:
        """The o= version of `local_sdp`; pass it to `sip.sdp.bump_origin_version` when
        editing SDP text by hand, so the versions keep increasing."""
        return self._version

    @property
    def direction(self) -> Direction:
        """The direction we ask for in our next offer or answer (`set_direction`)."""
        return self._direction

    @property
    def negotiated_direction(self) -> str | None:
        """Our side's direction after the last completed offer/answer (None before)."""
        current: str | None = self._transceiver.currentDirection
        return current

    @property
    def connection_state(self) -> str:
        state: str = self._pc.connectionState
        return state

    @property
    def muted(self) -> bool:
        return bool(self._track.muted)

    @property
    def playing(self) -> bool:
        return self._playback.playing

    @property
    def can_send_dtmf(self) -> bool:
        """Whether the negotiated SDP has telephone-event at the send codec's clock rate."""
        return self._rtp.can_send_dtmf

    # -- offer / answer ----------------------------------------------------------------------

    async def create_offer(self, ice_restart: bool = False, renew: bool = False) -> str:
        """A complete (non-trickle) SDP offer, telephone-event included.

        `ice_restart=True` is accepted for the upstream call pattern, but aiortc 1.x cannot
        restart ICE: the offer keeps the current ICE credentials (a plain re-offer).
        `renew=True` offers from a new peer connection (new certificate, ICE credentials and
        ports; same SDP lineage, track and listeners): the far end must then start afresh,
        which is how to reach a far party stuck on a dead media holder.
        """
        async with self._lock:
            self._check_open()
            if ice_restart and self._local_sdp is not None:
                log.debug("ICE restart requested; aiortc cannot restart ICE, sending a re-offer")
            # the peer closed DTLS, or moved without our connection noticing: start afresh
            if renew or self._stale or self._pc.signalingState == "closed":
                await self._renew_peer_connection()
            self._transceiver.direction = self._direction
            await self._set_local(await self._pc.createOffer())
            # aiortc numbers header extensions and payload types afresh in every offer: keep
            # the session's (RFC 8285 §6, RFC 3264 §8.3.2; Chrome refuses moved extension ids)
            sdp = keep_extmap_ids(self._local_description(), self._negotiated_sdp)
            rates = {codec.clock_rate for codec in audio_codecs(sdp)}
            sdp = add_telephone_events(
                sdp, {rate: pt for rate, pt in self._te_offer.items() if rate in rates}
            )
            self._check_mid(sdp)
            return self._finish_local(keep_payload_types(sdp, self._negotiated_sdp))

    async def create_answer(self, offer_sdp: str) -> str:
        """Apply the peer's offer and return our complete SDP answer."""
        async with self._lock:
            self._check_open()
            if not has_audio(offer_sdp):
                raise MediaError("the SDP offer has no (accepted) m=audio section")
            if self._peer_changed(offer_sdp) or self._abandoned_offer():
                await self._renew_peer_connection()
            elif rollback_local_offer(self._pc):  # our re-offer was never answered
                log.info("an offer of ours was never answered; answering the peer's instead")
            if self.dtmf_codec_fallback:
                self._prefer_dtmf_codecs(offer_sdp)
            await self._set_remote(offer_sdp, "offer")
            self._transceiver.direction = self._direction
            await self._set_local(await self._pc.createAnswer())
            sdp = drop_empty_groups(self._local_description())  # offers without mids
            rates = {codec.clock_rate for codec in audio_codecs(sdp)}
            offered = telephone_events(offer_sdp)
            sdp = add_telephone_events(
                sdp, {rate: pt for rate, pt in offered.items() if rate in rates}
            )
            proto = media_protocol(offer_sdp)
            if proto is not None and "SAVP" in proto and proto != media_protocol(sdp):
                sdp = set_media_protocol(sdp, proto)  # the answer keeps the offer's proto
            self._answer_sdp = sdp
            sdp = self._finish_local(sdp)
            self._negotiated()
            return sdp

    async def apply_answer(self, answer_sdp: str) -> None:
        """Apply the peer's answer to our last offer.

        An answer with another certificate than the one this peer connection talks to (a new
        media holder answering the offer of a re-INVITE without SDP, after the old holder
        crashed) cannot be followed here: our offer already committed this connection's ICE
        credentials, ports and certificate, and aiortc restarts neither ICE nor DTLS on a live
        connection. The session then emits "renegotiation_needed": the call layer re-offers
        (`create_offer()` then comes from a new peer connection), or waits for the far end's
        offer, which is followed too.
        """
        async with self._lock:
            self._check_open()
            moved = self._peer_changed(answer_sdp) and self._remote_sdp is not None
            await self._set_remote(answer_sdp, "answer")
            self._answer_sdp = answer_sdp
            self._negotiated()
        if moved:
            log.info("the answer comes from a new media endpoint: a new offer is needed")
            self._stale = True
            self.emit("renegotiation_needed")

    def set_direction(self, direction: str) -> None:
        """The direction for our next offer/answer: "sendrecv", "sendonly" (hold, the
        RingCentral way), "recvonly" or "inactive". Takes effect through renegotiation:
        `create_offer()` -> peer -> `apply_answer()`. Until then nothing changes."""
        for known in DIRECTIONS:
            if direction == known:
                self._direction = known
                self._transceiver.direction = known
                return
        raise MediaError(f"invalid media direction {direction!r}; expected one of {DIRECTIONS}")

    # -- sending audio -----------------------------------------------------------------------

    def mute(self) -> None:
        """Send silence instead of our audio. RTP keeps flowing (so DTMF still works and the
        far end does not take the stream for dead); playback continues, unheard."""
        self._track.muted = True

    def unmute(self) -> None:
        self._track.muted = False

    async def play_tone(self, frequency: float, duration: float, volume: float = 0.5) -> bool:
        """Play a sine of `frequency` Hz for `duration` s at `volume` (fraction of full scale).
        Returns True when fully played, False when interrupted (another play, stop, close)."""
        self._check_open()
        if not 0 < frequency < SEND_RATE / 2 or duration < 0 or not 0 <= volume <= 1:
            raise MediaError(
                f"bad tone: {frequency} Hz (0..{SEND_RATE // 2}), {duration} s (>= 0), "
                f"volume {volume} (0..1)"
            )
        return await self._playback.play(tone_source(frequency, duration, volume))

    async def play_wav(self, path: str | Path) -> bool:
        """Play a 16-bit PCM WAV file (any rate, mono or stereo); True when fully played."""
        self._check_open()
        try:
            return await self._playback.play(wav_chunks(path))
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            raise MediaError(f"cannot play {path}: {exc}") from exc

    async def play_pcm(
        self, source: AsyncIterable[bytes], sample_rate: int, channels: int = 1,
        live: bool = False,
    ) -> bool:
        """Play s16le PCM chunks from an async iterator (any chunk size, `sample_rate` Hz,
        mono or stereo), resampled as needed; True when the source ended and was played.

        `live=True` for a source that produces in real time (another call's received audio,
        a stream): it then sets the pace, each 20 ms frame is sent as soon as it is complete,
        and at most 40 ms of it waits (older audio is dropped), so its latency stays what it
        was. The default paces the source: `source` may produce faster than real time (files,
        synthesized speech) and waits while ~200 ms are buffered."""
        self._check_open()
        if channels not in (1, 2) or sample_rate <= 0:
            raise MediaError(f"unsupported PCM: {sample_rate} Hz, {channels} channels")
        return await self._playback.play(converted(source, sample_rate, channels), live=live)

    def stop_playback(self) -> None:
        """Interrupt what is playing (its play_* call returns False)."""
        self._playback.stop()

    # -- receiving audio ---------------------------------------------------------------------

    def received_audio(self, max_frames: int = 50) -> AudioStream:
        """A new async iterator over far-end audio (`AudioFrame`: mono s16 PCM at
        `receive_sample_rate`, 20 ms each). At most `max_frames` wait in it: a slow consumer
        loses the oldest (counted in `stream.dropped`). It ends when the media closes."""
        stream = AudioStream(max_frames)
        if self._closed:
            stream.close()
        else:
            self._streams.add(stream)
        return stream

    def start_wav_recording(self, path: str | Path) -> None:
        """Record the far end to a 16-bit mono WAV file at `receive_sample_rate`."""
        self._check_open()
        self.stop_wav_recording()
        self._recorder = WavRecorder(path, self.receive_sample_rate)

    def stop_wav_recording(self) -> Path | None:
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return None
        recorder.close()
        return recorder.path

    # -- DTMF --------------------------------------------------------------------------------

    async def send_dtmf(
        self, tones: str, duration: float = 0.1, gap: float = 0.07, timeout: float | None = None
    ) -> None:
        """Send `tones` (0-9 * # A-D, ',' = 2 s pause) as RFC 4733 events; returns once the
        last end packet is out. `timeout` (default: the tones' own length + 2 s) bounds the
        wait for our RTP stream to carry them (none flows on hold)."""
        self._check_open()
        await self._rtp.send_dtmf(tones, duration, gap, timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until ICE and DTLS are up; `MediaError` on failure or timeout."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise MediaError(
                f"media not connected after {timeout} s (state {self.connection_state})"
            ) from None
        if self._closed or self.connection_state != "connected":
            raise MediaError(f"media connection {self.connection_state}")

    async def wait_first_audio(self, timeout: float) -> float:
        """Wait for the first far-end audio frame of the current peer connection (a new one
        starts a new wait); returns `loop.time()` of it. `MediaError` after `timeout` s
        saying what the connection reached, so the caller can re-offer or end the call."""
        try:
            await asyncio.wait_for(self._first_audio.wait(), timeout)
        except TimeoutError:
            raise MediaError(
                f"no audio from the far end within {timeout} s (connection "
                f"{self.connection_state}): it did not follow the new media endpoint"
            ) from None
        self._check_open()
        return self._first_audio_at

    async def close(self) -> None:
        """Stop everything and release the peer connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._playback.close()
        self._track.close()
        self.stop_wav_recording()
        for stream in list(self._streams):
            stream.close(drain=True)
        self._rtp.close()
        monitor().unwatch(self._probe)
        try:
            # aiortc's close() awaits a previous close() that was cancelled forever: bounded.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PC_CLOSE_TIMEOUT):
                    await self._pc.close()
        finally:
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            if self._tap is not None:
                self._tap.remove()
            self._connected.set()
            self.emit("closed")

    async def __aenter__(self) -> MediaSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals: negotiation --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise MediaError("media session is closed")

    def _prefer_dtmf_codecs(self, offer_sdp: str) -> None:
        te_rates = set(telephone_events(offer_sdp))
        if not te_rates:
            return
        ours = self._codec_prefs or [
            c for c in RTCRtpSender.getCapabilities("audio").codecs if c.name.lower() != "rtx"
        ]
        offered = [(c.name, c.clock_rate) for c in audio_codecs(offer_sdp)]

        def common(cap: Any) -> bool:
            return (cap.name.lower(), cap.clockRate) in offered

        if self._codec_prefs is not None:  # our preference order decides
            order = [cap for cap in ours if common(cap)]
        else:  # aiortc picks in the offer's order
            order = [
                cap for key in offered for cap in ours if (cap.name.lower(), cap.clockRate) == key
            ]
        if not order or order[0].clockRate in te_rates:
            return
        if not any(cap.clockRate in te_rates for cap in order):
            return
        prefs = [c for c in order if c.clockRate in te_rates] + [
            c for c in order if c.clockRate not in te_rates
        ]
        log.debug("preferring %s so that DTMF can be sent", prefs[0].mimeType)
        self._transceiver.setCodecPreferences(prefs)

    async def _set_local(self, description: Any) -> None:
        try:
            with host_addresses(self._host_addresses):
                await asyncio.wait_for(
                    self._pc.setLocalDescription(description), self.ice_gather_timeout
                )
        except TimeoutError:
            raise MediaError(
                f"ICE candidate gathering did not finish within {self.ice_gather_timeout} s"
            ) from None
        self._install_tap()

    async def _set_remote(self, sdp: str, kind: str) -> None:
        if self._remote_networks is not None:
            sdp = keep_candidates(sdp, self._remote_networks)  # never check anything elsewhere
        local = self._pc.localDescription
        if kind == "answer" and local is not None:
            sdp = fill_missing_mids(sdp, local.sdp)  # peers without RFC 5888 (baresip)
            sdp = fix_answer_setup(sdp, self._dtls_role())  # actpass answers (baresip)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except MediaError:
            raise
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError, OperationError
            raise MediaError(f"cannot apply the remote SDP {kind}: {exc}") from exc
        self._remote_sdp = self._negotiated_sdp = sdp
        self._install_tap()

    def _check_mid(self, offer_sdp: str) -> None:
        """Warn when a new peer connection's offer renames the session's audio mid.

        aiortc numbers the mids of a new connection "0", "1", ...; the far party's own name
        for the section (anything but "0" is rare: Chromium, Firefox, aiortc all start at "0")
        cannot be given back, since aiortc also sends its mid in the RTP header extension
        (RFC 8843 §15), so an SDP-only rename would make the far end drop our packets. An
        answer (`create_answer`) always keeps the offerer's mid.
        """
        kept = media_ids(self._negotiated_sdp or "")[:1]
        ours = media_ids(offer_sdp)[:1]
        if kept and kept[0] is not None and kept != ours:
            log.warning("our offer names the audio section mid %r where the session had %r; "
                        "a strict far party may refuse it (answer its offer instead)",
                        ours[0] if ours else None, kept[0])

    def _dtls_role(self) -> str | None:
        """Our DTLS role once known ("client"/"server"; aiortc keeps it on the transport)."""
        role = getattr(self._transceiver.receiver.transport, "_role", None)
        return role if role in ("client", "server") else None

    def _local_description(self) -> str:
        description = self._pc.localDescription
        if description is None:
            raise MediaError("aiortc produced no local description")
        sdp: str = description.sdp
        return sdp

    def _finish_local(self, sdp: str) -> str:
        """Keep one session id and an increasing version across our SDPs (RFC 3264 §8)."""
        try:
            origin = parse_origin(sdp)
            if self._session_id is None or self._version is None:
                self._session_id, self._version = origin.session_id, origin.version
            else:
                self._version += 1
                sdp = set_origin(sdp, self._version, self._session_id)
        except SdpError as exc:
            raise MediaError(f"aiortc produced SDP without a valid o= line: {exc}") from exc
        self._local_sdp = sdp
        return sdp

    def _negotiated(self) -> None:
        local, remote = self._local_sdp or "", self._remote_sdp or ""
        self._rtp.configure(local, remote, self._answer_sdp or "")
        self._inline_codecs(local, remote)
        if self._stats.answer_applied_at is None:
            self._stats.answer_applied_at = asyncio.get_running_loop().time()
            monitor().watch(self._probe)
        self._install_tap()

    def _inline_codecs(self, local: str, remote: str) -> None:
        """Encode and decode in the event loop what `webphone.media.codec` can (see there)."""
        send = self._rtp.send_codec
        encoder = self._track.encoder
        if send is None or send[0].lower() not in INLINE_CODECS or self.send_audio_level:
            self._track.encoder = None
        elif encoder is None or (encoder.name, encoder.clock_rate) != (send[0].lower(), send[1]):
            self._track.encoder = InlineEncoder(*send)
        received = {pt: codec for pt, codec in self._rtp.received_codecs(local, remote).items()
                    if codec[0].lower() in INLINE_CODECS}
        self._receiver.configure(received)
        self._rtp.audio_receive = frozenset(received)

    # -- internals: load ---------------------------------------------------------------------

    def _load_counters(self) -> tuple[int, int]:
        """(frames dropped, frames late) so far: what `webphone.media.load` watches."""
        return self._track.frames_skipped, self._receiver.counters.late

    def _overloaded(self, reason: dict[str, float]) -> None:
        """The process is not keeping up with this call's audio: emit "overloaded"."""
        if not self._closed:
            self.emit("overloaded", reason)

    # -- internals: the RTP tap --------------------------------------------------------------

    def _install_tap(self) -> None:
        transport = self._transceiver.sender.transport
        if self._tap is not None and self._tap.transport is transport:
            return
        if self._tap is not None:
            self._tap.remove()
        self._tap = RtpTap(transport, self._rtp.outgoing, self._rtp.incoming)
        self._tap.install()

    def _may(self, what: str) -> bool:
        current = self._transceiver.currentDirection
        return current is None or current in ("sendrecv", what)

    # -- internals: received audio -----------------------------------------------------------

    def _on_track(self, track: Any) -> None:
        if track.kind != "audio" or self._reader is not None:
            return
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        """Drain the remote track for as long as it lives: aiortc queues decoded frames without
        bound until someone calls recv(), so this runs whether or not anyone listens."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                pcm = self._converter.convert_frame(frame) if self._wanted() else None
            except Exception:  # never stop draining: aiortc would then queue without bound
                pcm = None
                log.exception("could not convert a received audio frame")
            self._on_pcm(pcm, loop.time())

    def _count_received(self, now: float) -> None:
        if not self._first_audio.is_set():
            self._first_audio_at = now
            self._first_audio.set()
        self._stats.frames_received += 1
        if self._stats.first_frame_at is None:
            self._stats.first_frame_at = now

    def _wanted(self) -> bool:
        """Does anybody take received audio now (and does the direction let it in)?"""
        return self._may("recvonly") and bool(
            self._streams or self._handlers.get("audio") or self._recorder
        )

    def _on_rtp_audio(self, header: RtpHeader, payload: bytes) -> None:
        """An audio packet of a codec we decode inline (`RtpPath` consumed it for us)."""
        clock_rate = self._receiver.feed(header.payload_type, header.sequence_number,
                                         header.timestamp, header.ssrc, payload,
                                         asyncio.get_running_loop().time())
        count_received(self._transceiver.receiver, header, clock_rate)  # RTCP reports

    def _on_pcm(self, pcm: bytes | None, now: float) -> None:
        """A received 20 ms frame: `pcm` None when `_wanted()` was false just before (both
        callers ask it first; it is not asked again per frame)."""
        self._count_received(now)
        if pcm is None:
            self._stats.frames_discarded += 1
            return
        if not pcm:  # a resampler still filling up
            return
        try:
            self._deliver(pcm, now)
        except Exception:  # one bad consumer must not stop the others, nor the RTP path
            self._stats.frames_discarded += 1
            log.exception("could not deliver a received audio frame")

    def _deliver(self, pcm: bytes, now: float) -> None:
        listeners = self._handlers.get("audio")
        audio = AudioFrame(pcm, self.receive_sample_rate, now)
        if self._recorder is not None:
            self._recorder.write(pcm)
        if self._streams:  # iterating an empty WeakSet still costs its guard
            for stream in list(self._streams):
                stream.put(audio)
        if listeners:
            self.emit("audio", audio)

    def _on_connection_state(self, pc: RTCPeerConnection) -> None:
        if pc is not self._pc:
            return  # a replaced peer connection winding down
        state = pc.connectionState
        if state == "connected" and self._stats.connected_at is None:
            self._stats.connected_at = asyncio.get_running_loop().time()
        if state in ("connected", "failed", "closed"):
            self._connected.set()
        self.emit("connection_state", state)

    # -- internals: a new far end ------------------------------------------------------------

    def _peer_changed(self, offer_sdp: str) -> bool:
        """True when `offer_sdp` comes from another media endpoint than the current one, or the
        current peer connection is gone.

        Servers that do not anchor media move a call to a new endpoint with a re-INVITE: a flip
        or park pickup on the sandbox, a B2BUA completing a transfer. The new endpoint has its
        own DTLS certificate (RFC 5763: its fingerprint), and the old one has usually closed its
        DTLS association, after which aiortc closes the whole peer connection by itself. aiortc
        can neither restart ICE nor start a second DTLS association on a connection, so the only
        way to follow is a new one.
        """
        if self._stale or self._pc.signalingState == "closed":
            return True
        if self._remote_sdp is None:
            return False
        theirs = fingerprints(offer_sdp)
        return bool(theirs) and theirs != fingerprints(self._remote_sdp)

    def _abandoned_offer(self) -> bool:
        """True when a new peer connection's offer was never answered (the re-INVITE that
        carried it was refused, e.g. while a newer INVITE of the peer was in progress): it sits
        in have-local-offer, where aiortc (no JSEP rollback, RFC 8829) refuses the peer's offer;
        nothing was ever connected through it, so a fresh one answers instead. (On a connection
        in use, the abandoned re-offer is rolled back: `_hooks.rollback_local_offer`.)"""
        return self._remote_sdp is None and self._pc.signalingState == "have-local-offer"

    async def _renew_peer_connection(self) -> None:
        """Replace the peer connection, keeping everything programs hold: the outgoing track
        (what is playing goes on), received-audio streams, recorder, callbacks, DTMF, the SDP
        session id and version sequence."""
        old, old_reader = self._pc, self._reader
        self._stats.endpoint_changes += 1
        log.info("media endpoint changed: new peer connection (#%d)", self._stats.endpoint_changes)
        if self._tap is not None:
            self._tap.remove()
            self._tap = None
        self._reader = None
        self._connected = asyncio.Event()
        self._first_audio.clear()  # cleared, not replaced: `wait_first_audio` goes on waiting
        self._stale = False
        self._pc, self._transceiver = self._new_peer_connection(self._direction)
        self._remote_sdp = self._answer_sdp = None
        try:
            await old.close()
        except Exception:  # the old one may be half gone already
            log.debug("closing the replaced peer connection failed", exc_info=True)
        if old_reader is not None:
            old_reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await old_reader
