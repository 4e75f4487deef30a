"""The per-call RTP path that `RtpTap` feeds: RFC 4733 DTMF both ways, the send gate, and
incoming audio of the codecs decoded inline (handed to `on_audio`, see `webphone.media.receive`).

Pure except for asyncio futures (no aiortc import): `RtpPath.outgoing(data)` and
`RtpPath.incoming(data)` are what `webphone.media._hooks.RtpTap` calls for every RTP/RTCP
packet of the call. The SDP of the last offer/answer tells it which payload types carry
telephone-event and at which clock rate the audio codecs run (`configure`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ..sip.sdp import audio_codecs, telephone_events
from .dtmf import (
    DtmfReceiver,
    DtmfSender,
    RtpHeader,
    is_rtcp,
    parse_rtp_header,
    rewrite_rtp,
)
from .errors import DtmfNotAvailableError, MediaError

__all__ = ["RtpCounters", "RtpPath"]

_NOT_AUDIO = {"telephone-event", "cn", "red", "rtx", "ulpfec"}


@dataclass
class RtpCounters:
    packets_held: int = 0
    dtmf_sent: int = 0
    dtmf_received: int = 0


class RtpPath:
    """DTMF sender/receiver and hold gate for one call's RTP stream.

    ssrc: our sender's SSRC (a callable: read when packets flow); may_send / may_receive: the
    negotiated direction allows it now; on_digit: called once per received DTMF event;
    on_audio(header, payload): a received audio packet of a payload type in `audio_receive`.
    """

    def __init__(
        self,
        ssrc: Callable[[], int | None],
        may_send: Callable[[], bool],
        may_receive: Callable[[], bool],
        on_digit: Callable[[str], None],
        on_audio: Callable[[RtpHeader, bytes], None] | None = None,
    ) -> None:
        self._ssrc = ssrc
        self._may_send = may_send
        self._may_receive = may_receive
        self._on_digit = on_digit
        self._on_audio = on_audio
        self.audio_receive: frozenset[int] = frozenset()
        self.send_codec: tuple[str, int] | None = None
        self.counters = RtpCounters()
        self._pt_rates: dict[int, int] = {}
        self._te_send: dict[int, int] = {}
        self._te_receive: set[int] = set()
        self._send_rate: int | None = None
        self._sender = DtmfSender()
        self._receiver = DtmfReceiver()
        self._waiters: dict[int, tuple[asyncio.Future[None], int]] = {}

    def configure(self, local_sdp: str, remote_sdp: str, answer_sdp: str) -> None:
        """Learn payload types from the SDPs of a completed offer/answer. The numbers are the
        same on both sides (RFC 3264 §6.1); we send with the ones the remote SDP lists."""
        self._pt_rates = {c.payload_type: c.clock_rate for c in audio_codecs(local_sdp)}
        self._pt_rates.update({c.payload_type: c.clock_rate for c in audio_codecs(remote_sdp)})
        self._te_send = telephone_events(remote_sdp)
        self._te_receive = set(telephone_events(local_sdp).values()) | set(self._te_send.values())
        # aiortc sends with the first codec of the answer (it orders its own answer, and as an
        # offerer takes the answer's order)
        self.send_codec = next(
            ((c.name, c.clock_rate) for c in audio_codecs(answer_sdp)
             if c.name.lower() not in _NOT_AUDIO),
            None,
        )
        self._send_rate = None if self.send_codec is None else self.send_codec[1]

    def received_codecs(self, local_sdp: str, remote_sdp: str) -> dict[int, tuple[str, int]]:
        """payload type -> (codec name, clock rate) of the audio codecs we may receive."""
        found = {c.payload_type: (c.name, c.clock_rate) for c in audio_codecs(remote_sdp)}
        found.update({c.payload_type: (c.name, c.clock_rate) for c in audio_codecs(local_sdp)})
        return {pt: c for pt, c in found.items() if c[0].lower() not in _NOT_AUDIO}

    @property
    def dtmf_payload_type(self) -> int | None:
        """The telephone-event payload type we send DTMF with (None: DTMF cannot be sent)."""
        return None if self._send_rate is None else self._te_send.get(self._send_rate)

    @property
    def can_send_dtmf(self) -> bool:
        return self._send_rate is not None and self._send_rate in self._te_send

    async def send_dtmf(
        self, tones: str, duration: float, gap: float, timeout: float | None
    ) -> None:
        if not self.can_send_dtmf:
            raise DtmfNotAvailableError(
                "the far end did not negotiate telephone-event at the clock rate of the audio "
                f"codec in use ({self._send_rate} Hz; its telephone-event rates: "
                f"{sorted(self._te_send)})"
            )
        try:
            batch = self._sender.insert(tones, round(duration * 1000), round(gap * 1000))
        except ValueError as exc:
            raise MediaError(str(exc)) from None
        digits = sum(1 for char in tones if char != ",")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[batch] = (future, digits)
        if timeout is None:
            timeout = len(tones) * (duration + gap + 0.06) + tones.count(",") * 2.0 + 2.0
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            why = "DTMF not sent in time: no RTP is flowing (not connected, or on hold?)"
            self._fail(self._sender.cancel(), why)
            self._fail((batch,), why)
            await future

    def close(self) -> None:
        self._fail(self._sender.reset(), "media closed")
        self._fail(tuple(self._waiters), "media closed")

    def _fail(self, batches: tuple[int, ...], why: str) -> None:
        for batch in batches:
            waiter = self._waiters.pop(batch, None)
            if waiter is not None and not waiter[0].done():
                waiter[0].set_exception(MediaError(why))

    def outgoing(self, data: bytes) -> bytes | None:
        """Our packet about to be sent: as is, rewritten to a telephone-event, or None."""
        if is_rtcp(data):
            return data
        header = parse_rtp_header(data)
        if header is None or header.ssrc != self._ssrc():
            return data
        if not self._may_send():
            self.counters.packets_held += 1
            return None
        rate = self._pt_rates.get(header.payload_type)
        if rate is None:
            return data
        te_pt = self._te_send.get(rate)
        if te_pt is None:
            if self._sender.busy:
                self._fail(self._sender.reset(), f"no telephone-event at {rate} Hz")
            return data
        step = self._sender.poll(header.timestamp, rate)
        for batch in step.finished:
            waiter = self._waiters.pop(batch, None)
            if waiter is not None:
                self.counters.dtmf_sent += waiter[1]
                if not waiter[0].done():
                    waiter[0].set_result(None)
        if step.payload is None:
            return data
        return rewrite_rtp(data, te_pt, step.marker, step.timestamp, step.payload)

    def incoming(self, data: bytes) -> bool:
        """A received packet: True when it was a telephone-event or audio we decode (consumed
        here)."""
        if len(data) < 12 or is_rtcp(data):
            return False
        payload_type = data[1] & 0x7F
        if payload_type in self.audio_receive and self._on_audio is not None:
            return self._audio(data)
        if payload_type not in self._te_receive:
            return False
        header = parse_rtp_header(data)
        if header is None or not self._may_receive():
            return True
        payload = data[header.payload_offset : header.payload_end]
        digit = self._receiver.feed(payload, header.timestamp, header.ssrc)
        if digit is not None:
            self.counters.dtmf_received += 1
            self._on_digit(digit)
        return True

    def _audio(self, data: bytes) -> bool:
        header = parse_rtp_header(data)
        if header is None:
            return True  # malformed: nobody could decode it
        if self._may_receive() and self._on_audio is not None:
            self._on_audio(header, data[header.payload_offset : header.payload_end])
        return True
