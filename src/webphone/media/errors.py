"""Errors of the media layer (pure module: importable without aiortc)."""

from __future__ import annotations

from ..errors import CallError

__all__ = ["DtmfNotAvailableError", "MediaError"]


class MediaError(CallError):
    """Call audio could not be set up or used (bad SDP, ICE gathering timeout, closed media)."""


class DtmfNotAvailableError(MediaError):
    """DTMF cannot be sent: the far end did not negotiate RFC 4733 telephone-event at the clock
    rate of the audio codec in use (or no audio is negotiated yet)."""
