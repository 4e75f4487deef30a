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
  `telephone_events` (RFC 4733 payload type per clock rate), `add_telephone_events`;
- RTP header extensions: `extmap_ids`, `keep_extmap_ids` (RFC 8285 §6: an id, once
  negotiated, stays with its extension for the whole session);
- payload types: `keep_payload_types` (RFC 3264 §8.3.2: a re-offer keeps the payload type
  numbers of the session's formats).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, cast

from ..errors import WebPhoneError
from ._grammar import is_digits

__all__ = [
    "DIRECTIONS",
    "Direction",
    "Origin",
    "Rtpmap",
    "SdpError",
    "add_telephone_events",
    "audio_codecs",
    "bump_origin_version",
    "continue_lineage",
    "extmap_ids",
    "get_direction",
    "has_audio",
    "keep_extmap_ids",
    "keep_payload_types",
    "media_ids",
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
_PT_LINE = re.compile(r"^a=(rtpmap|fmtp|rtcp-fb):(\d+)(\s.*)?$")
_APT = re.compile(r"\bapt=(\d+)")
_DYNAMIC_PTS = range(96, 128)
_EXTMAP = re.compile(r"^a=extmap:(\d+)(/\S+)? (\S+)(.*)$")
# RFC 8285 §5: one-byte header ids 1-14; two-byte ids go up to 255 (15 is reserved).
_EXTMAP_IDS = [*range(1, 15), *range(16, 256)]

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
    if session_id is not None and not is_digits(session_id):
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
        if not is_digits(fmt):  # str.isdigit() takes '1²', which int() refuses
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


# -- RTP header extensions (RFC 8285) ----------------------------------------------------------


def extmap_ids(sdp: str) -> list[dict[str, int]]:
    """{extension URI: id} of each m= section, in order (`a=extmap:<id>[/<dir>] <uri> ...`)."""
    lines = [_content(line) for line in _lines(sdp)]
    result = []
    for start, end in list(_sections(lines))[1:]:
        ids: dict[str, int] = {}
        for line in lines[start:end]:
            match = _EXTMAP.match(line)
            if match is not None:
                ids.setdefault(match.group(3), int(match.group(1)))
        result.append(ids)
    return result


def keep_extmap_ids(sdp: str, negotiated: str | None) -> str:
    """`sdp` (our re-offer) with each header extension on the id `negotiated` gave it.

    RFC 8285 §6: once negotiated, an extension keeps its id for the session; Chrome refuses a
    re-offer that moves one ("RTP extension ID reassignment not supported"). aiortc numbers
    its own extensions afresh in every offer, which differs from the ids of a peer that
    offered first. Per m= section (by position), an extension known from `negotiated` gets its
    id back; another one whose id is now taken moves to the lowest free id. Other lines stay
    byte-identical; with nothing negotiated yet, `sdp` is returned unchanged.
    """
    if not negotiated:
        return sdp
    before = extmap_ids(negotiated)
    lines = _lines(sdp)
    contents = [_content(line) for line in lines]
    for index, (start, end) in enumerate(list(_sections(contents))[1:]):
        if index < len(before) and before[index]:
            _renumber(lines, contents, start, end, before[index])
    return "".join(lines)


def _renumber(
    lines: list[str], contents: list[str], start: int, end: int, known: dict[str, int]
) -> None:
    matches = {i: _EXTMAP.match(contents[i]) for i in range(start, end)}
    found = {i: m for i, m in matches.items() if m is not None}
    wanted = {i: known.get(m.group(3)) for i, m in found.items()}
    taken = {id_ for id_ in wanted.values() if id_ is not None} | set(known.values())
    free = (id_ for id_ in _EXTMAP_IDS if id_ not in taken)
    for i, match in found.items():
        new_id = wanted[i]
        if new_id is None:
            current = int(match.group(1))
            new_id = current if current not in taken else next(free)
            taken.add(new_id)
        if new_id == int(match.group(1)):
            continue
        direction, uri, rest = match.group(2) or "", match.group(3), match.group(4)
        lines[i] = f"a=extmap:{new_id}{direction} {uri}{rest}" + lines[i][len(contents[i]) :]


# -- payload types (RFC 3264 §8.3.2) -------------------------------------------------------------


def _format_key(codec: Rtpmap) -> tuple[str, int, int]:
    return codec.name, codec.clock_rate, codec.channels or 1


def keep_payload_types(sdp: str, negotiated: str | None) -> str:
    """`sdp` (our re-offer) with each format on the payload type `negotiated` gave it.

    RFC 3264 §8.3.2: a re-offer keeps the session's payload type numbers. aiortc numbers its
    formats afresh (opus 96) where the peer that offered first chose others (Chrome: opus 111),
    and aiortc's receiver keeps the numbers it started with: a renumbered re-offer, answered
    with the new numbers, leaves it dropping every packet as "unknown payload type". Formats the
    session did not have keep their number unless it is taken (then the lowest free dynamic
    one). The m= line, rtpmap, fmtp and rtcp-fb lines and `apt=` references are rewritten; every
    other line stays byte-identical. Only the first audio section is touched.
    """
    if not negotiated:
        return sdp
    known = {_format_key(codec): codec.payload_type for codec in audio_codecs(negotiated)}
    if not known:
        return sdp
    mapping = _pt_mapping(audio_codecs(sdp), known)
    if all(old == new for old, new in mapping.items()):
        return sdp
    lines = _lines(sdp)
    contents = [_content(line) for line in lines]
    start = next((i for i, c in enumerate(contents) if c.startswith("m=audio ")), None)
    if start is None:
        return sdp
    end = next((i for i in range(start + 1, len(lines)) if contents[i].startswith("m=")),
               len(lines))
    fields = contents[start].split(" ")
    fields[3:] = [str(mapping.get(int(f), f)) if is_digits(f) else f for f in fields[3:]]
    lines[start] = " ".join(fields) + lines[start][len(contents[start]) :]
    for i in range(start + 1, end):
        match = _PT_LINE.match(contents[i])
        if match is None:
            continue
        kind, pt, rest = match.group(1), int(match.group(2)), match.group(3) or ""
        rest = _APT.sub(lambda m: f"apt={mapping.get(int(m.group(1)), m.group(1))}", rest)
        lines[i] = f"a={kind}:{mapping.get(pt, pt)}{rest}" + lines[i][len(contents[i]) :]
    return "".join(lines)


def _pt_mapping(ours: list[Rtpmap], known: dict[tuple[str, int, int], int]) -> dict[int, int]:
    """{our payload type: the one to write}."""
    mapping = {c.payload_type: known[_format_key(c)] for c in ours if _format_key(c) in known}
    taken = set(known.values()) | set(mapping.values())
    free = (pt for pt in _DYNAMIC_PTS if pt not in taken)
    for codec in ours:
        pt = codec.payload_type
        if pt in mapping:
            continue
        mapping[pt] = pt if pt not in taken else next(free)
        taken.add(mapping[pt])
    return mapping


# -- a session's lineage across media holders (RFC 3264 §8) ----------------------------------


def media_ids(sdp: str) -> list[str | None]:
    """The `a=mid` of each m= section, in order (None where a section has none)."""
    lines = [_content(line) for line in _lines(sdp)]
    return [
        next((line[6:].strip() for line in lines[start:end] if line.startswith("a=mid:")), None)
        for start, end in list(_sections(lines))[1:]
    ]


def continue_lineage(sdp: str, *, local: str, remote: str | None) -> str:
    """`sdp`, a fresh description from a new media holder, continuing a session whose last
    descriptions were `local` (ours) and `remote` (the peer's).

    RFC 3264 §8: every later description of a session keeps the o= session id and raises the
    version by one, whoever produces it; §8.3.2 and RFC 8285 §6: payload type numbers and
    header extension ids keep what the session negotiated (`keep_payload_types`,
    `keep_extmap_ids`). `SdpError` when either o= line is missing or malformed.
    """
    before = parse_origin(local)
    sdp = keep_payload_types(keep_extmap_ids(sdp, remote), remote)
    return set_origin(sdp, before.version + 1, before.session_id)
