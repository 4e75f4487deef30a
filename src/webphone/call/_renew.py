"""A call's media moved to a new endpoint, and a call written down for another process.

Theory of operation (issue #11, docs/dtls-roles.md). When the process holding a call's media
dies, new media (a `MediaSession.resume(record)` here, or the group's `RemoteMedia` on another
member) takes the call over with `renew_media`:

1. an offerless re-INVITE (RFC 3264 §4: no SDP): the far party offers in its 2xx, the new media
   answers (`a=setup:active`, a new certificate: Chromium is back in 0.14-0.5 s) and the answer
   goes in the ACK (RFC 3261 §13.2.2.4, `CallCore.ack_answer`);
2. no audio within `fallback_after`: one re-INVITE with a fresh offer from a new endpoint
   (`create_offer(renew=True)`, `actpass`), which aiortc-based far parties follow in ~0.2 s;
3. 481/408/488, no answer, or an unusable offer: BYE (where the dialog may live) and the call
   ends with the reason.

The far side of the same story: a webphone far party whose media saw the answer come from a new
endpoint (its media emits "renegotiation_needed") re-offers, so webphone-to-webphone calls
recover on step 1 already.

`continuity_record()` writes an answered call down as JSON (the core's `to_dict()` plus what
the session adds: numbers, RingCentral ids, hold and mute) for `WebPhone.adopt_call` in another
process; `_adopt_record` is that process's half.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from ..errors import CallError, SipParseError, SipTimeoutError, TransportError, WebPhoneError
from ..sip import Address, SipResponse
from ..sip.ua import CallCore
from ._base import CallMedia
from ._liveness import GLARE_WAIT, LiveSession

log = logging.getLogger("webphone.call")

#: Version of `continuity_record()`; `WebPhone.adopt_call` refuses any other.
CALL_RECORD_VERSION = 1
#: Headers of our INVITE that are not written into a continuity record (digest credentials).
_CREDENTIALS = ("Authorization", "Proxy-Authorization")
#: How often a re-INVITE of `renew_media` refused with 491 (glare, RFC 3261 §14.1) is retried.
GLARE_RETRIES = 2


class RenewFailed(CallError):
    """`renew_media` could not bring the call's media back; the call has ended."""


