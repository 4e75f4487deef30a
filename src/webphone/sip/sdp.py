"""SDP text edits for hold/unhold and DTMF negotiation (pure: str in, str out).

Every function here edits SDP as *text*, line by line, and leaves each line it does not have to
change byte-identical (including its line ending): servers and peers diff re-offers, and the
upstream SDK's test "updates only the SDP origin version and direction" defends exactly this.
Nothing here parses SDP into a model and prints it back.

What is here:

- direction: `get_direction`, `set_direction` (every m= section, and the session level where
  a direction attribute is present there);
- origin: `parse_origin`, `bump_origin_version` (RFC 3264 §8: a re-offer carries the same
  session id and a higher version), `set_origin`;
- codecs: `has_audio`, `audio_codecs` (rtpmap, with RFC 3551 static payload types filled in),
  `telephone_events` (RFC 4733 payload type per clock rate), `add_telephone_events`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, cast

from ..errors import WebPhoneError

__all__ = [
    "DIRECTIONS",
    "Direction",
    "Origin",
    "Rtpmap",
    "SdpError",
    "add_telephone_events",
    "audio_codecs",
    "bump_origin_version",
    "get_direction",
    "has_audio",
    "media_protocol",
    "parse_origin",
    "reverse_direction",
    "set_direction",
    "set_media_protocol",
    "set_origin",
    "telephone_events",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

_DIRECTION_LINES = {f"a={d}" for d in DIRECTIONS}
_LINE_SPLIT = re.compile(r"(?<=\n)")
_ORIGIN = re.compile(r"^o=(\S+) (\d+) (\d+)((?: \S+)*)$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)(?:/(\d+))?\s*$")

# RFC 3551 table 4: static payload types a sender may use without an rtpmap line.
_STATIC_AUDIO: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    13: ("CN", 8000, 1),
    18: ("G729", 8000, 1),
}


class SdpError(WebPhoneError, ValueError):
    """SDP that lacks what an edit needs (an `o=` line, an audio section, ...)."""


@dataclass(frozen=True)
class Origin:
    """The `o=` line: `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`."""

    username: str
    session_id: str
    version: int
    rest: str  # " <nettype> <addrtype> <address>" exactly as written, leading space included


@dataclass(frozen=True)
class Rtpmap:
    """One payload format of an m= section: `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @property
    def name(self) -> str:
        """Lower-case encoding name (`opus`, `pcmu`, `telephone-event`, ...)."""
        return self.encoding.lower()


# -- line plumbing ---------------------------------------------------------------------------


def _lines(sdp: str) -> list[str]:
    """Split keeping each line's own terminator (CRLF, LF, or none for the last line)."""
    parts = _LINE_SPLIT.split(sdp)
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def _content(line: str) -> str:
    return line.rstrip("\r\n")


def _ending(line: str, fallback: str) -> str:
    content = _content(line)
    return line[len(content) :] or fallback


def _eol(lines: list[str]) -> str:
    for line in lines:
        if line.endswith("\r\n"):
            return "\r\n"
        if line.endswith("\n"):
            return "\n"
    return "\r\n"


def _sections(lines: list[str]) -> Iterator[tuple[int, int]]:
    """(start, end) index ranges: the session section first, then one per m= line."""
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    bounds = [0, *starts, len(lines)]
    yield from itertools.pairwise(bounds)


# -- direction -------------------------------------------------------------------------------


def _check_direction(direction: str) -> Direction:
    for known in DIRECTIONS:
        if direction == known:
            return known
    raise SdpError(f"invalid media direction {direction!r}; expected one of {DIRECTIONS}")


def reverse_direction(direction: str) -> Direction:
    """The direction as seen from the other end: sendonly <-> recvonly."""
    flipped = {"sendonly": "recvonly", "recvonly": "sendonly"}
    return _check_direction(flipped.get(direction, direction))


def get_direction(sdp: str, kind: str = "audio") -> Direction:
    """Direction of the first `m=<kind>` section (its own attribute, else the session-level
    one, else `sendrecv`, the RFC 4566 default). A section-less SDP gives the session level."""
    lines = [_content(line) for line in _lines(sdp)]
    sections = list(_sections(lines))
    session_start, session_end = sections[0]
    session_dir = _find_direction(lines[session_start:session_end])
    for start, end in sections[1:]:
        if lines[start].startswith(f"m={kind} "):
            return _find_direction(lines[start:end]) or session_dir or "sendrecv"
    return session_dir or "sendrecv"


def _find_direction(lines: list[str]) -> Direction | None:
    for line in lines:
        if line in _DIRECTION_LINES:
            return cast(Direction, line[2:])
    return None


def set_direction(sdp: str, direction: str) -> str:
    """Set `direction` on every m= section, and at session level where one is written there.

    Existing direction attributes are replaced in place. An m= section with no direction of its
    own gets `a=<direction>` appended at its end, unless a session-level attribute (which it
    inherits) was replaced instead. All other lines stay byte-identical.
    """
    direction = _check_direction(direction)
    lines = _lines(sdp)
    eol = _eol(lines)
    out: list[str] = []
    sections = list(_sections(lines))
    session_has_dir = False
    for index, (start, end) in enumerate(sections):
        section = lines[start:end]
        found = False
        for line in section:
            if _content(line) in _DIRECTION_LINES:
                out.append(f"a={direction}{_ending(line, eol)}")
                found = True
            else:
                out.append(line)
        if index == 0:
            session_has_dir = found
        elif not found and not session_has_dir:
            if out and not out[-1].endswith("\n"):
                out[-1] += eol
            out.append(f"a={direction}{eol}")
    return "".join(out)


# -- origin ----------------------------------------------------------------------------------


def _origin_index(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        if line.startswith("m="):
            break
        if line.startswith("o="):
            return i
    raise SdpError("Invalid SDP origin: the SDP has no session-level o= line")


def parse_origin(sdp: str) -> Origin:
    """The session-level `o=` line; `SdpError` if it is missing or malformed."""
    lines = _lines(sdp)
    line = _content(lines[_origin_index(lines)])
    match = _ORIGIN.match(line)
    if match is None:
        raise SdpError(
            f"Invalid SDP origin {line!r}: expected 'o=<user> <sess-id> <sess-version> ...' "
            "with numeric session id and version"
        )
    username, session_id, version, rest = match.groups()
    return Origin(username, session_id, int(version), rest)


def set_origin(sdp: str, version: int, session_id: str | None = None) -> str:
    """Rewrite the `o=` line's version (and session id when given); nothing else changes."""
    if version < 0:
        raise SdpError(f"SDP origin version must be >= 0, got {version}")
    if session_id is not None and not session_id.isdigit():
        raise SdpError(f"SDP session id must be numeric, got {session_id!r}")
    origin = parse_origin(sdp)
    lines = _lines(sdp)
    index = _origin_index(lines)
    sid = origin.session_id if session_id is None else session_id
    new = f"o={origin.username} {sid} {version}{origin.rest}"
    lines[index] = new + _ending(lines[index], _eol(lines))
    return "".join(lines)


def bump_origin_version(sdp: str, last_version: int | None = None) -> tuple[str, int]:
    """Raise the origin version for a re-offer; returns (new_sdp, new_version).

    The new version is `max(last_version + 1, current + 1)`: higher than both the version in
    this SDP and the last one we sent (pass it as `last_version`; None when nothing was sent).
    This is the upstream SDK's `max(sdpVersion, ver + 1)` with `sdpVersion = last sent + 1`.
    """
    current = parse_origin(sdp).version
    new_version = current + 1 if last_version is None else max(last_version + 1, current + 1)
    return set_origin(sdp, new_version), new_version


# -- media lines -----------------------------------------------------------------------------


def media_protocol(sdp: str, kind: str = "audio") -> str | None:
    """The <proto> of the first `m=<kind>` line (`UDP/TLS/RTP/SAVPF`, `RTP/SAVPF`, ...)."""
    for line in _lines(sdp):
        fields = _content(line).split()
        if len(fields) >= 3 and fields[0] == f"m={kind}":
            return fields[2]
    return None


def set_media_protocol(sdp: str, proto: str, kind: str = "audio") -> str:
    """Replace the <proto> of the first `m=<kind>` line; nothing else changes. An answer must
    carry the offer's proto (RFC 3264 §6): RingCentral offers `RTP/SAVPF` where aiortc would
    answer `UDP/TLS/RTP/SAVPF`."""
    if not proto or any(c.isspace() for c in proto):
        raise SdpError(f"invalid media protocol {proto!r}")
    lines = _lines(sdp)
    for i, line in enumerate(lines):
        content = _content(line)
        fields = content.split(" ")
        if len(fields) >= 3 and fields[0] == f"m={kind}":
            fields[2] = proto
            lines[i] = " ".join(fields) + line[len(content) :]
            return "".join(lines)
    raise SdpError(f"SDP has no m={kind} line")


# -- codecs ----------------------------------------------------------------------------------


def _audio_section(lines: list[str]) -> list[str] | None:
    for start, end in list(_sections(lines))[1:]:
        if lines[start].startswith("m=audio "):
            return lines[start:end]
    return None


def has_audio(sdp: str) -> bool:
    """True when the SDP has an `m=audio` section with a non-zero port (not rejected)."""
    lines = [_content(line) for line in _lines(sdp)]
    for start, _end in list(_sections(lines))[1:]:
        fields = lines[start].split()
        if fields[0] == "m=audio" and len(fields) > 1 and fields[1].split("/")[0] != "0":
            return True
    return False


def audio_codecs(sdp: str) -> list[Rtpmap]:
    """The payload formats of the first audio section, in m= line order.

    Static payload types (RFC 3551) without an rtpmap line are filled in; dynamic ones without
    an rtpmap, or with a malformed one, are left out.
    """
    lines = [_content(line) for line in _lines(sdp)]
    section = _audio_section(lines)
    if section is None:
        return []
    maps: dict[int, Rtpmap] = {}
    for line in section[1:]:
        match = _RTPMAP.match(line)
        if match:
            pt, encoding, clock, channels = match.groups()
            maps[int(pt)] = Rtpmap(
                int(pt), encoding, int(clock), int(channels) if channels else None
            )
    result: list[Rtpmap] = []
    for fmt in section[0].split()[3:]:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        if pt in maps:
            result.append(maps[pt])
        elif pt in _STATIC_AUDIO:
            name, clock, channels = _STATIC_AUDIO[pt]
            result.append(Rtpmap(pt, name, clock, channels))
    return result


def telephone_events(sdp: str) -> dict[int, int]:
    """RFC 4733 telephone-event formats of the first audio section: {clock_rate: payload_type}
    (the first one listed wins when a rate appears twice)."""
    events: dict[int, int] = {}
    for codec in audio_codecs(sdp):
        if codec.name == "telephone-event":
            events.setdefault(codec.clock_rate, codec.payload_type)
    return events


def add_telephone_events(sdp: str, events: Mapping[int, int], fmtp: str = "0-15") -> str:
    """Offer RFC 4733 telephone-event in the first audio section: `events` is
    {clock_rate: payload_type}. Rates or payload types already present are skipped; the
    payload types are appended to the m= line, and `a=rtpmap`/`a=fmtp` lines are inserted after
    the section's last rtpmap/fmtp line. `SdpError` when there is no audio section."""
    lines = _lines(sdp)
    eol = _eol(lines)
    contents = [_content(line) for line in lines]
    present = telephone_events(sdp)
    used = {codec.payload_type for codec in audio_codecs(sdp)}
    start = next((i for i, c in enumerate(contents) if c.startswith("m=audio ")), None)
    if start is None:
        raise SdpError("SDP has no m=audio section to add telephone-event to")
    end = next(
        (i for i in range(start + 1, len(lines)) if contents[i].startswith("m=")), len(lines)
    )
    new = [
        (rate, pt)
        for rate, pt in sorted(events.items(), reverse=True)
        if rate not in present and pt not in used
    ]
    if not new:
        return sdp
    lines[start] = contents[start] + "".join(f" {pt}" for _, pt in new) + _ending(lines[start], eol)
    insert_at = start + 1
    for i in range(start + 1, end):
        if contents[i].startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            insert_at = i + 1
    added: list[str] = []
    for rate, pt in new:
        added.append(f"a=rtpmap:{pt} telephone-event/{rate}{eol}")
        if fmtp:
            added.append(f"a=fmtp:{pt} {fmtp}{eol}")
    if insert_at > 0 and not lines[insert_at - 1].endswith("\n"):
        lines[insert_at - 1] += eol
    lines[insert_at:insert_at] = added
    return "".join(lines)
