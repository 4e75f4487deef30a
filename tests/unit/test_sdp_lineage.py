"""A new media holder continues a session's SDP lineage (issue #11 item 3): `continue_lineage`
(RFC 3264 §8: same o= session id, version + 1; §8.3.2 / RFC 8285 §6: payload types and
extension ids kept), `media_ids`, and the continuity record (`webphone.media.continuity`)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone.media.continuity import (
    RECORD_VERSION,
    RESUME_GAP,
    MediaContinuity,
    claim_versions,
    continuity_record,
)
from webphone.media.errors import MediaError
from webphone.sip.sdp import (
    DIRECTIONS,
    SdpError,
    audio_codecs,
    continue_lineage,
    extmap_ids,
    media_ids,
    parse_origin,
    set_origin,
)

LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"

# the dead holder's last SDP (ours) and the far party's (Chrome numbering)
OURS = ("v=0\r\no=- 4711 7 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 40000 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:audio\r\n"
        f"a=extmap:4 {MID}\r\na=extmap:1 {LEVEL}\r\n"
        "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n")
THEIRS = ("v=0\r\no=- 99 3 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
          "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 126\r\na=mid:audio\r\n"
          f"a=extmap:4 {MID}\r\na=extmap:1 {LEVEL}\r\n"
          "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
          "a=rtpmap:126 telephone-event/8000\r\n")
# what a brand-new aiortc peer connection offers
FRESH = ("v=0\r\no=- 3901 3901 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
         "m=audio 51000 UDP/TLS/RTP/SAVPF 96 0\r\na=mid:0\r\n"
         f"a=extmap:1 {MID}\r\na=extmap:2 {LEVEL}\r\n"
         "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n")


def test_a_new_holder_continues_the_session() -> None:
    out = continue_lineage(FRESH, local=OURS, remote=THEIRS)
    origin = parse_origin(out)
    assert (origin.session_id, origin.version) == ("4711", 8)
    assert [(c.name, c.payload_type) for c in audio_codecs(out)] == [("opus", 111), ("pcmu", 0)]
    assert extmap_ids(out) == [{MID: 4, LEVEL: 1}]
    assert "m=audio 51000 " in out  # the new holder's own port, candidates, ICE, fingerprint


def test_lineage_needs_an_origin() -> None:
    with pytest.raises(SdpError):
        continue_lineage(FRESH, local="v=0\r\ns=-\r\n", remote=THEIRS)


def test_media_ids() -> None:
    assert media_ids(OURS) == ["audio"]
    assert media_ids(OURS + "m=video 0 RTP/AVP 96\r\n") == ["audio", None]
    assert media_ids("v=0\r\n") == []


@given(session=st.integers(0, 2**62), version=st.integers(0, 2**62),
       fresh=st.integers(0, 2**62), pt=st.integers(96, 125), eol=st.sampled_from(["\r\n", "\n"]))
def test_lineage_properties(session: int, version: int, fresh: int, pt: int, eol: str) -> None:
    """Whatever the numbers: the session id is the old one, the version exactly one higher,
    opus keeps the session's payload type, and only o=, m=, rtpmap and extmap lines change."""
    ours = OURS.replace("111", str(pt)).replace("4711 7", f"{session} {version}")
    theirs = THEIRS.replace("111", str(pt))
    new = FRESH.replace("3901 3901", f"{fresh} {fresh}")
    out = continue_lineage(new.replace("\r\n", eol), local=ours.replace("\r\n", eol),
                           remote=theirs.replace("\r\n", eol))
    origin = parse_origin(out)
    assert (origin.session_id, origin.version) == (str(session), version + 1)
    assert audio_codecs(out)[0].payload_type == pt
    before, after = new.replace("\r\n", eol).split(eol), out.split(eol)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):  # pt 126 is the far party's telephone-event
        assert a == b or a[:2] in ("o=", "m=") or a.startswith(("a=rtpmap", "a=extmap"))


def _record(**change: object) -> dict[str, object]:
    record = continuity_record(local_sdp=OURS, remote_sdp=THEIRS, direction="sendonly",
                               muted=True, receive_sample_rate=16000, dtmf_payload_type=126)
    return record | change


