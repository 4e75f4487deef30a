"""RingCentral's in-call INFO commands (recording, flip, park) and INFO received in a call
(command results, DTMF relay). Mixed into `CallSession` through `CallActions`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import CallError
from ..sip import SipRequest
from ..sip import rc as rcmsg
from ._dialog import DialogSession

log = logging.getLogger("webphone.call")

#: How long an INFO command waits for its JSON result.
INFO_TIMEOUT = 10.0


class RcActions(DialogSession):
    """RingCentral INFO commands on top of the session core."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._info_reqid = 0
        self._info_waiters: dict[tuple[int, str], asyncio.Future[rcmsg.InfoResult]] = {}

    def _on_end(self, error: Exception) -> None:
        super()._on_end(error)
        _fail_all(self._info_waiters.values(), error)

    async def start_recording(self) -> rcmsg.InfoResult:
        """Start recording the call (RingCentral INFO `startcallrecord`)."""
        return await self._info_command("startcallrecord")

    async def stop_recording(self) -> rcmsg.InfoResult:
        """Stop recording the call (RingCentral INFO `stopcallrecord`)."""
        return await self._info_command("stopcallrecord")

    async def flip(self, target: str) -> rcmsg.InfoResult:
        """Flip the call to another of the user's numbers (RingCentral INFO `callflip`)."""
        return await self._info_command("callflip", target=target)

    async def park(self) -> rcmsg.InfoResult:
        """Park the call (RingCentral INFO `callpark`), then hang up our leg: the parked party
        stays with the server until someone picks it up (`result.extra["park extension"]`).

        The server does not end our leg itself: the upstream SDK hangs up after a successful
        park (park.spec.ts: INFO, 200, INFO, 200, BYE, 200), and so do we.
        """
        result = await self._info_command("callpark")
        if self.state == "answered":
            await self._bye()
        return result

    async def _info_command(self, command: str, **args: str) -> rcmsg.InfoResult:
        self._require("answered", action=command)
        self._info_reqid += 1
        key = (self._info_reqid, command)
        waiter: asyncio.Future[rcmsg.InfoResult] = asyncio.get_running_loop().create_future()
        self._info_waiters[key] = waiter
        body = rcmsg.build_info_command(command, self._info_reqid, **args)
        try:
            request = self._dialog_request("INFO", body=body, content_type=rcmsg.INFO_CONTENT_TYPE)
            response = await self._dialog_send(request)
            if not response.is_success:
                raise CallError(f"{command} refused: {response.status_code} {response.reason}")
            result = await asyncio.wait_for(asyncio.shield(waiter), INFO_TIMEOUT)
        except TimeoutError as exc:
            raise CallError(
                f"{command}: no result from the server within {INFO_TIMEOUT:g} s"
            ) from exc
        finally:
            self._info_waiters.pop(key, None)
        if not result.ok:
            raise CallError(f"{command} failed: code {result.code} {result.description or ''}")
        return result

    async def _on_info(self, request: SipRequest) -> None:
        await self._reply(request, 200, "OK")
        content_type = (request.headers.get("Content-Type") or "").lower()
        if "dtmf-relay" in content_type:
            digit = _dtmf_relay_digit(request.body)
            if digit:
                self.emit("dtmf", digit)
            return
        result = rcmsg.parse_info_result(request.body)
        if result is None:
            return
        waiter = self._info_waiters.get((result.reqid, result.command))
        if waiter is not None and not waiter.done():
            waiter.set_result(result)



def _fail_all(futures: Any, error: Exception) -> None:
    """Fail every waiting future with `error` (the call ended under them)."""
    for future in list(futures):
        if not future.done():
            future.set_exception(error)
            future.exception()


def _dtmf_relay_digit(body: bytes) -> str | None:
    for line in body.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition("=")
        if name.strip().lower() == "signal" and value.strip():
            return value.strip()[0]
    return None
