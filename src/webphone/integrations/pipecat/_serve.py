"""`serve()`: every inbound call of a phone gets a fresh pipecat pipeline, up to `max_calls`.

For each inbound call the server makes a `WebPhoneTransport`, asks the application's
`make_pipeline(call)` for a `PipelineWorker` built on it, answers, and runs the worker in a
`WorkerRunner` of its own until the pipeline ends (the bot pushed an `EndWorkerFrame`, the
caller hung up, or the server closes). Then it cleans up: a call the pipeline left open is
hung up, a pipeline whose call ended is cancelled. A call over the limit is declined (603 on
a standard server, RingCentral's decline command there) and logged with the reason.

On a `SharedWebPhone` only the member that holds a call's media serves it: every member may
run `serve()`; the real one answers a new call (and so holds its media, the default placement),
the others see `ProxyCallSession`s and leave them alone. When a call's media lands on another
member (the group's `adopted` / `media_moved` events: the process that served it died, issue
#11) that member's server builds a fresh pipeline for it, without answering, and the
conversation goes on from there (docs/pipecat.md, "Continuity"); `user_data` starts empty
there. A pipeline whose call's media moved away ends without hanging the call up.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from pipecat.pipeline.worker import PipelineWorker
from pipecat.workers.runner import WorkerRunner

from webphone.errors import WebPhoneError

from ._core import UserData
from ._params import WebPhoneParams
from ._transport import CallLike, WebPhoneTransport

__all__ = ["CallServer", "ServedCall", "serve"]

log = logging.getLogger("webphone.pipecat")

#: Default bound of concurrent pipelines per process: a Silero VAD and a pipeline per call
#: cost about 2-4 % of a core each here (benchmarks/pipecat_bench.py), so 4 leave room for
#: the phone itself on a small machine; raise it where cores allow.
DEFAULT_MAX_CALLS = 4
#: How long a pipeline may take to wind down once its call ended, in seconds.
CLEANUP_TIMEOUT = 5.0
#: The phone's events saying a call's media now lives on this member (issue #11).
_MEDIA_HERE = ("adopted", "media_moved")


class Phone(Protocol):
    """What `serve()` needs of a `WebPhone` or `SharedWebPhone`."""

    def on(self, event: str, handler: Callable[..., Any]) -> Any: ...

    def off(self, event: str, handler: Callable[..., Any] | None = None) -> None: ...


@dataclass(kw_only=True)
class ServedCall:
    """One call being served: what `make_pipeline` gets.

    `transport` is made for this call with the server's params; `user_data` is the small JSON
    dict the application keeps for the call (the same object as `transport.user_data`).
    """

    session: CallLike
    transport: WebPhoneTransport
    phone: Any
    user_data: UserData
    media: Any = None  # the session's media when the pipeline started
    worker: PipelineWorker | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


MakePipeline = Callable[[ServedCall], "PipelineWorker | Awaitable[PipelineWorker]"]


def _holds_media(phone: Any, session: Any) -> bool:
    """Whether this member answers the new call `session`: the real phone (a dummy's
    `ProxyCallSession` is left to it)."""
    return getattr(phone, "role", "real") == "real" and hasattr(session, "media")


def _media_here(session: Any) -> bool:
    """Whether `session`'s audio is in this process: a `MediaSession`, not a stand-in for
    media another member holds."""
    from webphone.media import MediaSession

    return isinstance(getattr(session, "media", None), MediaSession)


class CallServer:
    """Serves the inbound calls of one phone (see `serve()`); `async with` or `close()`."""

    def __init__(self, phone: Phone, make_pipeline: MakePipeline, *, max_calls: int,
                 params: WebPhoneParams | None, answer: bool) -> None:
        if max_calls < 1:
            raise ValueError(f"max_calls must be >= 1, got {max_calls}")
        self.phone = phone
        self.make_pipeline = make_pipeline
        self.max_calls = max_calls
        self.params = params
        self.answer = answer
        self.calls: list[ServedCall] = []
        self.served = 0
        self.declined = 0
        self.closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        phone.on("inbound_call", self._on_inbound_call)
        for event in _MEDIA_HERE:
            phone.on(event, self._on_media_here)

    def _on_inbound_call(self, session: Any) -> None:
        if self.closed or not _holds_media(self.phone, session):
            return
        if session.state not in ("init", "ringing"):
            return  # answered elsewhere, or a call this member only learned about
        if len(self.calls) >= self.max_calls:
            self.declined += 1
            log.warning("declining call %s from %s: %d calls in progress (max_calls=%d)",
                        session.call_id, session.remote_number, len(self.calls), self.max_calls)
            self._spawn_decline(session)
            return
        self._start(session)

    def _on_media_here(self, session: Any, *_: Any) -> None:
        """A call's media now lives here (adopted, or moved here): serve it, even over
        `max_calls` (it is a call in progress, declining it would end it)."""
        if self.closed or session.state != "answered" or not _media_here(session):
            return
        served = [c for c in self.calls if c.session.call_id == session.call_id]
        if any(c.media is session.media for c in served):
            return
        for old in served:  # its media was renewed: the old pipeline's audio is gone
            if old.worker is not None and not old.worker.has_finished():
                task = asyncio.ensure_future(old.worker.cancel(reason="media moved"))
                task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        log.info("serving call %s, whose media moved to this member", session.call_id)
        self._start(session)

    def _start(self, session: Any) -> None:
        user_data = UserData()
        params = self.params.model_copy() if self.params is not None else None
        call = ServedCall(session=session, phone=self.phone, user_data=user_data,
                          media=getattr(session, "media", None),
                          transport=WebPhoneTransport(session, params, user_data=user_data))
        self.calls.append(call)
        self._idle.clear()
        call.task = asyncio.ensure_future(self._serve(call))

    def _spawn_decline(self, session: Any) -> None:
        async def decline() -> None:
            try:
                await session.decline()
            except WebPhoneError as exc:
                log.info("declining %s: %s", session.call_id, exc)

        task = asyncio.ensure_future(decline())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _serve(self, call: ServedCall) -> None:
        session = call.session
        try:
            built = self.make_pipeline(call)
            call.worker = await built if inspect.isawaitable(built) else built
            if self.answer and session.state in ("init", "ringing"):
                await session.answer()  # type: ignore[attr-defined]
            self.served += 1
            await self._run(call)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("serving call %s failed", session.call_id)
        finally:
            await self._clean_up(call)

    async def _run(self, call: ServedCall) -> None:
        assert call.worker is not None
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(call.worker)
        await runner.run()

    async def _clean_up(self, call: ServedCall) -> None:
        session = call.session
        if call.worker is not None and not call.worker.has_finished():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.worker.cancel(reason="call served"), CLEANUP_TIMEOUT)
        moved = call.media is not None and getattr(session, "media", None) is not call.media
        if session.state in ("init", "ringing", "answered") and not moved:
            try:
                await session.hangup()
            except WebPhoneError as exc:
                log.info("hanging up %s after its pipeline: %s", session.call_id, exc)
        if call in self.calls:
            self.calls.remove(call)
        if not self.calls:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no call is being served."""
        await self._idle.wait()

    async def close(self) -> None:
        """Take no more calls; cancel the pipelines in progress (their calls are hung up)."""
        if not self.closed:
            self.closed = True
            self.phone.off("inbound_call", self._on_inbound_call)
            for event in _MEDIA_HERE:
                self.phone.off(event, self._on_media_here)
        tasks = [call.task for call in self.calls if call.task is not None]
        for call in list(self.calls):
            if call.worker is not None and not call.worker.has_finished():
                with contextlib.suppress(Exception):
                    await call.worker.cancel(reason="server closed")
        if tasks:
            await asyncio.wait(tasks, timeout=CLEANUP_TIMEOUT)
        for task in tasks:
            if not task.done():
                task.cancel()

    async def __aenter__(self) -> CallServer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


def serve(
    phone: Phone,
    make_pipeline: MakePipeline,
    *,
    max_calls: int = DEFAULT_MAX_CALLS,
    params: WebPhoneParams | None = None,
    answer: bool = True,
) -> CallServer:
    """Serve every inbound call of `phone` (a started `WebPhone` or `SharedWebPhone`) with a
    pipeline from `make_pipeline(call) -> PipelineWorker` (may be async), `max_calls` at a
    time; calls over the limit are declined. `params` (copied per call) configure each call's
    transport; `answer=False` leaves answering to the pipeline (`call.transport.answer()`).
    Returns the `CallServer`, already listening; `await server.close()` (or `async with`)."""
    return CallServer(phone, make_pipeline, max_calls=max_calls, params=params, answer=answer)
