"""`WebPhoneParams`: the transport's parameters, pipecat's `TransportParams` with a phone
call's defaults and webphone's own bounds (validated: a wrong value names the field)."""

from __future__ import annotations

from pipecat.transports.base_transport import TransportParams
from pydantic import field_validator

from ._inflow import DEFAULT_MAX_PENDING

__all__ = ["WebPhoneParams"]


class WebPhoneParams(TransportParams):
    """`TransportParams` with a phone call's defaults, and four of its own.

    Audio in and out are on by default; the end silence is 0 (`EndFrame` waits until the bot's
    last audio was sent instead, then hangs up).

    Parameters:
        hangup_on_end: `EndFrame` / `CancelFrame` hang the call up (BYE; decline if ringing).
        end_pipeline_on_hangup: when the call ends (the caller hung up, a transfer completed),
            cancel the pipeline (a `CancelWorkerFrame` pushed upstream from the input).
        audio_out_lead_secs: how far ahead of real time bot audio is handed to the call's
            track; an interruption drops at most this plus one chunk.
        audio_in_max_frames: received 20 ms frames that may wait for the pipeline before the
            oldest is dropped (webphone's bounded stream: memory never grows).
        audio_in_max_pending: received 20 ms frames handed to the pipeline that the processor
            after the input (the VAD) has not processed yet; at the bound the input stops
            handing more (and `audio_in_max_frames` applies): pipecat's own queues stay bounded.
    """

    audio_in_enabled: bool = True
    audio_out_enabled: bool = True
    audio_out_end_silence_secs: int = 0
    hangup_on_end: bool = True
    end_pipeline_on_hangup: bool = True
    audio_out_lead_secs: float = 0.04
    audio_in_max_frames: int = 50
    audio_in_max_pending: int = DEFAULT_MAX_PENDING

    @field_validator("audio_in_channels", "audio_out_channels")
    @classmethod
    def _mono(cls, channels: int) -> int:
        if channels != 1:
            raise ValueError(f"phone audio is mono: channels must be 1, got {channels}")
        return channels

    @field_validator("audio_in_max_frames", "audio_in_max_pending")
    @classmethod
    def _frames(cls, frames: int) -> int:
        if frames < 1:
            raise ValueError(f"a bound of received frames must be at least 1, got {frames}")
        return frames

    @field_validator("audio_out_lead_secs")
    @classmethod
    def _lead(cls, lead: float) -> float:
        if not 0 <= lead <= 1:
            raise ValueError(f"audio_out_lead_secs must be within 0..1 s, got {lead}")
        return lead
