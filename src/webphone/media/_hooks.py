"""Every patch webphone applies to aiortc/aioice, in one place, each with the reason for it.

1. **ICE on chosen addresses only** (`host_addresses`, `loopback_only`). aioice gathers host
   candidates from `aioice.ice.get_host_addresses()`, which deliberately skips 127.0.0.1. Tests
   and local servers need exactly 127.0.0.1 (never the machine's real interfaces), and tests in
   a network namespace need exactly their veth address. We wrap that module function once, and
   the wrapper answers the chosen addresses only while a context variable holds them;
   `MediaSession` sets it around its own `setLocalDescription()` (where aiortc gathers), and the
   gathering tasks inherit the context. So other peer connections in the same process, even
   gathering at the same moment, are unaffected.

2. **RTP tap** (`RtpTap`). aiortc has no RFC 4733 support: its sender owns the RTP sequence
   numbers and timestamps in a local loop, and its receiver drops (or tries to decode) payload
   types it did not negotiate. The narrowest place where both directions can be seen is the
   `RTCDtlsTransport` of the call: every outgoing RTP/RTCP packet goes through its
   `_send_rtp(data)` (before SRTP protection) and every incoming RTP packet through
   `_handle_rtp_data(data, arrival_time_ms)` (after SRTP unprotection, before routing to the
   receiver). The tap shadows those two methods *on the one transport instance* (instance
   attributes; the class is untouched), so it can
   - rewrite our outgoing audio packets into telephone-event packets (same SSRC and sequence
     numbers, see `webphone.media.dtmf`), or drop them while the negotiated direction does not
     include sending (aiortc keeps sending on hold otherwise);
   - take incoming telephone-event packets out before aiortc's router sees them.
   `remove()` deletes the instance attributes, which restores aiortc's own methods.

3. **DTLS with RSA peers** (`allow_rsa_dtls`). aiortc's DTLS context offers ECDSA cipher suites
   only (its own certificate is ECDSA). As DTLS *server* that is fine, but as *client* it cannot
   talk to a server whose certificate is RSA: baresip 1.0, and other SIP softphones and
   gateways, generate RSA certificates, and the handshake ends in "no shared cipher" (that is
   what happens when such a peer offers `a=setup:actpass` and aiortc answers `active`). We wrap
   `RTCCertificate._create_ssl_context` (where aiortc builds that context) once to append the
   ECDHE-RSA versions of the same suites. Forward secrecy and ciphers stay the same; which
   ones get used is still the server's choice, by its certificate type; the peer's certificate
   is still checked against the fingerprint in its SDP.

4. **Reception statistics of audio we decode ourselves** (`count_received`). The RTP tap takes
   the audio packets of the codecs `webphone.media.codec` decodes inline away from aiortc's
   receiver, which therefore would stop counting them, and its RTCP receiver reports (RFC 3550
   §6.4.2) and `getStats()` would go empty. `count_received` adds each such packet to the
   receiver's own per-SSRC `StreamStatistics` (its name-mangled `__remote_streams`), the one
   thing aiortc's `_handle_rtp_packet` does with a packet before decoding it, so reports and
   stats stay as before.

5. **Rollback of an unanswered local offer** (`rollback_local_offer`). JSEP (RFC 8829) lets an
   offer be rolled back; aiortc 1.x does not: a connection whose re-offer was never answered
   (its re-INVITE refused with 491 or 488, or our offer in a 2xx whose ACK never came) stays in
   "have-local-offer" and refuses every offer of the peer, so the next one (the peer's hold,
   a new media holder's offer) would be answered 488. An offer on a negotiated connection
   changes nothing the connection uses (ICE role, credentials and DTLS role were set by the
   first exchange; the codecs it lists are recomputed from the next remote offer): dropping
   the pending local description and setting the state back to "stable" (the two
   name-mangled members `setLocalDescription` sets) is the rollback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

log = logging.getLogger("webphone.media")

__all__ = ["RtpTap", "allow_rsa_dtls", "count_received", "host_addresses", "loopback_only",
           "rollback_local_offer"]

_HOST_ADDRESSES: ContextVar[tuple[str, ...] | None] = ContextVar(
    "webphone_host_addresses", default=None
)
_host_addresses_wrapped = False


def _wrap_host_addresses() -> None:
    global _host_addresses_wrapped
    if _host_addresses_wrapped:
        return
    import aioice.ice

    original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _HOST_ADDRESSES.get()
        if chosen is not None:
            return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        return original(use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = get_host_addresses
    _host_addresses_wrapped = True


@contextlib.contextmanager
def host_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Within this block (and tasks created in it), aioice gathers on `addresses` only;
    None: no restriction."""
    if addresses is None:
        yield
        return
    _wrap_host_addresses()
    token = _HOST_ADDRESSES.set(tuple(addresses))
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


