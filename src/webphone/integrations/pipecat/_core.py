"""The pure parts of the pipecat transport: no pipecat, no asyncio, no aiortc.

* `PlayoutClock`: when a write of bot audio may return. The call's outgoing track sends 20 ms
  frames in real time; pipecat hands the output transport chunks of `audio_out_10ms_chunks`
  x 10 ms as fast as it gets them. Returning from each write only when the audio before it is
  nearly sent keeps at most `lead` seconds (plus the chunk) waiting in the track, which is
  what an interruption has to throw away, and keeps pipecat's bot-speaking frames in step
  with what the caller hears (pipecat's own websocket transports simulate the same clock).
* `UserData`: the small dict an application keeps on a served call. It is checked on every
  write to stay plain JSON and small, because it is the state that is meant to travel with a
  call to another process of a group (docs/pipecat.md, "Continuity").
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

__all__ = ["DEFAULT_USER_DATA_LIMIT", "DTMF_KEYS", "PlayoutClock", "UserData", "UserDataError"]

#: The keys pipecat's `KeypadEntry` has; RFC 4733 events A-D have no pipecat frame.
DTMF_KEYS = frozenset("0123456789*#")

#: Bound of `UserData` as JSON, in bytes: state to carry, not a database (a group's frames
#: are size-bounded too, see shared/protocol.py).
DEFAULT_USER_DATA_LIMIT = 16 * 1024


class PlayoutClock:
    """Paces writes of audio to real time, `lead` seconds ahead of what is being sent.

    `schedule(now, duration)` books `duration` seconds of audio after what is already
    booked (or from `now`, when the booked audio has all been played) and returns how long
    the writer should wait before writing more. `reset()` forgets the booking (after an
    interruption dropped what was queued).
    """

    def __init__(self, lead: float = 0.04) -> None:
        if lead < 0:
            raise ValueError(f"lead must be >= 0 seconds, got {lead}")
        self.lead = lead
        self._end: float | None = None

    @property
    def booked_until(self) -> float | None:
        """When the booked audio ends (loop time), None when nothing is booked."""
        return self._end

    def schedule(self, now: float, duration: float) -> float:
        """Book `duration` s of audio; the delay (>= 0 s) before the next write."""
        if duration < 0:
            raise ValueError(f"duration must be >= 0 seconds, got {duration}")
        start = now if self._end is None or self._end < now else self._end
        self._end = start + duration
        return max(0.0, self._end - self.lead - now)

    def remaining(self, now: float) -> float:
        """Seconds of booked audio not yet played at `now`."""
        return 0.0 if self._end is None else max(0.0, self._end - now)

    def reset(self) -> None:
        self._end = None


class UserDataError(ValueError):
    """A `UserData` write that is not plain JSON or makes the dict too large."""


class UserData(MutableMapping[str, Any]):
    """A dict of plain JSON values (str keys), at most `limit` bytes as JSON.

    Every write is checked, so a value that could not travel (a socket, a datetime, a huge
    transcript) is refused where it is set, with the key named, instead of later.
    """

    def __init__(self, initial: Mapping[str, Any] | None = None, *,
                 limit: int = DEFAULT_USER_DATA_LIMIT) -> None:
        self.limit = limit
        self._data: dict[str, Any] = {}
        for key, value in (initial or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise UserDataError(f"user_data keys must be str, got {type(key).__name__}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UserDataError(f"user_data[{key!r}] is not plain JSON: {exc}") from None
        candidate = {**self._data, key: value}
        size = len(json.dumps(candidate, separators=(",", ":")).encode())
        if size > self.limit:
            raise UserDataError(
                f"user_data[{key!r}] would make user_data {size} bytes as JSON; "
                f"the limit is {self.limit}"
            )
        self._data[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_json(self) -> str:
        """The dict as compact JSON (what a hand-over would carry)."""
        return json.dumps(self._data, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"UserData({self._data!r})"
