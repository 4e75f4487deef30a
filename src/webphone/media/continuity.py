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

__all__ = ["RECORD_VERSION", "RESUME_GAP", "MediaContinuity", "claim_versions",
           "continuity_record"]

RECORD_VERSION = 1
"""Bumped when a field changes meaning; `MediaContinuity.from_record` refuses other versions."""

RESUME_GAP = 16
"""How far above a record's o= version a resumed session's first SDP goes (RFC 3264 §8: a
changed description MUST carry a higher version; a far party may take an equal one for "no
change" and keep the old media). A holder publishes its record after it sent an SDP, so one
that dies in between sent versions its record does not show; and a real adopting a call keeps
the old record published while it renews the media (`shared.adoption`): its answer in the ACK,
answers to the far party's re-offers meanwhile, one fallback offer: a handful. The far party
may thus have seen a few versions above the record's; 16 is well above that and costs nothing
(the version is a 64-bit number). The far party sees the version jump by the gap instead of by
one: RFC 8866 §5.2 asks only that it increase, receivers compare it for change (libre, the
stack of baresip, and aiortc do not read it at all), and only a crash makes the jump. Exact +1
would need the record published, its delivery confirmed, before every SDP is sent: a group
round trip before each re-INVITE and ACK."""

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
    versions_used: int  # the highest o= version a holder may have sent (>= the local SDP's)

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
        used = record.get("versions_used", origin.version)
        if not isinstance(used, int) or isinstance(used, bool) or used < 0:
            raise MediaError(f"media continuity record: versions_used {used!r:.20} is not a "
                             "non-negative integer")
        return cls(local_sdp=local, remote_sdp=remote, session_id=origin.session_id,
                   origin_version=origin.version, direction=direction,
                   muted=bool(record.get("muted")), receive_sample_rate=rate,
                   versions_used=max(used, origin.version))

    @property
    def resume_version(self) -> int:
        """The o= version a session resuming this record counts on from: its first SDP has
        the next one, above any version a holder may have sent (`RESUME_GAP`)."""
        return self.versions_used + RESUME_GAP


def claim_versions(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` as a process resuming it publishes it before its resumed session sends
    anything (a real adopting a call, `shared.adoption`): `versions_used` raised above every
    version that session may send before it publishes a record of its own (fewer than
    `RESUME_GAP` more), so that a successor resuming the claimed record, should the process
    die meanwhile, starts above them (RFC 3264 §8). `MediaError` names a bad field."""
    kept = MediaContinuity.from_record(record)
    return {**record, "versions_used": kept.resume_version + RESUME_GAP}


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
    (A record claimed by its resumer adds `versions_used`: `claim_versions`.)
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