@contextlib.contextmanager
def loopback_only(enabled: bool = True) -> Iterator[None]:
    """Within this block (and tasks created in it), aioice gathers only 127.0.0.1."""
    with host_addresses(["127.0.0.1"] if enabled else None):
        yield


#: aiortc's own list (1.x), then the same suites for RSA certificates
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)
_dtls_wrapped = False


def allow_rsa_dtls() -> None:
    """Let aiortc's DTLS also negotiate with peers whose certificate is RSA (idempotent)."""
    global _dtls_wrapped
    if _dtls_wrapped:
        return
    from aiortc.rtcdtlstransport import RTCCertificate

    original = getattr(RTCCertificate, "_create_ssl_context", None)
    if original is None:
        log.warning("aiortc has no RTCCertificate._create_ssl_context: RSA peers unsupported")
        _dtls_wrapped = True
        return

    def _create_ssl_context(self: Any, *args: Any, **kwargs: Any) -> Any:
        ctx = original(self, *args, **kwargs)
        ctx.set_cipher_list(DTLS_CIPHERS)
        return ctx

    RTCCertificate._create_ssl_context = _create_ssl_context  # type: ignore[method-assign]
    _dtls_wrapped = True


Outgoing = Callable[[bytes], "bytes | None"]
Incoming = Callable[[bytes], bool]


class RtpTap:
    """Shadows `_send_rtp` / `_handle_rtp_data` of one aiortc `RTCDtlsTransport`.

    `outgoing(data)` returns the bytes to send instead (or None to send nothing);
    `incoming(data)` returns True when it consumed the packet (aiortc never sees it).
    """

    def __init__(self, transport: Any, outgoing: Outgoing, incoming: Incoming) -> None:
        self.transport = transport
        self._outgoing = outgoing
        self._incoming = incoming
        self.installed = False

    @staticmethod
    def supported(transport: Any) -> bool:
        return callable(getattr(transport, "_send_rtp", None)) and callable(
            getattr(transport, "_handle_rtp_data", None)
        )

    def install(self) -> bool:
        """Install on the transport (idempotent); False when this aiortc lacks the hooks."""
        if self.installed:
            return True
        if not self.supported(self.transport):
            log.warning("aiortc transport has no _send_rtp/_handle_rtp_data: DTMF disabled")
            return False
        if isinstance(getattr(self.transport, "_webphone_tap", None), RtpTap):
            self.transport._webphone_tap.remove()
        send: Callable[[bytes], Awaitable[None]] = self.transport._send_rtp
        handle: Callable[..., Awaitable[None]] = self.transport._handle_rtp_data
        outgoing, incoming = self._outgoing, self._incoming

        async def _send_rtp(data: bytes) -> None:
            out = outgoing(data)
            if out is not None:
                await send(out)

        async def _handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
            if not incoming(data):
                await handle(data, arrival_time_ms=arrival_time_ms)

        self.transport._send_rtp = _send_rtp
        self.transport._handle_rtp_data = _handle_rtp_data
        self.transport._webphone_tap = self
        self.installed = True
        return True

    def remove(self) -> None:
        if not self.installed:
            return
        for name in ("_send_rtp", "_handle_rtp_data", "_webphone_tap"):
            self.transport.__dict__.pop(name, None)
        self.installed = False


def count_received(receiver: Any, packet: Any, clock_rate: int) -> None:
    """Count a packet (`.ssrc`, `.sequence_number`, `.timestamp`) in aiortc's reception
    statistics of `receiver` (an `RTCRtpReceiver`), as if aiortc had received it."""
    streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", None)
    if streams is None:
        return
    stats = streams.get(packet.ssrc)
    if stats is None:
        from aiortc.rtcrtpreceiver import StreamStatistics

        stats = streams[packet.ssrc] = StreamStatistics(clock_rate)
    stats.add(packet)


def rollback_local_offer(pc: Any) -> bool:
    """Roll `pc` (an `RTCPeerConnection` that completed an offer/answer before) back from
    "have-local-offer" to "stable" (see the module docstring); False if it was not there."""
    if pc.signalingState != "have-local-offer":
        return False
    pc._RTCPeerConnection__pendingLocalDescription = None
    pc._RTCPeerConnection__setSignalingState("stable")
    return True
