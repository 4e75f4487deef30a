"""When to refresh a registration: a random point in the last part of its interval.

Hundreds of phones registered at the same moment (one process, a restarted pool) would
otherwise all refresh at the same instant every interval, a CPU and server burst. RFC 3261
§10.2.4 leaves the refresh time to the UA ("before the expiration interval"); RFC 5626 §4.4.1
asks for a random time between 80 % and 90 % of it for flow keep-alives, for the same reason.
Pure: the random source is a parameter.
"""

from __future__ import annotations

import random

__all__ = ["MARGIN", "refresh_delay"]

#: seconds kept before expiry: room for one REGISTER that gets no reply (`request_timeout` 5 s)
MARGIN = 6.0
#: the window starts at this share of the latest refresh time
EARLIEST = 0.6


def refresh_delay(granted: float, rng: random.Random | None = None) -> float:
    """Seconds from now until the REGISTER refresh of a binding granted for `granted` seconds:
    uniform in [60 %, 100 %] of the latest safe time (`granted - MARGIN`, or half of a short
    binding), e.g. 32.4..54 s of 60."""
    if granted <= 0:
        raise ValueError(f"a granted expiry must be positive, got {granted}")
    latest = granted - MARGIN if granted >= 20 else max(granted / 2, 1.0)
    return (rng or random).uniform(EARLIEST * latest, latest)
