"""Is this process keeping up with its calls? Event-loop lag and an `overloaded` signal.

One `LoadMonitor` per event loop (`monitor()`), running only while media sessions are
registered with it. Every `interval` (100 ms) it measures how late its own timer fired: the loop
lag, which every 20 ms audio frame of every call in the process also suffers. Then it asks each
registered session for its counters of frames dropped (outgoing frames skipped because the
track fell behind) and late (received packets that came after their slot). A session is
overloaded when the lag exceeds `lag_limit` (40 ms: two frames) or one of those counters grew;
it is told (`on_overload(reason)`) at most once per `quiet` seconds, so a pool placing calls
can stop taking more before audio degrades.

Pure asyncio, no aiortc: a session registers a `Probe` (its counters, and whom to tell).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._per_loop import PerLoop

__all__ = ["LoadMonitor", "Probe", "monitor"]


@dataclass(kw_only=True, eq=False)
class Probe:
    """What the monitor asks of a watched session. The monitor holds it weakly: the session
    keeps it alive for as long as it wants to be watched."""

    counters: Callable[[], tuple[int, int]]  # (frames dropped, frames late) so far
    tell: Callable[[dict[str, float]], None]  # this session suffers (rate-limited)


class LoadMonitor:
    """Loop-lag sampler and overload detector for the sessions of one event loop."""

    def __init__(self, interval: float = 0.1, lag_limit: float = 0.04, quiet: float = 1.0,
                 window: float = 1.0) -> None:
        self.interval = interval
        self.lag_limit = lag_limit
        self.quiet = quiet
        self._lags: deque[float] = deque(maxlen=max(1, round(window / interval)))
        self._sessions: weakref.WeakKeyDictionary[Probe, tuple[int, int, float]] = (
            weakref.WeakKeyDictionary()
        )
        self._task: asyncio.Task[None] | None = None
        self.overloads = 0

    @property
    def loop_lag(self) -> float:
        """The worst lag (seconds) of the last second of samples."""
        return max(self._lags, default=0.0)

    def watch(self, session: Probe) -> None:
        """Start watching `session` (and sampling, if this is the first)."""
        self._sessions[session] = (*session.counters(), -self.quiet)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unwatch(self, session: Probe) -> None:
        self._sessions.pop(session, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._sessions:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - due)
            self._lags.append(lag)
            self.check(lag, loop.time())
        self._lags.clear()

    def check(self, lag: float, now: float) -> None:
        """One sample: tell each session whose frames suffered (or all, when the loop lags)."""
        for session, (dropped0, late0, told) in list(self._sessions.items()):
            dropped, late = session.counters()
            suffering = lag > self.lag_limit or dropped > dropped0 or late > late0
            if suffering and now - told >= self.quiet:
                self.overloads += 1
                session.tell({
                    "loop_lag_ms": round(1000 * lag, 1),
                    "frames_dropped": dropped - dropped0,
                    "frames_late": late - late0,
                })
                told = now
            self._sessions[session] = (dropped, late, told)


_MONITORS: PerLoop[LoadMonitor] = PerLoop(lambda loop: LoadMonitor())


def monitor() -> LoadMonitor:
    """The monitor of the running event loop (created on first use)."""
    return _MONITORS.get()