def test_the_record_is_json_and_names_the_negotiated_media() -> None:
    record = _record()
    assert json.loads(json.dumps(record)) == record
    assert record["version"] == RECORD_VERSION
    assert (record["session_id"], record["origin_version"], record["mids"]) == ("4711", 7,
                                                                                 ["audio"])
    assert record["payload_types"] == {"111": "opus/48000/2", "0": "PCMU/8000",
                                       "126": "telephone-event/8000"}
    assert record["telephone_events"] == {"8000": 126}
    assert record["extmap_ids"] == [{MID: 4, LEVEL: 1}]
    assert "fingerprint" not in json.dumps(record).replace("a=fingerprint", "")
    kept = MediaContinuity.from_record(record)
    assert (kept.direction, kept.muted, kept.receive_sample_rate) == ("sendonly", True, 16000)


@pytest.mark.parametrize(("change", "field"), [
    ({"version": 0}, "version 0 is not"),
    ({"remote_sdp": None}, "remote_sdp must be SDP text"),
    ({"local_sdp": "v=0\r\ns=-\r\n"}, "local_sdp: "),
    ({"local_sdp": "v=0" + "x" * 70000}, "more than 65536"),
    ({"direction": None}, "direction None"),
    ({"receive_sample_rate": True}, "receive_sample_rate True"),
])
def test_a_bad_record_names_its_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(MediaError, match=field):
        MediaContinuity.from_record(_record(**change))


@given(st.dictionaries(st.sampled_from(["version", "local_sdp", "remote_sdp", "direction",
                                        "receive_sample_rate", "muted"]),
                       st.none() | st.integers(-1, 50000) | st.text(max_size=8)
                       | st.sampled_from(DIRECTIONS), max_size=3))
def test_garbage_records_fail_cleanly(garbage: dict[str, object]) -> None:
    """Any mix of wrong fields: a MediaError or a valid record, never another exception."""
    for record in (garbage, _record(**garbage)):
        try:
            kept = MediaContinuity.from_record(record)
        except MediaError:
            continue
        assert kept.direction in DIRECTIONS and 8000 <= kept.receive_sample_rate <= 48000


def test_a_claimed_record_reserves_the_versions_its_resumer_may_send() -> None:
    """`versions_used` (optional; never below the local SDP's version) moves the resume point
    up; claiming a record raises it by the gap the resumer counts from plus the gap it may
    use; a bad value is refused by name."""
    kept = MediaContinuity.from_record(_record())
    assert (kept.versions_used, kept.resume_version) == (7, 7 + RESUME_GAP)
    assert MediaContinuity.from_record(_record(versions_used=3)).versions_used == 7
    claimed = claim_versions(_record())
    assert claimed == _record(versions_used=7 + 2 * RESUME_GAP)
    assert MediaContinuity.from_record(claimed).resume_version == 7 + 3 * RESUME_GAP
    for bad in (-1, True, "9", None):
        with pytest.raises(MediaError, match="versions_used"):
            MediaContinuity.from_record(_record(versions_used=bad))


@given(st.integers(0, 2**62), st.lists(st.tuples(st.integers(0, RESUME_GAP - 1),
                                                 st.booleans()), min_size=1, max_size=8))
def test_a_chain_of_resumed_holders_never_repeats_a_version(
        start: int, holders: list[tuple[int, bool]]) -> None:
    """RFC 3264 §8 across crashes: each holder resumes the record left published, sends
    fewer than `RESUME_GAP` SDPs and dies, having published a record of its first SDP or
    nothing of its own (then the record it resumed stays published, claimed: an adoption or
    a media move in progress). Every SDP the far party sees has a higher o= version than all
    before it."""
    record = _record(local_sdp=set_origin(OURS, start))
    seen = [start]
    for sent, published in holders:
        first = MediaContinuity.from_record(record).resume_version + 1
        versions = list(range(first, first + sent))
        assert all(version > max(seen) for version in versions), (seen, versions)
        seen += versions
        if published and versions:
            record = _record(local_sdp=set_origin(OURS, versions[0]))
        else:
            record = claim_versions(record)
