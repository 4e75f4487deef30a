"""How the real runs a dummy's action: each name of the allow-list (`webphone.shared.actions`)
mapped onto its `WebPhone` and the call sessions, returning plain values a result frame carries
(`run_action`), and the real's side of the actions it receives (`ActionRunner`: one task each,
started eagerly, answered on the link the action came on).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from webphone.errors import CallError, NoRealPhoneError
from webphone.phone import WebPhone
from webphone.shared.eager import EagerStarter
from webphone.shared.member import LinkToken, error_info
from webphone.shared.protocol import Action, ErrorInfo
from webphone.shared.proxy import jsonable

__all__ = ["ActionRunner", "MediaMover", "ResultSink", "run_action"]

#: the arguments a session method takes positionally, in this order
_POSITIONAL = ("target", "message", "digits", "duration")


class MediaMover(Protocol):
    """What the runner needs of the real's media placement (`placement.MediaPlacement`)."""

    def taking(self, holder: str | None) -> AbstractContextManager[None]:
        """New media made within the block is placed for `holder`."""

    async def release(self, holder: str) -> dict[str, Any]:
        """Move the media of the calls `holder` holds elsewhere."""

    async def live(self, holder: str) -> str | None:
        """`holder` if it is in the group now, else None."""

    def moving(self, call_id: str) -> bool:
        """True while a move of `call_id`'s media may be under way (`settled` waits for it)."""

    async def settled(self, call_id: str) -> None:
        """Return once no move of `call_id`'s media is under way."""


async def run_action(phone: WebPhone, warm: MutableMapping[str, Any], action: Action,
                     media: MediaMover | None = None) -> Any:
    """Run `action` on `phone`; its value (a call id dict for "call" and "warm_transfer"), or
    its error (`CallError` for an unknown call or transfer). `warm` keeps the warm transfers in
    progress by call id, between the action that starts one and the one that ends it. `media`
    places the media of a dummy's answer() / call() on that dummy ("holder") and runs
    "release_media"."""
    args = action.args
    taking: AbstractContextManager[None] = contextlib.nullcontext()
    if media is not None and action.name in ("answer", "call"):
        # a taker that died since it asked leaves the call's media to the real (the call
        # stays answerable: its answer would otherwise fail on a dead holder, 488)
        holder = args.get("holder")
        taking = media.taking(await media.live(holder) if holder else None)
    if action.name == "release_media":
        if media is None:
            raise CallError("release_media: this phone places no media on other members")
        return await media.release(args["holder"])
    if action.name == "call":
        with taking:
            outbound = await phone.call(args["callee"], caller_id=args.get("caller_id"),
                                        headers=args.get("headers"))
        return {"call_id": outbound.call_id}
    call_id = action.call_id or ""
    if action.name in ("complete_warm_transfer", "cancel_warm_transfer"):
        transfer = warm.pop(call_id, None)
        if transfer is None:
            raise CallError(f"{action.name}: no warm transfer in progress on call {call_id}")
        if action.name == "complete_warm_transfer":
            await transfer.complete()
        else:
            await transfer.cancel()
        return None
    if media is not None and media.moving(call_id):
        await media.settled(call_id)  # an action during a media move runs once it is done
    session: Any = next((s for s in phone.call_sessions if s.call_id == call_id), None)
    if session is None:
        raise CallError(f"{action.name}: no call {call_id!r} on the real phone")
    method = getattr(session, action.name, None)
    if not callable(method):
        raise CallError(f"{action.name} is not supported by this call")
    if action.name == "warm_transfer":
        transfer = await method(args["target"])
        warm[call_id] = transfer
        return {"call_id": transfer.session.call_id}
    with taking:
        return await method(*(args[k] for k in _POSITIONAL if k in args))


class ResultSink(Protocol):
    """Where the runner answers an action (the real's `GroupMember`)."""

    def send_result(self, token: LinkToken, action_id: str, *, value: Any = None,
                    error: ErrorInfo | None = None) -> bool:
        """Answer the action `action_id` received on `token`'s link."""


class ActionRunner:
    """The real's side of the actions its members send: each runs in a task of its own (it may
    wait on SIP for seconds), started eagerly (`eager.EagerStarter`: one that completes without
    waiting, as an unknown call or a flag change, answers before the callback that received it
    returns, and needs no task of its own), once any takeover is done (`idle`), on the phone
    `phone()` returns; `publish` sends the state it changed before the result (a caller sees
    it first). `busy()` says whether `idle` has anything to wait for: most actions need not
    await it (a coroutine per action, measured on the action round trip)."""

    def __init__(self, *, phone: Callable[[], WebPhone | None],
                 idle: Callable[[], Awaitable[None]], busy: Callable[[], bool],
                 publish: Callable[[], None], warm: MutableMapping[str, Any],
                 media: MediaMover) -> None:
        self._phone = phone
        self._idle = idle
        self._busy = busy
        self._publish = publish
        self._warm = warm
        self._media = media
        self.tasks: set[asyncio.Task[Any]] = set()  # waiting: a hand-over waits for them
        self._starter = EagerStarter()

    def start(self, sink: ResultSink, action: Action, token: LinkToken) -> None:
        """Run `action`, received on `token`'s link; its result goes to `sink`."""
        task = self._starter.start(self._run(sink, action, token))
        if task is not None:  # it waits (None: it has answered already)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def close(self) -> None:
        """Cancel the actions still running (their callers learn it from the link)."""
        self._starter.close()
        for task in list(self.tasks):
            task.cancel()

    async def _run(self, sink: ResultSink, action: Action, token: LinkToken) -> None:
        try:
            if self._busy():
                await self._idle()  # actions during a takeover run once it is done
            phone = self._phone()
            if phone is None:
                raise NoRealPhoneError("this member is no longer the real phone")
            value = await run_action(phone, self._warm, action, self._media)
            error = None
        except Exception as exc:
            value, error = None, error_info(exc)
        self._publish()
        sink.send_result(token, action.action_id, value=jsonable(value), error=error)
