"""`WebPhoneTransport`: a pipecat transport over one webphone call.

Theory of operation. The transport owns nothing of the call: the `CallSession` keeps its SIP
dialog and its `MediaSession` (aiortc) and the transport only reads and writes through their
public surface, the way pipecat's SmallWebRTC transport sits on an aiortc connection.

* In (`WebPhoneInputTransport`): one `media.received_audio()` stream, opened when the call is
  answered, gives 20 ms mono frames at `media.receive_sample_rate`; each becomes an
  `InputAudioRawFrame` at the pipeline's input rate. At most `audio_in_max_pending` of them
  wait in pipecat (`_inflow`: beyond that the reader pauses, the stream drops the oldest and
  `stats` counts them), so a pipeline slower than real time costs bounded memory and lag.
  With the defaults both are 16 kHz, so the only resampling is the media's own (decoder
  rate -> 16 kHz); a pipeline at another rate
  costs a second, streaming resampler here (docs/pipecat.md says how to avoid it). Received
  RFC 4733 digits become `InputDTMFFrame`s. The call's events reach the pipeline task through
  one queue, so digits keep their order.
* Out (`WebPhoneOutputTransport`): pipecat cuts bot audio into `audio_out_10ms_chunks` x 10 ms
  chunks and calls `write_audio_frame` for each; the chunks go into one `media.play_pcm()`
  (which resamples the pipeline's output rate to the 48 kHz the track sends, once), and each
  write returns only when the audio before it is nearly sent (`_core.PlayoutClock`). So an
  `InterruptionFrame` finds at most one chunk plus `audio_out_lead_secs` queued, and throws
  it away with `media.stop_playback()` (before pipecat's own handling of the frame): the
  caller hears silence from the next 20 ms frame. A chunk pipecat had already taken off its
  queue is not written either (it was made before the interruption: pipecat numbers its
  objects in creation order).
  `OutputDTMFFrame`s go out as RFC 4733 events (`_supports_native_dtmf`).
* End: `EndFrame` (after the queued audio was sent) and `CancelFrame` hang the call up when
  `hangup_on_end`; a call that ends (the caller hung up) cancels the pipeline when
  `end_pipeline_on_hangup`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    CancelWorkerFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    OutputDTMFUrgentFrame,
    StartFrame,
    StopFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport

from webphone.errors import CallError, WebPhoneError

from ._core import DTMF_KEYS, UserData
from ._inflow import AudioInflow, InputStats
from ._params import WebPhoneParams
from ._speaker import Speaker

__all__ = ["CallLike", "WebPhoneInputTransport", "WebPhoneOutputTransport", "WebPhoneTransport"]

log = logging.getLogger("webphone.pipecat")

_LIVE = ("init", "ringing", "answered")
_ENDED = ("failed", "disposed")


class CallLike(Protocol):
    """What the transport needs of a call: a `CallSession` of a `WebPhone` (or of the real
    member of a `SharedWebPhone`, where the audio is)."""

    call_id: str
    direction: str
    state: str
    end_reason: str | None
    session_id: str | None
    media: Any

    @property
    def remote_number(self) -> str: ...

    @property
    def local_number(self) -> str: ...

    def on(self, event: str, handler: Callable[..., Any]) -> Any: ...

    def off(self, event: str, handler: Callable[..., Any] | None = None) -> None: ...

    async def hangup(self) -> None: ...

    async def hold(self) -> None: ...

    async def unhold(self) -> None: ...

    async def transfer(self, target: str) -> None: ...

    async def warm_transfer(self, target: str) -> Any: ...

    async def send_dtmf(self, digits: str) -> None: ...


# -- the call, as both halves of the transport see it -----------------------------------------


class _Events(Protocol):
    """How the halves report the call's events (implemented by `WebPhoneTransport`)."""

    async def call_event(self, kind: str, *args: Any) -> None: ...


class _CallLink:
    """The call shared by a transport's input and output: hang up once, say who ends it."""

    def __init__(self, session: CallLike, params: WebPhoneParams, events: _Events) -> None:
        self.session = session
        self.params = params
        self.events = events
        self.has_output = False
        self._hung_up = False
        self._ended_fired = False

    async def ended(self, reason: str | None) -> None:
        """Fire the call's end events once, however it ended."""
        if not self._ended_fired:
            self._ended_fired = True
            await self.events.call_event("ended", reason or self.session.end_reason)

    async def end_call(self, why: str) -> None:
        """Hang the call up (once), if `hangup_on_end` and it is still live."""
        if self._hung_up or not self.params.hangup_on_end:
            return
        self._hung_up = True
        if self.session.state not in _LIVE:
            return
        log.info("%s: hanging up (%s)", self.session.call_id, why)
        try:
            await self.session.hangup()
        except WebPhoneError as exc:  # it ended meanwhile, or the server is gone
            log.info("%s: hangup: %s", self.session.call_id, exc)
        await self.ended(f"hung up on {why}")


