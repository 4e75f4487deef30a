"""Where each call's media lives, and moving it: the real's side of the media plane.

Theory of operation (issue #11 items 1, 3, 5). The real holds every SIP dialog; each call's
`MediaSession` lives on one member, its *media holder*, chosen by the group's policy
(`SharedWebPhone(media=...)`):

* ``"taker"`` (default): the member whose `answer()` or `call()` it was (a dummy's action
  carries ``"holder": <its member id>``); the real for auto-answer and its own calls. When the
  media moves (its holder is lost or leaves), the live member other than the real that holds
  the fewest calls' media, else the real: media on a dummy keeps a crash of the real cheap
  (the successor only refreshes the dialog) and the real's cores free for signalling.
* ``"real"``: always the real (the behaviour before media placement).
* a callable ``policy(call_info, members) -> member_id`` (e.g. the least loaded); `call_info`
  is the call's snapshot fields plus ``"taker"``, `members` the live members (dicts of
  `SharedWebPhone.members()`). A result that names no live member means the real.

`MediaPlacement.factory` is the real's media factory (`WebPhone(media_factory=...)`): a local
`MediaSession` when the holder is the real, else a `remote_media.RemoteMedia`.

Moves. When a holder is lost (`on_member_lost`, or a delegate raising `MemberLostError`), each
answered call it held gets a new holder by the same policy among the live members (or the
real), which resumes the call's media from its continuity record (``media.take``), and the
call layer renews the far party's media (`CallSession.renew_media`: offerless re-INVITE, a
fresh offer as fallback, BYE when neither works). A dummy holder that leaves asks the real to
move its calls first (action ``release_media``: make-before-break), and a real that hands
over moves the media it holds to another member (`move_own`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from webphone.shared.proxy import call_state
from webphone.shared.remote_media import DelegateFn, RemoteMedia

if TYPE_CHECKING:
    from webphone.media import MediaSession

__all__ = ["MediaPlacement", "Policy", "PolicyFn", "check_policy", "choose_holder"]

log = logging.getLogger("webphone.shared.placement")

#: ``policy(call_info, members) -> member_id`` (None or an unknown id: the real)
PolicyFn = Callable[[dict[str, Any], list[dict[str, Any]]], "str | None"]
Policy = Literal["taker", "real"] | PolicyFn

#: the member that runs the action being served (a dummy's answer() or call()), for the media
#: factory that the call layer calls within that action's task
_TAKER: contextvars.ContextVar[str | None] = contextvars.ContextVar("webphone_taker",
                                                                   default=None)
#: seconds of silence after the offerless re-INVITE before the fresh offer (docs/dtls-roles.md:
#: Chromium and webphone far parties are heard again within 0.14-0.5 s when they follow)
FALLBACK_AFTER = 1.0
#: how long a move waits for the group's member list (the hub answers in milliseconds)
MEMBERS_TIMEOUT = 2.0


def check_policy(policy: object) -> None:
    """`ValueError` unless `policy` is "taker", "real" or a callable."""
    if policy not in ("taker", "real") and not callable(policy):
        raise ValueError(f"media must be 'taker', 'real' or a callable(call_info, members) "
                         f"returning a member id; got {policy!r:.60}")


def choose_holder(policy: Policy, *, taker: str | None, real: str, call: Mapping[str, Any],
                  members: Iterable[Mapping[str, Any]], exclude: Iterable[str] = (),
                  load: Mapping[str, int] | None = None) -> str:
    """The member id that should hold a call's media (pure). `members` are the group's
    (`SharedWebPhone.members()` dicts); those in `exclude` or leaving are not candidates.
    `load` (calls' media held, by member id) is given when the media moves: "taker" then picks
    the least loaded member other than the real (the first of equals), else the real."""
    gone = set(exclude)
    live = [dict(m) for m in members if m.get("member_id") not in gone and not m.get("leaving")]
    ids = {m.get("member_id") for m in live} | {real}
    if policy == "real":
        return real
    if policy == "taker":
        if taker is not None and taker not in gone:
            return taker
        others = [str(m["member_id"]) for m in live if m.get("member_id") != real]
        if load is None or not others:
            return real
        return min(others, key=lambda member: load.get(member, 0))
    try:
        chosen = policy({**call, "taker": taker}, live)
    except Exception:
        log.exception("the media placement policy failed: the real holds the call's media")
        return real
    if chosen is None or chosen not in ids:
        if chosen is not None:
            log.warning("the media placement policy chose %r, not a live member: the real "
                        "holds the call's media", chosen)
        return real
    return chosen


class MediaPlacement:
    """The real's placement of call media (module docstring).

    Given what it needs as callables: `delegate` (`GroupMember.delegate`), `me()` (our member
    id), `members()` (the group's, `SharedWebPhone.members`), `sessions()` (the real's call
    sessions), `local_media(session)` (a new `MediaSession` here), `resume_media(record)` (one
    resumed here) and `emit` (the phone's events: ``media_moved(session)`` when a call's media
    comes to the real).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        delegate: DelegateFn,
        me: Callable[[], str | None],
        members: Callable[[], Awaitable[list[dict[str, Any]]]],
        sessions: Callable[[], list[Any]],
        local_media: Callable[[Any], MediaSession],
        resume_media: Callable[[Mapping[str, Any]], MediaSession],
        emit: Callable[..., None],
        fallback_after: float = FALLBACK_AFTER,
    ) -> None:
        check_policy(policy)
        self.policy = policy
        self.fallback_after = fallback_after
        self._delegate = delegate
        self._me = me
        self._members = members
        self._sessions = sessions
        self._local_media = local_media
        self._resume_media = resume_media
        self._emit = emit
        self._known: list[dict[str, Any]] = []  # the last member list (for the factory)
        self._moving: dict[str, asyncio.Task[bool]] = {}  # call id -> move under way
        self._placing: dict[str, int] = {}  # member id -> moves to it under way
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- placing new media -----------------------------------------------------------------------

    @contextlib.contextmanager
    def taking(self, holder: str | None) -> Iterator[None]:
        """Within this block (and the tasks it starts), new media is placed for `holder`
        (the member whose answer() or call() the real is running)."""
        token = _TAKER.set(holder)
        try:
            yield
        finally:
            _TAKER.reset(token)

    def factory(self, session: Any) -> Any:
        """The real's media factory: local media, or a `RemoteMedia` on the chosen holder."""
        me = self._me() or ""
        holder = choose_holder(self.policy, taker=_TAKER.get(), real=me,
                               call=call_state(session), members=self._known)
        if holder == me:
            return self._local_media(session)
        log.info("the media of call %s lives on member %s", session.call_id, holder)
        return self._remote(session, holder, None)

    def _remote(self, session: Any, holder: str, record: Mapping[str, Any] | None) -> RemoteMedia:
        return RemoteMedia(self._delegate, holder, session.call_id, record=record,
                           on_lost=lambda media: self._holder_gone(session, media))

    def adopted(self, session: Any, holder: str, record: Mapping[str, Any]) -> RemoteMedia:
        """The media of a call this (new) real adopted, held on by live member `holder`
        (its continuity `record`: the SDPs negotiated so far); no media.take."""
        return RemoteMedia(self._delegate, holder, session.call_id, record=record, held=True,
                           on_lost=lambda media: self._holder_gone(session, media))

    async def refresh_members(self) -> list[dict[str, Any]]:
        """Read the group's members again (the callable policy sees them); the last known
        list if the hub does not answer in time."""
        try:
            self._known = await asyncio.wait_for(self._members(), MEMBERS_TIMEOUT)
        except Exception as exc:  # a stale list is better than none
            log.info("could not refresh the member list: %s", exc)
        return self._known

    async def live(self, holder: str) -> str | None:
        """`holder` if it is a live member now (a taker may have died since it asked), else
        None: the real then holds the call's media."""
        members = await self.refresh_members()
        if any(m.get("member_id") == holder and not m.get("leaving") for m in members):
            return holder
        log.warning("member %s asked to hold a call's media but is not in the group (any "
                    "more): the real holds it", holder)
        return None

    def refresh_soon(self) -> None:
        """`refresh_members` in the background, for a callable policy (a call rang)."""
        if not callable(self.policy):
            return
        self._spawn(self.refresh_members())

    # -- a holder is gone ------------------------------------------------------------------------

    def member_lost(self, member_id: str, reason: str) -> None:
        """Member `member_id` crashed, hung or left: move the media of the calls it held."""
        self._known = [m for m in self._known if m.get("member_id") != member_id]
        for session in self._sessions():
            media = getattr(session, "media", None)
            if isinstance(media, RemoteMedia) and media.holder == member_id:
                log.warning("call %s: its media holder %s is gone (%s)", session.call_id,
                            member_id, reason)
                self._holder_gone(session, media)

    def _holder_gone(self, session: Any, media: RemoteMedia) -> None:
        if session.call_id in self._moving or getattr(session, "media", None) is not media:
            return
        media.abandon()  # nothing can be sent to it any more
        self._start_move(session, self._repair(session, media))

    async def _repair(self, session: Any, media: RemoteMedia) -> bool:
        try:
            record = media.continuity()
        except Exception as exc:  # no record: the media never got going
            await _end(session, f"its media holder {media.holder} was lost before the call's "
                       f"media was negotiated ({exc})")
            return False
        return await self._move(session, record, exclude={media.holder},
                                why=f"media holder {media.holder} lost")

    # -- graceful moves --------------------------------------------------------------------------

    async def release(self, holder: str) -> dict[str, Any]:
        """Move the media of every call `holder` holds elsewhere (it is leaving); returns
        {"moved": [call ids], "ended": [call ids]}."""
        calls = [s for s in self._sessions()
                 if isinstance(getattr(s, "media", None), RemoteMedia)
                 and s.media.holder == holder and not s.media.closed]
        # the leaving holder closes its media itself once we answer: no close to wait for here
        results = await asyncio.gather(*(self._move_held(s, exclude={holder}, close_old=False)
                                         for s in calls))
        return {"moved": [s.call_id for s, ok in zip(calls, results, strict=True) if ok],
                "ended": [s.call_id for s, ok in zip(calls, results, strict=True) if not ok]}

    async def move_own(self) -> dict[str, Any]:
        """Move the media the real holds itself to other members (before it hands over), so
        that it survives the real leaving; calls with no other member to go to stay."""
        me = self._me() or ""
        members = await self.refresh_members()
        others = [m for m in members if m.get("member_id") != me and not m.get("leaving")]
        calls = [s for s in self._sessions()
                 if getattr(s, "state", "") == "answered" and getattr(s, "media", None) is not None
                 and not isinstance(s.media, RemoteMedia)]
        if not others or not calls:
            return {"moved": [], "ended": []}
        results = await asyncio.gather(*(self._move_held(s, exclude={me}) for s in calls))
        return {"moved": [s.call_id for s, ok in zip(calls, results, strict=True) if ok],
                "ended": [s.call_id for s, ok in zip(calls, results, strict=True) if not ok]}

    async def _move_held(self, session: Any, exclude: set[str], close_old: bool = True) -> bool:
        existing = self._moving.get(session.call_id)
        if existing is not None:
            return await asyncio.shield(existing)
        old = session.media
        try:
            record = old.continuity()
        except Exception as exc:  # not negotiated yet: nothing to carry over
            log.info("call %s keeps its media: %s", session.call_id, exc)
            return False
        task = self._start_move(session, self._move(session, record, exclude=exclude,
                                                    why="graceful move", close_old=close_old))
        return await asyncio.shield(task)

    # -- the move itself -------------------------------------------------------------------------

    def _start_move(self, session: Any, coro: Awaitable[bool]) -> asyncio.Task[bool]:
        task: asyncio.Task[bool] = asyncio.ensure_future(coro)
        self._moving[session.call_id] = task
        task.add_done_callback(lambda _: self._moving.pop(session.call_id, None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _move(self, session: Any, record: Mapping[str, Any], *, exclude: set[str],
                    why: str, close_old: bool = True) -> bool:
        """Give the call's media to a new holder resumed from `record`, then renew the far
        party's media through the call layer. True if the call goes on. `close_old=False`:
        the old holder closes the replaced media itself (it is leaving)."""
        me = self._me() or ""
        await self.refresh_members()
        chosen = choose_holder(self.policy, taker=None, real=me, call=call_state(session),
                               members=self._known, exclude=exclude, load=self._load())
        if chosen in exclude:  # the real itself is leaving: any other live member
            chosen = next((m["member_id"] for m in self._known
                           if m.get("member_id") not in exclude and not m.get("leaving")), me)
        self._placing[chosen] = self._placing.get(chosen, 0) + 1  # moves at once spread out
        try:
            return await self._renew(session, record, [chosen] + ([me] if me not in exclude
                                                               else []), why, close_old)
        finally:
            self._placing[chosen] -= 1

    async def _renew(self, session: Any, record: Mapping[str, Any], candidates: list[str],
                     why: str, close_old: bool) -> bool:
        me = self._me() or ""
        media = await self._new_holder(session, record, candidates, me)
        if media is None:
            await _end(session, f"{why}: no member could take the call's media over")
            return False
        renew = getattr(session, "renew_media", None)
        if renew is None:
            await _close(media)
            await _end(session, f"{why}: this call layer cannot renew media")
            return False
        # Make-before-break: renew_media closes the media it replaces at once; taken from the
        # session here, the old media (a holder leaving, or ours) goes on playing to the far
        # party until the new media is negotiated, and closes only then. A DTLS close_notify
        # from it earlier makes a far aiortc drop its connection while it offers (~1 s more).
        old, session.media = session.media, None
        try:
            await renew(media, fallback_after=self.fallback_after)
        except Exception as exc:  # renew_media ended the call (BYE) and says why
            log.warning("call %s: moving its media (%s) failed: %s", session.call_id, why, exc)
            await _close(media)
            return False
        finally:
            if old is not None and old is not media:
                if close_old:
                    await _close(old)
                elif isinstance(old, RemoteMedia):
                    old.abandon()
        holder = media.holder if isinstance(media, RemoteMedia) else me
        log.info("call %s: media now on %s (%s)", session.call_id, holder, why)
        if holder == me:
            self._emit("media_moved", session)
        return True

    def _load(self) -> dict[str, int]:
        """How many calls' media each member holds or is taking (the real's own not
        counted)."""
        load = {member: n for member, n in self._placing.items() if n}
        for session in self._sessions():
            media = getattr(session, "media", None)
            if isinstance(media, RemoteMedia) and not media.closed:
                load[media.holder] = load.get(media.holder, 0) + 1
        return load

    async def _new_holder(self, session: Any, record: Mapping[str, Any], candidates: list[str],
                          me: str) -> Any:
        """The call's media resumed on the first candidate that takes it (`me`: here)."""
        for holder in dict.fromkeys(candidates):
            try:
                if holder == me:
                    return self._resume_media(record)
                media = self._remote(session, holder, record)
                await media.take()
                return media
            except Exception as exc:  # try the next candidate
                log.warning("call %s: member %s could not take its media: %s", session.call_id,
                            holder, exc)
        return None

    # -- housekeeping ----------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def moving(self, call_id: str) -> bool:
        """True while a move of `call_id`'s media may be under way (`settled` waits for it)."""
        return call_id in self._moving

    async def settled(self, call_id: str) -> None:
        """Return once no move of `call_id`'s media is under way (its outcome either way)."""
        task = self._moving.get(call_id)
        if task is not None:
            await asyncio.wait({task})

    def abandon_remote(self) -> None:
        """Forget every holder without telling it (this member stops being the real: the
        calls, and their holders, go on under the successor)."""
        for session in self._sessions():
            media = getattr(session, "media", None)
            if isinstance(media, RemoteMedia):
                media.abandon()

    def cancel(self) -> None:
        """Stop everything under way (teardown)."""
        for task in list(self._tasks):
            task.cancel()


async def _close(media: Any) -> None:
    with contextlib.suppress(Exception):
        await media.close()


async def _end(session: Any, reason: str) -> None:
    """End a call whose media cannot go on: BYE (or CANCEL) and the reason in the log."""
    log.warning("call %s ends: %s", session.call_id, reason)
    if getattr(session, "state", "") in ("failed", "disposed"):
        return
    with contextlib.suppress(Exception):
        await session.dispose()
