"""The group's calls outlive their real: continuity records and their adoption (issue #11).

Strategy. The real writes every answered call down as a continuity record and publishes the
set whenever it changes (`ContinuityRecords`, through `GroupMember.publish_continuity`:
members-only, versioned, never in a snapshot):

    {call_id: {"v": 1, "call": session.continuity_record(),   # dialog, CSeq, SDP, ids, flags
               "holder": member_id,                            # who holds the call's media
               "media": session.media.continuity(),            # what a new holder resumes
               "real": member_id}}                             # who published it

A new real adopts every record right after it registered (`Adoption`), in two steps:

1. at once, before its first snapshot (so no member ever sees the calls end): each call becomes
   an answered session of its phone (`WebPhone.adopt_call`: our Contact, CSeq 1000 above the old
   real's); while its media is being settled its record stays published with the dialog as
   adopted (the CSeq moved on: a successor of ours adds its own gap above it);
2. then the media, per call: the holder is this member (it held the media as a dummy) or a live
   member other than the old real: that media goes on (`media_for(call_id, holder, media)`,
   the placement's hook: the MediaSession this member holds, or a `RemoteMedia` reaching the
   holder, which names itself through its media's `holder` attribute), and a target refresh
   (re-INVITE with the same SDP) tells the far party where the dialog is now; the holder is gone
   (the old real held the media too, "both at once": crashed, or hung and still listed), or
   nobody can reach it: new media here (`WebPhone.resume_media(record["media"])`) and
   `renew_media` (offerless re-INVITE, fallback offer, or BYE with the reason). Then
   ``adopted`` on the session and ``adopted(session)`` on the phone.

The new real tells the hub it is ready (`registered`) only once every call is settled: a real
handing over keeps its SIP connection until then (a server may end the dialogs of a connection
that closes: the sandbox does on a WebSocket close frame), and the hub queues the dummies'
actions meanwhile; an action that reaches the new real anyway waits (`Adoption.idle`), so a
hangup during a takeover ends the adopted call instead of missing it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from webphone.call import CallMedia, CallSession
from webphone.errors import CallError, SipParseError, WebPhoneError
from webphone.phone import WebPhone

__all__ = ["RECORD_VERSION", "Adopted", "Adoption", "ContinuityRecords", "MediaFor",
           "call_record"]

log = logging.getLogger("webphone.shared.adoption")

#: Version of a continuity record ("v"); a real refuses to adopt any other.
RECORD_VERSION = 1
#: How often an adopted call's target refresh is tried again after glare (RFC 3261 §14.1).
REFRESH_TRIES = 3
#: §14.1: after a 491 wait 2.1-4 s before the next re-INVITE.
GLARE_WAIT = (2.1, 4.0)

#: an adopted session and its continuity record
Adopted = tuple[CallSession, dict[str, Any]]
#: `media_for(call_id, holder, media_record)`: the media a call goes on with when `holder` still
#: holds it (this member's own MediaSession, or a stand-in reaching another member), None if not
MediaFor = Callable[[str, str, dict[str, Any]], CallMedia | None]


def call_record(session: CallSession, me: str) -> dict[str, Any] | None:
    """The continuity record of `session` on the real `me`, or None while it has none (not
    answered, or its media not negotiated yet)."""
    media = session.media
    if session.state != "answered" or media is None:
        return None
    try:
        media_record = media.continuity()
    except WebPhoneError as exc:  # no completed offer/answer yet: nothing to resume from
        log.debug("call %s has no media record yet: %s", session.call_id, exc)
        return None
    holder = getattr(media, "holder", None)
    return {"v": RECORD_VERSION, "call": session.continuity_record(),
            "holder": holder if isinstance(holder, str) else me, "media": media_record,
            "real": me}


class ContinuityRecords:
    """What the real publishes: the records of its answered calls, sent when they changed.

    `pending` holds the records of calls being adopted (their media not settled yet): they
    stay published (with the dialog as adopted), so a real that dies during a takeover loses
    no call."""

    def __init__(self, publish: Callable[[dict[str, dict[str, Any]]], None]) -> None:
        self._publish = publish
        self._last: dict[str, dict[str, Any]] | None = None
        self.pending: dict[str, dict[str, Any]] = {}

    def flush(self, sessions: Iterable[CallSession], me: str) -> None:
        """Publish the records of `sessions` if they differ from the last ones published."""
        state: dict[str, dict[str, Any]] = {}
        for session in sessions:
            record = self.pending.get(session.call_id) or call_record(session, me)
            if record is not None:
                state[session.call_id] = record
        if state != self._last:
            self._last = state
            self._publish(state)

    def reset(self) -> None:
        """Not the real any more: the next reign publishes afresh."""
        self._last = None
        self.pending.clear()


class Adoption:
    """A new real's takeover of the calls of the continuity state (see the module docstring)."""

    def __init__(self, *, records: ContinuityRecords, media_for: MediaFor,
                 emit: Callable[..., Any], fallback_after: float = 1.0) -> None:
        self._records = records
        self._media_for = media_for
        self._emit = emit
        self.fallback_after = fallback_after
        self._idle = asyncio.Event()
        self._idle.set()

    async def idle(self) -> None:
        """Return once no takeover is in progress."""
        await self._idle.wait()

    def busy(self) -> bool:
        """True while a takeover is in progress (`idle` waits for its end)."""
        return not self._idle.is_set()

    def adopt(self, phone: WebPhone, calls: Mapping[str, Any]) -> list[Adopted]:
        """Step 1: every record of `calls` becomes an answered session of `phone` (a record
        that cannot be adopted is logged and left out). Returns (session, record) pairs for
        `settle`; actions wait (`idle`) until it is done."""
        from webphone.media.continuity import claim_versions  # a dummy never loads media

        adopted = []
        for call_id, record in calls.items():
            try:
                entry = _entry(call_id, record)
                media = claim_versions(entry["media"])  # MediaError (a CallError) names a field
                session = phone.adopt_call(entry["call"])
            except (SipParseError, CallError) as exc:
                log.error("cannot adopt call %s: %s", call_id, exc)
                continue
            # Published until the media is settled: the dialog as adopted (CSeq `gap` above
            # the old real's), so that a successor of ours, should we die meanwhile, moves it
            # on again instead of repeating our re-INVITE's CSeq (the far party: 500); and the
            # media with the o= versions our renewal may send claimed, so that its SDPs go
            # above them instead of repeating one with another body (RFC 3264 §8).
            self._records.pending[call_id] = {**entry, "call": session.continuity_record(),
                                              "media": media}
            adopted.append((session, entry))
        if adopted:
            self._idle.clear()
        return adopted

    async def settle(self, phone: WebPhone, adopted: list[Adopted], me: str,
                     alive: Collection[str]) -> None:
        """Step 2: the media of every adopted call (`alive`: the group's members now)."""
        try:
            await asyncio.gather(*(self._settle_one(phone, session, entry, me, alive)
                                   for session, entry in adopted))
        finally:
            for session, _ in adopted:
                self._records.pending.pop(session.call_id, None)
            self._idle.set()

    async def _settle_one(self, phone: WebPhone, session: CallSession, entry: dict[str, Any],
                          me: str, alive: Collection[str]) -> None:
        holder = entry["holder"]
        # The real that published the record is gone, crashed or hung (else we would not
        # adopt), even if a hung one is still listed: media it held is gone with it.
        gone = holder != me and (holder == entry.get("real") or holder not in alive)
        media = None if gone else self._media_for(session.call_id, holder, entry["media"])
        try:
            if media is not None:
                session.attach_media(media)
                await _refresh(session)
            else:
                log.info("call %s: its media holder %s is gone; renewing the media here",
                         session.call_id, holder)
                # The record stays pending (published as adopted) while the media is renewed:
                # until the renewal completes the new media has no record of its own
                # (`call_record` gives None), and a record left out of the published state is
                # a call our successor, should we die meanwhile, never adopts.
                await session.renew_media(phone.resume_media(entry["media"]),
                                          fallback_after=self.fallback_after)
        except WebPhoneError as exc:  # the call ended with the reason (BYE where it could)
            log.warning("adopting call %s failed: %s", session.call_id, exc)
            return
        session.emit("adopted")
        self._emit("adopted", session)


