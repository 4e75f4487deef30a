"""Group wire frames: round trips, the envelope checks, the action allow-list, the state schema."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone.errors import GroupProtocolError
from webphone.shared import protocol
from webphone.shared.actions import ACTIONS, PHONE_ACTIONS, SESSION_ACTIONS
from webphone.shared.protocol import (
    HUB_FRAMES,
    MAX_FRAME_BYTES,
    MEMBER_FRAMES,
    Action,
    ActionAccepted,
    ActionResult,
    Continuity,
    Delegate,
    DelegateResult,
    Error,
    ErrorInfo,
    Frame,
    Heartbeat,
    Hello,
    Leave,
    MemberInfo,
    MemberLost,
    Members,
    MembersQuery,
    Registered,
    Released,
    RoleChange,
    Snapshot,
    Welcome,
    check_state,
    decode_frame,
)
from webphone.shared.schema import check_number, check_text

CALL = {"id": "abc@host", "direction": "inbound", "state": "ringing", "remote_number": "+1650",
        "remote_name": "Ann", "held": False, "muted": True, "created_at": 1.5, "ended_at": None,
        "session_id": "s1", "party_id": None}
STATE = {"calls": [CALL]}
MEMBER = MemberInfo("m1", 10, "host", "dummy", 1.0, 2.0)

EXAMPLES: list[Frame] = [
    Hello("m1", 10, "host", "g", 123.5),
    Hello("m1", 10, "host", "g", 123.5, protocol=2, epoch=4, real=True),
    Welcome("m1", "dummy", 3, "m0", 1.0, Snapshot(3, 7, STATE), (MEMBER,)),
    Welcome("m1", "real", 1, "m1", 0.5, None, ()),
    Heartbeat(),
    Leave(),
    RoleChange("handing_over", 4, "m2"),
    RoleChange("dummy", 4),
    Snapshot(1, 0, {"calls": []}),
    Action("a1", "call", None, {"callee": "101", "headers": {"X-Foo": "bar"}}, 5.0),
    Action("a2", "send_dtmf", "c1", {"digits": "12#", "duration": 0.1}, 5),
    Action("a3", "reply", "c1", {"message": {"text": "call you back", "minutes": 5}}, 5),
    Action("a4", "flip", "c1", {"target": 2}, 5),
    ActionAccepted("a1"),
    ActionResult("a1", 3, True, {"call_id": "c9", "n": [1, 2.5, None]}),
    ActionResult("a1", 3, False, None, ErrorInfo("NoRealPhoneError", "nobody\nhome")),
    Registered(2),
    Released(2, unregister=True),
    MembersQuery(),
    Members((MEMBER, MEMBER)),
    Error("protocol", "bad frame"),
    Delegate(id="d1", to="m2", call_id="x@y", op="media.offer", args={"sdp": "v=0\r\n"},
             epoch=3, timeout=5.0),
    DelegateResult(id="d1", ok=True, value={"sdp": "v=0\r\n"}),
    MemberLost(member_id="m2", reason="crashed"),
    Continuity(epoch=3, seq=1, calls={"x@y": {"cseq": 4}}),
]


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: f.TYPE)
def test_every_frame_round_trips(frame: Frame) -> None:
    data = frame.to_json()
    obj = json.loads(data)
    assert obj["v"] == 1 and obj["type"] == frame.TYPE
    assert decode_frame(data) == frame
    assert decode_frame(data.decode()) == frame


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: f.TYPE)
def test_the_encoding_is_the_stdlib_encoders_and_omitted_defaults_decode_as_built(
        frame: Frame) -> None:
    # to_json skips json.JSONEncoder's Python layers and decoding skips the dataclass __init__:
    # the same bytes and the same frames as the plain paths
    plain = json.dumps(frame.to_obj(), separators=(",", ":"), ensure_ascii=False,
                       allow_nan=False).encode()
    assert frame.to_json() == plain
    obj = frame.to_obj()
    defaults = {f.name: f.default for f in dataclasses.fields(frame)
                if f.default is not dataclasses.MISSING}
    trimmed = {k: v for k, v in obj.items() if k not in defaults or defaults[k] != v}
    decoded = decode_frame(json.dumps(trimmed))
    assert decoded == frame and type(decoded) is type(frame)
    assert vars(decoded).keys() >= {f.name for f in dataclasses.fields(frame)}


def test_every_frame_type_has_an_example_and_a_direction() -> None:
    types = {type(f) for f in EXAMPLES}
    assert types == MEMBER_FRAMES | HUB_FRAMES


def test_to_json_is_encoded_once_per_frame() -> None:
    snap = Snapshot(1, 1, STATE)
    assert snap.to_json() is snap.to_json()


def bad(data: bytes | str | dict[str, Any], match: str) -> None:
    if isinstance(data, dict):
        data = json.dumps(data)
    with pytest.raises(GroupProtocolError, match=match):
        decode_frame(data)


def frame_obj(frame: Frame, **changes: Any) -> dict[str, Any]:
    obj = frame.to_obj()
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not ...}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"x" * (MAX_FRAME_BYTES + 1), "MAX_FRAME_BYTES"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"v":1,"type":"heartbeat","v":1}', "duplicate key 'v'"),
        (b'{"v":1,"type":"registered","epoch":NaN}', "NaN is not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"type":"heartbeat"}', r"frame\.v: expected protocol version 1, got None"),
        (b'{"v":2,"type":"heartbeat"}', r"frame\.v: .* got 2"),
        (b'{"v":true,"type":"heartbeat"}', r"frame\.v"),
        (b'{"v":1,"type":"exec"}', r"frame\.type: unknown frame type 'exec'"),
        (b'{"v":1}', r"frame\.type"),
        (b'{"v":1,"type":"heartbeat","extra":1}', r"heartbeat: unknown field 'extra'"),
        (b'{"v":1,"type":"registered"}', r"registered\.epoch: missing"),
    ],
)
def test_envelope_errors_say_what_is_wrong(data: bytes, match: str) -> None:
    bad(data, match)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (frame_obj(EXAMPLES[0], pid="10"), r"hello\.pid: expected an integer, got str"),
        (frame_obj(EXAMPLES[0], pid=True), r"hello\.pid: expected an integer, got bool"),
        (frame_obj(EXAMPLES[0], pid=-1), r"hello\.pid: -1 is out of range"),
        (frame_obj(EXAMPLES[0], member_id=""), r"hello\.member_id: expected 1\.\.128"),
        (frame_obj(EXAMPLES[0], member_id="x" * 129), r"hello\.member_id"),
        (frame_obj(EXAMPLES[0], host="a\r\nb"), r"hello\.host: control characters"),
        (frame_obj(EXAMPLES[0], real=True), r"hello\.real: .*epoch > 0"),
        (frame_obj(EXAMPLES[0], started_at=float("1e300")), r"hello\.started_at: .* out of range"),
        (frame_obj(EXAMPLES[2], role="king"), r"welcome\.role: expected one of real"),
        (frame_obj(EXAMPLES[2], members=[{"member_id": "x"}]), r"welcome\.members\[0\]\.pid"),
        (frame_obj(EXAMPLES[2], snapshot=[]), r"welcome\.snapshot: expected an object or null"),
        (frame_obj(EXAMPLES[2], heartbeat_interval=0), r"welcome\.heartbeat_interval"),
        (frame_obj(EXAMPLES[8], epoch=0), r"snapshot\.epoch: 0 is out of range"),
        (frame_obj(EXAMPLES[8], epoch=2**53), r"snapshot\.epoch"),
        (frame_obj(EXAMPLES[14], ok=False), r"action_result\.error: required exactly when"),
        (frame_obj(EXAMPLES[14], error={"type": "X", "message": "m"}), r"action_result\.error"),
        (frame_obj(EXAMPLES[15], error={"type": "a b", "message": ""}), r"error\.type"),
        (frame_obj(EXAMPLES[15], error={"type": "X"}), r"action_result\.error\.message: missing"),
        (frame_obj(EXAMPLES[17], unregister=1), r"released\.unregister: expected true or false"),
        (frame_obj(EXAMPLES[9], timeout=-1), r"action\.timeout"),
        (frame_obj(EXAMPLES[9], timeout=1e9), r"action\.timeout"),
    ],
)
def test_field_errors_name_the_field(obj: dict[str, Any], match: str) -> None:
    bad(obj, match)


# -- the action allow-list ------------------------------------------------------------------------


def test_the_allow_list_is_the_public_action_set() -> None:
    assert set(PHONE_ACTIONS) == {"call", "release_media"}
    assert set(SESSION_ACTIONS) == {
        "answer", "decline", "to_voicemail", "forward", "start_reply", "reply", "hangup",
        "cancel", "hold", "unhold", "mute", "unmute", "send_dtmf", "transfer", "warm_transfer",
        "complete_warm_transfer", "cancel_warm_transfer", "start_recording", "stop_recording",
        "flip", "park", "re_invite"}
    assert set(PHONE_ACTIONS) | set(SESSION_ACTIONS) == ACTIONS


def act(name: str, call_id: str | None = "c1", **args: Any) -> dict[str, Any]:
    return Action("a", "hold", "c1", {}, 5).to_obj() | {"name": name, "call_id": call_id,
                                                        "args": args}


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (act("__class__"), r"action\.name: '__class__' is not an allowed action"),
        (act("dispose"), r"action\.name: 'dispose'"),
        (act("call", None), r"action\.args\.callee: missing"),
        (act("release_media", None), r"action\.args\.holder: missing"),
        (act("release_media", "c1", holder="b"), r"'release_media' is a phone action"),
        (act("answer", "c1", holder=7), r"action\.args\.holder"),
        (act("call", None, callee="101", holder="b\nx"), r"action\.args\.holder: control"),
        (act("call", "c1", callee="101"), r"action\.call_id: 'call' is a phone action"),
        (act("call", None, callee="101\r\nVia: evil"), r"action\.args\.callee: control"),
        (act("call", None, callee="101", headers={"Bad Name": "x"}), r"not a header name"),
        (act("call", None, callee="101", headers={"X-A": "a\nb"}), r"headers\.X-A: control"),
        (act("call", None, callee="101", headers=["X-A"]), r"action\.args\.headers"),
        (act("call", None, callee="101", password="x"), r"takes no argument 'password'"),
        (act("hold", None), r"action\.call_id: expected a string, got NoneType"),
        (act("hold", "c1", force=True), r"'hold' takes no argument 'force'"),
        (act("transfer"), r"action\.args\.target: missing"),
        (act("transfer", target=101), r"action\.args\.target: expected a string"),
        (act("send_dtmf", digits="12x"), r"action\.args\.digits"),
        (act("send_dtmf", digits="1", duration=60), r"action\.args\.duration"),
        (act("flip", target=-1), r"action\.args\.target"),
        (act("flip", target=True), r"action\.args\.target"),
        (act("reply", message="x" * 2000), r"action\.args\.message"),
        ({**act("hold"), "args": []}, r"action\.args: expected an object, got list"),
    ],
)
def test_actions_outside_the_allow_list_or_with_bad_args_are_refused(
    obj: dict[str, Any], match: str
) -> None:
    bad(obj, match)


@pytest.mark.parametrize("name", sorted(SESSION_ACTIONS))
def test_every_session_action_has_a_valid_minimal_form(name: str) -> None:
    required = {arg: {"target": "102", "message": "hi", "digits": "1"}[arg]
                for arg, (_, req) in SESSION_ACTIONS[name].items() if req}
    frame = Action("a", name, "c1", required, 5)
    assert decode_frame(frame.to_json()) == frame


def test_building_a_bad_frame_in_code_fails_the_same_way() -> None:
    with pytest.raises(GroupProtocolError, match=r"action\.name"):
        Action("a", "eval", None, {}, 5)
    with pytest.raises(GroupProtocolError, match=r"action_result\.value"):
        ActionResult("a", 1, True, {1, 2})


# -- snapshot state -------------------------------------------------------------------------------

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ([], r"snapshot\.state: expected an object, got list"),
        ({}, r"snapshot\.state\.calls: expected a list"),
        ({"calls": [1]}, r"calls\[0\]: expected an object"),
        ({"calls": [{"id": "x", "state": "ringing"}]}, r"calls\[0\]\.direction: missing"),
        ({"calls": [CALL | {"direction": "sideways"}]}, r"calls\[0\]\.direction: expected one"),
        ({"calls": [CALL | {"state": "weird"}]}, r"calls\[0\]\.state: expected one"),
        ({"calls": [CALL | {"held": "yes"}]}, r"calls\[0\]\.held: str is not allowed"),
        ({"calls": [CALL | {"created_at": True}]}, r"calls\[0\]\.created_at: bool"),
        ({"calls": [CALL | {"sdp": SDP}]}, r"calls\[0\]\.sdp: .* looks like a SIP message or SDP"),
        ({"calls": [CALL | {"note": "x" * 300}]}, r"calls\[0\]\.note: a 300-char"),
        ({"calls": [CALL | {"sip": {"password": "x"}}]}, r"sip\.password: secrets never"),
        ({"calls": [], "sipPassword": "x"}, r"state\.sipPassword: secrets never"),
        ({"calls": [], "x": [[[[["deep"]]]]]}, r"nested too deeply"),
        ({"calls": [CALL] * 101}, r"101 items, at most 100"),
        ({"calls": [], "n": float("nan")}, r"NaN"),
        ({"calls": [], "": 1}, r"keys must be strings"),
    ],
)
def test_the_state_validator_refuses_blobs_secrets_and_bad_shapes(
    state: Any, match: str
) -> None:
    with pytest.raises(GroupProtocolError, match=match):
        check_state(state)
    if isinstance(state, dict) and all(isinstance(k, str) and k for k in state):
        with pytest.raises(GroupProtocolError):
            Snapshot(1, 1, state)


def test_a_call_may_carry_extra_small_fields() -> None:
    check_state({"calls": [CALL | {"conference": True, "queue": "sales"}], "registered": True})


# -- properties -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False,
                                                                        allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_random_bytes_either_decode_or_raise_group_protocol_error(data: bytes) -> None:
    with contextlib.suppress(GroupProtocolError):
        decode_frame(data)


@given(json_values)
def test_random_json_objects_either_decode_or_raise_group_protocol_error(value: Any) -> None:
    for obj in (value, {"v": 1, "type": "action", "args": value},
                {"v": 1, "type": "snapshot", "epoch": 1, "seq": 1, "state": value}):
        with contextlib.suppress(GroupProtocolError):
            decode_frame(json.dumps(obj))


@given(json_values)
def test_any_json_result_value_round_trips(value: Any) -> None:
    frame = ActionResult("a", 1, True, value)
    assert decode_frame(frame.to_json()) == frame


@given(st.text(max_size=40), st.booleans())
def test_check_text_refuses_exactly_the_control_characters(text: str, lines: bool) -> None:
    # the C fast path for printable ASCII must agree with the rule (newlines and tabs only with
    # lines=True), whatever the characters
    allowed = set("\t\n") if lines else set()
    control = any((ord(c) < 0x20 or c == "\x7f") and c not in allowed for c in text)
    try:
        check_text(text, "f", 100, empty=True, lines=lines)
    except GroupProtocolError as exc:
        assert control and "control characters" in str(exc)
    else:
        assert not control


def _outcome(parse: Any, data: bytes) -> str:
    """What `parse` makes of `data`: the value's repr (ints, floats and -0.0 told apart) or
    the error's type and message."""
    try:
        return repr(parse(data))
    except (GroupProtocolError, ValueError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _stdlib_parse(data: bytes) -> Any:
    return protocol._parse(data.decode())


@given(json_values, st.data())
def test_the_fast_decoder_gives_the_stdlib_value_or_error(value: Any, data: st.DataObject) -> None:
    # msgspec's value is taken only when it encodes back to the very bytes: a duplicate key,
    # another spelling of a number or string, or a constant goes the stdlib path (same error)
    text = json.dumps({"v": 1, "x": value}, separators=(",", ":"), ensure_ascii=False)
    variants = [text, text.replace('{"v":1,', '{"v":1,"v":1,', 1), text.replace("1", "1e0"),
                text.replace('"', '"\\u0041', 1), data.draw(st.text(max_size=40))]
    if isinstance(value, dict) and value:
        key = next(iter(value))
        dup = json.dumps(key, ensure_ascii=False) + ":" + json.dumps(value[key])
        variants.append(text.replace(dup, f"{dup},{dup}", 1))
    for variant in variants:
        raw = variant.encode("utf-8", "surrogatepass")
        assert _outcome(protocol._parse_bytes, raw) == _outcome(_stdlib_parse, raw)


def test_a_duplicate_key_written_compactly_is_still_refused() -> None:
    # compact and otherwise canonical: msgspec alone would keep the last "epoch"
    bad(b'{"v":1,"type":"registered","epoch":1,"epoch":2}', "duplicate key 'epoch'")
    bad(b'{"v":1,"type":"action","action_id":"a","name":"hold","call_id":"c",'
        b'"args":{"a":1,"a":1},"timeout":1.0}', "duplicate key 'a'")


@pytest.mark.parametrize("cls", [Action, ActionResult, ErrorInfo])
def test_the_written_out_initialisers_take_the_dataclass_fields(cls: type) -> None:
    # Action, ActionResult and ErrorInfo build themselves by hand (the hot path): the same
    # parameters, in the same order, with the same defaults as the dataclass fields
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        for f in fields]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: f.TYPE)
def test_every_frame_we_write_takes_the_fast_decoder(frame: Frame) -> None:
    # our encoding is the one msgspec writes back, so no frame a member or hub sends pays for
    # the stdlib path (the speed of _parse_bytes rests on this)
    data = frame.to_json()
    assert protocol._FAST_ENCODE(protocol._FAST_DECODE(data)) == data