# -- input -----------------------------------------------------------------------------------


class WebPhoneInputTransport(BaseInputTransport):
    """The call's received audio and digits, as pipecat input frames."""

    _params: WebPhoneParams

    def __init__(self, link: _CallLink, params: WebPhoneParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._link = link
        self._resampler = create_stream_resampler()
        self._inbox: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._inflow = AudioInflow(params.audio_in_max_pending)
        self._counted: Any = None  # the next processor, whose processed frames we count
        self._dropped = 0  # by the received-audio streams that ended
        self._stream: Any = None
        self._paused_here = False
        self._handlers: dict[str, Callable[..., None]] = {
            "answered": lambda *a: self._inbox.put_nowait(("answered", ())),
            "dtmf": lambda digit: self._inbox.put_nowait(("dtmf", (digit,))),
            "disposed": lambda reason=None: self._inbox.put_nowait(("ended", (reason,))),
            "failed": lambda reason=None: self._inbox.put_nowait(("ended", (reason,))),
        }

    async def start(self, frame: StartFrame) -> None:
        """Start: subscribe to the call, read its audio once answered."""
        await super().start(frame)
        self._paused_here = False
        session = self._link.session
        for event, handler in self._handlers.items():
            session.on(event, handler)
        await self.set_transport_ready(frame)
        if self._counted is None and self.next is not None:
            self._counted = self.next
            self._counted.add_event_handler("on_after_process_frame", self._next_processed)
        self._watcher = self.create_task(self._watch(), f"{self}::watch")
        if session.state == "answered":
            self._inbox.put_nowait(("answered", ()))
        elif session.state in _ENDED:
            self._inbox.put_nowait(("ended", (session.end_reason,)))

    async def stop(self, frame: EndFrame) -> None:
        """`EndFrame`: stop reading; hang up here only when there is no output half."""
        await super().stop(frame)
        await self._close()
        if not self._link.has_output:
            await self._link.end_call("EndFrame")

    async def cancel(self, frame: CancelFrame) -> None:
        """`CancelFrame`: stop reading; hang up here only when there is no output half."""
        await super().cancel(frame)
        await self._close()
        if not self._link.has_output:
            await self._link.end_call("CancelFrame")

    async def cleanup(self) -> None:
        """Release the subscriptions and tasks."""
        await super().cleanup()  # type: ignore[no-untyped-call]
        await self._close()

    @property
    def stats(self) -> InputStats:
        """What became of the call's received audio so far (a copy)."""
        stream = self._stream
        dropped = self._dropped + (stream.dropped if stream is not None else 0)
        return dataclasses.replace(self._inflow.stats, frames_dropped=dropped)

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        """pipecat's hand-off of received audio; the frame counts as pending (`_inflow`) until
        the next processor has processed it, unless it may never get there (a filter that
        buffers, passthrough off, paused by a `StopFrame`)."""
        params = self._params
        if (self._counted is not None and not self._paused_here and params.audio_in_passthrough
                and params.audio_in_filter is None):
            self._inflow.sent(frame)  # before: a direct-mode processor is done on return
        await super().push_audio_frame(frame)

    async def pause(self, frame: StopFrame) -> None:
        """`StopFrame`: pipecat drops its queued audio, so nothing of it is pending."""
        self._paused_here = True
        await super().pause(frame)
        self._inflow.reset()

    def _next_processed(self, _processor: Any, frame: Frame) -> None:
        self._inflow.processed(frame)

    async def _close(self) -> None:
        session = self._link.session
        for event, handler in self._handlers.items():
            session.off(event, handler)
        if self._counted is not None:
            self._counted.remove_event_handler("on_after_process_frame", self._next_processed)
            self._counted = None
        self._inflow.reset()
        for task in (self._reader, self._watcher):
            if task is not None and task is not asyncio.current_task():
                await self.cancel_task(task)
        self._reader = self._watcher = None

    async def _watch(self) -> None:
        while True:
            kind, args = await self._inbox.get()
            if kind == "answered":
                await self._answered()
            elif kind == "dtmf":
                await self._digit(args[0])
            elif kind == "ended":
                await self._ended(args[0])
                return

    async def _answered(self) -> None:
        media = self._link.session.media
        if media is not None and self._reader is None and self._params.audio_in_enabled:
            self._reader = self.create_task(self._read(media), f"{self}::read")
        await self._link.events.call_event("answered")

    async def _digit(self, digit: str) -> None:
        await self._link.events.call_event("dtmf", digit)
        if digit not in DTMF_KEYS:  # A-D: RFC 4733 has them, pipecat's KeypadEntry does not
            log.info("%s: digit %r has no pipecat frame", self._link.session.call_id, digit)
            return
        await self.push_frame(InputDTMFFrame(button=KeypadEntry(digit)))

    async def _ended(self, reason: str | None) -> None:
        await self._link.ended(reason)
        if self._link.params.end_pipeline_on_hangup:
            why = f"call ended: {reason or self._link.session.end_reason}"
            await self.push_frame(CancelWorkerFrame(reason=why), FrameDirection.UPSTREAM)

    async def _read(self, media: Any) -> None:
        rate = self.sample_rate
        stream = self._stream = media.received_audio(self._params.audio_in_max_frames)
        try:
            while True:
                # wait before taking a frame: meanwhile the stream keeps the newest audio
                await self._inflow.room(stream, self._link.session.call_id)
                try:
                    frame = await anext(stream)
                except StopAsyncIteration:
                    return
                pcm = frame.pcm
                if frame.sample_rate != rate:
                    pcm = await self._resampler.resample(pcm, frame.sample_rate, rate)
                await self.push_audio_frame(
                    InputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1)
                )
        finally:
            self._dropped += stream.dropped
            self._stream = None



