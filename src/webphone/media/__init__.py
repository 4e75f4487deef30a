"""Call audio with aiortc: `MediaSession` (one per call), audio frames and streams, DTMF.

Importing `webphone.media` is cheap: aiortc and av load only when `MediaSession` (or another
aiortc-backed name) is first used, so `import webphone` and dummy phones never load them.
The pure helpers (`webphone.media.dtmf`, `webphone.media.tone`, `webphone.media.errors`)
never import aiortc at all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import DtmfNotAvailableError, MediaError
from .realtime import restore as restore_gc
from .realtime import tune_for_realtime
from .tone import detect_tone, rms, sine_wave, tone_levels

if TYPE_CHECKING:
    from .received import AudioFrame, AudioStream
    from .session import MediaSession, MediaStats, ice_servers

__all__ = [
    "AudioFrame",
    "AudioStream",
    "DtmfNotAvailableError",
    "MediaError",
    "MediaSession",
    "MediaStats",
    "detect_tone",
    "ice_servers",
    "restore_gc",
    "rms",
    "sine_wave",
    "tone_levels",
    "tune_for_realtime",
]

_LAZY = {
    "AudioFrame": "received",
    "AudioStream": "received",
    "MediaSession": "session",
    "MediaStats": "session",
    "ice_servers": "session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