class MediaMoves(LiveSession):
    """`renew_media`, the far side's re-offer, and the call's continuity record."""

    # -- the media moves: our side ------------------------------------------------------------

    async def renew_media(self, media: CallMedia, *, fallback_after: float = 1.0) -> None:
        """Take the call's media over with `media` (a `MediaSession`, e.g. `resume(record)` of
        the media a dead process held, or anything with its methods): offerless re-INVITE,
        answer in the ACK, then, with no audio within `fallback_after` s, a re-INVITE with a
        fresh offer (see the module docstring). On success `session.media` is `media` and
        ``media_moved(media)`` is emitted. On failure the call ends (BYE where the dialog may
        still exist; ``disposed`` with the reason) and `RenewFailed` is raised."""
        self._require("answered", action="renew_media")
        old = self.media
        self._attach_media(media)
        self._renewing = True
        try:
            heard = await self._renew_offerless(media, fallback_after)
            if not heard:
                await self._renew_with_offer(media, fallback_after)
        except RenewFailed as exc:
            await self._give_up(str(exc))
            raise RenewFailed(f"renew_media(): {exc}; the call ended") from exc
        finally:
            self._renewing = False
            # Make-before-break: media that still plays (a holder moving gracefully) goes on
            # until the new media is negotiated; a DTLS close_notify from it earlier makes a
            # far aiortc drop its connection while it offers (~1 s more).
            if old is not None and old is not media:
                self._spawn(_close_quietly(old, self.call_id))
        if self.state != "answered":
            raise RenewFailed(f"renew_media(): the call ended meanwhile ({self.end_reason})")
        self.phone.session_changed(self)
        self.emit("media_moved", media)

    async def _renew_offerless(self, media: CallMedia, fallback_after: float) -> bool:
        """Step 1; True once the far party is heard within `fallback_after`."""
        await self._renew_invite(None)
        offer = self.core.offer_awaiting_answer if self.core is not None else None
        if offer is None or self.core is None:
            return False  # the peer offered nothing (RFC 3264 §4 broken): we offer instead
        try:
            answer = await media.create_answer(offer)
        except Exception as exc:
            # §13.2.2.4: ACK even an unusable offer, then end the call (BYE: RenewFailed)
            await self._carry_out(self.core.ack_answer(None))
            raise RenewFailed(f"the far party's offer is unusable: {exc}") from exc
        await self._carry_out(self.core.ack_answer(answer))
        return await _heard(media, fallback_after)

    async def _renew_with_offer(self, media: CallMedia, fallback_after: float) -> None:
        """Step 2: a fresh offer from a new endpoint; its answer applied."""
        log.info("call %s: no audio %g s after the offerless re-INVITE; offering afresh",
                 self.call_id, fallback_after)
        offer = await media.create_offer(renew=True)
        try:
            response = await self._renew_invite(offer)
        except _Glare:
            # the far party re-offers at the same time (a webphone far party does, on
            # "renegotiation_needed"): its offer renews the endpoint just as well
            if await _heard(media, fallback_after):
                return
            raise RenewFailed("the far party neither answered our offer (491) nor was "
                              "heard after its own") from None
        if response.body:
            try:
                await media.apply_answer(response.body.decode("utf-8", "replace"))
            except Exception as exc:
                raise RenewFailed(f"the far party's answer is unusable: {exc}") from exc

    async def _renew_invite(self, offer: str | None) -> SipResponse:
        """One re-INVITE (with `offer`, or without SDP); its 2xx. 491 is retried after the
        §14.1 wait (raises `_Glare` when the retries are used up and we offered); anything else
        but 2xx raises `RenewFailed`."""
        body = offer.encode() if offer is not None else b""
        for attempt in range(GLARE_RETRIES + 1):
            try:
                invite = self._dialog_request(
                    "INVITE", body=body, content_type="application/sdp" if body else None,
                    headers=self._timer_headers())
                response = await self._dialog_send(invite)  # a 481/408 ends the call (core)
            except (SipTimeoutError, TransportError) as exc:
                raise RenewFailed(f"no answer to the re-INVITE renewing the media ({exc})"
                                  ) from exc
            except CallError as exc:  # a re-INVITE in progress either way
                response = None
                why = str(exc)
            if response is not None and response.is_success:
                self._timer_refreshed_by_response(response)
                return response
            if response is not None and response.status_code != 491:
                raise RenewFailed(f"the re-INVITE renewing the media was answered "
                                  f"{response.status_code} {response.reason}")
            if response is not None:
                why = "491 Request Pending"
            if attempt == GLARE_RETRIES or self.state != "answered":
                break
            # §14.1: after glare wait 2.1-4 s (the longer range: who owns the Call-ID is moot)
            await asyncio.sleep(random.uniform(*GLARE_WAIT))
        if offer is not None:
            raise _Glare(why)
        raise RenewFailed(f"the re-INVITE renewing the media was refused: {why}")

    # -- the media moves: the far party's side -------------------------------------------------

    def _renegotiation_needed(self, media: CallMedia) -> None:
        """Our media saw the far end answer from a new endpoint (a media holder that died was
        replaced, our offerless re-INVITE's answer came from it): offer again, from a new peer
        connection, so the two ends meet (aiortc restarts neither ICE nor DTLS in place)."""
        if self.media is media and self.state == "answered":
            self._spawn(self._reoffer_moved())

    async def _reoffer_moved(self) -> None:
        try:
            await self._reoffer("sendonly" if self.held else "sendrecv")
        except (WebPhoneError, SipTimeoutError) as exc:
            # glare: the other end re-INVITEs with an offer of its own, which renews us too
            log.info("call %s: re-offer after the far end moved failed: %s", self.call_id, exc)

    def attach_media(self, media: CallMedia) -> None:
        """Make `media` this call's media with no signalling: media that already carries the
        call's negotiated session (an adopted call whose media another member holds on)."""
        self._attach_media(media)

    # -- continuity --------------------------------------------------------------------------

    def continuity_record(self) -> dict[str, Any]:
        """The answered call as JSON for `WebPhone.adopt_call` in another process: the SIP
        core's state (dialog, CSeq, negotiated SDP), the direction, numbers, RingCentral ids,
        hold and mute. No secret: the password is not in any of it. `CallError` unless
        answered."""
        self._require("answered", action="continuity_record")
        assert self.core is not None
        core = self.core.to_dict()
        invite = self.core.invite.copy()
        for name in _CREDENTIALS:  # a digest answer of ours must not travel either
            invite.headers.remove(name)
        core["invite"] = str(invite)
        return {
            "version": CALL_RECORD_VERSION,
            "direction": self.direction,
            "core": core,
            "local_address": str(self.local_address),
            "remote_address": str(self.remote_address),
            "target": getattr(self, "target_uri", None),
            "session_id": self.session_id,
            "party_id": self.party_id,
            "held": self.held,
            "muted": self.muted,
            "remote_held": self.remote_held,
            "started_at": self.started_at,
            "answered_at": self.answered_at,
        }

    def _adopt_record(self, core: CallCore, record: dict[str, Any], gap: int) -> None:
        """Become the answered call `record` describes, `core` being its SIP state rebuilt
        here (`CallCore.from_dict` with our own Contact): the local CSeq moves `gap` above the
        old holder's (`Dialog.adopt`), the session's fields come from the record."""
        if core.dialog is None or core.state.value != "answered":
            raise SipParseError(f"call record field 'core': the call is {core.state.value}; "
                                "only an answered call with a dialog can be adopted")
        core.dialog.adopt(gap)
        core.dialog.local_contact = core.local.contact
        self.call_id = core.call_id
        self.local_tag = core.local_tag
        self.local_address = _address(record, "local_address")
        self.remote_address = _address(record, "remote_address")
        self.session_id = core.session_id or record_field(record, "session_id", str,
                                                          optional=True)
        self.party_id = core.party_id or record_field(record, "party_id", str, optional=True)
        for flag in ("held", "muted", "remote_held"):
            setattr(self, flag, record_field(record, flag, bool))
        self._attach_core(core)
        self._set_state("answered")
        self.started_at = record_field(record, "started_at", float)
        self.answered_at = record_field(record, "answered_at", float, optional=True)


