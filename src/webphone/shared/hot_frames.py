"""The two frames of every action round trip (`action`, `action_result`), by a compiled schema.

`protocol.decode_frame` checks any frame in Python: JSON to a dict, then the envelope, the key
set and every field (`protocol._build` and the frame's ``__post_init__``). For the frames of an
action round trip that was the largest step left of a direct action (benchmarks/rtt_bench.py:
~8 us of the real's work and ~10 of the dummy's per round trip). Here msgspec (a C decoder that
checks a declared schema while it parses) decodes them into `msgspec.Struct`s whose fields
carry the type and length rules; the rules msgspec cannot say (no control characters, the
action allow-list and its arguments, a nested value's depth, "error exactly when not ok") are
the same functions the frame classes call. `protocol` builds its frames from what passes.

This path only *accepts*: whatever it does not accept (any schema or rule failure, a frame not
in the canonical form every member writes) it declines with None, and `decode_frame` takes the
generic path, which accepts or refuses it with the error it always gave. So the frames it
accepts are exactly frames the generic path accepts, with the same values
(tests/unit/test_shared_hot_frames.py checks that on generated and mutated frames).

The canonical form: the bytes `encode_action` / `encode_result` write, which msgspec writes back
byte for byte from the decoded value. Checking that (one encode, a fraction of the decode) is
what refuses a duplicate key (msgspec keeps the last one, the generic path refuses the frame)
and anything written another way (key order, spaces, another spelling of a number): those go
the generic path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from webphone.shared.actions import check_action
from webphone.shared.schema import (
    MAX_ERROR_TYPE_CHARS,
    MAX_ID_CHARS,
    MAX_INT,
    MAX_MESSAGE_CHARS,
    MAX_TIMEOUT,
    check_json,
    check_text,
)

__all__ = ["ActionWire", "ErrorWire", "ResultWire", "decode_action", "decode_result",
           "encode_action", "encode_result"]


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]

ACTION_PREFIX = b'{"v":1,"type":"action",'
RESULT_PREFIX = b'{"v":1,"type":"action_result",'


class ActionWire(msgspec.Struct, forbid_unknown_fields=True):
    """An `action` frame as it is on the wire (`protocol.Action` says what the fields mean)."""

    v: Literal[1]
    type: Literal["action"]
    action_id: _Id
    name: str
    call_id: str | None
    args: dict[str, Any]
    timeout: (Annotated[int, msgspec.Meta(ge=0, le=int(MAX_TIMEOUT))]
              | Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TIMEOUT)])


class ErrorWire(msgspec.Struct, forbid_unknown_fields=True):
    """An action's error (`protocol.ErrorInfo`)."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ERROR_TYPE_CHARS)]
    message: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_CHARS)]


class ResultWire(msgspec.Struct, forbid_unknown_fields=True):
    """An `action_result` frame as it is on the wire (`protocol.ActionResult`)."""

    v: Literal[1]
    type: Literal["action_result"]
    action_id: _Id
    epoch: Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
    ok: bool
    value: Any
    error: ErrorWire | None


_ENCODE = msgspec.json.Encoder().encode
_DECODE_ACTION = msgspec.json.Decoder(ActionWire).decode
_DECODE_RESULT = msgspec.json.Decoder(ResultWire).decode


def _plain(text: str) -> bool:
    """Printable ASCII only (no control character: `check_text`'s rule, checked in C); False
    leaves it to `check_text` (non-ASCII text, newlines in a message)."""
    return text.isascii() and text.isprintable()


def encode_action(action_id: str, name: str, call_id: str | None, args: dict[str, Any],
                  timeout: float) -> bytes:
    """The canonical bytes of an `action` frame (fields already checked by `protocol.Action`)."""
    return _ENCODE(ActionWire(1, "action", action_id, name, call_id, args, timeout))


def encode_result(action_id: str, epoch: int, ok: bool, value: Any,
                  error: tuple[str, str] | None) -> bytes:
    """The canonical bytes of an `action_result` frame; `error` is (type, message)."""
    wire_error = None if error is None else ErrorWire(*error)
    return _ENCODE(ResultWire(1, "action_result", action_id, epoch, ok, value, wire_error))


def decode_action(data: bytes) -> ActionWire | None:
    """`data` as a checked `action` frame, or None: let the generic path decide (see above)."""
    try:
        frame = _DECODE_ACTION(data)
        if _ENCODE(frame) != data:
            return None
        if not _plain(frame.action_id):
            check_text(frame.action_id, "action.action_id", MAX_ID_CHARS)
        check_action(frame.name, frame.call_id, frame.args)
    except (ValueError, msgspec.MsgspecError):  # GroupProtocolError is a ValueError
        return None
    return frame


def decode_result(data: bytes) -> ResultWire | None:
    """`data` as a checked `action_result` frame, or None: let the generic path decide."""
    try:
        frame = _DECODE_RESULT(data)
        if _ENCODE(frame) != data:
            return None
        if frame.value is not None:
            check_json(frame.value, "action_result.value")  # depth; JSON has no NaN
        error = frame.error
        if error is None:
            if not _plain(frame.action_id):
                check_text(frame.action_id, "action_result.action_id", MAX_ID_CHARS)
        else:
            if not _plain(frame.action_id + error.type + error.message):
                check_text(frame.action_id, "action_result.action_id", MAX_ID_CHARS)
                check_text(error.type, "error.type", MAX_ERROR_TYPE_CHARS)
                check_text(error.message, "error.message", MAX_MESSAGE_CHARS, empty=True,
                           lines=True)
            if not error.type.replace("_", "a").replace(".", "a").isalnum():
                return None
    except (ValueError, msgspec.MsgspecError):  # GroupProtocolError is a ValueError
        return None
    if frame.ok == (frame.error is not None):
        return None
    return frame
