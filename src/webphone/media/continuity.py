"""The continuity record of a call's media: what a new process needs to take the media over.

`MediaSession.continuity()` writes it; `MediaSession.resume(record)` reads it in another
process (issue #11 item 3: the media holder died). It is JSON-only and versioned, and it holds
no secret: the DTLS private key never leaves its process, and a new holder always makes a new
certificate (a reused one never yields a new DTLS session with Chromium,
docs/dtls-roles.md). Pure: no aiortc here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..sip.sdp import (
    DIRECTIONS,
    Direction,
    SdpError,
    audio_codecs,
    extmap_ids,
    media_ids,
    parse_origin,
    telephone_events,
)
from .errors import MediaError

__all__ = ["RECORD_VERSION", "MediaContinuity", "continuity_record"]

RECORD_VERSION = 1
"""Bumped when a field changes meaning; `MediaContinuity.from_record` refuses other versions."""

MAX_SDP = 64 * 1024  # the group protocol's bound on an SDP body


@dataclass(frozen=True, kw_only=True)
class MediaContinuity:
    """A validated continuity record (see `continuity_record` for the fields)."""

    local_sdp: str
    remote_sdp: str
    session_id: str
    origin_version: int
    direction: Direction
    muted: bool
    receive_sample_rate: int

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MediaContinuity:
        """Check a record from another process; `MediaError` naming the field that is wrong."""
        if not isinstance(record, Mapping):
            raise MediaError(f"media continuity record must be a JSON object, not {record!r:.60}")
        if record.get("version") != RECORD_VERSION:
            raise MediaError(
                f"media continuity record version {record.get('version')!r:.20} is not "
                f"{RECORD_VERSION}; the holder that wrote it runs another webphone version"
            )
        local, remote = _sdp(record, "local_sdp"), _sdp(record, "remote_sdp")
        try:
            origin = parse_origin(local)
        except SdpError as exc:
            raise MediaError(f"media continuity record: local_sdp: {exc}") from None
        direction = record.get("direction")
        if direction not in DIRECTIONS:
            raise MediaError(f"media continuity record: direction {direction!r:.20} is not one "
                             f"of {DIRECTIONS}")
        rate = record.get("receive_sample_rate")
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
            raise MediaError(f"media continuity record: receive_sample_rate {rate!r:.20} is not "
                             "an integer in 8000..48000")
        return cls(local_sdp=local, remote_sdp=remote, session_id=origin.session_id,
                   origin_version=origin.version, direction=direction,
                   muted=bool(record.get("muted")), receive_sample_rate=rate)


def _sdp(record: Mapping[str, Any], field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.startswith("v=0"):
        raise MediaError(f"media continuity record: {field} must be SDP text (v=0 ...), "
                         f"got {value!r:.40}")
    if len(value) > MAX_SDP:
        raise MediaError(f"media continuity record: {field} is {len(value)} characters, "
                         f"more than {MAX_SDP}")
    return value


def continuity_record(
    *, local_sdp: str, remote_sdp: str, direction: Direction, muted: bool,
    receive_sample_rate: int, dtmf_payload_type: int | None,
) -> dict[str, Any]:
    """The JSON record of one negotiated media session.

    `local_sdp`/`remote_sdp` are the authority (`resume` continues from them); the other
    fields are read out of them for whoever routes or shows the call without parsing SDP:
    the o= session id and version, each section's mid, the audio payload types
    ("pt": "name/rate[/channels]"), the RTP header extension ids, the telephone-event
    payload type, the direction we asked for (hold), mute and the receive sample rate.
    """
    origin = parse_origin(local_sdp)
    codecs = {
        str(c.payload_type): "/".join([c.encoding, str(c.clock_rate)]
                                      + ([str(c.channels)] if c.channels else []))
        for c in audio_codecs(remote_sdp)
    }
    return {
        "version": RECORD_VERSION,
        "local_sdp": local_sdp,
        "remote_sdp": remote_sdp,
        "session_id": origin.session_id,
        "origin_version": origin.version,
        "mids": media_ids(local_sdp),
        "payload_types": codecs,
        "extmap_ids": extmap_ids(remote_sdp),
        "telephone_events": {str(rate): pt for rate, pt in telephone_events(remote_sdp).items()},
        "dtmf_payload_type": dtmf_payload_type,
        "direction": direction,
        "muted": muted,
        "receive_sample_rate": receive_sample_rate,
    }
