"""A pipecat voice bot on a phone number, with no cloud service: it answers, greets, echoes back
what the caller said once Silero VAD hears them stop, stops talking when they talk over it, and
says goodbye and hangs up on `#`.

    pip install 'webphone[pipecat]'; apt-get install espeak-ng     # the greeting's voice
    python examples/pipecat_bot.py --sip-info sip-info.json          # RingCentral's sipInfo
    python examples/pipecat_bot.py --sip-info sip-info.json --shared # one of a group of processes

Against the local sandbox: `webphone sandbox` in one terminal, then this with a sandbox user's
sipInfo and `--loopback-media`, and call it from `webphone phone` (docs/pipecat.md).

The bot's pipeline is  input -> Silero VAD -> EchoBot -> output.  A real assistant puts
speech-to-text, an LLM and text-to-speech where EchoBot is (see `make_pipeline`). Every event
is printed as one JSON line on stdout (the tests read them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import wave
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from webphone import SharedWebPhone, SipInfo, WebPhone
from webphone.integrations.pipecat import ServedCall, WebPhoneParams, serve

GREETING = ("Hello, this is the echo bot. Say something, and I will say it back. "
            "Press pound to end.")
GOODBYE = "Goodbye."
RATE = 16000  # the pipeline's rate in and out: webphone's receive rate, so audio is resampled once
VAD = VADParams(start_secs=0.2, stop_secs=0.2)  # pipecat 1.14's defaults, said out loud
PRE_ROLL = 0.3  # s of audio kept from before VAD confirms speech (it confirms after start_secs)


def emit(event: str, **fields: Any) -> None:
    """One JSON line per event on stdout."""
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


# -- audio made at first run -----------------------------------------------------------------


def speech_wav(text: str, path: Path) -> Path:
    """`text` spoken by espeak-ng into `path` (a 16-bit mono WAV, 22050 Hz), made once."""
    if not path.exists():
        if shutil.which("espeak-ng") is None:
            sys.exit("espeak-ng is needed for the bot's voice: apt-get install espeak-ng")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: several bots starting at once must never read a half file.
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        subprocess.run(["espeak-ng", "-w", str(partial), text], check=True)
        os.replace(partial, path)
    return path


def read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono PCM")
        return w.readframes(w.getnframes()), w.getframerate()


# -- the bot -----------------------------------------------------------------------------------


class EchoBot(FrameProcessor):
    """Records what the caller says between VAD's start and stop, then says it back.

    This is where a real assistant's services go: STT turns the caller's audio into text
    (e.g. `DeepgramSTTService`), an LLM answers (`OpenAILLMService` with a context
    aggregator), TTS speaks the answer (`CartesiaTTSService`). Each of them pushes frames
    like the ones `say()` pushes here, so the transport handles them alike.
    """

    def __init__(self, goodbye: tuple[bytes, int], *, on_event: Callable[..., None] = emit,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.goodbye = goodbye
        self.on_event = on_event
        self._pre_roll: deque[bytes] = deque(maxlen=int(PRE_ROLL / 0.02))
        self._heard: list[bytes] | None = None
        self._bot_speaking = False
        self._ending = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            if self._heard is not None:
                self._heard.append(frame.audio)
            else:
                self._pre_roll.append(frame.audio)
            return  # the caller's audio goes no further: nothing after us needs it
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._user_started()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._user_stopped()
        elif isinstance(frame, InputDTMFFrame):
            await self._digit(frame.button.value)
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        await self.push_frame(frame, direction)

    async def _user_started(self) -> None:
        self._heard = list(self._pre_roll)
        self._pre_roll.clear()
        if self._bot_speaking:  # the caller talks over the bot: stop talking (barge-in)
            self.on_event("interrupted")
            await self.broadcast_interruption()

    async def _user_stopped(self) -> None:
        heard, self._heard = self._heard, None
        if heard and not self._ending:
            # STT -> LLM -> TTS would run here; the echo answers at once.
            self.on_event("reply", seconds=round(len(b"".join(heard)) / 2 / RATE, 3))
            await self.say(b"".join(heard), RATE)

    async def _digit(self, digit: str) -> None:
        self.on_event("dtmf_frame", digit=digit)
        if digit == "#" and not self._ending:
            self._ending = True
            await self.say(*self.goodbye)
            # Ends the pipeline after the goodbye was played; the transport then hangs up.
            await self.push_frame(EndWorkerFrame(reason="caller pressed #"))

    async def say(self, pcm: bytes, rate: int) -> None:
        """Speak `pcm` (s16 mono at `rate`) the way a TTS service does."""
        await self.push_frame(TTSStartedFrame())
        step = rate // 50 * 2 * 5  # 100 ms per frame, like TTS services stream
        for i in range(0, len(pcm), step):
            await self.push_frame(TTSAudioRawFrame(pcm[i:i + step], rate, 1))
        await self.push_frame(TTSStoppedFrame())


def make_pipeline(call: ServedCall, greeting: tuple[bytes, int], goodbye: tuple[bytes, int],
                  on_event: Callable[..., None] = emit) -> PipelineWorker:
    """One call's pipeline: input -> Silero VAD -> EchoBot -> output."""
    transport = call.transport
    bot = EchoBot(goodbye, on_event=on_event)
    pipeline = Pipeline([
        transport.input(),
        VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VAD)),
        # stt,  context_aggregator.user(),  llm,  tts,      <- a real assistant
        bot,
        transport.output(),
        # context_aggregator.assistant(),
    ])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        idle_timeout_secs=None,  # a phone call ends by hanging up, not by idling
        enable_rtvi=False,  # RTVI is for pipecat's web clients; a phone has none
    )
    session = call.session

    @transport.event_handler("on_call_answered")
    async def greet(transport: Any, session: Any) -> None:
        call.user_data["greeted_at"] = time.time()  # state the app keeps with the call
        on_event("answered", call_id=session.call_id, remote=session.remote_number)
        await bot.say(*greeting)

    @transport.event_handler("on_dtmf")
    async def digit(transport: Any, digit: str) -> None:
        on_event("dtmf", call_id=session.call_id, digit=digit)

    @transport.event_handler("on_call_ended")
    async def ended(transport: Any, session: Any, reason: str | None) -> None:
        on_event("ended", call_id=session.call_id, reason=reason)

    return worker