def _entry(call_id: str, record: object) -> dict[str, Any]:
    """A continuity record checked field by field (`SipParseError` naming the field)."""
    where = f"continuity record {call_id!r}"
    if not isinstance(record, dict):
        raise SipParseError(f"{where} must be an object, got {type(record).__name__}")
    if record.get("v") != RECORD_VERSION:
        raise SipParseError(f"{where} field 'v' is {record.get('v')!r}, expected "
                            f"{RECORD_VERSION}")
    for name, kind in (("call", dict), ("holder", str), ("media", dict)):
        if not isinstance(record.get(name), kind):
            raise SipParseError(f"{where} field {name!r} must be {kind.__name__}, got "
                                f"{type(record.get(name)).__name__}")
    return record


async def _refresh(session: CallSession) -> None:
    """The target refresh of an adopted call whose media goes on (same SDP); after glare
    (491, or a re-INVITE of the far party in progress) it is tried again (§14.1)."""
    for attempt in range(REFRESH_TRIES):
        try:
            await session.refresh()
            return
        except CallError as exc:
            if session.state != "answered" or attempt == REFRESH_TRIES - 1:
                raise
            log.info("refresh of adopted call %s: %s; trying again", session.call_id, exc)
        await asyncio.sleep(random.uniform(*GLARE_WAIT))
