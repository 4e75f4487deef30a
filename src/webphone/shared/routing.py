"""Action routing: every action from its arrival at the hub to its one outcome. Pure, no I/O.

Invariant 3: an action ends in exactly one outcome delivered to its caller, and runs at most once.
The router queues an action until the coordinator says a real is ready, sends it to that real
once (and tells the caller `action_accepted`), and then answers the caller with exactly one of:

* the real's `action_result` (only from the real it was sent to, at the current epoch: the
  coordinator checks the epoch, the router checks the connection);
* NoRealPhoneError if no ready real took it before its deadline;
* ActionInterruptedError if the real it was sent to was lost first. It is never re-sent: the
  real may have run it. Unless it never left the hub: a send the transport reports failed (the
  connection was already dead) puts the action back in the queue (`undelivered`).

Each caller's action ids must be unique: an id still pending, or among the caller's last
`RECENT_IDS`, is a duplicate and refused (so a resent action never runs twice). Towards the real
an action carries the hub's own id instead, since ids of different callers may collide.
Methods return the frames to send as (connection, frame) pairs; the coordinator wraps them.

Delegates (`DelegateRouter`, below) are the continuity plane's counterpart of actions, in the
other direction: the real asking one member to do something about one call. The router sends a
delegate to its target member at once (there is no queue: the target is in the group or not)
and answers the real with exactly one `DelegateResult`:

* the member's own `delegate_result` (only from the member it was sent to);
* MemberLostError at once when the target is unknown, or when the target is lost (crashed, hung,
  left) before answering. It is never re-sent: the member may have done it;
* DelegateTimeoutError when the member did not answer within the delegate's timeout;
* ActionInterruptedError when the asking real's reign ended first (deposed, left). If its
  connection is gone the outcome has nobody to go to and is dropped.

Towards the member a delegate carries the hub's id, since ids of different reals may collide.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from webphone.shared.protocol import (
    Action,
    ActionAccepted,
    ActionResult,
    Delegate,
    DelegateResult,
    ErrorInfo,
    Frame,
)

__all__ = ["ActionRouter", "DelegateRouter", "Out", "PendingAction", "PendingDelegate"]

RECENT_IDS = 1024
Out = tuple[str, Frame]  # (connection, frame to send)


@dataclass
class PendingAction:
    """One action between its arrival at the hub and its one outcome."""

    hub_id: str  # the id the real sees
    caller: str  # the caller's connection
    frame: Action  # as the caller sent it
    deadline: float  # while queued: NoRealPhoneError at this time
    real: str | None = None  # the connection it was sent to; None while queued


class ActionRouter:
    """The actions in flight, in arrival order, and the rules that route them."""

    def __init__(self, group: str, max_per_caller: int, id_prefix: str = "h") -> None:
        self.group = group
        self.max_per_caller = max_per_caller
        self._prefix = id_prefix
        self._actions: dict[str, PendingAction] = {}
        self._by_caller: dict[str, dict[str, str]] = {}  # caller -> its action id -> hub id
        self._recent: dict[str, deque[str]] = {}  # caller -> its last RECENT_IDS ids, in order
        self._recent_set: dict[str, set[str]] = {}  # the same ids, for O(1) lookups
        self._hub_ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._actions)

    def is_duplicate(self, caller: str, action_id: str) -> bool:
        """True if `caller` already used `action_id`."""
        pending = self._by_caller.get(caller, {})
        return action_id in pending or action_id in self._recent_set.get(caller, ())

    def received(self, caller: str, frame: Action, now: float, real: str | None,
                 epoch: int) -> list[Out]:
        """A new action (check `is_duplicate` first). `real`: the ready real's connection."""
        self._remember(caller, frame.action_id)
        mine = self._by_caller.setdefault(caller, {})
        if len(mine) >= self.max_per_caller:
            message = f"more than {self.max_per_caller} actions pending from this member"
            info = ErrorInfo("GroupProtocolError", message)
            return [(caller, ActionResult(frame.action_id, epoch, False, None, info))]
        action = PendingAction(f"{self._prefix}{next(self._hub_ids)}", caller, frame,
                               now + frame.timeout)
        self._actions[action.hub_id] = action
        mine[frame.action_id] = action.hub_id
        return self._forward(action, real, now) if real is not None else []

    def real_ready(self, real: str, now: float, epoch: int) -> list[Out]:
        """A real is ready: expire what is too late, send it everything queued, oldest first."""
        out = self.expire(now, epoch)
        for action in self._queued():
            out += self._forward(action, real, now)
        return out

    def expire(self, now: float, epoch: int) -> list[Out]:
        """Queued actions past their deadline end with NoRealPhoneError."""
        out: list[Out] = []
        for action in self._queued():
            if action.deadline <= now:
                message = (f"no real phone in group {self.group!r} was ready within "
                           f"{action.frame.timeout:g} s")
                out.append(self._finish(action, epoch, ErrorInfo("NoRealPhoneError", message)))
        return out

    def result(self, real: str, result: ActionResult) -> list[Out]:
        """The real's answer (already checked to come from the current real at its epoch)."""
        action = self._actions.get(result.action_id)
        if action is None or action.real != real:
            return []  # unknown, or its caller is gone: dropped
        return [self._finish(action, result.epoch, result.error, result.ok, result.value)]

    def real_lost(self, real: str, real_name: str, epoch: int) -> list[Out]:
        """The real on `real` is gone or deposed: what it accepted ends interrupted."""
        out: list[Out] = []
        for action in [a for a in self._actions.values() if a.real == real]:
            message = (f"the real phone {real_name!r} was lost after accepting "
                       f"{action.frame.name!r}; it may or may not have run, and is not re-run")
            out.append(self._finish(action, epoch, ErrorInfo("ActionInterruptedError", message)))
        return out

    def undelivered(self, real: str, hub_id: str) -> None:
        """The action sent to `real` never left (its connection had failed): queued again."""
        action = self._actions.get(hub_id)
        if action is not None and action.real == real:
            action.real = None

    def forget_caller(self, caller: str) -> None:
        """The caller is gone: drop its actions (a late result for one then finds nothing)."""
        for hub_id in self._by_caller.pop(caller, {}).values():
            del self._actions[hub_id]
        self._recent.pop(caller, None)
        self._recent_set.pop(caller, None)

    def _remember(self, caller: str, action_id: str) -> None:
        recent = self._recent.setdefault(caller, deque())
        seen = self._recent_set.setdefault(caller, set())
        if len(recent) >= RECENT_IDS:
            seen.discard(recent.popleft())
        recent.append(action_id)
        seen.add(action_id)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a queued action."""
        return min((a.deadline for a in self._queued()), default=None)

    def _queued(self) -> list[PendingAction]:
        return [a for a in self._actions.values() if a.real is None]

    def _forward(self, action: PendingAction, real: str, now: float) -> list[Out]:
        """Send to the real, once: from here on the action is never sent anywhere again."""
        action.real = real
        frame = action.frame
        remaining = max(action.deadline - now, 0.0)
        forwarded = Action(action.hub_id, frame.name, frame.call_id, frame.args, remaining)
        return [(real, forwarded), (action.caller, ActionAccepted(frame.action_id))]

    def _finish(self, action: PendingAction, epoch: int, error: ErrorInfo | None,
                ok: bool = False, value: Any = None) -> Out:
        """Forget `action` and give its one outcome, addressed to its caller."""
        del self._actions[action.hub_id]
        del self._by_caller[action.caller][action.frame.action_id]
        return (action.caller, ActionResult(action.frame.action_id, epoch, ok, value, error))


# -- delegates ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PendingDelegate:
    """One delegate between the real's request and its one outcome."""

    hub_id: str  # the id the member sees
    real: str  # the asking real's connection
    target: str  # the member's connection
    target_name: str  # the member's id, for messages
    frame: Delegate  # as the real sent it
    deadline: float  # DelegateTimeoutError at this time


