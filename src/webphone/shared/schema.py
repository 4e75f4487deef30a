"""Field checks shared by the group frames, plus the schema of the synced snapshot state. Pure.

Every check raises `GroupProtocolError("<where>: <what>")`, where `where` is the path of the
offending field (for example `snapshot.state.calls[2].held`). Long values are never echoed.
"""

from __future__ import annotations

import math
import re
from typing import NoReturn

from webphone.errors import GroupProtocolError

__all__ = [
    "MAX_CALLS",
    "MAX_ERROR_TYPE_CHARS",
    "MAX_ID_CHARS",
    "MAX_INT",
    "MAX_MESSAGE_CHARS",
    "MAX_SDP_CHARS",
    "MAX_STATE_STRING",
    "MAX_TIMEOUT",
    "check_bool",
    "check_continuity",
    "check_int",
    "check_json",
    "check_number",
    "check_payload",
    "check_state",
    "check_text",
    "fail",
    "kind",
]

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_CONTROL_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline allowed
_CONTROL_SDP = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, CR and LF allowed
MAX_INT = 2**53 - 1  # the largest integer every JSON implementation reads exactly
MAX_JSON_DEPTH = 16
MAX_STATE_STRING = 256
# limits of the action frames, here so that protocol.py and hot_frames.py share one value
MAX_ID_CHARS = 128
MAX_MESSAGE_CHARS = 2048
MAX_TIMEOUT = 3600.0
MAX_ERROR_TYPE_CHARS = 100
MAX_CALLS = 100


def fail(where: str, what: str) -> NoReturn:
    """Raise `GroupProtocolError` for field `where`."""
    raise GroupProtocolError(f"{where}: {what}")


def kind(value: object) -> str:
    """The JSON-ish type name of `value`, for messages."""
    return type(value).__name__


def check_int(value: object, where: str, lo: int = 0, hi: int = MAX_INT) -> None:
    """An int (not a bool) in [lo, hi]."""
    if not isinstance(value, int) or isinstance(value, bool):
        fail(where, f"expected an integer, got {kind(value)}")
    if not lo <= value <= hi:
        fail(where, f"{value} is out of range [{lo}, {hi}]")


def check_number(value: object, where: str, lo: float, hi: float) -> None:
    """A finite int or float (not a bool) in [lo, hi]."""
    if type(value) is float and lo <= value <= hi:
        return  # the common case (NaN fails the comparison, an infinity the bounds)
    if not isinstance(value, int | float) or isinstance(value, bool):
        fail(where, f"expected a number, got {kind(value)}")
    if not (math.isfinite(value) and lo <= value <= hi):
        fail(where, f"{value!r} is out of range [{lo:g}, {hi:g}]")


def check_bool(value: object, where: str) -> None:
    """True or False."""
    if not isinstance(value, bool):
        fail(where, f"expected true or false, got {kind(value)}")


def check_text(
    value: object, where: str, max_chars: int, *, empty: bool = False, lines: bool = False
) -> None:
    """A string of at most `max_chars` without control characters (newlines only if `lines`).

    Control characters are refused because these strings end up in SIP headers and logs: a CR/LF
    in a callee or header value would be a header injection.
    """
    if not isinstance(value, str):
        fail(where, f"expected a string, got {kind(value)}")
    if len(value) > max_chars or (not value and not empty):
        fail(where, f"expected 1..{max_chars} characters, got {len(value)}")
    if value.isascii() and value.isprintable():
        return  # only 0x20-0x7e: no control character (checked in C, most strings)
    if (_CONTROL_LINES if lines else _CONTROL).search(value):
        fail(where, "control characters are not allowed")


