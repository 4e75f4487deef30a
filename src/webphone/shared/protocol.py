"""Group wire frames between members and the hub: typed, versioned, validated. Pure, no I/O.

One frame is one JSON object (UTF-8, never pickle or eval) with the protocol version and a type::

    {"v": 1, "type": "action", "action_id": "a7", "name": "hold", "call_id": "x@y", ...}

Every frame class checks all of its fields when it is built, so a frame decoded from bytes and a
frame built in code obey the same rules; `decode_frame` adds the envelope checks (size, JSON,
version, type, unknown or missing fields). Every rejection raises `GroupProtocolError` naming the
field and what was wrong with it, never echoing long values (they could be anything).

Frames a member sends to the hub: `hello`, `heartbeat`, `leave`, `snapshot` (real only), `action`,
`action_result` (real only), `registered` (real only), `members_query`, and on the continuity
plane `delegate` and `continuity` (real only) and `delegate_result` (the member asked).
Frames the hub sends to a member: `welcome`, `heartbeat` (echo), `role`, `snapshot` (fan-out),
`action` (to the real), `action_accepted`, `action_result`, `released`, `members`, `error`, and
`delegate` (to its target), `delegate_result` and `member_lost` (to the real), `continuity`
(fan-out to members; never part of a snapshot or of the UI state).

Limits (module constants): a frame is at most `MAX_FRAME_BYTES` (256 KiB: two orders of magnitude
above a 100-call snapshot, far below what would let one member stall the hub), ids at most
`MAX_ID_CHARS`, strings in synced state at most `MAX_STATE_STRING` characters and never multi-line
(SIP messages and SDP are multi-line and larger: the state carries derived fields, not dumps).
The continuity plane's frames may carry SDP (`schema.MAX_SDP_CHARS` per string). This module is
longer than most (~750 lines) because every frame of the wire is declared here, in one place
(with the written-out encodings of the two frames of every action round trip).

The module is longer than ~500 lines because every frame of the wire protocol, with its
validation, is declared here in one place (frames are the contract between processes).
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Literal, NamedTuple, NoReturn, TypeVar

import msgspec

from webphone.errors import GroupProtocolError
from webphone.shared.actions import check_action, check_delegate
from webphone.shared.hot_frames import (
    ACTION_PREFIX,
    RESULT_PREFIX,
    decode_action,
    decode_result,
    encode_action,
    encode_result,
)
from webphone.shared.schema import (
    MAX_ERROR_TYPE_CHARS,
    MAX_ID_CHARS,
    MAX_INT,
    MAX_MESSAGE_CHARS,
    MAX_TIMEOUT,
    check_bool,
    check_continuity,
    check_int,
    check_json,
    check_number,
    check_payload,
    check_state,
    check_text,
    fail,
    kind,
)

__all__ = [
    "HUB_FRAMES",
    "MAX_FRAME_BYTES",
    "MAX_ID_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_TIMEOUT",
    "MEMBER_FRAMES",
    "PROTOCOL_VERSION",
    "Action",
    "ActionAccepted",
    "ActionResult",
    "Continuity",
    "Delegate",
    "DelegateResult",
    "Error",
    "ErrorInfo",
    "Frame",
    "Heartbeat",
    "Hello",
    "Leave",
    "MemberInfo",
    "MemberLost",
    "Members",
    "MembersQuery",
    "Registered",
    "Released",
    "RoleChange",
    "Snapshot",
    "Welcome",
    "check_state",
    "decode_frame",
]

PROTOCOL_VERSION = 1
MAX_HELLO_EPOCH = 2**48
"""Largest epoch a member may claim in its hello (a group bumps it once per promotion)."""

MAX_FRAME_BYTES = 256 * 1024
MAX_HOST_CHARS = 255
MAX_MEMBERS = 4096
MAX_TIME = 1e11  # seconds: covers time.time() and time.monotonic() for the next millennia
#: the encoded continuity records: what is left of a frame once the envelope is counted
MAX_CONTINUITY_BYTES = MAX_FRAME_BYTES - 1024
LOSS_REASONS: tuple[str, ...] = ("crashed", "hung", "left")

Role = Literal["real", "dummy", "handing_over"]
ROLES: tuple[str, ...] = ("real", "dummy", "handing_over")


def _printable(text: str) -> bool:
    """Printable ASCII only: no control character (`schema.check_text`'s rule, in C)."""
    return text.isascii() and text.isprintable()


def _role(value: object, where: str) -> None:
    if value not in ROLES:
        fail(where, f"expected one of {', '.join(ROLES)}, got {str(value)[:40]!r}")


def _opt_id(value: object, where: str) -> None:
    if value is not None:
        check_text(value, where, MAX_ID_CHARS)


# -- frames ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """Base of every frame. `TYPE` is the wire name; `to_json()` gives the bytes to send."""

    TYPE: ClassVar[str] = ""

    def __post_init__(self) -> None:
        """Check the fields (a frame without fields has nothing to check)."""

    def fields_obj(self) -> dict[str, Any]:
        """The fields as plain JSON values, without the envelope (used for nesting)."""
        values = self.__dict__
        return {name: _plain(values[name]) for name in _field_names(type(self))[0]}

    def to_obj(self) -> dict[str, Any]:
        """The whole frame as a JSON object, with "v" and "type"."""
        return {"v": PROTOCOL_VERSION, "type": self.TYPE, **self.fields_obj()}

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON. Cached: a fan-out of one frame to many members encodes it once."""
        cached: bytes | None = self.__dict__.get("_json")
        if cached is None:
            cached = self._encoded()
            object.__setattr__(self, "_json", cached)
        return cached

    def _encoded(self) -> bytes:
        return _encode(self.to_obj())

    @classmethod
    def from_obj(cls, obj: dict[str, Any], where: str) -> Frame:
        """Build from a decoded JSON object (without envelope); checks the key set."""
        return _build(cls, obj, where)


#: field values that go to JSON as they are (the hot path of every frame's encoding)
_AS_IS = frozenset({str, int, float, bool, type(None), dict, list})


def _plain(value: object) -> Any:
    if type(value) in _AS_IS:
        return value
    if isinstance(value, Frame | MemberInfo | ErrorInfo):
        return value.fields_obj()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


class _Fields(NamedTuple):
    names: tuple[str, ...]  # in declaration order
    known: frozenset[str]
    required: tuple[str, ...]
    defaults: dict[str, Any]  # of the optional ones


_FIELDS: dict[type, _Fields] = {}


def _field_names(cls: type) -> _Fields:
    """The fields of dataclass `cls`, computed once per class (`dataclasses.fields` is slow on
    the hot path of every frame). The protocol's dataclasses have no default factories."""
    known = _FIELDS.get(cls)
    if known is None:
        assert all(f.default_factory is MISSING for f in fields(cls)), cls
        names = tuple(f.name for f in fields(cls))
        known = _FIELDS[cls] = _Fields(
            names, frozenset(names), tuple(f.name for f in fields(cls) if f.default is MISSING),
            {f.name: f.default for f in fields(cls) if f.default is not MISSING})
    return known


def _kwargs(cls: type, obj: dict[str, Any], where: str) -> dict[str, Any]:
    """Check that `obj` has exactly the fields of dataclass `cls` (optional ones may be absent)."""
    info = _field_names(cls)
    if not info.known.issuperset(obj):
        for key in obj:
            if key not in info.known:
                fail(where, f"unknown field {key[:40]!r}")
    if len(obj) != len(info.names):
        for name in info.required:
            if name not in obj:
                fail(f"{where}.{name}", "missing")
    return obj


_T = TypeVar("_T")
_F = TypeVar("_F", bound="Frame")


def _build(cls: type[_T], obj: dict[str, Any], where: str) -> _T:
    """An instance of the frozen dataclass `cls` from the decoded JSON object `obj` (checked:
    the key set here, the values by `__post_init__`, as the generated `__init__` would). Built
    without that `__init__`: it sets each field through `object.__setattr__` (frozen), which
    was more than half of decoding a small frame."""
    _kwargs(cls, obj, where)
    inst = object.__new__(cls)
    values = inst.__dict__
    if len(obj) != len(_FIELDS[cls].names):
        values.update(_FIELDS[cls].defaults)
    values.update(obj)
    inst.__post_init__()  # type: ignore[attr-defined]
    return inst


@dataclass(frozen=True)
class MemberInfo:
    """One member as `members()` shows it."""

    member_id: str
    pid: int
    host: str
    role: str
    joined_at: float
    role_since: float

    def __post_init__(self) -> None:
        check_text(self.member_id, "member.member_id", MAX_ID_CHARS)
        check_int(self.pid, "member.pid", 0, 2**32)
        check_text(self.host, "member.host", MAX_HOST_CHARS)
        _role(self.role, "member.role")
        check_number(self.joined_at, "member.joined_at", 0, MAX_TIME)
        check_number(self.role_since, "member.role_since", 0, MAX_TIME)

    def fields_obj(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return {name: getattr(self, name) for name in _field_names(type(self))[0]}

    @classmethod
    def from_obj(cls, obj: object, where: str) -> MemberInfo:
        """Build from a decoded JSON object."""
        if not isinstance(obj, dict):
            fail(where, f"expected an object, got {kind(obj)}")
        return _build(cls, obj, where)


@dataclass(frozen=True)
class ErrorInfo:
    """An action's failure: `type` is an exception class name (e.g. "NoRealPhoneError")."""

    type: str
    message: str

    def __init__(self, type: str, message: str) -> None:
        # written out: see Action.__init__
        values = self.__dict__
        values["type"] = type
        values["message"] = message
        self.__post_init__()

    def __post_init__(self) -> None:
        name, message = self.type, self.message
        if (type(name) is str and type(message) is str and 0 < len(name) <= MAX_ERROR_TYPE_CHARS
                and len(message) <= MAX_MESSAGE_CHARS and _printable(name + message)
                and name.replace("_", "a").replace(".", "a").isalnum()):
            return  # the common case: every rule of `_check` at once
        self._check()

    def _check(self) -> None:
        name, message = self.type, self.message
        check_text(name, "error.type", MAX_ERROR_TYPE_CHARS)
        if not name.replace("_", "a").replace(".", "a").isalnum():
            fail("error.type", "expected an exception class name")
        check_text(message, "error.message", MAX_MESSAGE_CHARS, empty=True, lines=True)

    def fields_obj(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return {"type": self.type, "message": self.message}

    @classmethod
    def from_obj(cls, obj: object, where: str) -> ErrorInfo:
        """Build from a decoded JSON object."""
        if not isinstance(obj, dict):
            fail(where, f"expected an object, got {kind(obj)}")
        return cls(**_kwargs(cls, obj, where))


def _members(value: object, where: str) -> tuple[MemberInfo, ...]:
    if isinstance(value, tuple) and all(isinstance(m, MemberInfo) for m in value):
        items: tuple[MemberInfo, ...] = value
    elif isinstance(value, list):
        items = tuple(MemberInfo.from_obj(m, f"{where}[{i}]") for i, m in enumerate(value))
    else:
        fail(where, f"expected a list of members, got {kind(value)}")
    if len(items) > MAX_MEMBERS:
        fail(where, f"{len(items)} members, at most {MAX_MEMBERS}")
    return items


@dataclass(frozen=True)
class Hello(Frame):
    """member -> hub, first frame: who I am. `epoch`/`real` say what I knew before (a member
    reconnecting to a restarted hub says it was real at `epoch`; a new member sends 0/false).
    `protocol` is the highest protocol version the member speaks; hellos are always sent as v1."""

    TYPE: ClassVar[str] = "hello"
    member_id: str
    pid: int
    host: str
    group: str
    started_at: float
    protocol: int = PROTOCOL_VERSION
    epoch: int = 0
    real: bool = False

    def __post_init__(self) -> None:
        check_text(self.member_id, "hello.member_id", MAX_ID_CHARS)
        check_int(self.pid, "hello.pid", 0, 2**32)
        check_text(self.host, "hello.host", MAX_HOST_CHARS)
        check_text(self.group, "hello.group", MAX_ID_CHARS)
        check_number(self.started_at, "hello.started_at", 0, MAX_TIME)
        check_int(self.protocol, "hello.protocol", 1, 1000)
        # Far below MAX_INT: the hub adds to the highest epoch it hears of, and every frame it
        # then builds must still validate (a hostile hello must not wedge the group).
        check_int(self.epoch, "hello.epoch", 0, MAX_HELLO_EPOCH)
        check_bool(self.real, "hello.real")
        if self.real and self.epoch == 0:
            fail("hello.real", "a member that was real must say at which epoch (epoch > 0)")


@dataclass(frozen=True)
class Welcome(Frame):
    """hub -> member, answer to hello: your role, the group epoch, who is real (member id or
    None), how often to heartbeat, the current snapshot (if any) and the members."""

    TYPE: ClassVar[str] = "welcome"
    member_id: str
    role: Role
    epoch: int
    real_id: str | None
    heartbeat_interval: float
    snapshot: Snapshot | None
    members: tuple[MemberInfo, ...]
    protocol: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_text(self.member_id, "welcome.member_id", MAX_ID_CHARS)
        _role(self.role, "welcome.role")
        check_int(self.epoch, "welcome.epoch")
        _opt_id(self.real_id, "welcome.real_id")
        check_number(self.heartbeat_interval, "welcome.heartbeat_interval", 0.001, MAX_TIMEOUT)
        if isinstance(self.snapshot, dict):
            snap = Snapshot.from_obj(self.snapshot, "welcome.snapshot")
            object.__setattr__(self, "snapshot", snap)
        elif self.snapshot is not None and not isinstance(self.snapshot, Snapshot):
            fail("welcome.snapshot", f"expected an object or null, got {kind(self.snapshot)}")
        object.__setattr__(self, "members", _members(self.members, "welcome.members"))
        check_int(self.protocol, "welcome.protocol", 1, 1000)


@dataclass(frozen=True)
class Heartbeat(Frame):
    """member -> hub every `heartbeat_interval`; the hub echoes it, so a member also notices a
    hung hub (F13)."""

    TYPE: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class Leave(Frame):
    """member -> hub: graceful leave. A dummy is forgotten at once; a real hands over first."""

    TYPE: ClassVar[str] = "leave"


@dataclass(frozen=True)
class RoleChange(Frame):
    """hub -> member (wire type "role"): your role is now `role` at group epoch `epoch`; the real
    is `real_id`. "handing_over": you left as real; keep your SIP socket and registration but run
    nothing until `released`. Sent on every change of the real, and again to a member whose
    frames show it missed one (fencing)."""

    TYPE: ClassVar[str] = "role"
    role: Role
    epoch: int
    real_id: str | None = None

    def __post_init__(self) -> None:
        _role(self.role, "role.role")
        check_int(self.epoch, "role.epoch")
        _opt_id(self.real_id, "role.real_id")


@dataclass(frozen=True)
class Snapshot(Frame):
    """real -> hub -> dummies: the whole UI state, version (epoch, seq). A member applies it only
    if (epoch, seq) is greater than what it has (see `webphone.shared.views.SnapshotView`)."""

    TYPE: ClassVar[str] = "snapshot"
    epoch: int
    seq: int
    state: dict[str, Any]

    def __post_init__(self) -> None:
        check_int(self.epoch, "snapshot.epoch", 1)
        check_int(self.seq, "snapshot.seq")
        check_state(self.state)

    @property
    def version(self) -> tuple[int, int]:
        """(epoch, seq): snapshots are ordered by this pair."""
        return (self.epoch, self.seq)


@dataclass(frozen=True)
class Action(Frame):
    """dummy -> hub -> real: run public action `name` (allow-listed, args checked per action).
    `timeout` is relative seconds (members' clocks differ; the hub's clock decides): how long the
    caller lets the hub wait for a ready real. Towards the real, `action_id` is the hub's id."""

    TYPE: ClassVar[str] = "action"
    action_id: str
    name: str
    call_id: str | None
    args: dict[str, Any]
    timeout: float

    def __init__(self, action_id: str, name: str, call_id: str | None, args: dict[str, Any],
                 timeout: float) -> None:
        # The frame of every action round trip (and the result's), built by hand: a frozen
        # dataclass's generated __init__ sets each field through object.__setattr__, which was
        # more than half of building the frame. Same fields, order and checks as the generated
        # one (tests/unit/test_shared_protocol.py compares the signatures with the fields).
        values = self.__dict__
        values["action_id"] = action_id
        values["name"] = name
        values["call_id"] = call_id
        values["args"] = args
        values["timeout"] = timeout
        self.__post_init__()

    def __post_init__(self) -> None:
        action_id = self.action_id
        if not (type(action_id) is str and 0 < len(action_id) <= MAX_ID_CHARS
                and _printable(action_id)):  # the common case of check_text, at once
            check_text(action_id, "action.action_id", MAX_ID_CHARS)
        check_action(self.name, self.call_id, self.args)
        check_number(self.timeout, "action.timeout", 0.0, MAX_TIMEOUT)

    def _encoded(self) -> bytes:
        # the frame of every action round trip: by its compiled schema (hot_frames.py), in
        # the canonical form its decoder takes
        return encode_action(self.action_id, self.name, self.call_id, self.args, self.timeout)


@dataclass(frozen=True)
class ActionAccepted(Frame):
    """hub -> caller: your action went to the real; from now on it is never re-sent, and if the
    real is lost before answering you get ActionInterruptedError."""

    TYPE: ClassVar[str] = "action_accepted"
    action_id: str

    def __post_init__(self) -> None:
        check_text(self.action_id, "action_accepted.action_id", MAX_ID_CHARS)


@dataclass(frozen=True)
class ActionResult(Frame):
    """real -> hub -> caller: the one outcome of an action. `epoch` is the real's epoch (the hub
    drops results from any other). ok=true carries `value`; ok=false carries `error`."""

    TYPE: ClassVar[str] = "action_result"
    action_id: str
    epoch: int
    ok: bool
    value: Any = None
    error: ErrorInfo | None = None

    def __init__(self, action_id: str, epoch: int, ok: bool, value: Any = None,
                 error: ErrorInfo | None = None) -> None:
        # written out: see Action.__init__
        values = self.__dict__
        values["action_id"] = action_id
        values["epoch"] = epoch
        values["ok"] = ok
        values["value"] = value
        values["error"] = error
        self.__post_init__()

    def __post_init__(self) -> None:
        action_id, epoch, error = self.action_id, self.epoch, self.error
        if (type(action_id) is str and 0 < len(action_id) <= MAX_ID_CHARS
                and _printable(action_id) and type(epoch) is int and 0 <= epoch <= MAX_INT
                and self.value is None
                and ((type(error) is ErrorInfo and self.ok is False)
                     or (error is None and self.ok is True))):
            return  # the common results (done; an unknown call): every rule of `_check` at once
        self._check()

    def _check(self) -> None:
        action_id, epoch = self.action_id, self.epoch
        check_text(action_id, "action_result.action_id", MAX_ID_CHARS)
        check_int(epoch, "action_result.epoch")
        check_bool(self.ok, "action_result.ok")
        check_json(self.value, "action_result.value")
        if isinstance(self.error, dict):
            object.__setattr__(self, "error", ErrorInfo.from_obj(self.error, "action_result.error"))
        elif self.error is not None and not isinstance(self.error, ErrorInfo):
            fail("action_result.error", f"expected an object or null, got {kind(self.error)}")
        if self.ok == (self.error is not None):
            fail("action_result.error", "required exactly when ok is false")

    def _encoded(self) -> bytes:
        # as Action's
        error = self.error
        return encode_result(self.action_id, self.epoch, self.ok, self.value,
                             None if error is None else (error.type, error.message))


@dataclass(frozen=True)
class Registered(Frame):
    """real -> hub: I registered as the real of `epoch` (make-before-break: the hub releases the
    previous real only now). The first real sends it too; actions wait for it."""

    TYPE: ClassVar[str] = "registered"
    epoch: int

    def __post_init__(self) -> None:
        check_int(self.epoch, "registered.epoch", 1)


@dataclass(frozen=True)
class Released(Frame):
    """hub -> leaving real: you may close now. unregister=false: a successor registered with the
    same instance id, so do NOT unregister (that would delete the successor's binding); just
    close. unregister=true: nobody took over; the hub promotes nobody until you close, so check
    the hub still answers (one heartbeat round trip), unregister, then close. If the connection
    is gone by then, do not unregister: the binding will expire on its own."""

    TYPE: ClassVar[str] = "released"
    epoch: int
    unregister: bool

    def __post_init__(self) -> None:
        check_int(self.epoch, "released.epoch")
        check_bool(self.unregister, "released.unregister")


@dataclass(frozen=True)
class MembersQuery(Frame):
    """member -> hub: who is in the group? Answered with `members`, in order."""

    TYPE: ClassVar[str] = "members_query"


@dataclass(frozen=True)
class Members(Frame):
    """hub -> member: the members, oldest first."""

    TYPE: ClassVar[str] = "members"
    members: tuple[MemberInfo, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", _members(self.members, "members.members"))


@dataclass(frozen=True)
class Error(Frame):
    """hub -> member: a frame was refused. `code`: "protocol" (the connection is then closed),
    "duplicate_action", "group", "duplicate_member", "full"."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str

    def __post_init__(self) -> None:
        check_text(self.code, "error.code", 40)
        check_text(self.message, "error.message", MAX_MESSAGE_CHARS, lines=True)


# -- the continuity plane (see docs/shared.md, "The continuity plane") -------------------------


@dataclass(frozen=True, kw_only=True)
class Delegate(Frame):
    """real -> hub -> member `to`: do `op` (allow-listed: `actions.DELEGATE_OPS`) for call
    `call_id` with `args` (plain JSON, strings up to one SDP body). `epoch` is the real's (the
    hub drops a delegate from anyone but the current real at the current epoch and tells the
    sender its role). `timeout` (relative seconds) is how long the hub waits for the member's
    answer. Towards the member, `id` is the hub's id and `epoch` the hub's epoch."""

    TYPE: ClassVar[str] = "delegate"
    id: str
    to: str
    call_id: str
    op: str
    args: dict[str, Any]
    epoch: int
    timeout: float

    def __post_init__(self) -> None:
        check_text(self.id, "delegate.id", MAX_ID_CHARS)
        check_text(self.to, "delegate.to", MAX_ID_CHARS)
        check_delegate(self.op, self.call_id, self.args)
        check_int(self.epoch, "delegate.epoch", 1)
        check_number(self.timeout, "delegate.timeout", 0.0, MAX_TIMEOUT)


@dataclass(frozen=True, kw_only=True)
class DelegateResult(Frame):
    """member -> hub -> the real that asked: the one outcome of delegate `id`. ok=true carries
    `value` (plain JSON, strings up to one SDP body); ok=false carries `error`. The hub also
    builds it: MemberLostError (the member was lost first, or is unknown), DelegateTimeoutError
    (no answer within the delegate's timeout), ActionInterruptedError (the asking real's reign
    ended first)."""

    TYPE: ClassVar[str] = "delegate_result"
    id: str
    ok: bool
    value: Any = None
    error: ErrorInfo | None = None

    def __post_init__(self) -> None:
        check_text(self.id, "delegate_result.id", MAX_ID_CHARS)
        check_bool(self.ok, "delegate_result.ok")
        check_payload(self.value, "delegate_result.value")
        if isinstance(self.error, dict):
            object.__setattr__(self, "error",
                               ErrorInfo.from_obj(self.error, "delegate_result.error"))
        elif self.error is not None and not isinstance(self.error, ErrorInfo):
            fail("delegate_result.error", f"expected an object or null, got {kind(self.error)}")
        if self.ok == (self.error is not None):
            fail("delegate_result.error", "required exactly when ok is false")


@dataclass(frozen=True, kw_only=True)
class MemberLost(Frame):
    """hub -> real: member `member_id` is gone. `reason`: "crashed" (its connection ended
    without a leave: a crash, or a broken link after which the same member id may join again),
    "hung" (silent for the heartbeat timeout) or "left" (a graceful leave). Its delegates in
    flight ended with MemberLostError before this frame."""

    TYPE: ClassVar[str] = "member_lost"
    member_id: str
    reason: str

    def __post_init__(self) -> None:
        check_text(self.member_id, "member_lost.member_id", MAX_ID_CHARS)
        if self.reason not in LOSS_REASONS:
            fail("member_lost.reason", f"expected one of {', '.join(LOSS_REASONS)}, "
                 f"got {str(self.reason)[:40]!r}")


@dataclass(frozen=True, kw_only=True)
class Continuity(Frame):
    """real -> hub -> every member: the members-only continuity state, version (epoch, seq):
    `calls` maps a call id to its record (dialog, negotiated media, ids: whatever a successor
    needs to adopt the call). Newest only: the hub and members keep it only if (epoch, seq) is
    greater than what they have. Never part of a snapshot or of the UI state; record keys never
    name a secret (`schema.check_continuity`); encoded at most `MAX_CONTINUITY_BYTES`."""

    TYPE: ClassVar[str] = "continuity"
    epoch: int
    seq: int
    calls: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        check_int(self.epoch, "continuity.epoch", 1)
        check_int(self.seq, "continuity.seq")
        check_continuity(self.calls)
        size = len(self.to_json())
        if size > MAX_CONTINUITY_BYTES:
            fail("continuity.calls", f"{size} bytes encoded, at most {MAX_CONTINUITY_BYTES}: "
                 "keep SDP and dialog state, not recordings or logs")

    @property
    def version(self) -> tuple[int, int]:
        """(epoch, seq): continuity states are ordered by this pair."""
        return (self.epoch, self.seq)


FRAME_TYPES: dict[str, type[Frame]] = {
    cls.TYPE: cls
    for cls in (Hello, Welcome, Heartbeat, Leave, RoleChange, Snapshot, Action, ActionAccepted,
                ActionResult, Registered, Released, MembersQuery, Members, Error, Delegate,
                DelegateResult, MemberLost, Continuity)
}
MEMBER_FRAMES: frozenset[type[Frame]] = frozenset(
    {Hello, Heartbeat, Leave, Snapshot, Action, ActionResult, Registered, MembersQuery,
     Delegate, DelegateResult, Continuity}
)
HUB_FRAMES: frozenset[type[Frame]] = frozenset(
    {Welcome, Heartbeat, RoleChange, Snapshot, Action, ActionAccepted, ActionResult, Released,
     Members, Error, Delegate, DelegateResult, MemberLost, Continuity}
)


# -- decoding ------------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)  # built in C; a key seen twice leaves it shorter than the pairs
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                fail("frame", f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _no_constants(name: str) -> NoReturn:
    fail("frame", f"{name} is not valid JSON")


# One encoder and one decoder for every frame: `json.dumps`/`json.loads` with options build a
# new one per call, which was a tenth of the cost of an action's hop (benchmarks/rtt_bench.py).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_text: Callable[[str], str] = json.encoder.encode_basestring  # a JSON string (C), not ASCII-only


def _encode(obj: dict[str, Any]) -> bytes:
    """`obj` as compact UTF-8 JSON, as `_ENCODER.encode` gives it."""
    return _json(obj).encode()


def _json(value: object) -> str:
    """`value` as compact JSON text, as `_ENCODER.encode` gives it, without its Python layers
    (encode -> iterencode -> building the C encoder): a third of encoding a small frame. The C
    encoder is built per call with its own circular-reference markers (a failed encoding
    leaves its markers behind)."""
    if value is None:
        return "null"
    if _C_ENCODER is None:
        return _ENCODER.encode(value)
    if not value and isinstance(value, dict):
        return "{}"
    encoder = _C_ENCODER({}, _ENCODER.default, _text, None, ":", ",", False, False, False)
    return "".join(encoder(value, 0))


def _number(value: float) -> str:
    """A checked (finite, not bool) number as the JSON encoder writes it."""
    return float.__repr__(value) if isinstance(value, float) else int.__repr__(value)


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
# what _DECODER.decode runs, with its options (typeshed wants a scanner as the duck-typed context)
_SCAN = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]


def _parse(text: str) -> Any:
    """`_DECODER.decode(text)`; a text that is one JSON value from its first character to its
    last (every frame we write) goes to the C scanner directly, without `decode`'s two
    whitespace matches around it."""
    try:
        obj, end = _SCAN(text, 0)
    except StopIteration:  # not a value at index 0: decode says what is wrong
        return _DECODER.decode(text)
    return obj if end == len(text) else _DECODER.decode(text)


_FAST_DECODE = msgspec.json.Decoder().decode
_FAST_ENCODE = msgspec.json.Encoder().encode


def _parse_bytes(data: bytes) -> Any:
    """`_parse(data.decode())`, by msgspec's C decoder when that gives the same value: a frame
    in the canonical form every member writes (compact, keys once) decodes in a fifth of the
    time, the round trip's largest step (benchmarks/rtt_bench.py). msgspec keeps the last of a
    duplicate key, so its value is taken only if encoding it gives `data` back byte for byte:
    a text whose value encodes to itself has each key once (a merged duplicate would be
    missing from the encoding). Anything else (another spelling, an error, a duplicate) goes
    the stdlib path, which gives the value or the error it always gave."""
    try:
        obj = _FAST_DECODE(data)
        if _FAST_ENCODE(obj) == data:
            return obj
    except ValueError:  # msgspec's errors, and anything it cannot write back
        pass
    return _parse(data.decode())


def decode_frame(data: bytes | str) -> Frame:
    """Parse and check one frame; raise `GroupProtocolError` saying which field and what is wrong.

    Checks, in order: size (`MAX_FRAME_BYTES`), JSON syntax (no NaN/Infinity, no duplicate keys),
    an object with "v" == `PROTOCOL_VERSION` and a known "type", then the fields of that type.
    """
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX_FRAME_BYTES:
        fail("frame", f"{len(data)} bytes, more than MAX_FRAME_BYTES ({MAX_FRAME_BYTES})")
    hot = _decode_hot(data)
    return hot if hot is not None else _decode_generic(data)


def _decode_generic(data: bytes) -> Frame:
    """`decode_frame` of any frame, in Python (the checks of the module docstring)."""
    try:
        obj = _parse_bytes(data)
    except GroupProtocolError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise GroupProtocolError(f"frame: not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        fail("frame", f"expected a JSON object, got {kind(obj)}")
    version = obj.pop("v", None)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        fail("frame.v", f"expected protocol version {PROTOCOL_VERSION}, got {str(version)[:20]}")
    type_name = obj.pop("type", None)
    cls = FRAME_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        fail("frame.type", f"unknown frame type {str(type_name)[:40]!r}")
    try:
        return cls.from_obj(obj, cls.TYPE)
    except TypeError as exc:  # a wrong-shaped nested value that slipped past the checks
        raise GroupProtocolError(f"{cls.TYPE}: {exc}") from None


def _decode_hot(data: bytes) -> Frame | None:
    """An `action` or `action_result` frame in the canonical form, by its compiled schema
    (`hot_frames`: it accepts only what the generic path accepts); None for anything else."""
    if data.startswith(RESULT_PREFIX):
        result = decode_result(data)
        if result is None:
            return None
        error = result.error
        info = None
        if error is not None:
            info = object.__new__(ErrorInfo)
            info.__dict__.update(type=error.type, message=error.message)
        return _checked(ActionResult, data, action_id=result.action_id, epoch=result.epoch,
                        ok=result.ok, value=result.value, error=info)
    if data.startswith(ACTION_PREFIX):
        action = decode_action(data)
        if action is None:
            return None
        return _checked(Action, data, action_id=action.action_id, name=action.name,
                        call_id=action.call_id, args=action.args, timeout=action.timeout)
    return None


def _checked(cls: type[_F], data: bytes, **values: Any) -> _F:
    """A frame of `cls` with `values` checked already, and `data` as its encoding."""
    inst = object.__new__(cls)
    inst.__dict__.update(values)
    inst.__dict__["_json"] = data  # what to_json() gives: the canonical bytes it came as
    return inst
