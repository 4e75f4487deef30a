"""`RemoteMedia`: on the real, a call's media that lives on another member (its media holder).

Theory of operation. The real keeps every SIP dialog; a call's `MediaSession` may live on any
member (issue #11, "two planes"). For such a call `session.media` on the real is a
`RemoteMedia`: it has the methods and properties the call layer uses on a `MediaSession`
(`create_offer`, `create_answer`, `apply_answer`, `set_direction`, `mute`/`unmute`,
`send_dtmf`, `local_sdp`, `remote_sdp`, `direction`, `negotiated_direction`, `close`,
`continuity`, `wait_first_audio`, events), and each operation is a delegate of the continuity
plane (`GroupMember.delegate`, ops `actions.DELEGATE_OPS`) answered by the holder's
`media_host.MediaHost`.

Order. Every operation, sync or async, goes through one queue per call and reaches the holder
in the order the call layer made it (a `set_direction` before a `create_offer` is applied
before the offer is made). Sync ones (`set_direction`, `mute`) return at once; their failure is
logged. The first operation is always ``media.take`` (the holder creates its session; from a
continuity record when the media moves to it). Reads go beside the queue: a first-audio wait
(the far party's re-offer that ends it must not queue behind it) and the counters report.

What it keeps. The SDPs it relayed (ours from the holder, the far party's to it), the direction
and mute: `continuity()` builds the media record (`webphone.media.continuity`) from them, so
the call's media can be resumed elsewhere when the holder dies. `stats` are the holder's
receive counters as last reported (each read asks for a new report), so the call layer's RTP
inactivity check covers remote media too; the holder's own loss is seen by the plane
(`on_member_lost`).

A holder that is gone (`MemberLostError` from a delegate) is reported once through `on_lost`;
the real then moves the call's media (`placement.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from webphone._events import EventEmitter
from webphone.errors import MemberLostError, WebPhoneError
from webphone.sip.sdp import (
    DIRECTIONS,
    Direction,
    SdpError,
    audio_codecs,
    get_direction,
    parse_origin,
    reverse_direction,
    telephone_events,
)

if TYPE_CHECKING:
    from webphone.media import MediaStats

__all__ = ["DELEGATE_TIMEOUT", "DelegateFn", "RemoteMedia", "media_error"]

log = logging.getLogger("webphone.shared.media")

#: seconds one media delegate may take: an offer or answer gathers ICE candidates (aiortc
#: bounds that by the holder's `ice_gather_timeout`, 10 s by default; on loopback it takes
#: milliseconds), the rest is immediate
DELEGATE_TIMEOUT = 12.0
#: what a holder needs beyond the DTMF tones themselves (MediaSession's own default margin)
_DTMF_MARGIN = 2.0
#: the receive sample rate a holder's MediaSession uses unless told otherwise
_RECEIVE_RATE = 16000


class DelegateFn(Protocol):
    """What `RemoteMedia` needs of its group: `GroupMember.delegate`."""

    def __call__(self, to: str, op: str, call_id: str, args: dict[str, Any],
                 timeout: float = ...) -> Awaitable[Any]:
        """Ask member `to` to do `op` for `call_id`; its value, or its error raised."""


@dataclass(eq=False, kw_only=True)
class _Op:
    op: str
    args: dict[str, Any]
    timeout: float
    future: asyncio.Future[Any]
    waited: bool  # someone awaits the future (else a failure is only logged)


@dataclass(kw_only=True)
class _Relayed:
    """The SDPs relayed so far: what `continuity()` and the properties read."""

    local: str | None = None  # ours (the holder's), as last produced
    remote: str | None = None  # the far party's last SDP
    answered_by_us: bool = False  # the last completed exchange: we answered (else offered)
    completed: bool = False  # at least one offer/answer completed
    version: int | None = None


class RemoteMedia(EventEmitter):
    """A call's media held by member `holder`, driven from the real (module docstring).

    `record`: a continuity record the holder resumes from (`MediaSession.resume`), or None
    for new media; `held=True`: the holder holds the media of `record` already (a new real
    adopting the call), nothing is taken. `on_lost(media)` is called once when a delegate
    finds the holder gone.
    """

    def __init__(
        self,
        delegate: DelegateFn,
        holder: str,
        call_id: str,
        *,
        record: Mapping[str, Any] | None = None,
        timeout: float = DELEGATE_TIMEOUT,
        on_lost: Callable[[RemoteMedia], None] | None = None,
        held: bool = False,
    ) -> None:
        super().__init__()
        self.holder = holder
        self.call_id = call_id
        self.timeout = timeout
        self._delegate = delegate
        self._on_lost = on_lost
        self._record = dict(record) if record is not None else None
        self._direction: Direction = "sendrecv"
        self._muted = False
        self._sdp = _Relayed()
        # the o= versions the holder resuming `record` may send (RFC 3264 §8), published
        # with the record while its own SDPs are below them (`continuity.claim_versions`)
        self._versions_used: int | None = None
        if record is not None:
            from webphone.media.continuity import MediaContinuity, claim_versions

            kept = MediaContinuity.from_record(record)  # MediaError naming a bad field
            self._direction, self._muted = kept.direction, kept.muted
            self._sdp = _Relayed(local=kept.local_sdp, remote=kept.remote_sdp, completed=True,
                                 version=kept.origin_version)
            if not held:
                self._versions_used = claim_versions(record)["versions_used"]
        self._queue: asyncio.Queue[_Op] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._taken: asyncio.Future[Any] | None = None
        if held:  # the holder has the call's media already (an adopted call): no media.take
            self._taken = asyncio.get_running_loop().create_future()
            self._taken.set_result(None)
        self._closed = False
        self._lost = False
        self._stats: MediaStats | None = None  # the holder's last counters report
        self._report: asyncio.Future[None] | None = None  # a report under way

    def __repr__(self) -> str:
        return f"<RemoteMedia {self.call_id} on {self.holder}{' closed' if self._closed else ''}>"

    # -- properties (as MediaSession's) ------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closed or abandoned."""
        return self._closed

    @property
    def lost(self) -> bool:
        """True once a delegate found the holder gone."""
        return self._lost

    @property
    def local_sdp(self) -> str | None:
        """The last SDP the holder produced (offer or answer), exactly as relayed."""
        return self._sdp.local

    @property
    def remote_sdp(self) -> str | None:
        """The far party's last SDP, as relayed to the holder."""
        return self._sdp.remote

    @property
    def origin_version(self) -> int | None:
        """The o= version of `local_sdp`."""
        return self._sdp.version

    @property
    def direction(self) -> Direction:
        """The direction asked for in the next offer or answer (`set_direction`)."""
        return self._direction

    @property
    def negotiated_direction(self) -> str | None:
        """Our side's direction after the last completed offer/answer (None before)."""
        sdp = self._sdp
        if not sdp.completed or sdp.local is None or sdp.remote is None:
            return None
        try:
            if sdp.answered_by_us:
                return get_direction(sdp.local)
            return reverse_direction(get_direction(sdp.remote))
        except SdpError:
            return None

    @property
    def muted(self) -> bool:
        """Whether the holder sends silence instead of our audio."""
        return self._muted

    @property
    def stats(self) -> MediaStats | None:
        """The holder's receive counters (`frames_received`, `dtmf_received`) as it last
        reported them; None before the first report. Each read asks for a fresh report in
        the background, so a reader that polls (the call layer's RTP inactivity check) sees
        them one poll late: a call whose remote media went silent still ends."""
        if not (self._closed or self._lost) and self._taken is not None \
                and self._taken.done() and self._report is None:
            self._report = asyncio.ensure_future(self._poll_stats())
        return self._stats

    async def _poll_stats(self) -> None:
        try:
            value = await self._delegate(self.holder, "media.update", self.call_id,
                                         {"counters": True}, timeout=self.timeout)
        except MemberLostError:
            self._holder_lost()
        except WebPhoneError as exc:  # a slow or refusing holder: the next read asks again
            log.info("no counters from %s for %s: %s", self.holder, self.call_id, exc)
        else:
            self._stats = _stats_of(value, self._stats)
        finally:
            self._report = None

    # -- offer / answer ----------------------------------------------------------------------

    async def take(self) -> None:
        """Have the holder create the call's media (``media.take``, with the record given);
        every other operation does this first. Raises the holder's error."""
        self._check_open()
        await self._ensure_taken()

    async def create_offer(self, ice_restart: bool = False, renew: bool = False) -> str:
        """An SDP offer from the holder (`renew`: from a new peer connection)."""
        value = await self._call("media.offer", {"renew": renew, "ice_restart": ice_restart,
                                                 "direction": self._direction})
        sdp = _sdp_of(value, "media.offer", self.holder)
        self._produced(sdp)
        self._sdp.answered_by_us = False
        return sdp

    async def create_answer(self, offer_sdp: str) -> str:
        """The holder applies the far party's offer and answers it."""
        value = await self._call("media.answer", {"offer": offer_sdp})
        sdp = _sdp_of(value, "media.answer", self.holder)
        self._sdp.remote = offer_sdp
        self._produced(sdp)
        self._sdp.answered_by_us = self._sdp.completed = True
        return sdp

    async def apply_answer(self, answer_sdp: str) -> None:
        """The holder applies the far party's answer to its last offer."""
        await self._call("media.apply_answer", {"answer": answer_sdp})
        self._sdp.remote = answer_sdp
        self._sdp.completed = True

    def set_direction(self, direction: str) -> None:
        """The direction for the next offer/answer (sent to the holder in the background)."""
        for known in DIRECTIONS:
            if direction == known:
                self._direction = known
                self._background("media.update", {"direction": known})
                return
        raise media_error(f"invalid media direction {direction!r}; expected one of "
                           f"{DIRECTIONS}")

    def mute(self) -> None:
        """The holder sends silence (in the background)."""
        self._muted = True
        self._background("media.update", {"muted": True})

    def unmute(self) -> None:
        """The holder sends our audio again (in the background)."""
        self._muted = False
        self._background("media.update", {"muted": False})

    async def send_dtmf(self, tones: str, duration: float = 0.1, gap: float = 0.07,
                        timeout: float | None = None) -> None:
        """The holder sends `tones` as RFC 4733 events; returns once they are out."""
        length = len(tones) * (duration + gap) + _DTMF_MARGIN
        await self._call("media.update", {"dtmf": {"digits": tones, "duration": duration,
                                                   "gap": gap}},
                         timeout=(timeout or length) + self.timeout)

    async def wait_first_audio(self, timeout: float) -> float:
        """Wait until the holder hears the far party on its current peer connection; returns
        the loop time (here) it did. `MediaError` after `timeout` s, as `MediaSession`'s."""
        self._check_open()
        await self._ensure_taken()
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Not through the queue: a wait must not hold back what the call layer does meanwhile
        # (the far party's re-offer, answered through this media, is what ends the wait).
        try:
            value = await self._delegate(self.holder, "media.update",
                                         self.call_id, {"wait_first_audio": timeout},
                                         timeout=timeout + self.timeout)
        except MemberLostError:
            self._holder_lost()
            raise
        except WebPhoneError as exc:
            raise _remote_error(exc) from None
        after = value.get("after") if isinstance(value, dict) else None
        if isinstance(after, int | float) and not isinstance(after, bool) and after >= 0:
            return started + min(float(after), loop.time() - started)
        return loop.time()

    def continuity(self) -> dict[str, Any]:
        """The media record of this call (`MediaSession.continuity()`'s fields) built from the
        SDPs relayed to and from the holder. `MediaError` before the first offer/answer."""
        from webphone.media.continuity import continuity_record

        sdp = self._sdp
        if not sdp.completed or sdp.local is None or sdp.remote is None:
            raise media_error(f"call {self.call_id}: no continuity record before the first "
                               "completed offer/answer")
        rate = _RECEIVE_RATE
        if self._record is not None and isinstance(self._record.get("receive_sample_rate"), int):
            rate = int(self._record["receive_sample_rate"])
        record = continuity_record(local_sdp=sdp.local, remote_sdp=sdp.remote,
                                   direction=self._direction, muted=self._muted,
                                   receive_sample_rate=rate,
                                   dtmf_payload_type=_dtmf_payload_type(
                                       sdp.remote, sdp.local if sdp.answered_by_us else sdp.remote))
        if self._versions_used is not None and self._versions_used > record["origin_version"]:
            record["versions_used"] = self._versions_used
        return record

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the call's media on the holder (idempotent; a holder already gone is fine)."""
        if self._closed:
            return
        queued = self._taken is not None and not self._lost
        self._closed = True
        try:
            if queued:
                await self._enqueue("media.close", {}, self.timeout, waited=True)
        except WebPhoneError as exc:  # lost, timed out, refused (MediaError): nothing to keep
            log.info("closing the media of %s on %s: %s", self.call_id, self.holder, exc)
        finally:
            self._stop()
            self.emit("closed")

    def abandon(self) -> None:
        """Forget the holder without telling it (it is gone, or the media moved): nothing is
        sent; queued operations fail with MediaError."""
        self._closed = True
        self._stop()

    # -- the queue ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise media_error(f"the media of call {self.call_id} on {self.holder} is closed")

    async def _call(self, op: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        self._check_open()
        if self._taken is None:
            self._start_take()
        return await self._enqueue(op, args, timeout or self.timeout, waited=True)

    def _background(self, op: str, args: dict[str, Any]) -> None:
        if self._closed:
            return
        if self._taken is None:
            self._start_take()
        self._enqueue(op, args, self.timeout, waited=False)

    async def _ensure_taken(self) -> None:
        if self._taken is None:
            self._start_take()
        assert self._taken is not None
        await asyncio.shield(self._taken)

    def _start_take(self) -> None:
        self._taken = self._enqueue("media.take", {"record": self._record}, self.timeout,
                                    waited=True)
        # read here so that a failed take nobody awaited is not reported as never retrieved
        self._taken.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _enqueue(self, op: str, args: dict[str, Any], timeout: float,
                 *, waited: bool) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._work(), name=f"webphone-media-{self.call_id}")
        future: asyncio.Future[Any] = loop.create_future()
        if not waited:
            future.add_done_callback(self._log_failure)
        self._queue.put_nowait(_Op(op=op, args=args, timeout=timeout, future=future,
                                   waited=waited))
        return future

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            if item.future.done():
                continue
            taken = self._taken
            if item.op != "media.take" and taken is not None and taken.done() \
                    and taken.exception() is not None:
                _fail(item.future, taken.exception() or media_error("media.take failed"))
                continue
            try:
                value = await self._delegate(self.holder, item.op, self.call_id, item.args,
                                             timeout=item.timeout)
            except MemberLostError as exc:
                self._holder_lost()
                _fail(item.future, exc)
            except WebPhoneError as exc:
                _fail(item.future, _remote_error(exc))
            except Exception as exc:  # every failure is the op's outcome
                _fail(item.future, exc)
            else:
                if not item.future.done():
                    item.future.set_result(value)

    def _holder_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        log.warning("the media holder %s of call %s is gone", self.holder, self.call_id)
        if self._on_lost is not None:
            self._on_lost(self)

    def _log_failure(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.warning("media update of %s on %s failed: %s", self.call_id, self.holder, exc)

    def _stop(self) -> None:
        for task in (self._worker, self._report):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        queue, self._queue = self._queue, None
        while queue is not None and not queue.empty():
            item = queue.get_nowait()
            _fail(item.future, media_error(f"the media of call {self.call_id} on "
                                            f"{self.holder} was closed before {item.op!r} ran"))

    def _produced(self, sdp: str) -> None:
        self._sdp.local = sdp
        with contextlib.suppress(SdpError):
            self._sdp.version = parse_origin(sdp).version


def _stats_of(value: Any, stats: MediaStats | None) -> MediaStats | None:
    """The counters of a ``media.update {"counters": true}`` answer in `stats` (made on the
    first report: `MediaStats` lives in the media stack, loaded where calls are)."""
    if not isinstance(value, dict):
        return stats
    frames, dtmf = _count(value.get("frames_received")), _count(value.get("dtmf_received"))
    if frames is None or dtmf is None:
        return stats
    if stats is None:
        from webphone.media import MediaStats

        stats = MediaStats()
    stats.frames_received, stats.dtmf_received = frames, dtmf
    return stats


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def media_error(message: str, name: str = "MediaError") -> WebPhoneError:
    """A `webphone.media` error (imported here, not at module level: a dummy that holds no
    media never loads webphone.media, tests/unit/test_shared_imports.py)."""
    from webphone.media import errors

    cls = getattr(errors, name, errors.MediaError)
    return cls(message) if isinstance(cls, type) and issubclass(cls, WebPhoneError) \
        else errors.MediaError(message)


def _remote_error(exc: WebPhoneError) -> WebPhoneError:
    """The holder's `MediaError` comes back as ``WebPhoneError("MediaError: ...")`` (the group
    maps error names through `webphone.errors` only): make it a media error again."""
    if type(exc) is WebPhoneError:
        name, _, message = str(exc).partition(": ")
        if name in ("MediaError", "DtmfNotAvailableError"):
            return media_error(message, name)
    return exc


def _sdp_of(value: Any, op: str, holder: str) -> str:
    sdp = value.get("sdp") if isinstance(value, dict) else None
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise media_error(f"{op}: member {holder} answered {str(value)[:60]!r} instead of "
                           "{'sdp': 'v=0 ...'}")
    return sdp


def _dtmf_payload_type(remote: str, answer: str) -> int | None:
    """The telephone-event payload type we send DTMF with, as `MediaSession` picks it: the
    far party's, at the clock rate of the send codec (the answer's first); None if none."""
    try:
        codecs = audio_codecs(answer)
        if not codecs:
            return None
        return telephone_events(remote).get(codecs[0].clock_rate)
    except SdpError:
        return None