# -- running it ------------------------------------------------------------------------------


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sip-info", required=True, help="sipInfo JSON file (RingCentral's)")
    parser.add_argument("--shared", action="store_true", help="join the extension's group")
    parser.add_argument("--runtime-dir", help="the group's runtime directory (--shared)")
    parser.add_argument("--max-calls", type=int, default=4)
    parser.add_argument("--loopback-media", action="store_true",
                        help="audio on 127.0.0.1 only (the local sandbox)")
    parser.add_argument("--audio-dir", default=str(Path.home() / ".cache" / "webphone-bot"),
                        help="where the spoken greeting and goodbye are kept")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")  # pipecat logs every frame event at DEBUG

    audio = Path(args.audio_dir)
    greeting = read_wav(speech_wav(GREETING, audio / "greeting.wav"))
    goodbye = read_wav(speech_wav(GOODBYE, audio / "goodbye.wav"))
    sip_info = SipInfo.from_dict(json.loads(Path(args.sip_info).read_text()))  # noqa: ASYNC240
    phone: Any
    if args.shared:
        phone = SharedWebPhone(sip_info, runtime_dir=args.runtime_dir,
                               loopback_media=args.loopback_media)
        phone.on("role", lambda role: emit("role", role=role))
    else:
        phone = WebPhone(sip_info, loopback_media=args.loopback_media)
    await phone.start()
    emit("ready", role=getattr(phone, "role", "real"))
    server = serve(phone, lambda call: make_pipeline(call, greeting, goodbye),
                   max_calls=args.max_calls, params=WebPhoneParams())
    try:
        await asyncio.Event().wait()  # serve until interrupted
    finally:
        await server.close()
        await phone.dispose()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
