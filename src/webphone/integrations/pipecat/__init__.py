"""webphone as a pipecat transport: a voice bot on a phone number (docs/pipecat.md).

    from webphone.integrations.pipecat import WebPhoneTransport, WebPhoneParams, serve

Needs the extra: ``pip install 'webphone[pipecat]'`` (pipecat-ai >= 1.14 with Silero VAD).
Importing this module without pipecat raises ImportError saying so.
"""

from __future__ import annotations

try:
    import pipecat  # noqa: F401  (the guard: everything below imports pipecat)
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "webphone.integrations.pipecat needs pipecat, which is not installed: "
        "pip install 'webphone[pipecat]'"
    ) from exc

from ._core import PlayoutClock, UserData, UserDataError
from ._inflow import InputStats
from ._params import WebPhoneParams
from ._serve import CallServer, ServedCall, serve
from ._transport import (
    CallLike,
    WebPhoneInputTransport,
    WebPhoneOutputTransport,
    WebPhoneTransport,
)

__all__ = [
    "CallLike",
    "CallServer",
    "InputStats",
    "PlayoutClock",
    "ServedCall",
    "UserData",
    "UserDataError",
    "WebPhoneInputTransport",
    "WebPhoneOutputTransport",
    "WebPhoneParams",
    "WebPhoneTransport",
    "serve",
]