class _Glare(RenewFailed):
    """Our offer crossed the far party's (491 each time)."""


async def _heard(media: CallMedia, timeout: float) -> bool:
    """True once `media` hears the far end within `timeout` s."""
    try:
        await media.wait_first_audio(timeout)
    except (WebPhoneError, TimeoutError) as exc:  # MediaError, or a delegate's error
        log.info("no audio yet on the new media: %s", exc)
        return False
    return True


async def _close_quietly(media: CallMedia, call_id: str) -> None:
    """Close media the call no longer uses (its holder may be gone: errors are expected)."""
    try:
        await media.close()
    except Exception as exc:
        log.debug("closing the replaced media of %s: %s", call_id, exc)


def record_field(record: dict[str, Any], name: str, kind: type, *, optional: bool = False
                 ) -> Any:
    """`record[name]` if it is a `kind` (None too when `optional`), else `SipParseError`
    naming the field."""
    value = record.get(name)
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise SipParseError(f"call record field {name!r} must be {kind.__name__}"
                            f"{' or null' if optional else ''}, got {type(value).__name__}")
    return value


def _address(record: dict[str, Any], name: str) -> Address:
    try:
        return Address.parse(record_field(record, name, str))
    except SipParseError as exc:
        raise SipParseError(f"call record field {name!r}: {exc}") from exc


__all__ = ["CALL_RECORD_VERSION", "MediaMoves", "RenewFailed",
           "record_field"]
