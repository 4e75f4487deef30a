"""The control channel: JSON over a loopback WebSocket (subprotocol `webphone-sandbox-control`).

Used by `webphone sandbox call 101 --from tone`; anything that speaks WebSocket can use it:

    -> {"action": "call", "user": "101", "party": "tone", "auto_answer": false,
        "headers": [["X-Test", "1"]]}
    <- {"event": "calling", "call_id": "...", "party": "901", "user": "101"}
    <- {"event": "ringing"}   <- {"event": "answered"}
    -> {"action": "hangup"}
    <- {"event": "ended", "reason": "hung up", "status": 200}
    -> {"action": "users"}
    <- {"event": "users", "users": [{sipInfo}, ...]}

One call per control connection; closing the connection hangs the call up. The server accepts
this subprotocol only from loopback addresses and without an Origin header (see server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .parties import PartyCall
from .users import User

log = logging.getLogger("webphone.sandbox")

MAX_CONTROL_FRAME = 16 * 1024


class ControlledSandbox(Protocol):
    """What a control connection needs of the sandbox (`Sandbox` is one)."""

    @property
    def users(self) -> list[User]: ...

    def sip_info(self, extension: str, **overrides: Any) -> dict[str, Any]: ...

    async def party_call(
        self, user: str, party: str = "tone", *, auto_answer: bool = False,
        headers: Iterable[tuple[str, str]] | None = None,
    ) -> PartyCall: ...


async def serve_control(sandbox: ControlledSandbox, ws: ServerConnection) -> None:
    """Run one control connection until it closes."""
    session = _ControlSession(sandbox, ws)
    try:
        async for frame in ws:
            await session.handle(frame)
    except ConnectionClosed:
        pass
    finally:
        await session.close()


class _ControlSession:
    def __init__(self, sandbox: ControlledSandbox, ws: ServerConnection) -> None:
        self.sandbox = sandbox
        self.ws = ws
        self.call: PartyCall | None = None
        self.watcher: asyncio.Task[None] | None = None

    async def send(self, **event: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(event))

    async def handle(self, frame: str | bytes) -> None:
        if len(frame) > MAX_CONTROL_FRAME:
            await self.send(event="error", error="frame too large")
            return
        try:
            request = json.loads(frame)
            action = request["action"]
        except (ValueError, TypeError, KeyError):
            await self.send(event="error", error='expected JSON {"action": ...}')
            return
        try:
            if action == "call":
                await self._call(request)
            elif action == "hangup":
                await self._hangup()
            elif action == "users":
                users = [self.sandbox.sip_info(u.extension) for u in self.sandbox.users]
                await self.send(event="users", users=users)
            else:
                await self.send(event="error", error=f"unknown action {action!r}")
        except Exception as exc:  # bad input from a control client: one line, not a traceback
            log.warning("control action %.40r failed: %s: %s", action, type(exc).__name__, exc)
            await self.send(event="error", error=str(exc))

    async def _call(self, request: dict[str, Any]) -> None:
        if self.call is not None and self.call.state != "ended":
            await self.send(event="error", error="a call is already in progress")
            return
        headers = [(str(k), str(v)) for k, v in request.get("headers") or []]
        call = await self.sandbox.party_call(
            str(request["user"]),
            party=str(request.get("party", "tone")),
            auto_answer=bool(request.get("auto_answer", False)),
            headers=headers,
        )
        self.call = call
        await self.send(event="calling", call_id=call.call_id, party=call.party.number,
                        user=call.remote)
        self.watcher = asyncio.create_task(self._watch(call))

    async def _watch(self, call: PartyCall) -> None:
        for name, event in (("ringing", call.ringing), ("answered", call.answered)):
            await _first(event, call.ended)
            if event.is_set():
                await self.send(event=name)
            if call.ended.is_set():
                break
        await call.ended.wait()
        await self.send(event="ended", reason=call.reason, status=call.status)

    async def _hangup(self) -> None:
        if self.call is None:
            await self.send(event="error", error="no call")
            return
        await self.call.hangup()

    async def close(self) -> None:
        if self.call is not None and self.call.state != "ended":
            await self.call.hangup()
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher


async def _first(*events: asyncio.Event) -> None:
    """Until any of `events` is set."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