# -- output ----------------------------------------------------------------------------------


class WebPhoneOutputTransport(BaseOutputTransport):
    """Bot audio and DTMF into the call; `EndFrame` / `CancelFrame` hang up."""

    _params: WebPhoneParams

    def __init__(self, link: _CallLink, params: WebPhoneParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._link = link
        link.has_output = True
        self._speaker: Speaker | None = None
        self._interrupted_id = -1

    async def start(self, frame: StartFrame) -> None:
        """Start the media senders (pipecat's chunking and queues)."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        """`EndFrame`: let the queued audio be sent, then hang up."""
        await super().stop(frame)
        if self._speaker is not None:
            await self._speaker.drain(timeout=2.0)
        await self._link.end_call("EndFrame")

    async def cancel(self, frame: CancelFrame) -> None:
        """`CancelFrame`: silence at once and hang up."""
        await super().cancel(frame)
        if self._speaker is not None:
            self._speaker.interrupt()
        await self._link.end_call("CancelFrame")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """pipecat's handling, plus: an interruption silences the call at once (before
        pipecat's own handling, which awaits other processors on the way)."""
        if isinstance(frame, InterruptionFrame):
            self._interrupted_id = frame.id
            if self._speaker is not None:
                self._speaker.interrupt()
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """One chunk of bot audio into the call; returns once it is nearly sent."""
        media = self._link.session.media
        if media is None or media.closed:
            return False
        if frame.interruptible and frame.id < self._interrupted_id:
            # Cut before the interruption (pipecat numbers its objects in creation order) and
            # already taken off pipecat's queue when the interruption reset it: not to be heard.
            return False
        if self._speaker is None or self._speaker.media is not media:
            self._speaker = Speaker(media, self.sample_rate, self._params.audio_out_lead_secs)
        await self._speaker.write(frame.audio)
        return True

    def _supports_native_dtmf(self) -> bool:
        return True

    async def _write_dtmf_native(self, frame: OutputDTMFFrame | OutputDTMFUrgentFrame) -> None:
        digits = "".join(button.value for button in frame.buttons or ())
        if not digits:
            return
        try:
            await self._link.session.send_dtmf(digits)
        except WebPhoneError as exc:  # no telephone-event negotiated, or the call ended
            await self.push_error(f"{self}: cannot send DTMF {digits!r}: {exc}", exception=exc)


# -- the transport ---------------------------------------------------------------------------

#: webphone event -> pipecat events fired for it, webphone's name first, then the names
#: Daily's transport uses for the same moment (so bots written for Daily's dial-in/out swap
#: transports), then the generic client events every pipecat transport has.
_EVENT_NAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("answered", "inbound"): ("on_call_answered", "on_dialin_connected", "on_client_connected"),
    ("answered", "outbound"): ("on_call_answered", "on_dialout_answered", "on_client_connected"),
    ("ended", "inbound"): ("on_call_ended", "on_dialin_stopped", "on_client_disconnected"),
    ("ended", "outbound"): ("on_call_ended", "on_dialout_stopped", "on_client_disconnected"),
    ("dtmf", "inbound"): ("on_dtmf", "on_dtmf_event"),
    ("dtmf", "outbound"): ("on_dtmf", "on_dtmf_event"),
}


