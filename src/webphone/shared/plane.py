"""The member side of the continuity plane: delegates in flight, the continuity view, listeners.

`GroupMember` (member.py) owns the connection; this module holds what the plane adds to it, so
that the connection code stays one concern:

* `member.PlaneListener`: what a member's owner implements to take part (answer delegates, hear
  of lost members, receive the continuity state). A listener without these methods takes no
  part: delegates sent to it are answered with an error at once, the rest is ignored. That keeps
  every existing `MemberListener` valid unchanged; a call layer opts in by implementing the three.
* `ContinuityView`: the newest continuity state this member knows, never going backwards.
* `Delegations`: the real's delegates in flight, each with exactly one outcome (the member's
  answer or the hub's error; ActionInterruptedError if our link is lost or our reign ends first,
  since the outcome is then unknown; DelegateTimeoutError as a local backstop).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from webphone.errors import ActionInterruptedError, DelegateTimeoutError
from webphone.shared.protocol import Continuity, Delegate, DelegateResult

__all__ = ["ContinuityView", "Delegations"]


class ContinuityView:
    """The newest continuity state applied so far, by (epoch, seq)."""

    def __init__(self) -> None:
        self.state: Continuity | None = None

    @property
    def version(self) -> tuple[int, int] | None:
        """(epoch, seq) of the applied state, or None before the first."""
        return self.state.version if self.state else None

    def offer(self, state: Continuity | None) -> bool:
        """Apply `state` if it is newer than what we have; True if it was applied."""
        if state is None or (self.state is not None and state.version <= self.state.version):
            return False
        self.state = state
        return True


@dataclass(eq=False, kw_only=True)
class _Waiting:
    frame: Delegate
    token: object  # the link it was sent on (a `member.LinkToken`; only compared here)
    future: asyncio.Future[Any]
    timer: asyncio.TimerHandle


class Delegations:
    """The delegates this member (as the real) has in flight, by its own id."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[str, _Waiting] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def started(self, frame: Delegate, token: object, backstop: float) -> asyncio.Future[Any]:
        """`frame` was sent on `token`'s link; its outcome comes to the returned future. The
        hub times it out after `frame.timeout`; `backstop` more seconds is our own limit."""
        future: asyncio.Future[Any] = self._loop.create_future()
        timer = self._loop.call_later(frame.timeout + backstop, self._expired, frame.id)
        self._waiting[frame.id] = _Waiting(frame=frame, token=token, future=future, timer=timer)
        return future

    def result(self, frame: DelegateResult, error: BaseException | None) -> None:
        """The one outcome from the hub (`error`: `frame.error` as an exception)."""
        waiting = self._waiting.get(frame.id)
        if waiting is not None:
            self._finish(waiting, error, frame.value)

    def link_lost(self, token: object, reason: str) -> None:
        """The link `token` ended: its delegates' outcomes will never come."""
        for waiting in [w for w in self._waiting.values() if w.token is token]:
            self._finish(waiting, ActionInterruptedError(
                f"the connection to the group hub was lost ({reason}) after the delegate "
                f"{waiting.frame.op!r} to {waiting.frame.to!r} was sent; it may or may not "
                "have been done, and it is not re-sent"))

    def reign_ended(self, why: str) -> None:
        """We are no longer the real: no outcome will reach us for what we asked as one."""
        for waiting in list(self._waiting.values()):
            self._finish(waiting, ActionInterruptedError(
                f"{why} before member {waiting.frame.to!r} answered {waiting.frame.op!r}"))

    def _expired(self, delegate_id: str) -> None:
        waiting = self._waiting.get(delegate_id)
        if waiting is not None:
            self._finish(waiting, DelegateTimeoutError(
                f"no outcome for the delegate {waiting.frame.op!r} to {waiting.frame.to!r} "
                f"within {waiting.frame.timeout:g} s (the hub did not answer either)"))

    def _finish(self, waiting: _Waiting, error: BaseException | None, value: Any = None) -> None:
        self._waiting.pop(waiting.frame.id, None)
        waiting.timer.cancel()
        if waiting.future.done():
            return
        if error is not None:
            waiting.future.set_exception(error)
        else:
            waiting.future.set_result(value)
