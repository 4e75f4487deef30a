"""SDP fix-ups between aiortc and standard SIP peers (pure: str in, str out; no aiortc import).

1. **Answers without `a=mid`** (`fill_missing_mids`). aiortc pairs the m= sections of an answer
   with those of its offer by their `a=mid` values and refuses an answer whose mids differ
   ("Media sections in answer do not match offer"). But `a=mid` belongs to the SDP grouping
   framework (RFC 5888), and an answerer that does not implement it simply leaves the grouping
   attributes out (RFC 5888 §9.2); baresip 1.0.0 does exactly that. RFC 3264 §6 pairs answer
   and offer sections by *position*, so the mid of each unlabelled section is the offer's mid at
   the same position.

2. **`a=setup:actpass` in an answer** (`fix_answer_setup`). An answer must say `active` or
   `passive` (RFC 5763 §5), and aiortc refuses anything else. baresip answers a re-INVITE (our
   hold or unhold) with `actpass`. The DTLS association is up by then, so its roles stand: the
   peer's setup is the opposite of ours. (Before any association, `active`: the peer connects.)

3. **An empty `a=group:BUNDLE`** (`drop_empty_groups`). Answering an offer without mids,
   aiortc writes `a=group:BUNDLE ` with no identification tag, which RFC 5888 §5 does not
   allow (at least one tag); the line is dropped.

4. **Candidates outside the allowed networks** (`keep_candidates`). With ICE restricted to some
   networks (loopback for tests, a test network namespace), a peer's candidates elsewhere must
   not be tried at all: a connectivity check is a packet sent to that address. baresip, for
   one, leaves 127.0.0.1 out and offers the machine's real interfaces only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "drop_empty_groups",
    "fill_missing_mids",
    "fingerprints",
    "fix_answer_setup",
    "keep_candidates",
    "networks",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ ", re.IGNORECASE)


def _split(sdp: str) -> tuple[list[str], str]:
    """Lines without their endings, and the ending to write them back with."""
    eol = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(eol)
    return lines, eol


def _section_starts(lines: Sequence[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith("m=")]


def _mids(lines: Sequence[str]) -> list[str | None]:
    """The a=mid of each m= section, in order (None where absent)."""
    starts = _section_starts(lines)
    result: list[str | None] = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        mid = next((x[6:].strip() for x in lines[start:end] if x.startswith("a=mid:")), None)
        result.append(mid)
    return result


def fill_missing_mids(answer: str, offer: str) -> str:
    """`answer` with `a=mid:` added to each m= section that lacks one, taken from the section
    at the same position in `offer`. Unchanged when every section has a mid (or the offer has
    none to give)."""
    lines, eol = _split(answer)
    offered = _mids(_split(offer)[0])
    present = _mids(lines)
    if all(mid is not None for mid in present):
        return answer
    starts = _section_starts(lines)
    for n in reversed(range(len(starts))):
        if present[n] is None and n < len(offered) and offered[n] is not None:
            lines.insert(starts[n] + 1, f"a=mid:{offered[n]}")
    return eol.join(lines)


def fix_answer_setup(answer: str, our_role: str | None) -> str:
    """`answer` with each `a=setup:actpass` replaced by what the peer's DTLS role is:
    `passive` when we are the DTLS client, else `active`."""
    if "a=setup:actpass" not in answer:
        return answer
    theirs = "passive" if our_role == "client" else "active"
    lines, eol = _split(answer)
    return eol.join(f"a=setup:{theirs}" if x == "a=setup:actpass" else x for x in lines)


def drop_empty_groups(sdp: str) -> str:
    """`sdp` without `a=group:` lines that name no media section."""
    lines, eol = _split(sdp)
    kept = [x for x in lines if not (x.startswith("a=group:") and len(x.split()) < 2)]
    return sdp if len(kept) == len(lines) else eol.join(kept)


def fingerprints(sdp: str) -> set[str]:
    """The `a=fingerprint` values of `sdp` (hash name lower-cased, digest upper-cased): who the
    DTLS endpoint is."""
    found = set()
    for line in _split(sdp)[0]:
        if line.lower().startswith("a=fingerprint:"):
            algorithm, _, digest = line[14:].strip().partition(" ")
            found.add(f"{algorithm.lower()} {digest.strip().upper()}")
    return found


def networks(specs: Iterable[str]) -> list[Network]:
    """`["10.77.0.1/30", "127.0.0.1"]` as networks (a bare address is a /32 or /128)."""
    return [ipaddress.ip_interface(spec).network for spec in specs]


def keep_candidates(sdp: str, allowed: Sequence[Network]) -> str:
    """`sdp` without the `a=candidate` lines whose address is outside `allowed` (hostnames and
    mDNS names are dropped too: they cannot be checked)."""
    lines, eol = _split(sdp)
    kept = []
    for line in lines:
        match = _CANDIDATE.match(line)
        if match is not None and not _inside(match.group(1), allowed):
            continue
        kept.append(line)
    return eol.join(kept)


def _inside(address: str, allowed: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in allowed)