def _checks(check: Any) -> str:
    try:
        check()
    except GroupProtocolError as exc:
        return f"refused: {exc}"
    return "accepted"


odd_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**54), st.floats(),
                       st.text(max_size=140), st.binary(max_size=3))


@given(odd_values, odd_values, odd_values, odd_values, odd_values)
def test_the_fast_checks_of_a_result_agree_with_its_full_checks(
        action_id: Any, epoch: Any, ok: Any, value: Any, error: Any) -> None:
    # ActionResult and ErrorInfo check their common case at once (`__post_init__`), the rest
    # field by field (`_check`): whatever the values, both accept or refuse alike
    info = object.__new__(ErrorInfo)
    info.__dict__.update(type=action_id, message=value)
    assert _checks(info.__post_init__) == _checks(info._check)
    for err in (error, None, ErrorInfo("CallError", "no call")):
        frame = object.__new__(ActionResult)
        frame.__dict__.update(action_id=action_id, epoch=epoch, ok=ok, value=value, error=err)
        fast = _checks(frame.__post_init__)
        frame.__dict__["error"] = err  # `_check` may have replaced a dict with an ErrorInfo
        assert fast == _checks(frame._check)


@given(st.one_of(st.floats(), st.integers(-5, 5000), st.booleans(), st.none()))
def test_the_fast_number_check_agrees_with_the_full_one(value: Any) -> None:
    def full() -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise GroupProtocolError("type")
        if not (math.isfinite(value) and 0.0 <= value <= 3600.0):
            raise GroupProtocolError("range")
    refused = _checks(lambda: check_number(value, "f", 0.0, 3600.0)) != "accepted"
    assert refused == (_checks(full) != "accepted")
