"""The public action set a dummy may ask the real to run: an allow-list with per-action arguments.

Invariant 5: only these actions exist on the wire; there is no "call any method by name". Each
action lists its arguments as name -> (kind, required). Unknown names, unknown arguments, missing
required ones and values of the wrong kind raise `GroupProtocolError` naming the field.

Phone-level actions (`PHONE_ACTIONS`) run on the phone and carry no call id; session-level actions
(`SESSION_ACTIONS`) run on the call session named by `call_id`.

Delegates (the continuity plane: the real asks one member to do something for one call, e.g. hold
its media) are allow-listed here too, in `DELEGATE_OPS`, so that every operation a frame can name
is in this one file. Their arguments are a plain JSON object defined by the call layer that uses
them; this layer bounds them (`check_payload`: SDP-sized strings at most, plain JSON only).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from webphone.shared.schema import MAX_SDP_CHARS, check_json, check_payload, check_text, fail

__all__ = ["ACTIONS", "DELEGATE_OPS", "MAX_SDP_CHARS", "PHONE_ACTIONS", "SESSION_ACTIONS",
           "check_action", "check_delegate"]

MAX_ARG_CHARS = 256
MAX_MESSAGE_CHARS = 1024
MAX_HEADERS = 32

_HEADER_NAME = re.compile(r"[A-Za-z0-9!%*+.`'~_-]{1,64}")  # an RFC 3261 token
_DTMF = re.compile(r"[0-9A-Da-d*#,]{1,64}")


# -- argument kinds -----------------------------------------------------------------------------


def _text(value: object, where: str) -> None:
    check_text(value, where, MAX_ARG_CHARS)


def _opt_text(value: object, where: str) -> None:
    if value is not None:
        check_text(value, where, MAX_ARG_CHARS)


def _headers(value: object, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        fail(where, f"expected an object of header name -> value, got {type(value).__name__}")
    if len(value) > MAX_HEADERS:
        fail(where, f"{len(value)} headers, at most {MAX_HEADERS}")
    for name, item in value.items():
        if not _HEADER_NAME.fullmatch(name):
            fail(where, f"{name[:40]!r} is not a header name")
        check_text(item, f"{where}.{name}", MAX_MESSAGE_CHARS, empty=True)


def _digits(value: object, where: str) -> None:
    if not isinstance(value, str) or not _DTMF.fullmatch(value):
        fail(where, "expected 1..64 DTMF characters out of 0-9 A-D * # ,")


def _duration(value: object, where: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.01 <= value <= 10:
        fail(where, "expected a duration in seconds between 0.01 and 10")


def _message(value: object, where: str) -> None:
    if isinstance(value, dict):
        check_json(value, where)
    else:
        check_text(value, where, MAX_MESSAGE_CHARS)


def _flip_target(value: object, where: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 1000:
            fail(where, "expected a flip target number between 0 and 1000")
    else:
        _text(value, where)


Check = Callable[[object, str], None]
ArgSpec = dict[str, tuple[Check, bool]]  # argument name -> (check, required)

_TARGET: ArgSpec = {"target": (_text, True)}

#: "holder": the member that asks (its member id): it takes the call's media (issue #11)
_HOLDER: ArgSpec = {"holder": (_text, False)}

PHONE_ACTIONS: dict[str, ArgSpec] = {
    "call": {"callee": (_text, True), "caller_id": (_opt_text, False),
             "headers": (_headers, False), **_HOLDER},
    # a media holder that leaves asks the real to move the media of its calls elsewhere
    "release_media": {"holder": (_text, True)},
}
SESSION_ACTIONS: dict[str, ArgSpec] = {
    "answer": _HOLDER,
    "decline": {},
    "to_voicemail": {},
    "forward": _TARGET,
    "start_reply": {},
    "reply": {"message": (_message, True)},
    "hangup": {},
    "cancel": {},
    "hold": {},
    "unhold": {},
    "mute": {},
    "unmute": {},
    "send_dtmf": {"digits": (_digits, True), "duration": (_duration, False)},
    "transfer": _TARGET,
    "warm_transfer": _TARGET,
    "complete_warm_transfer": {},
    "cancel_warm_transfer": {},
    "start_recording": {},
    "stop_recording": {},
    "flip": {"target": (_flip_target, True)},
    "park": {},
    "re_invite": {},
}
ACTIONS: frozenset[str] = frozenset(PHONE_ACTIONS) | frozenset(SESSION_ACTIONS)


def check_action(name: object, call_id: object, args: object, where: str = "action") -> None:
    """Check an action's name against the allow-list, its call id, and its arguments."""
    if not isinstance(name, str) or name not in ACTIONS:
        fail(f"{where}.name", f"{str(name)[:40]!r} is not an allowed action")
    if name in PHONE_ACTIONS:
        if call_id is not None:
            fail(f"{where}.call_id", f"{name!r} is a phone action and takes no call id")
        spec = PHONE_ACTIONS[name]
    else:
        check_text(call_id, f"{where}.call_id", MAX_ARG_CHARS)
        spec = SESSION_ACTIONS[name]
    if not isinstance(args, dict):
        fail(f"{where}.args", f"expected an object, got {type(args).__name__}")
    for arg in args:
        if arg not in spec:
            fail(f"{where}.args", f"{name!r} takes no argument {str(arg)[:40]!r}")
    for arg, (check, required) in spec.items():
        if arg in args:
            check(args[arg], f"{where}.args.{arg}")
        elif required:
            fail(f"{where}.args.{arg}", "missing")



# -- delegates (real -> one member) -------------------------------------------------------------

#: the operations the real may delegate to a member, about one call's media
DELEGATE_OPS: frozenset[str] = frozenset({
    "media.offer",  # make an SDP offer (new media, or an ICE/DTLS restart)
    "media.answer",  # answer the far party's SDP offer
    "media.apply_answer",  # apply the far party's SDP answer to our offer
    "media.update",  # a change within the session (hold, direction, a re-offer's answer)
    "media.close",  # stop the call's media on that member
    "media.take",  # become the call's media holder (graceful move, adoption)
})
def check_delegate(op: object, call_id: object, args: object, where: str = "delegate") -> None:
    """Check a delegate's operation against `DELEGATE_OPS`, its call id and its arguments."""
    if not isinstance(op, str) or op not in DELEGATE_OPS:
        fail(f"{where}.op", f"{str(op)[:40]!r} is not an allowed delegate operation "
             f"(one of {', '.join(sorted(DELEGATE_OPS))})")
    check_text(call_id, f"{where}.call_id", MAX_ARG_CHARS)
    if not isinstance(args, dict):
        fail(f"{where}.args", f"expected an object, got {type(args).__name__}")
    check_payload(args, f"{where}.args")
