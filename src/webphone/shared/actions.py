"""Actions: the public set a dummy may ask the real to run, and their tracking to one outcome.

Invariant 5: only these actions exist on the wire; there is no "call any method by name". Each
action lists its arguments as name -> (kind, required). Unknown names, unknown arguments, missing
required ones and values of the wrong kind raise `GroupProtocolError` naming the field.

Phone-level actions (`PHONE_ACTIONS`) run on the phone and carry no call id; session-level actions
(`SESSION_ACTIONS`) run on the call session named by `call_id`.

`ActionTable` is the coordinator's record of each action from arrival to its one outcome.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from webphone.shared.schema import check_json, check_text, fail

if TYPE_CHECKING:
    from webphone.shared.protocol import Action

__all__ = ["ACTIONS", "PHONE_ACTIONS", "SESSION_ACTIONS", "ActionTable", "PendingAction",
           "check_action"]

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

PHONE_ACTIONS: dict[str, ArgSpec] = {
    "call": {"callee": (_text, True), "caller_id": (_opt_text, False),
             "headers": (_headers, False)},
}
SESSION_ACTIONS: dict[str, ArgSpec] = {
    "answer": {},
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


# -- tracking actions to their one outcome ------------------------------------------------------


@dataclass
class PendingAction:
    """One action between its arrival at the hub and its one outcome."""

    hub_id: str  # the id the real sees; callers' own ids may collide between members
    caller: str  # the caller's connection
    frame: Action  # as the caller sent it
    deadline: float  # while queued: NoRealPhoneError at this time
    real: str | None = None  # the connection it was sent to; None while queued


class ActionTable:
    """Bookkeeping for actions in flight, in arrival order. It remembers; the coordinator decides.

    Each caller's action ids must be unique: an id still pending, or among the caller's last
    `recent` ids, is a duplicate (so a resent action is never run twice).
    """

    def __init__(self, max_per_caller: int, id_prefix: str = "h", recent: int = 1024) -> None:
        self.max_per_caller = max_per_caller
        self._prefix = id_prefix
        self._recent_size = recent
        self._actions: dict[str, PendingAction] = {}
        self._by_caller: dict[str, dict[str, str]] = {}  # caller -> its action id -> hub id
        self._recent: dict[str, deque[str]] = {}
        self._hub_ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._actions)

    def is_duplicate(self, caller: str, action_id: str) -> bool:
        """True if `caller` already used `action_id`."""
        return action_id in self._by_caller.get(caller, {}) or action_id in self._recent.get(
            caller, ())

    def admit(self, caller: str, frame: Action, now: float) -> PendingAction | None:
        """Record a new action (call `is_duplicate` first); None if the caller has too many."""
        recent = self._recent.setdefault(caller, deque(maxlen=self._recent_size))
        recent.append(frame.action_id)
        mine = self._by_caller.setdefault(caller, {})
        if len(mine) >= self.max_per_caller:
            return None
        hub_id = f"{self._prefix}{next(self._hub_ids)}"
        action = PendingAction(hub_id, caller, frame, now + frame.timeout)
        self._actions[action.hub_id] = action
        mine[frame.action_id] = action.hub_id
        return action

    def get(self, hub_id: str) -> PendingAction | None:
        """The action the real knows as `hub_id`, if it is still pending."""
        return self._actions.get(hub_id)

    def queued(self) -> list[PendingAction]:
        """Actions not sent to any real yet, oldest first."""
        return [a for a in self._actions.values() if a.real is None]

    def sent_to(self, real: str) -> list[PendingAction]:
        """Actions the real on connection `real` accepted and has not answered."""
        return [a for a in self._actions.values() if a.real == real]

    def expired(self, now: float) -> list[PendingAction]:
        """Queued actions whose deadline passed."""
        return [a for a in self.queued() if a.deadline <= now]

    def next_deadline(self) -> float | None:
        """The earliest deadline of a queued action."""
        return min((a.deadline for a in self.queued()), default=None)

    def finish(self, action: PendingAction) -> None:
        """Forget `action`: its outcome was delivered."""
        del self._actions[action.hub_id]
        del self._by_caller[action.caller][action.frame.action_id]

    def forget_caller(self, caller: str) -> None:
        """The caller is gone: drop its actions (a late result then finds nothing)."""
        for hub_id in self._by_caller.pop(caller, {}).values():
            del self._actions[hub_id]
        self._recent.pop(caller, None)
