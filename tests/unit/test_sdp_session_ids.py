"""Re-offers keep the session's RTP header extension ids (RFC 8285 §6) and payload type numbers
(RFC 3264 §8.3.2): `keep_extmap_ids`, `keep_payload_types`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from webphone.sip.sdp import (
    audio_codecs,
    extmap_ids,
    keep_extmap_ids,
    keep_payload_types,
    telephone_events,
)

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

# What Chrome offered first (extract), and aiortc's re-offer on the same call.
CHROME = (
    "v=0\r\no=- 75 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 110 126\r\n"
    f"a=extmap:1 {LEVEL}\r\na=extmap:2 {ABS}\r\na=extmap:4 {MID}\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n"
    "a=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:110 telephone-event/48000\r\n"
    "a=rtpmap:126 telephone-event/8000\r\n"
)
AIORTC = (
    "v=0\r\no=- 40 43 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 45533 UDP/TLS/RTP/SAVPF 96 9 0 8 110 126\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\n"
    f"a=extmap:1 {MID}\r\na=extmap:2 {LEVEL}\r\na=mid:0\r\n"
    "a=rtpmap:96 opus/48000/2\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-15\r\n"
    "a=rtpmap:126 telephone-event/8000\r\na=fmtp:126 0-15\r\n"
)


def test_a_re_offer_keeps_the_extension_ids_the_peer_chose() -> None:
    out = keep_extmap_ids(AIORTC, CHROME)
    assert extmap_ids(out) == [{MID: 4, LEVEL: 1}]
    changed = [(a, b) for a, b in zip(AIORTC.split("\r\n"), out.split("\r\n"), strict=True)
               if a != b]
    assert changed == [(f"a=extmap:1 {MID}", f"a=extmap:4 {MID}"),
                       (f"a=extmap:2 {LEVEL}", f"a=extmap:1 {LEVEL}")]


def test_extension_ids_unchanged_without_a_negotiation_or_when_already_equal() -> None:
    assert keep_extmap_ids(AIORTC, None) is AIORTC
    assert keep_extmap_ids(AIORTC, AIORTC) == AIORTC


def test_a_new_extension_moves_off_a_taken_id_and_keeps_its_direction() -> None:
    negotiated = f"v=0\r\nm=audio 9 RTP/AVP 0\r\na=extmap:1 {MID}\r\na=extmap:2 {LEVEL}\r\n"
    offer = f"v=0\r\nm=audio 9 RTP/AVP 0\r\na=extmap:1/sendonly {ABS} x=1\r\na=extmap:5 {MID}\r\n"
    out = keep_extmap_ids(offer, negotiated)
    assert f"a=extmap:3/sendonly {ABS} x=1\r\n" in out and f"a=extmap:1 {MID}\r\n" in out


def test_a_re_offer_keeps_the_payload_types_of_the_session() -> None:
    out = keep_payload_types(AIORTC, CHROME)
    assert "m=audio 45533 UDP/TLS/RTP/SAVPF 111 9 0 8 110 126\r\n" in out
    assert "a=rtpmap:111 opus/48000/2\r\n" in out and "a=rtpmap:96" not in out
    assert telephone_events(out) == {48000: 110, 8000: 126}
    assert keep_payload_types(AIORTC, None) is AIORTC


def test_a_new_format_moves_off_a_payload_type_the_session_uses_for_another() -> None:
    negotiated = "v=0\r\nm=audio 9 RTP/AVP 96 101\r\na=rtpmap:96 PCMU/16000\r\n" \
                 "a=rtpmap:101 telephone-event/8000\r\n"
    offer = "v=0\r\nm=audio 9 RTP/AVP 96 97 98\r\na=rtpmap:96 opus/48000/2\r\n" \
            "a=fmtp:96 useinbandfec=1\r\na=rtpmap:97 telephone-event/8000\r\n" \
            "a=rtpmap:98 rtx/48000\r\na=fmtp:98 apt=96\r\n"
    out = keep_payload_types(offer, negotiated)
    codecs = {c.payload_type: (c.name, c.clock_rate) for c in audio_codecs(out)}
    assert codecs == {97: ("opus", 48000), 101: ("telephone-event", 8000), 98: ("rtx", 48000)}
    assert "a=fmtp:97 useinbandfec=1\r\n" in out and "a=fmtp:98 apt=97\r\n" in out


URIS = [MID, LEVEL, ABS, "urn:x:a", "urn:x:b", "urn:x:c"]


@given(
    before=st.permutations(URIS).flatmap(
        lambda uris: st.lists(st.integers(1, 14), min_size=3, max_size=3, unique=True).map(
            lambda ids: dict(zip(uris[:3], ids, strict=True)))),
    offered=st.lists(st.sampled_from(URIS), min_size=1, max_size=6, unique=True),
    start=st.integers(1, 8),
)
def test_extension_ids_stay_and_never_collide(before: dict[str, int], offered: list[str],
                                             start: int) -> None:
    negotiated = "v=0\r\nm=audio 9 RTP/AVP 0\r\n" + "".join(
        f"a=extmap:{i} {uri}\r\n" for uri, i in before.items())
    offer = "v=0\r\nm=audio 9 RTP/AVP 0\r\n" + "".join(
        f"a=extmap:{start + n} {uri}\r\n" for n, uri in enumerate(offered))
    ids = extmap_ids(keep_extmap_ids(offer, negotiated))[0]
    assert set(ids) == set(offered)
    assert len(set(ids.values())) == len(ids)  # no id used twice
    for uri in offered:
        if uri in before:
            assert ids[uri] == before[uri]
        else:
            assert ids[uri] not in before.values()
