"""webphone.sip.sdp: direction and origin edits keep every other line byte-identical."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone.sip.sdp import (
    DIRECTIONS,
    Rtpmap,
    SdpError,
    add_telephone_events,
    audio_codecs,
    bump_origin_version,
    get_direction,
    has_audio,
    keep_payload_types,
    media_protocol,
    parse_origin,
    reverse_direction,
    set_direction,
    set_media_protocol,
    set_origin,
    telephone_events,
)

# The SDP of a real RingCentral INVITE (upstream test fixture), CRLF line endings.
RC_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 7066956197903366029 7997658033229634982 IN IP4 104.245.57.182",
        "s=SmcSip",
        "c=IN IP4 104.245.57.182",
        "t=0 0",
        "m=audio 29768 RTP/SAVPF 109 111 18 0 8 9 96 101",
        "a=rtpmap:109 OPUS/16000",
        "a=fmtp:109 useinbandfec=1",
        "a=rtcp-fb:109 ccm tmmbr",
        "a=rtpmap:111 OPUS/48000/2",
        "a=fmtp:111 useinbandfec=1",
        "a=rtcp-fb:111 ccm tmmbr",
        "a=rtpmap:18 g729/8000",
        "a=fmtp:18 annexb=no",
        "a=rtpmap:0 pcmu/8000",
        "a=rtpmap:8 pcma/8000",
        "a=rtpmap:9 g722/8000",
        "a=rtpmap:96 ilbc/8000",
        "a=fmtp:96 mode=20",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=sendrecv",
        "a=rtcp:29769",
        "a=rtcp-mux",
        "a=setup:actpass",
        "a=fingerprint:sha-1 8E:C8:DB:21:CE:E5:F8:5A:F9:73:EC:08:B8:4D:5C:2A:96:BA:27:26",
        "a=ice-ufrag:mqlmHMAU",
        "a=ice-pwd:QTEEF1lt81VyKvJvEHhabIh9JZ",
        "a=candidate:Mjq5KtrBWhOTFixu 1 UDP 2130706431 104.245.57.182 29768 typ host",
        "",
    ]
)

# aiortc-style offer: no session-level direction, two sections, one without direction.
TWO_SECTIONS = (
    "v=0\r\n"
    "o=- 3900000000 3900000000 IN IP4 0.0.0.0\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96 0\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=sendrecv\r\n"
    "a=mid:0\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 97\r\n"
    "a=mid:1\r\n"
    "a=rtpmap:97 VP8/90000\r\n"
)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.split("\r\n"), after.split("\r\n")
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


# -- direction -------------------------------------------------------------------------------


def test_hold_changes_only_the_direction_line() -> None:
    held = set_direction(RC_OFFER, "sendonly")
    assert changed_lines(RC_OFFER, held) == [("a=sendrecv", "a=sendonly")]
    assert get_direction(held) == "sendonly"
    assert set_direction(held, "sendrecv") == RC_OFFER


def test_every_section_gets_the_direction() -> None:
    out = set_direction(TWO_SECTIONS, "inactive")
    assert out.count("a=inactive\r\n") == 2
    assert "a=sendrecv" not in out
    assert get_direction(out, "video") == "inactive"
    # the section without a direction got one appended at its end
    assert out.endswith("a=rtpmap:97 VP8/90000\r\na=inactive\r\n")


def test_session_level_direction_is_replaced_and_inherited() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=sendrecv\r\nm=audio 9 RTP/AVP 0\r\n"
    out = set_direction(sdp, "recvonly")
    assert out == sdp.replace("a=sendrecv", "a=recvonly")
    assert get_direction(out) == "recvonly"


def test_direction_defaults_and_errors() -> None:
    assert get_direction("v=0\r\nm=audio 9 RTP/AVP 0\r\n") == "sendrecv"
    with pytest.raises(SdpError, match="invalid media direction"):
        set_direction(RC_OFFER, "sideways")
    assert reverse_direction("sendonly") == "recvonly"
    assert reverse_direction("inactive") == "inactive"


def test_lf_only_sdp_keeps_lf() -> None:
    sdp = RC_OFFER.replace("\r\n", "\n")
    out = set_direction(sdp, "sendonly")
    assert "\r" not in out
    assert out == sdp.replace("a=sendrecv", "a=sendonly")


# -- origin ----------------------------------------------------------------------------------


def test_origin_parse_and_bump() -> None:
    origin = parse_origin(RC_OFFER)
    assert origin.session_id == "7066956197903366029"
    assert origin.version == 7997658033229634982
    out, version = bump_origin_version(RC_OFFER)
    assert version == 7997658033229634983
    assert changed_lines(RC_OFFER, out) == [
        (
            "o=- 7066956197903366029 7997658033229634982 IN IP4 104.245.57.182",
            "o=- 7066956197903366029 7997658033229634983 IN IP4 104.245.57.182",
        )
    ]


def test_bump_uses_max_of_stored_and_current() -> None:
    sdp = "v=0\r\no=- 5 2 IN IP4 0.0.0.0\r\ns=-\r\n"
    assert bump_origin_version(sdp, last_version=9)[1] == 10
    assert bump_origin_version(sdp, last_version=1)[1] == 3
    assert bump_origin_version(sdp)[1] == 3


def test_hold_reinvite_updates_only_origin_version_and_direction() -> None:
    """The upstream test: only the o= version and the direction change."""
    held = set_direction(RC_OFFER, "sendonly")
    held, _ = bump_origin_version(held, last_version=1)
    changes = changed_lines(RC_OFFER, held)
    assert [before for before, _ in changes] == [
        "o=- 7066956197903366029 7997658033229634982 IN IP4 104.245.57.182",
        "a=sendrecv",
    ]


@pytest.mark.parametrize(
    "sdp",
    [
        "v=0\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\n",
        "v=0\r\no=- abc 1 IN IP4 0.0.0.0\r\n",
        "v=0\r\no=- 1 x IN IP4 0.0.0.0\r\n",
        "v=0\r\no=\r\n",
        "",
        "v=0\r\nm=audio 9 RTP/AVP 0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",  # o= only inside media
    ],
)
def test_invalid_origin_raises(sdp: str) -> None:
    with pytest.raises(SdpError, match="Invalid SDP origin"):
        bump_origin_version(sdp)


def test_set_origin_session_id() -> None:
    out = set_origin(TWO_SECTIONS, 7, session_id="42")
    assert "o=- 42 7 IN IP4 0.0.0.0\r\n" in out
    with pytest.raises(SdpError):
        set_origin(TWO_SECTIONS, 1, session_id="x")


# -- codecs ----------------------------------------------------------------------------------


def test_audio_codecs_and_telephone_event() -> None:
    codecs = audio_codecs(RC_OFFER)
    assert [c.payload_type for c in codecs] == [109, 111, 18, 0, 8, 9, 96, 101]
    assert codecs[1] == Rtpmap(111, "OPUS", 48000, 2)
    assert telephone_events(RC_OFFER) == {8000: 101}
    assert has_audio(RC_OFFER)


def test_static_payload_types_without_rtpmap() -> None:
    sdp = "v=0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    assert [(c.payload_type, c.name) for c in audio_codecs(sdp)] == [
        (0, "pcmu"),
        (8, "pcma"),
        (101, "telephone-event"),
    ]


def test_has_audio() -> None:
    assert not has_audio("v=0\r\nm=audio 0 RTP/AVP 0\r\n")
    assert not has_audio("v=0\r\nm=video 9 RTP/AVP 97\r\n")
    assert not has_audio("")
    assert audio_codecs("") == []


def test_add_telephone_events() -> None:
    out = add_telephone_events(TWO_SECTIONS, {48000: 110, 8000: 126})
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 96 0 110 126\r\n" in out
    assert (
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-15\r\n"
        "a=rtpmap:126 telephone-event/8000\r\na=fmtp:126 0-15\r\n"
        "m=video"
    ) in out
    assert telephone_events(out) == {48000: 110, 8000: 126}
    assert add_telephone_events(out, {48000: 110, 8000: 126}) == out  # idempotent
    assert telephone_events(add_telephone_events(RC_OFFER, {8000: 126})) == {8000: 101}
    with pytest.raises(SdpError):
        add_telephone_events("v=0\r\n", {8000: 101})


def test_media_protocol() -> None:
    assert media_protocol(RC_OFFER) == "RTP/SAVPF"
    assert media_protocol(TWO_SECTIONS, "video") == "UDP/TLS/RTP/SAVPF"
    assert media_protocol("v=0\r\n") is None
    out = set_media_protocol(TWO_SECTIONS, "RTP/SAVPF")
    assert changed_lines(TWO_SECTIONS, out) == [
        ("m=audio 9 UDP/TLS/RTP/SAVPF 96 0", "m=audio 9 RTP/SAVPF 96 0")
    ]
    with pytest.raises(SdpError):
        set_media_protocol("v=0\r\n", "RTP/SAVPF")
    with pytest.raises(SdpError):
        set_media_protocol(TWO_SECTIONS, "RTP SAVPF")


# -- properties ------------------------------------------------------------------------------

# lines that are neither a direction nor an origin nor a media line
safe_line = st.from_regex(r"[a-ln-z]=[A-Za-z0-9 :/.\-]{0,30}", fullmatch=True).filter(
    lambda s: s[2:] not in DIRECTIONS and not s.startswith("o=")
)


@given(
    head=st.lists(safe_line, max_size=5),
    body=st.lists(safe_line, max_size=8),
    dir0=st.sampled_from(DIRECTIONS),
    new=st.sampled_from(DIRECTIONS),
    version=st.integers(min_value=0, max_value=2**63),
    eol=st.sampled_from(["\r\n", "\n"]),
)
def test_edits_touch_only_their_lines(
    head: list[str], body: list[str], dir0: str, new: str, version: int, eol: str
) -> None:
    lines = ["v=0", f"o=- 123 {version} IN IP4 0.0.0.0", *head, "m=audio 9 RTP/AVP 0", *body]
    lines.insert(len(lines) - len(body) // 2, f"a={dir0}")
    sdp = eol.join(lines) + eol
    out = set_direction(sdp, new)
    out, new_version = bump_origin_version(out, last_version=version // 2)
    assert new_version == version + 1
    before, after = sdp.split(eol), out.split(eol)
    assert len(before) == len(after)
    for x, y in zip(before, after, strict=True):
        if x == f"a={dir0}":
            assert y == f"a={new}"
        elif x.startswith("o="):
            assert y == f"o=- 123 {version + 1} IN IP4 0.0.0.0"
        else:
            assert x == y
    assert get_direction(out) == new
    assert set_direction(set_direction(sdp, new), dir0) == sdp


@given(st.text(max_size=300))
def test_never_crashes_on_garbage(text: str) -> None:
    for call in (get_direction, has_audio, audio_codecs, telephone_events):
        call(text)
    with contextlib.suppress(SdpError):
        bump_origin_version(text)
    set_direction(text, "inactive")


# a far party's text with digits str.isdigit() takes and int() refuses ('²' is a digit to
# Python): each is a bad field, never a ValueError out of the SDP layer
ODD_SDP = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 9 RTP/AVP 0 1\u00b2 8\r\na=rtpmap:0 PCMU/8000\r\n")


def test_an_odd_digit_format_is_skipped_not_a_value_error() -> None:
    assert [c.payload_type for c in audio_codecs(ODD_SDP)] == [0, 8]
    assert "1\u00b2" in keep_payload_types(ODD_SDP, ODD_SDP.replace(" 0 1\u00b2 8", " 0 8"))


def test_an_odd_digit_session_id_is_an_sdp_error() -> None:
    with pytest.raises(SdpError, match="numeric"):
        set_origin(ODD_SDP, 3, "1\u00b2")