def check_json(value: object, where: str, depth: int = 0) -> None:
    """A plain JSON value: None, bool, int, finite float, str, list, dict with str keys."""
    if depth > MAX_JSON_DEPTH:
        fail(where, f"nested more than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                fail(where, "object keys must be strings")
            check_json(item, f"{where}.{key[:40]}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            fail(where, "NaN and infinities are not JSON")
    elif value is not None and not isinstance(value, str | int | bool):
        fail(where, f"{kind(value)} is not a JSON value")


# -- snapshot state --------------------------------------------------------------------------

# The call fields a UI needs: name -> allowed JSON types. Other keys are allowed (the call layer
# may add a field without a protocol change) as long as they pass the generic rules of
# `_check_state_value`, which refuse anything blob-like or secret.
_NUMBER_OR_NONE = (int, float, type(None))
_TEXT_OR_NONE = (str, type(None))
_CALL_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "direction": (str,),
    "state": (str,),
    "remote_number": _TEXT_OR_NONE,
    "local_number": _TEXT_OR_NONE,
    "remote_name": _TEXT_OR_NONE,
    "local_name": _TEXT_OR_NONE,
    "held": (bool,),
    "muted": (bool,),
    "recording": (bool,),
    "created_at": _NUMBER_OR_NONE,
    "answered_at": _NUMBER_OR_NONE,
    "ended_at": _NUMBER_OR_NONE,
    "session_id": _TEXT_OR_NONE,
    "party_id": _TEXT_OR_NONE,
}
_CALL_REQUIRED = ("id", "direction", "state")
DIRECTIONS = ("inbound", "outbound")
CALL_STATES = ("init", "ringing", "answered", "failed", "disposed")
_SECRET_WORDS = ("password", "passwd", "secret", "authorization")


def _check_state_value(value: object, where: str, depth: int) -> None:
    """Generic rules for everything inside the state: small, single-line, no secrets."""
    if depth > 4:
        fail(where, "nested too deeply (more than 4 levels)")
    if isinstance(value, str):
        if len(value) > MAX_STATE_STRING or "\n" in value or "\r" in value:
            fail(where, f"a {len(value)}-char or multi-line string looks like a SIP message or "
                 f"SDP; publish derived fields (at most {MAX_STATE_STRING} chars, one line)")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not 0 < len(key) <= 40:
                fail(where, "keys must be strings of 1..40 characters")
            if any(word in key.lower() for word in _SECRET_WORDS):
                fail(f"{where}.{key}", "secrets never go into synced state")
            _check_state_value(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_CALLS:
            fail(where, f"{len(value)} items, at most {MAX_CALLS}")
        for i, item in enumerate(value):
            _check_state_value(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        fail(where, "NaN and infinities are not JSON")
    elif value is not None and not isinstance(value, bool | int | float):
        fail(where, f"{kind(value)} is not a JSON value")


def _check_call(call: object, where: str) -> None:
    if not isinstance(call, dict):
        fail(where, f"expected an object, got {kind(call)}")
    for key in _CALL_REQUIRED:
        if key not in call:
            fail(f"{where}.{key}", "missing")
    for key, value in call.items():
        allowed = _CALL_FIELDS.get(key)
        if allowed is None:
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            fail(f"{where}.{key}", f"{kind(value)} is not allowed here")
    if call["direction"] not in DIRECTIONS:
        fail(f"{where}.direction", f"expected one of {', '.join(DIRECTIONS)}")
    if call["state"] not in CALL_STATES:
        fail(f"{where}.state", f"expected one of {', '.join(CALL_STATES)}")


def check_state(state: object, where: str = "snapshot.state") -> None:
    """Check a snapshot's state: `{"calls": [call, ...], ...}`, plain JSON, no blobs, no secrets.

    A call is an object with at least `id`, `direction` ("inbound"|"outbound") and `state`
    ("init"|"ringing"|"answered"|"failed"|"disposed"), and optionally `remote_number`,
    `local_number`, `remote_name`, `local_name`, `held`, `muted`, `recording`, `created_at`,
    `answered_at`, `ended_at`, `session_id`, `party_id`, or other short fields. No string may be
    longer than `MAX_STATE_STRING` or span lines (SIP/SDP dumps), no key may name a secret
    ("password", "secret", ...), at most `MAX_CALLS` calls, at most 4 levels deep.
    """
    if not isinstance(state, dict):
        fail(where, f"expected an object, got {kind(state)}")
    _check_state_value(state, where, 0)
    calls = state.get("calls")
    if not isinstance(calls, list):
        fail(f"{where}.calls", "expected a list of calls")
    for i, call in enumerate(calls):
        _check_call(call, f"{where}.calls[{i}]")


# -- continuity plane payloads ---------------------------------------------------------------

#: the longest string a delegate's arguments or result may carry: one SDP body (RFC 4566 sets no
#: limit; 64 KiB is ~20x a real-world audio offer with a full candidate list)
MAX_SDP_CHARS = 64 * 1024


def check_payload(value: object, where: str) -> None:
    """A delegate's arguments or result: plain JSON whose strings are at most `MAX_SDP_CHARS`
    (multi-line allowed: SDP), without control characters other than tab, CR and LF."""
    check_json(value, where)
    _check_strings(value, where)


def _check_strings(value: object, where: str) -> None:
    if isinstance(value, str):
        if len(value) > MAX_SDP_CHARS:
            fail(where, f"{len(value)} characters, at most {MAX_SDP_CHARS} (one SDP body)")
        if _CONTROL_SDP.search(value):
            fail(where, "control characters other than tab, CR and LF are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(item, f"{where}.{key[:40]}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{where}[{i}]")


def check_continuity(calls: object, where: str = "continuity.calls") -> None:
    """Check the continuity records: `{call_id: record}`, at most `MAX_CALLS` calls, each record
    a JSON object checked like `check_payload` whose keys never name a secret.

    Unlike the snapshot state, records may hold SDP and dialog state (that is their purpose), but
    a key such as "password" or "authorization" is refused wherever it is: the SIP password and
    the digest credentials belong to the phone's sipInfo and must never be replicated.
    """
    if not isinstance(calls, dict):
        fail(where, f"expected an object of call id -> record, got {kind(calls)}")
    if len(calls) > MAX_CALLS:
        fail(where, f"{len(calls)} calls, at most {MAX_CALLS}")
    for call_id, record in calls.items():
        check_text(call_id, f"{where} key", 256)
        if not isinstance(record, dict):
            fail(f"{where}.{call_id[:40]}", f"expected an object, got {kind(record)}")
        check_payload(record, f"{where}.{call_id[:40]}")
        _no_secret_keys(record, f"{where}.{call_id[:40]}")


def _no_secret_keys(value: object, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if any(word in key.lower() for word in _SECRET_WORDS):
                fail(f"{where}.{key[:40]}", "secrets never go into the continuity state")
            _no_secret_keys(item, f"{where}.{key[:40]}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_secret_keys(item, f"{where}[{i}]")