class WebPhoneTransport(BaseTransport):
    """A pipecat transport over one call of a `WebPhone` (or of a `SharedWebPhone`'s real).

    ``WebPhoneTransport(session, params=WebPhoneParams())``; put ``transport.input()`` first
    and ``transport.output()`` last in the pipeline.

    Events (``@transport.event_handler(name)``; the handler gets the transport first):

    * ``on_call_answered(transport, session)`` (also ``on_dialin_connected`` /
      ``on_dialout_answered(transport, data)`` as Daily names them, and
      ``on_client_connected(transport, session)``); fired once the pipeline runs, also for a
      call answered before it started;
    * ``on_call_ended(transport, session, reason)`` (also ``on_dialin_stopped`` /
      ``on_dialout_stopped(transport, data)`` and ``on_client_disconnected(transport,
      session)``);
    * ``on_dtmf(transport, digit)`` (also ``on_dtmf_event(transport, {"tone": digit})``).

    Daily's ``data`` here is ``{"call_id", "session_id", "from", "to", "direction"}`` (plus
    ``"reason"`` when it ended).

    Actions: `answer()`, `hangup()`, `transfer(target)`, `warm_transfer(target)`, `hold()`,
    `unhold()`, `send_dtmf(digits)`. `user_data` is a small JSON dict for the application.
    """

    def __init__(
        self,
        session: CallLike,
        params: WebPhoneParams | None = None,
        *,
        user_data: UserData | None = None,
        name: str | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        super().__init__(name=name, input_name=input_name, output_name=output_name)
        self.session = session
        self.params = params or WebPhoneParams()
        self.user_data = user_data if user_data is not None else UserData()
        self._link = _CallLink(session, self.params, self)
        self._input: WebPhoneInputTransport | None = None
        self._output: WebPhoneOutputTransport | None = None
        for names in _EVENT_NAMES.values():
            for event in names:
                if event not in self._event_handlers:
                    self._register_event_handler(event)

    def input(self) -> WebPhoneInputTransport:
        """The input processor (created once)."""
        if self._input is None:
            self._input = WebPhoneInputTransport(self._link, self.params, name=self._input_name)
        return self._input

    @property
    def stats(self) -> InputStats:
        """The input's `InputStats`: received audio handed to the pipeline, dropped while it
        was behind, pending in it."""
        return self.input().stats

    def output(self) -> WebPhoneOutputTransport:
        """The output processor (created once)."""
        if self._output is None:
            self._output = WebPhoneOutputTransport(
                self._link, self.params, name=self._output_name
            )
        return self._output

    # -- events --------------------------------------------------------------------------------

    def _data(self, **extra: Any) -> dict[str, Any]:
        s = self.session
        inbound = s.direction == "inbound"
        return {"call_id": s.call_id, "session_id": s.session_id, "direction": s.direction,
                "from": s.remote_number if inbound else s.local_number,
                "to": s.local_number if inbound else s.remote_number, **extra}

    async def call_event(self, kind: str, *args: Any) -> None:
        """Fire the pipecat events of a call event (called by the input half)."""
        webphone_name, daily_name, *generic = _EVENT_NAMES[(kind, self.session.direction)]
        if kind == "dtmf":
            await self._call_event_handler(webphone_name, args[0])
            await self._call_event_handler(daily_name, {"tone": args[0]})
            return
        if kind == "ended":
            await self._call_event_handler(webphone_name, self.session, args[0])
            await self._call_event_handler(daily_name, self._data(reason=args[0]))
        else:
            await self._call_event_handler(webphone_name, self.session)
            await self._call_event_handler(daily_name, self._data())
        for name in generic:
            await self._call_event_handler(name, self.session)

    # -- actions -------------------------------------------------------------------------------

    async def answer(self) -> None:
        """Answer the (inbound, ringing) call; `CallError` otherwise."""
        answer = getattr(self.session, "answer", None)
        if answer is None:
            raise CallError(f"answer(): call {self.session.call_id} is outbound")
        await answer()

    async def hangup(self) -> None:
        """End the call now (BYE; decline while ringing)."""
        await self.session.hangup()

    async def transfer(self, target: str) -> None:
        """Blind (cold) transfer to `target` (REFER); the call ends once it succeeded."""
        await self.session.transfer(target)

    async def warm_transfer(self, target: str) -> Any:
        """Hold this call and call `target`: `complete()` the result to connect them,
        `cancel()` it to come back."""
        return await self.session.warm_transfer(target)

    async def hold(self) -> None:
        """Put the caller on hold (re-INVITE sendonly): the bot's audio still reaches it."""
        await self.session.hold()

    async def unhold(self) -> None:
        """Take the caller off hold."""
        await self.session.unhold()

    async def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 digits now (an `OutputDTMFFrame` sends them after queued audio)."""
        await self.session.send_dtmf(digits)
