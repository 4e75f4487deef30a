"""The compiled schema of the action round trip's frames (`shared/hot_frames.py`): what it
writes is the frame, and what it accepts, the generic path accepts too, as the same frame."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone.errors import GroupProtocolError
from webphone.shared import protocol
from webphone.shared.actions import SESSION_ACTIONS
from webphone.shared.protocol import Action, ActionResult, ErrorInfo, Frame, decode_frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
any_texts = st.text(max_size=140)  # control characters, empty and too long ones too


def plain_json(frame: Frame) -> Any:
    """The frame's object as the generic encoding writes it, read back."""
    return json.loads(json.dumps(frame.to_obj(), separators=(",", ":"), ensure_ascii=False,
                                 allow_nan=False))


def outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    """What `decode` makes of `data`: the frame, or the error's message."""
    try:
        return ("frame", decode(data))
    except GroupProtocolError as exc:
        return ("error", str(exc))


def assert_hot_agrees(data: bytes) -> None:
    """The compiled path declines `data` or gives the generic path's frame; it never accepts
    what the generic path refuses."""
    hot = protocol._decode_hot(data)
    if hot is not None:
        assert outcome(protocol._decode_generic, data) == ("frame", hot)
    assert outcome(decode_frame, data) == outcome(protocol._decode_generic, data)


def mutations(data: bytes, draw: st.DrawFn) -> list[bytes]:
    """`data` changed in the ways a peer could get it wrong (or a fuzzer would)."""
    text = data.decode()
    obj = json.loads(text)
    out = [data, data + b" ", b" " + data, text.replace(",", ", ", 1).encode()]
    for key in obj:
        if key in ("v", "type"):
            continue
        rest = {k: v for k, v in obj.items() if k != key}
        out.append(json.dumps(rest, separators=(",", ":"), ensure_ascii=False).encode())
        for bad in (None, True, -1, 1.5, "", "\x01", "x" * 200, [], {}, {"type": "E",
                    "message": "m"}, draw(json_values)):
            changed = dict(obj, **{key: bad})
            out.append(json.dumps(changed, separators=(",", ":"), ensure_ascii=False).encode())
    dup = text[:-1] + ',"action_id":"z"}'
    out += [dup.encode(), (text[:-1] + ',"extra":1}').encode(),
            text.replace('"v":1', '"v":true', 1).encode(),
            text.replace('"v":1', '"v":1.0', 1).encode()]
    cut = draw(st.integers(0, len(data)))
    out += [data[:cut], data[:cut] + draw(st.binary(max_size=4)) + data[cut + 1:]]
    return out


@given(json_values, texts, texts, st.integers(0, 2**53 - 1), st.booleans())
def test_a_result_is_written_in_the_canonical_form(value: Any, action_id: str, message: str,
                                                   epoch: int, ok: bool) -> None:
    error = None if ok else ErrorInfo("Some_Error.x", message)
    frame = ActionResult(action_id, epoch, ok, value if ok else None, error)
    data = frame.to_json()
    assert json.loads(data) == plain_json(frame)
    assert protocol._decode_hot(data) == frame  # taken by the compiled path
    assert protocol._decode_generic(data) == frame


@given(texts, st.sampled_from(sorted(SESSION_ACTIONS)), texts,
       st.one_of(st.integers(0, 3600), st.floats(0.0, 3600.0)), st.data())
def test_an_action_is_written_in_the_canonical_form(action_id: str, name: str, call_id: str,
                                                    timeout: float, data: st.DataObject) -> None:
    args: dict[str, Any] = {}
    if name == "reply":
        args = {"message": data.draw(st.dictionaries(st.text(max_size=8), json_values,
                                                     max_size=3))}
    elif name in ("forward", "transfer", "warm_transfer", "flip"):
        args = {"target": call_id}
    elif name == "send_dtmf":
        args = {"digits": "12#", "duration": 0.25}
    frames = [Action(action_id, name, call_id, args, timeout),
              Action(action_id, "call", None, {"callee": call_id, "headers": {"X-A": call_id}},
                     timeout)]
    for frame in frames:
        encoded = frame.to_json()
        assert json.loads(encoded) == plain_json(frame)
        hot = protocol._decode_hot(encoded)
        assert hot == frame
        assert hot is not None and type(hot.timeout) is type(timeout)  # 10 stays an int
        assert protocol._decode_generic(encoded) == frame


@given(json_values, any_texts, any_texts, st.integers(-2, 2**54), st.booleans(), st.data())
def test_a_changed_result_is_decoded_as_the_generic_path_decodes_it(
        value: Any, action_id: str, message: str, epoch: int, ok: bool,
        data: st.DataObject) -> None:
    obj = {"v": 1, "type": "action_result", "action_id": action_id, "epoch": epoch, "ok": ok,
           "value": value, "error": None if ok else {"type": "Call_Error", "message": message}}
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8",
                                                                            "surrogatepass")
    for variant in mutations(raw, data.draw) if raw.isascii() or _utf8(raw) else [raw]:
        assert_hot_agrees(variant)


@given(any_texts, st.sampled_from([*sorted(SESSION_ACTIONS), "call", "nope"]), any_texts,
       st.one_of(st.integers(-5, 4000), st.floats(-1.0, 4000.0)), st.data())
def test_a_changed_action_is_decoded_as_the_generic_path_decodes_it(
        action_id: str, name: str, call_id: str, timeout: float, data: st.DataObject) -> None:
    args = data.draw(st.sampled_from([{}, {"target": call_id}, {"digits": "1"},
                                      {"message": {"a": 1}}, {"x": 1}]))
    obj = {"v": 1, "type": "action", "action_id": action_id, "name": name,
           "call_id": None if name == "call" else call_id, "args": args, "timeout": timeout}
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8",
                                                                            "surrogatepass")
    for variant in mutations(raw, data.draw) if raw.isascii() or _utf8(raw) else [raw]:
        assert_hot_agrees(variant)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("data", [
    # each accepted by msgspec's schema, refused by a rule the compiled path runs in Python
    b'{"v":1,"type":"action","action_id":"a\\u0001","name":"hold","call_id":"c","args":{},'
    b'"timeout":1}',
    b'{"v":1,"type":"action","action_id":"a","name":"nope","call_id":"c","args":{},'
    b'"timeout":1}',
    b'{"v":1,"type":"action_result","action_id":"a","epoch":1,"ok":true,"value":null,'
    b'"error":{"type":"E","message":"m"}}',
    b'{"v":1,"type":"action_result","action_id":"a","epoch":1,"ok":false,"value":null,'
    b'"error":{"type":"no such","message":"m"}}',
    b'{"v":1,"type":"action_result","action_id":"a","epoch":1,"ok":true,"value":'
    + b"[" * 18 + b"]" * 18 + b',"error":null}',
    b'{"v":1,"type":"action_result","action_id":"a","epoch":1,"epoch":2,"ok":true,'
    b'"value":null,"error":null}',
])
def test_frames_the_rules_refuse_are_declined_and_refused_as_before(data: bytes) -> None:
    assert protocol._decode_hot(data) is None
    with pytest.raises(GroupProtocolError):
        decode_frame(data)


def test_a_decoded_frame_keeps_its_bytes_as_its_encoding() -> None:
    frame = Action("a1", "hold", "c", {}, 10.0)
    data = frame.to_json()
    decoded = decode_frame(data)
    assert decoded == frame and decoded.to_json() is data
