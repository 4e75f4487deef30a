"""When to refresh a registration: a random point in the last part of its interval.

Hundreds of phones registered at the same moment (one process, a restarted pool) would
otherwise all refresh at the same instant every interval, a CPU and server burst. RFC 3261
§10.2.4 leaves the refresh time to the UA ("before the expiration interval"); RFC 5626 §4.4.1
asks for a random time between 80 % and 90 % of it for flow keep-alives, for the same reason.
Pure: the random source is a parameter.

Also here: how long to ask for when the registrar finds our expiry too brief (`longer_expiry`).
"""

from __future__ import annotations

import random

__all__ = ["MARGIN", "MAX_EXPIRES", "longer_expiry", "refresh_delay"]

#: seconds kept before expiry: room for one REGISTER that gets no reply (`request_timeout` 5 s)
MARGIN = 6.0
#: the window starts at this share of the latest refresh time
EARLIEST = 0.6
#: the largest expiry a REGISTER may carry (RFC 3261 §20.19: 2**32-1 s)
MAX_EXPIRES = 2**32 - 1


def refresh_delay(granted: float, rng: random.Random | None = None) -> float:
    """Seconds from now until the REGISTER refresh of a binding granted for `granted` seconds:
    uniform in [60 %, 100 %] of the latest safe time (`granted - MARGIN`, or half of a short
    binding), e.g. 32.4..54 s of 60."""
    if granted <= 0:
        raise ValueError(f"a granted expiry must be positive, got {granted}")
    latest = granted - MARGIN if granted >= 20 else max(granted / 2, 1.0)
    return (rng or random).uniform(EARLIEST * latest, latest)


def longer_expiry(status: int, min_expires: str | None, requested: int) -> int | None:
    """The expiry to ask for after a REGISTER for `requested` seconds got `status` with the
    `Min-Expires` header value `min_expires`: a 423 Interval Too Brief names the shortest
    binding the registrar grants (RFC 3261 §10.2.8, §20.23). None when there is nothing to
    try: another answer, an unregister (0), a Min-Expires missing, not a number, beyond
    `MAX_EXPIRES`, or not above `requested` (asking again would get the same 423)."""
    if status != 423 or requested == 0:
        return None
    value = (min_expires or "").strip()
    if not (value.isascii() and value.isdigit()) or not requested < int(value) <= MAX_EXPIRES:
        return None
    return int(value)
