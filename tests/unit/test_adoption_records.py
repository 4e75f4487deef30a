"""The continuity records a group's real publishes (shared/adoption.py), as a pure unit: what
a record holds, when the set is published, which records a new real refuses (by field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from webphone.errors import SipParseError
from webphone.media.continuity import RESUME_GAP, continuity_record
from webphone.media.errors import MediaError
from webphone.shared.adoption import (
    RECORD_VERSION,
    Adoption,
    ContinuityRecords,
    _entry,
    call_record,
)


@dataclass
class Media:
    record: dict[str, Any] | None = field(default_factory=lambda: {"v": 1, "sdp": "x"})
    holder: str | None = None

    def continuity(self) -> dict[str, Any]:
        if self.record is None:
            raise MediaError("no continuity record before the first completed offer/answer")
        return self.record


@dataclass
class Session:
    call_id: str
    state: str = "answered"
    media: Media | None = field(default_factory=Media)
    cseq: int = 1

    def continuity_record(self) -> dict[str, Any]:
        return {"version": 1, "cseq": self.cseq}


def test_a_record_names_the_call_its_media_holder_and_its_publisher() -> None:
    """An answered call with negotiated media: {v, call, holder, media, real}; the holder is
    the member its media names (a RemoteMedia), else the real itself."""
    assert call_record(Session("c1"), "m1") == {  # type: ignore[arg-type]
        "v": RECORD_VERSION, "call": {"version": 1, "cseq": 1}, "holder": "m1",
        "media": {"v": 1, "sdp": "x"}, "real": "m1"}
    remote = Session("c2", media=Media(holder="m2"))
    assert call_record(remote, "m1")["holder"] == "m2"  # type: ignore[arg-type, index]


@pytest.mark.parametrize("session", [Session("c", state="ringing"), Session("c", media=None),
                                     Session("c", media=Media(record=None))])
def test_no_record_before_the_call_and_its_media_are_up(session: Session) -> None:
    """Ringing, no media, or media not negotiated yet: nothing a successor could resume."""
    assert call_record(session, "m1") is None  # type: ignore[arg-type]


def test_the_records_are_published_when_they_change_and_pending_ones_stay() -> None:
    """Published once per change (the tick calls flush twice a second); a call being adopted
    keeps the record it came with until its media is settled; no calls: {} (once)."""
    sent: list[dict[str, Any]] = []
    records = ContinuityRecords(sent.append)
    calls = [Session("c1")]
    records.flush(calls, "m1")  # type: ignore[arg-type]
    records.flush(calls, "m1")  # type: ignore[arg-type]
    assert [list(s) for s in sent] == [["c1"]]
    calls[0].cseq = 2  # a re-INVITE moved the CSeq: a new record
    records.flush(calls, "m1")  # type: ignore[arg-type]
    assert len(sent) == 2 and sent[-1]["c1"]["call"]["cseq"] == 2
    records.pending["c2"] = {"v": 1, "old": True}
    records.flush([*calls, Session("c2", media=None)], "m1")  # type: ignore[list-item]
    assert sent[-1]["c2"] == {"v": 1, "old": True}
    records.pending.clear()
    records.flush([], "m1")
    records.flush([], "m1")
    assert sent[-1] == {} and len(sent) == 4
    records.reset()
    records.flush([], "m1")
    assert len(sent) == 5  # a new reign publishes afresh


@pytest.mark.parametrize(("record", "message"), [
    ("x", "must be an object, got str"),
    ({"v": 2}, "field 'v' is 2"),
    ({"v": 1, "call": [], "holder": "a", "media": {}}, "field 'call' must be dict, got list"),
    ({"v": 1, "call": {}, "holder": None, "media": {}}, "field 'holder' must be str"),
    ({"v": 1, "call": {}, "holder": "a"}, "field 'media' must be dict, got NoneType"),
])
def test_a_bad_record_is_refused_by_field(record: object, message: str) -> None:
    """A new real refuses a record it cannot adopt, naming the call and the field."""
    with pytest.raises(SipParseError, match=f"continuity record 'c9' {message}"):
        _entry("c9", record)


SDP = "v=0\r\no=- 4711 {} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
MEDIA = continuity_record(local_sdp=SDP.format(7), remote_sdp=SDP.format(3),
                          direction="sendrecv", muted=False, receive_sample_rate=8000,
                          dtmf_payload_type=None)


class Phone:
    """What `Adoption.adopt` uses of a WebPhone: `adopt_call` (the dialog moves on by 1000)."""

    def adopt_call(self, record: dict[str, Any]) -> Session:
        if record.get("bad"):
            raise SipParseError("call record field 'core' is broken")
        return Session(record["id"], cseq=record["cseq"] + 1000)


async def test_a_call_being_adopted_stays_published_with_the_dialog_as_adopted() -> None:
    """Step 1 of a takeover: the records of the calls being adopted are published with the
    dialog's CSeq moved on (a successor of ours, should we die before the media is settled,
    moves it on again instead of repeating our re-INVITE's CSeq), and with the o= versions its
    media renewal may send claimed (RFC 3264 §8: a successor's SDPs go above them); a bad
    record (dialog or media) is left out."""
    sent: list[dict[str, Any]] = []
    records = ContinuityRecords(sent.append)
    adoption = Adoption(records=records, media_for=lambda *_: None, emit=lambda *_: None)
    old = {"v": 1, "call": {"id": "c1", "cseq": 7}, "holder": "m0", "media": MEDIA,
           "real": "m0"}
    bad = {**old, "call": {"bad": True}}
    bad_media = {**old, "media": {**MEDIA, "versions_used": -1}}
    adopted = adoption.adopt(Phone(), {"c1": old, "c2": bad,  # type: ignore[arg-type]
                                       "c3": bad_media})
    assert [(session.call_id, entry) for session, entry in adopted] == [("c1", old)]
    records.flush([session for session, _ in adopted], "m1")  # type: ignore[misc]
    assert sent[-1]["c1"] == {**old, "call": {"version": 1, "cseq": 1007},
                              "media": {**MEDIA, "versions_used": 7 + 2 * RESUME_GAP}}