class DelegateRouter:
    """The delegates in flight and the rules that route them (see the module docstring)."""

    def __init__(self, max_per_real: int, id_prefix: str = "d") -> None:
        self.max_per_real = max_per_real
        self._prefix = id_prefix
        self._pending: dict[str, PendingDelegate] = {}
        self._by_real: dict[str, set[str]] = {}  # real conn -> the real's own ids in flight
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._pending)

    def is_duplicate(self, real: str, delegate_id: str) -> bool:
        """True if `real` has a delegate with this id in flight."""
        return delegate_id in self._by_real.get(real, ())

    def received(self, real: str, frame: Delegate, target: str | None, now: float,
                 epoch: int) -> list[Out]:
        """A delegate from the current real (checked by the caller, with `is_duplicate`).
        `target`: the connection of member `frame.to`, or None if no such member is known."""
        if target is None:
            message = f"member {frame.to!r} is not in the group: {frame.op!r} was not sent"
            return [(real, _failure(frame.id, "MemberLostError", message))]
        mine = self._by_real.setdefault(real, set())
        if len(mine) >= self.max_per_real:
            message = f"more than {self.max_per_real} delegates in flight from this real"
            return [(real, _failure(frame.id, "GroupProtocolError", message))]
        hub_id = f"{self._prefix}{next(self._ids)}"
        self._pending[hub_id] = PendingDelegate(hub_id=hub_id, real=real, target=target,
                                                target_name=frame.to, frame=frame,
                                                deadline=now + frame.timeout)
        mine.add(frame.id)
        forwarded = Delegate(id=hub_id, to=frame.to, call_id=frame.call_id, op=frame.op,
                             args=frame.args, epoch=epoch, timeout=frame.timeout)
        return [(target, forwarded)]

    def result(self, member: str, result: DelegateResult) -> list[Out]:
        """A member's answer: passed on to the real, if it comes from the member it was sent
        to and is still pending (else dropped: late, or a reply to another hub's delegate)."""
        pending = self._pending.get(result.id)
        if pending is None or pending.target != member:
            return []
        self._forget(pending)
        answer = DelegateResult(id=pending.frame.id, ok=result.ok, value=result.value,
                                error=result.error)
        return [(pending.real, answer)]

    def member_lost(self, member: str, reason: str) -> list[Out]:
        """Member connection `member` is gone (`reason`: crashed, hung, left): what was sent to
        it ends MemberLostError; what it asked as a real is forgotten (nobody to answer)."""
        for pending in [p for p in self._pending.values() if p.real == member]:
            self._forget(pending)  # first: a real may have delegated to itself
        out: list[Out] = []
        for pending in [p for p in self._pending.values() if p.target == member]:
            message = (f"member {pending.target_name!r} {reason} before answering "
                       f"{pending.frame.op!r}; it may or may not have done it, and it is "
                       "not re-sent")
            out.append(self._finish(pending, "MemberLostError", message))
        return out

    def real_ended(self, real: str) -> list[Out]:
        """The real on `real` is no longer real (its reign ended): its delegates end
        ActionInterruptedError, sent to it in case it is still connected (a deposed real)."""
        out: list[Out] = []
        for pending in [p for p in self._pending.values() if p.real == real]:
            message = (f"this member stopped being the real before member "
                       f"{pending.target_name!r} answered {pending.frame.op!r}")
            out.append(self._finish(pending, "ActionInterruptedError", message))
        return out

    def expire(self, now: float) -> list[Out]:
        """Delegates past their deadline end DelegateTimeoutError."""
        out: list[Out] = []
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            message = (f"member {pending.target_name!r} did not answer {pending.frame.op!r} "
                       f"within {pending.frame.timeout:g} s; it may still be doing it")
            out.append(self._finish(pending, "DelegateTimeoutError", message))
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of a delegate in flight."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def _finish(self, pending: PendingDelegate, error: str, message: str) -> Out:
        self._forget(pending)
        return (pending.real, _failure(pending.frame.id, error, message))

    def _forget(self, pending: PendingDelegate) -> None:
        del self._pending[pending.hub_id]
        mine = self._by_real.get(pending.real)
        if mine is not None:
            mine.discard(pending.frame.id)
            if not mine:
                del self._by_real[pending.real]


def _failure(delegate_id: str, error: str, message: str) -> DelegateResult:
    return DelegateResult(id=delegate_id, ok=False, error=ErrorInfo(error, message[:2000]))
