"""Transfers (REFER, RFC 3515, both roles; Replaces, RFC 3891). Mixed into `CallSession`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from ..errors import CallError, SipParseError, SipTimeoutError, TransportError
from ..sip import Address, SipRequest, SipUri
from ..sip._grammar import is_digits
from ._base import BaseCallSession
from .rc_actions import RcActions, _fail_all

log = logging.getLogger("webphone.call")

#: How long transfer() waits for the outcome (upstream: 10 s).
TRANSFER_TIMEOUT = 10.0
#: After a successful transfer, how long we let the server end our leg before we BYE ourselves.
BYE_GRACE = 2.0


@dataclass
class WarmTransfer:
    """A warm transfer in progress: the original call is on hold, `session` is the consult call."""

    original: CallActions
    session: BaseCallSession

    async def complete(self) -> None:
        """Connect the original party with the consulted one (REFER with Replaces)."""
        await self.original.complete_warm_transfer(self.session)

    async def cancel(self) -> None:
        """Hang up the consult call and take the original one off hold."""
        if self.session.state in ("init", "ringing", "answered"):
            await self.session.hangup()
        await self.original.unhold()


class CallActions(RcActions):
    """Transfers, on top of the session core and RingCentral's INFO commands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._transfer_outcome: asyncio.Future[int] | None = None

    def _on_end(self, error: Exception) -> None:
        super()._on_end(error)
        _fail_all([self._transfer_outcome] if self._transfer_outcome else [], error)

    # -- transferor -------------------------------------------------------------------------

    def _target_uri(self, target: str) -> str:
        if target.startswith(("sip:", "sips:")):
            return target
        return f"sip:{target}@{self.phone.sip_info.domain}"

    async def transfer(self, target: str, timeout: float = TRANSFER_TIMEOUT) -> None:
        """Blind transfer: REFER the peer to `target`, wait for the outcome (NOTIFY or BYE)."""
        self._require("answered", action="transfer")
        await self._refer(f"<{self._target_uri(target)}>", timeout)

    async def warm_transfer(self, target: str, caller_id: str | None = None) -> WarmTransfer:
        """Hold this call and call `target`; `complete()` the result to connect them."""
        self._require("answered", action="warm_transfer")
        await self.hold()
        consult = await self.phone.call(target, caller_id=caller_id)
        return WarmTransfer(self, consult)

    async def complete_warm_transfer(
        self, other: BaseCallSession, timeout: float = TRANSFER_TIMEOUT
    ) -> None:
        """REFER our peer to `other`'s peer, replacing `other`'s dialog (RFC 3891)."""
        self._require("answered", action="complete_warm_transfer")
        if other.dialog is None:
            raise CallError("complete_warm_transfer(): the consult call has no dialog yet")
        replaces = quote(
            f"{other.call_id};to-tag={other.dialog.remote_tag};from-tag={other.dialog.local_tag}",
            safe="",
        )
        target = str(other.dialog.remote_address.uri).split(";")[0]
        await self._refer(f"<{target}?Replaces={replaces}>", timeout)

    async def _refer(self, refer_to: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._transfer_outcome = outcome = loop.create_future()
        request = self._dialog_request(
            "REFER",
            headers=[("Refer-To", refer_to), ("Referred-By", f"<{self.local_address.uri}>")],
        )
        response = await self._dialog_send(request)
        if not response.is_success:
            raise CallError(f"transfer refused: {response.status_code} {response.reason}")
        try:
            status = await asyncio.wait_for(asyncio.shield(outcome), timeout)
        except TimeoutError as exc:
            raise CallError(
                f"transfer got no outcome within {timeout:g} s: the peer may not support REFER, "
                "or you may lack the permission"
            ) from exc
        except CallError:
            return  # our leg ended (BYE): that is the transfer's success on RingCentral
        finally:
            self._transfer_outcome = None
        if status >= 300:
            raise CallError(f"transfer failed: the target answered {status}")
        self._spawn(self._bye_after_grace())

    async def _bye_after_grace(self) -> None:
        try:
            await asyncio.wait_for(self.wait_closed(), BYE_GRACE)
        except TimeoutError:
            if self.state == "answered":
                await self._bye()

    async def _on_notify(self, request: SipRequest) -> None:
        await self._reply(request, 200, "OK")
        status = _sipfrag_status(request.body)
        outcome = self._transfer_outcome
        if status is not None and status >= 200 and outcome is not None and not outcome.done():
            outcome.set_result(status)

    # -- transferee -------------------------------------------------------------------------

    async def _on_refer(self, request: SipRequest) -> None:
        """The peer asks us to call someone else (RFC 3515); report progress by NOTIFY."""
        try:
            target = Address.parse(request.headers["Refer-To"]).uri
        except (KeyError, SipParseError):
            await self._reply(request, 400, "Bad Refer-To")
            return
        await self._reply(request, 202, "Accepted")
        self._spawn(self._follow_refer(target))

    async def _follow_refer(self, target: SipUri) -> None:
        headers = [("Referred-By", f"<{self.remote_address.uri}>")]
        replaces = target.headers.get("Replaces")
        if replaces:
            headers.append(("Replaces", unquote(replaces)))
        uri = str(dataclasses.replace(target, headers={}))
        await self._notify_refer("SIP/2.0 100 Trying", final=False)
        try:
            new = await self.phone.call(uri, headers=headers)
            if new.state != "answered":
                await asyncio.wait_for(new.wait_for("answered"), 60)
        except (CallError, TimeoutError, SipTimeoutError, TransportError) as exc:
            log.info("transfer of %s to %s failed: %s", self.call_id, uri, exc)
            await self._notify_refer("SIP/2.0 503 Service Unavailable", final=True)
            return
        await self._notify_refer("SIP/2.0 200 OK", final=True)
        self.emit("transferred", new)
        if self.state == "answered":
            await self._bye()

    async def _notify_refer(self, frag: str, *, final: bool) -> None:
        state = "terminated;reason=noresource" if final else "active;expires=60"
        notify = self._dialog_request(
            "NOTIFY",
            body=f"{frag}\r\n".encode(),
            content_type="message/sipfrag;version=2.0",
            headers=[("Event", "refer"), ("Subscription-State", state)],
        )
        try:
            await self._dialog_send(notify)
        except (SipTimeoutError, TransportError) as exc:
            log.info("NOTIFY for the transfer of %s failed: %s", self.call_id, exc)

def _sipfrag_status(body: bytes) -> int | None:
    first = body.decode("utf-8", "replace").strip().split("\n", 1)[0].split()
    if len(first) >= 2 and first[0].upper().startswith("SIP/") and is_digits(first[1]):
        return int(first[1])
    return None
