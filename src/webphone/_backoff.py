"""Retry delays: one exponential backoff for every reconnect and retry loop. Pure, no I/O.

Every loop that tries again after a failure (the SIP client's reconnect, a member's reconnect to
its group hub, a promotion that could not register, waiting for a hub to start, a Redis link
coming back) takes its delays from `backoff()` and only sleeps them::

    delays = backoff()                      # at once, then 1, 2, 4 ... 30 s, jittered
    while not done:
        await asyncio.sleep(next(delays))   # the shell sleeps; this module never does
        ...

The schedule is ``first``, then ``initial * factor**k`` capped at ``cap``. The defaults follow
RingCentral's softphone SDK 2.0 (it retries signalling at once, then 1, 2, 4 ... 30 s): the first
retry after a loss is immediate because most losses are one dropped connection, and the cap
bounds how long a phone stays unregistered after the server is back (at most `cap`). Each delay
but the first is multiplied by a random factor in ``[1 - jitter, 1]`` so that many processes that
lost the same server do not all come back in the same instant (coordination-anchors F4), and so
that the jitter never makes a delay longer than the cap.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["DEFAULT_CAP", "DEFAULT_FACTOR", "DEFAULT_FIRST", "DEFAULT_INITIAL", "DEFAULT_JITTER",
           "backoff"]

#: the first retry: at once (a single dropped connection is the common case)
DEFAULT_FIRST = 0.0
#: the second retry, in seconds
DEFAULT_INITIAL = 1.0
#: growth per retry
DEFAULT_FACTOR = 2.0
#: the longest delay, in seconds: the worst wait after the other side is back
DEFAULT_CAP = 30.0
#: each delay after the first is scaled by uniform(1 - jitter, 1)
DEFAULT_JITTER = 0.2


def backoff(
    *,
    first: float = DEFAULT_FIRST,
    initial: float = DEFAULT_INITIAL,
    factor: float = DEFAULT_FACTOR,
    cap: float = DEFAULT_CAP,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """An endless iterator of delays in seconds: `first`, then `initial`, `initial * factor`,
    ... at most `cap`; every delay after the first is jittered down by up to `jitter` (a
    fraction). `rng` makes the jitter reproducible (tests). A new iterator starts over: make one
    per outage and drop it once the retry succeeded.

    Raises ValueError for a schedule that makes no sense (negative delays, a factor below 1, a
    jitter outside [0, 1), or a cap below `initial` or `first`)."""
    if min(first, initial) < 0 or factor < 1 or not 0 <= jitter < 1:
        raise ValueError(f"backoff needs first, initial >= 0, factor >= 1 and 0 <= jitter < 1; "
                         f"got first={first}, initial={initial}, factor={factor}, jitter={jitter}")
    if cap < max(first, initial):
        raise ValueError(f"backoff cap {cap} is below first={first} or initial={initial}")
    return _delays(first, initial, factor, cap, jitter, rng or random.Random())


def _delays(first: float, initial: float, factor: float, cap: float, jitter: float,
            rng: random.Random) -> Iterator[float]:
    yield first
    delay = initial
    while True:
        yield delay * rng.uniform(1.0 - jitter, 1.0)
        delay = min(delay * factor, cap)
