"""The continuity plane of the group protocol, pure: its frames (bounds, allow-list, no secrets)
and the coordinator's rules (delegates end in exactly one outcome at the real that asked, the
real hears of every lost member, the newest continuity state reaches every member and never a
snapshot). The process-level behaviour is tests/integration/test_shared_plane.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_coordinator import Hub, state

from webphone.errors import GroupProtocolError
from webphone.shared.actions import DELEGATE_OPS
from webphone.shared.protocol import (
    MAX_CONTINUITY_BYTES,
    Continuity,
    Delegate,
    DelegateResult,
    ErrorInfo,
    Leave,
    MemberLost,
    Registered,
    RoleChange,
    Snapshot,
    Welcome,
    decode_frame,
)
from webphone.shared.schema import MAX_SDP_CHARS

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def delegate(**kw: Any) -> Delegate:
    fields: dict[str, Any] = {"id": "d1", "to": "b", "call_id": "c1", "op": "media.offer",
                              "args": {"sdp": SDP}, "epoch": 1, "timeout": 5.0}
    return Delegate(**{**fields, **kw})


# -- frames ----------------------------------------------------------------------------------------


def test_frames_round_trip_through_json() -> None:
    frames = [delegate(), DelegateResult(id="d1", ok=True, value={"sdp": SDP}),
              DelegateResult(id="d1", ok=False, error=ErrorInfo("CallError", "no such call")),
              MemberLost(member_id="b", reason="crashed"),
              Continuity(epoch=2, seq=3, calls={"c1": {"dialog": {"cseq": 4}, "sdp": SDP}})]
    for frame in frames:
        assert decode_frame(frame.to_json()) == frame


@pytest.mark.parametrize(("change", "field"), [
    ({"op": "media.eval"}, "delegate.op"),
    ({"op": "answer"}, "delegate.op"),  # an action name is not a delegate operation
    ({"args": {"sdp": "x" * (MAX_SDP_CHARS + 1)}}, "delegate.args.sdp"),
    ({"args": {"sdp": "a\x00b"}}, "delegate.args.sdp"),
    ({"args": {"n": float("nan")}}, "delegate.args.n"),
    ({"args": ["not", "an", "object"]}, "delegate.args"),
    ({"call_id": ""}, "delegate.call_id"),
    ({"epoch": 0}, "delegate.epoch"),
    ({"timeout": -1}, "delegate.timeout"),
    ({"to": "x" * 200}, "delegate.to"),
])
def test_a_bad_delegate_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(GroupProtocolError, match=f"^{field}: "):
        delegate(**change)


def test_every_allowed_operation_is_a_media_operation() -> None:
    assert {op.split(".")[0] for op in DELEGATE_OPS} == {"media"}
    for op in DELEGATE_OPS:
        assert delegate(op=op).op == op


def test_a_result_is_ok_or_an_error_never_both() -> None:
    with pytest.raises(GroupProtocolError, match=r"delegate_result\.error"):
        DelegateResult(id="d1", ok=True, error=ErrorInfo("CallError", "x"))
    with pytest.raises(GroupProtocolError, match=r"delegate_result\.error"):
        DelegateResult(id="d1", ok=False)


def test_a_loss_reason_is_one_of_three() -> None:
    with pytest.raises(GroupProtocolError, match=r"member_lost\.reason"):
        MemberLost(member_id="b", reason="bored")


@pytest.mark.parametrize("key", ["password", "sipPassword", "client_secret", "Authorization"])
def test_continuity_refuses_a_key_that_names_a_secret_at_any_depth(key: str) -> None:
    """The SIP password lives in the phone's sipInfo only: a record that would carry it (or a
    digest Authorization) is refused on the publisher and on every receiver alike."""
    with pytest.raises(GroupProtocolError, match=f"continuity.calls.c1.dialog.{key}: secrets"):
        Continuity(epoch=1, seq=1, calls={"c1": {"dialog": {key: "x"}}})
    raw = {"v": 1, "type": "continuity", "epoch": 1, "seq": 1,
           "calls": {"c1": {"legs": [{key: "x"}]}}}
    with pytest.raises(GroupProtocolError, match="secrets"):
        decode_frame(json.dumps(raw))


def test_continuity_is_bounded_in_calls_and_bytes() -> None:
    with pytest.raises(GroupProtocolError, match=r"continuity\.calls: 101 calls"):
        Continuity(epoch=1, seq=1, calls={f"c{i}": {} for i in range(101)})
    big = {f"c{i}": {"sdp": "x" * 60_000} for i in range(5)}
    with pytest.raises(GroupProtocolError, match=f"at most {MAX_CONTINUITY_BYTES}"):
        Continuity(epoch=1, seq=1, calls=big)
    assert len(Continuity(epoch=1, seq=1, calls=dict(list(big.items())[:4])).to_json()) \
        < MAX_CONTINUITY_BYTES


@given(st.dictionaries(st.text(min_size=1, max_size=20),
                       st.recursive(st.none() | st.booleans() | st.integers(-10, 10)
                                    | st.text(max_size=30),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                                    max_leaves=10), max_size=4))
def test_any_record_is_either_refused_with_a_field_path_or_round_trips(
        record: dict[str, Any]) -> None:
    try:
        frame = Continuity(epoch=1, seq=1, calls={"c1": record})
    except GroupProtocolError as exc:
        assert str(exc).startswith("continuity.calls")
    else:
        assert decode_frame(frame.to_json()) == frame


# -- the coordinator: delegates -------------------------------------------------------------------


def group(*names: str) -> Hub:
    hub = Hub()
    for name in names:
        hub.join(name)
    hub.send(names[0], Registered(1))
    for name in names:
        hub.inbox[name].clear()
    return hub


def test_a_delegate_reaches_its_member_and_the_answer_only_the_real() -> None:
    hub = group("a", "b", "c")
    hub.send("a", delegate(to="b"))
    sent = hub.last("b", Delegate)
    assert (sent.op, sent.call_id, sent.args, sent.epoch) == ("media.offer", "c1", {"sdp": SDP}, 1)
    assert not hub.take("c", Delegate)
    hub.send("c", DelegateResult(id=sent.id, ok=True, value="forged"))  # not its delegate
    assert not hub.take("a", DelegateResult)
    hub.send("b", DelegateResult(id=sent.id, ok=True, value={"sdp": SDP}))
    assert hub.take("a", DelegateResult) == [DelegateResult(id="d1", ok=True, value={"sdp": SDP})]
    hub.send("b", DelegateResult(id=sent.id, ok=True, value="again"))  # late duplicate
    assert not hub.take("a", DelegateResult) and hub.c.pending_delegates() == 0


def test_a_delegate_to_an_unknown_member_fails_at_once() -> None:
    hub = group("a", "b")
    hub.send("a", delegate(to="nobody"))
    [result] = hub.take("a", DelegateResult)
    assert result.error is not None and result.error.type == "MemberLostError"
    assert "'nobody' is not in the group" in result.error.message


@pytest.mark.parametrize(("how", "reason"), [("crash", "crashed"), ("leave", "left"),
                                             ("hang", "hung")])
def test_a_lost_member_ends_its_delegates_once_and_the_real_is_told(how: str,
                                                                    reason: str) -> None:
    hub = group("a", "b", "c")
    hub.send("a", delegate(to="b"))
    sent = hub.last("b", Delegate)
    if how == "crash":
        hub.crash("b")
    elif how == "leave":
        hub.send("b", Leave())
    else:
        hub.advance(6.0, alive=("a", "c"))
    [result] = hub.take("a", DelegateResult)
    assert result.error is not None and result.error.type == "MemberLostError"
    assert f"'b' {reason} before answering 'media.offer'" in result.error.message
    assert hub.take("a", MemberLost) == [MemberLost(member_id="b", reason=reason)]
    assert not hub.take("c", MemberLost), "only the real hears of losses"
    hub.send("b", DelegateResult(id=sent.id, ok=True)) if how == "leave" else None
    assert not hub.take("a", DelegateResult)


def test_a_delegate_times_out_at_the_hub() -> None:
    hub = group("a", "b")
    hub.send("a", delegate(to="b", timeout=2.0))
    hub.advance(1.0, alive=("a", "b"))
    assert not hub.take("a", DelegateResult)
    hub.advance(1.0, alive=("a", "b"))
    [result] = hub.take("a", DelegateResult)
    assert result.error is not None and result.error.type == "DelegateTimeoutError"


def test_only_the_current_real_delegates() -> None:
    hub = group("a", "b")
    hub.send("b", delegate(to="a"))  # a dummy
    assert not hub.take("a", Delegate)
    assert hub.last("b", RoleChange).role == "dummy"
    hub.send("a", delegate(to="b", epoch=7))  # the real at another epoch: fenced
    assert not hub.take("b", Delegate) and hub.last("a", RoleChange).role == "real"


def test_a_real_lost_after_delegating_sends_the_next_real_the_loss() -> None:
    """The old real crashed with a delegate out: the answer has nobody to go to; the new real
    hears that the old one crashed (it may have held media)."""
    hub = group("a", "b", "c")
    hub.send("a", delegate(to="c"))
    sent = hub.last("c", Delegate)
    hub.crash("a")
    assert hub.last("b", RoleChange).role == "real"
    assert hub.take("b", MemberLost) == [MemberLost(member_id="a", reason="crashed")]
    hub.send("c", DelegateResult(id=sent.id, ok=True))
    assert not hub.take("b", DelegateResult) and hub.c.pending_delegates() == 0


def test_a_deposed_real_gets_its_delegates_interrupted_and_its_successor_the_loss() -> None:
    hub = group("a", "b", "c")
    hub.send("a", delegate(to="c"))
    hub.advance(6.0, alive=("b", "c"))  # a hangs
    [result] = hub.take("a", DelegateResult)
    assert result.error is not None and result.error.type == "ActionInterruptedError"
    assert hub.take("b", MemberLost) == [MemberLost(member_id="a", reason="hung")]
    hub.advance(6.0, alive=("b", "c"))  # dropped later: not told twice
    assert not hub.take("b", MemberLost)


# -- the coordinator: continuity ------------------------------------------------------------------


def test_continuity_is_cached_fanned_out_and_sent_after_every_welcome() -> None:
    hub = group("a", "b")
    first = Continuity(epoch=1, seq=1, calls={"c1": {"sdp": SDP}})
    hub.send("a", first)
    assert hub.take("b", Continuity) == [first] and not hub.take("a", Continuity)
    hub.join("c")
    frames = hub.inbox["c"]
    assert isinstance(frames[0], Welcome) and frames[1] == first
    hub.send("a", Continuity(epoch=1, seq=1, calls={}))  # not newer: dropped
    assert hub.c.continuity == first and not hub.take("b", Continuity)


def test_continuity_survives_promotion_until_the_new_real_publishes() -> None:
    hub = group("a", "b", "c")
    first = Continuity(epoch=1, seq=5, calls={"c1": {"sdp": SDP}})
    hub.send("a", first)
    hub.crash("a")
    hub.send("b", Continuity(epoch=1, seq=9, calls={}))  # its old epoch: fenced
    assert hub.c.continuity == first
    hub.join("d")
    assert hub.take("d", Continuity) == [first]
    newer = Continuity(epoch=hub.c.epoch, seq=1, calls={})
    hub.send("b", newer)
    assert hub.c.continuity == newer and hub.take("d", Continuity) == [newer]


def test_continuity_never_enters_a_snapshot_or_a_welcome() -> None:
    hub = group("a", "b")
    hub.send("a", Continuity(epoch=1, seq=1, calls={"c1": {"marker": "CONTINUITY-ONLY"}}))
    hub.send("a", Snapshot(1, 1, state("c1")))
    hub.join("c")
    for conn in ("b", "c"):
        for frame in hub.inbox[conn]:
            if isinstance(frame, Snapshot | Welcome):
                assert b"CONTINUITY-ONLY" not in frame.to_json()
