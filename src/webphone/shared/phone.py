"""SharedWebPhone: many processes of one extension, one SIP registration.

Every process creates a `SharedWebPhone` with the same sipInfo. They form a *group* (by default
named after the extension, ``authorizationId@domain``). One member is the *real* phone: it holds
the group's only registration, owns every SIP dialog, and publishes the state of its calls
(each call's audio lives on its media holder, below). Every other member is a *dummy*: it
shows the same `call_sessions` (proxy objects built from the real's snapshots) with the same
events, and its actions (`call()`, `answer()`, `hangup()`...) run on the real and return the
real's result or raise its error.

Failover. A real that crashes is replaced at once (the hub sees its connection close); one that
hangs is replaced after `heartbeat_timeout` (3 s by default); one that leaves hands over
make-before-break. The successor registers with the group's stable instance id, so the SIP
server *replaces* the binding: N processes use one of the extension's registration slots. It
registers first and only then loads media code. A deposed real that wakes up learns the new
epoch, fences its SIP client (no REGISTER refresh, no unregister, no SIP at all) and becomes a
dummy. Before every REGISTER the real confirms with the hub that it is still the real.

Calls when the real leaves gracefully: `dispose()` moves the media the real holds to another
member, hands over, and the successor adopts the calls; with `drain=True` the real keeps
serving its calls until they have all ended (at most `timeout` seconds, default
`drain_timeout`), then hangs up whatever is left, and only then hands the registration over.

Media placement (issue #11): each call's audio lives on one member, its media holder, by the
`media` policy (`placement.py`): by default the member that answers or places it. The real
keeps the SIP dialog and relays SDP to the holder (`remote_media.py`); every member answers
those delegates (`media_host.py`, this class is the `PlaneListener`). A holder that is lost or
leaves has its calls' media moved to another member (the call layer's `renew_media`).
Calls survive the real too: it publishes each answered call's continuity record to the members,
and a new real adopts them right after registering (`adoption.py`): target refresh with the
holder's SDP unchanged, or new media when the holder died with the old real.

A promotion that fails, for any reason, gives the role up at once (`promotion_failed` event, an
ERROR log line, `GroupMember.resign`) so the group promotes another member: never a real that
cannot register. Options are checked when the object is made (`TypeError`), on every member.

Layout: a dummy's view lives in `mirror.py`, what a real publishes in `publisher.py`, running an
action on the real in `runner.py`, options checks in `webphone._options`. What stays here (~880
lines, longer than most modules; the next split should move the leaving paths out) is one
object's life cycle: role switching, promotion, adoption, moves, drain and hand-over share its
state and its tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from webphone._backoff import backoff
from webphone._events import EventEmitter
from webphone._options import check_values, keyword_options
from webphone.call import CallMedia
from webphone.errors import (
    GroupProtocolError,
    HubTimeoutError,
    NoRealPhoneError,
    RegistrationError,
    SipTimeoutError,
    WebPhoneError,
)
from webphone.phone import WebPhone
from webphone.shared.adoption import Adopted, Adoption, ContinuityRecords
from webphone.shared.group import (
    GroupSipClient,
    as_sip_info,
    group_instance_id,
    group_name,
    group_status,
    make_transport,
    member_dict,
)
from webphone.shared.media_host import LocalMedia, MediaHost
from webphone.shared.member import GroupMember, LinkToken
from webphone.shared.mirror import CallMirror
from webphone.shared.placement import MediaPlacement, Policy, check_policy
from webphone.shared.protocol import Action, Continuity, Delegate, Released, Role, Snapshot
from webphone.shared.proxy import (
    FINAL_STATES,
    ProxyCallSession,
    ProxyWarmTransfer,
    call_id_of,
    server_state,
)
from webphone.shared.publisher import StatePublisher
from webphone.shared.runner import ActionRunner
from webphone.shared.transports.base import GroupTransport, HubOptions
from webphone.sip_client import DummySipClient, SipClient
from webphone.sip_info import SipInfo

__all__ = ["ProxyCallSession", "ProxyWarmTransfer", "SharedWebPhone", "group_name",
           "group_status"]

log = logging.getLogger("webphone.shared.phone")

#: the WebPhone and SipClient keywords SharedWebPhone sets itself (its own `debug` and
#: `auto_answer`, the group's instance id and fenced SIP client): never webphone_options
_FIXED_OPTIONS = ("sip_info", "instance_id", "debug", "sip_client", "auto_answer")
#: phone events relayed by a real SharedWebPhone
#: how long a deposed real with calls keeps its (fenced) SIP connection for a successor to
#: register and adopt them (seconds): a promotion takes the heartbeat timeout (3 s) at most
#: plus a REGISTER; after that the calls are the successor's problem or lost anyway
SUCCESSION_WAIT = 5.0
_RELAYED = ("registered", "unregistered", "disconnected", "reconnected", "registration_failed",
            "binding_conflict", "inbound_message", "outbound_message", "rc_message")


# -- the shared phone ------------------------------------------------------------------------------


class SharedWebPhone(EventEmitter):
    """A member of the group of phones of one extension (see the module docstring).

    ``SharedWebPhone(sip_info, group=None, hub="local", **webphone_options)``:

    * `group`: defaults to ``authorizationId@domain``; every process with the same group shares
      one registration.
    * `hub`: "local" (a hub process per group on a Unix socket in a private runtime directory,
      same OS user only; `runtime_dir` overrides the directory), "memory" (members in this
      process), or a `GroupTransport`.
    * `instance_id`: the RFC 5626 instance id of the group's registration; default: a UUID
      derived from the group name, the same in every process.
    * `heartbeat_interval` (0.5 s) / `heartbeat_timeout` (3 s): a real silent for the timeout is
      replaced (crashes are seen at once). Used when this member starts the hub; a hub that
      already runs keeps its own. `hub_timeout` (default: heartbeat_timeout): how long the hub
      may be silent before it is replaced.
    * `action_timeout` (10 s): how long a dummy's action waits for a ready real before
      `NoRealPhoneError`.
    * `drain_timeout` (60 s): default bound of `dispose(drain=True)` on a real with calls.
    * `media`: where each call's audio lives (`webphone.shared.placement`): "taker" (default:
      the member that answers or places the call; a dummy that does holds it, and its
      `ProxyCallSession.media` is the call's `MediaSession`), "real", or a callable
      ``policy(call_info, members) -> member_id``.
    * every other keyword (`debug`, `auto_answer`, `media_factory`, SipClient options such as
      `register_expires`) configures the WebPhone this member runs while it is the real.

    Events: ``role(role)``, and every WebPhone event on every member: ``inbound_call(session)``,
    ``outbound_call(session)``, ``call_changed(session)`` (sessions are `CallSession` objects on
    the real, `ProxyCallSession` objects on dummies), plus the real's ``registered``,
    ``disconnected``, ... A member that joins (or is demoted) sees ``inbound_call`` /
    ``outbound_call`` for every call in progress that it had not seen.
    """

    def __init__(
        self,
        sip_info: SipInfo | Mapping[str, Any],
        group: str | None = None,
        hub: str | GroupTransport = "local",
        *,
        instance_id: str | None = None,
        heartbeat_interval: float = 0.5,
        heartbeat_timeout: float = 3.0,
        hub_timeout: float | None = None,
        action_timeout: float = 10.0,
        drain_timeout: float = 60.0,
        runtime_dir: str | None = None,
        hub_options: HubOptions | None = None,
        member_id: str | None = None,
        preload_media: bool = True,
        debug: bool = False,
        auto_answer: bool = True,
        media: Policy = "taker",
        **webphone_options: Any,
    ) -> None:
        check_values("SharedWebPhone", {
            "group": group, "hub": hub, "instance_id": instance_id,
            "heartbeat_interval": heartbeat_interval, "heartbeat_timeout": heartbeat_timeout,
            "hub_timeout": hub_timeout, "action_timeout": action_timeout,
            "drain_timeout": drain_timeout, "runtime_dir": runtime_dir,
            "hub_options": hub_options, "member_id": member_id, "preload_media": preload_media,
            "debug": debug, "auto_answer": auto_answer, "media": media}, _own_options())
        check_policy(media)
        self._phone_options, self._client_options = _split_options(webphone_options)
        super().__init__()
        self.sip_info = as_sip_info(sip_info)
        self.group = group or group_name(self.sip_info)
        self.instance_id = instance_id or group_instance_id(self.group)
        self.hub = hub
        self.hub_options = hub_options or HubOptions(heartbeat_interval=heartbeat_interval,
                                                     heartbeat_timeout=heartbeat_timeout)
        self.runtime_dir = runtime_dir
        self.hub_timeout = hub_timeout
        self.action_timeout = action_timeout
        self.drain_timeout = drain_timeout
        self.preload_media = preload_media
        self.debug = debug
        self.auto_answer = auto_answer
        self._member_id = member_id
        self.member: GroupMember | None = None
        self.transport: GroupTransport | None = None
        #: the WebPhone this member runs: registered while real, on a DummySipClient otherwise
        self.phone: WebPhone = self._dummy_phone()
        self._real: WebPhone | None = None  # registered real phone
        self._candidate: WebPhone | None = None  # being registered
        #: a dummy's view of the group's calls and of the real's SIP connection
        self._mirror = CallMirror(
            run=self._request, emit=self.emit, taker=self._taker_id,
            held=lambda: self.media_host.sessions,
            ended=lambda call_id: self._background(self.media_host.close(call_id)))
        self.media_policy = media
        #: the media of the calls this member holds (any role), made as WebPhone would
        self._local_media = LocalMedia(
            loopback_only=bool(self._phone_options.get("loopback_media", False)),
            stun_servers=tuple(self.sip_info.stun_servers),
            factory=self._phone_options.get("media_factory"))
        self.media_host = MediaHost(
            lambda call_id, record: self._local_media.make(record,
                                                           self._mirror.proxies.get(call_id)),
            taken=self._media_taken, dropped=self._mirror.detach_media)
        #: the real's side: where each call's media lives, and moving it
        self._placement = MediaPlacement(
            media, delegate=self._delegate, me=lambda: self.member_id, members=self.members,
            sessions=lambda: list(self._real.call_sessions) if self._real is not None else [],
            local_media=self._local_media.new, resume_media=self._local_media.resume,
            emit=self.emit)
        #: a real's snapshots: what they say and when they go out
        self._publisher = StatePublisher(changed=self._on_session_event)
        #: a real's continuity records, and a new real's takeover of its predecessor's calls
        self._records = ContinuityRecords(self._publish_continuity)
        self._adoption = Adoption(records=self._records, media_for=self._media_for,
                                  emit=self.emit)
        self._continuity_news = asyncio.Event()
        self._reign = 0  # the epoch at which this member last became the real
        self._warm: dict[str, Any] = {}  # real: call id -> WarmTransfer in progress
        self._role_events: asyncio.Queue[tuple[Role | None, Role, int]] = asyncio.Queue()
        self._role_worker: asyncio.Task[None] | None = None
        self._actions = ActionRunner(phone=lambda: self._real, idle=self._adoption.idle,
                                     busy=self._adoption.busy,
                                     publish=self._publish_pending, warm=self._warm,
                                     media=self._placement)
        self._bg: set[asyncio.Future[Any]] = set()
        self._calls_changed = asyncio.Event()
        self._settled: asyncio.Future[BaseException | None] | None = None
        self._started = False
        self._disposed = False
        self._tick: asyncio.Task[None] | None = None
        #: after a failed promotion: how long to stay out of the group before rejoining
        self._retry_delays: Iterator[float] | None = None

    # -- public surface --------------------------------------------------------------------------

    @property
    def role(self) -> str:
        """"real" (this process holds the group's registration) or "dummy"."""
        role = self.member.role if self.member else None
        return "real" if role in ("real", "handing_over") and self._real is not None else "dummy"

    @property
    def epoch(self) -> int:
        """The group epoch this member knows (grows with every change of the real)."""
        return self.member.epoch if self.member else 0

    @property
    def member_id(self) -> str | None:
        """This member's id in the group."""
        return self.member.member_id if self.member else self._member_id

    @property
    def call_sessions(self) -> list[Any]:
        """The group's calls: `CallSession` objects on the real, `ProxyCallSession` on dummies."""
        if self._real is not None:
            return list(self._real.call_sessions)
        return list(self._mirror.live())

    async def start(self, timeout: float = 15.0) -> None:
        """Join the group: become the real (registered; raises its RegistrationError) or a dummy.

        Returns once the role is settled: registered as the real, or a dummy of a group that
        has a real (or is promoting one)."""
        if self._started:
            raise WebPhoneError("start() was already called")
        self._started = True
        loop = asyncio.get_running_loop()
        self.transport = make_transport(self.hub, self.hub_options, self.runtime_dir)
        self.member = GroupMember(self.transport, self.group, self, hub_timeout=self.hub_timeout,
                                  action_timeout=self.action_timeout, member_id=self._member_id)
        self._settled = loop.create_future()
        self._role_worker = asyncio.create_task(self._role_loop(), name="webphone-role")
        self._tick = asyncio.create_task(self._tick_loop(), name="webphone-shared-tick")
        deadline = loop.time() + timeout
        try:
            await self.member.start(timeout)
            await asyncio.wait_for(asyncio.shield(self._settled),
                                   max(deadline - loop.time(), 0.001))
        except TimeoutError:
            registering = self._candidate is not None
            await self._teardown(unregister=False)
            if registering:  # the SIP server is slow: its own timeouts did not fire yet
                raise SipTimeoutError(f"registering as the real of group {self.group!r} did "
                                      f"not finish within {timeout:g} s") from None
            raise HubTimeoutError(f"the group {self.group!r} settled no role for this member "
                                  f"within {timeout:g} s") from None
        except BaseException:
            await self._teardown(unregister=False)
            raise
        error = self._settled.result()
        if error is not None:
            await self._teardown(unregister=False)
            raise error

    async def call(
        self,
        callee: str,
        caller_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call `callee` from the group's real phone; returns the session (a `CallSession` on
        the real, a `ProxyCallSession` on a dummy)."""
        if self._real is not None:
            return await self._real.call(callee, caller_id=caller_id, headers=headers)
        args: dict[str, Any] = {"callee": callee}
        if caller_id is not None:
            args["caller_id"] = caller_id
        if headers:
            args["headers"] = dict(headers)
        holder = self._taker_id()
        if holder is not None:
            args["holder"] = holder  # "taker": this member holds the call's media
        value = await self._request("call", None, args)
        return await self._mirror.proxy_for(call_id_of(value))

    async def members(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The group's members, oldest first: dicts with member_id, pid, host, role, since,
        joined, leaving, self."""
        if self.member is None:
            raise WebPhoneError("start() the phone first")
        infos = await self.member.members(timeout)
        return [member_dict(m, me=self.member.member_id) for m in infos]

    async def dispose(self, timeout: float | None = None, *, drain: bool = False) -> None:
        """Leave the group. A dummy leaves at once; one that holds calls' media first asks
        the real to move it to another member (make-before-break). The real moves the media
        it holds to another member and hands over: its calls go on under the successor,
        which adopts them (issue #11 item 5); with `drain=True` it keeps serving its calls
        until they end instead (at most `timeout` s, default `drain_timeout`) and hangs up
        the rest. The hand-over is make-before-break: a successor registers first, and this
        member closes its SIP connection without unregistering; the last member of the group
        unregisters (its calls end)."""
        if self._disposed:
            return
        self._disposed = True
        member = self.member
        if member is None:
            return
        if self._real is not None and member.role == "real":
            if drain:
                await self._drain(self.drain_timeout if timeout is None else timeout)
            else:
                await self._move_own_media()
        if self._real is not None and member.role == "real":
            await self._hand_over()
        else:
            await self._release_media()
            await member.leave(1.0)
            await self._teardown(unregister=False)

    async def __aenter__(self) -> SharedWebPhone:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    # -- leaving ---------------------------------------------------------------------------------

    def _live_calls(self) -> list[Any]:
        phone = self._real
        if phone is None:
            return []
        return [s for s in phone.call_sessions if getattr(s, "state", "") not in FINAL_STATES]

    async def _drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._live_calls() and self._real is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._calls_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._calls_changed.wait(), min(remaining, 1.0))
        for session in self._live_calls():
            log.info("drain timeout: ending call %s", session.call_id)
            try:
                await session.dispose()
            except Exception as exc:
                log.warning("ending call %s failed: %s", session.call_id, exc)

    async def _release_media(self) -> None:
        """(a dummy holder leaving) The real moves our calls' media elsewhere first."""
        member = self.member
        if not self.media_host.sessions or member is None:
            return
        try:
            result = await member.request("release_media", None, {"holder": member.member_id})
            log.info("media released before leaving: %s", result)
        except WebPhoneError as exc:
            log.warning("the real did not move our calls' media (%s): they end with us", exc)

    async def _move_own_media(self) -> None:
        """(the real leaving without draining) Its own calls' media goes to another member."""
        try:
            result = await self._placement.move_own()
            log.info("media moved before the hand-over: %s", result)
        except Exception:
            log.exception("moving our calls' media before the hand-over failed")

    async def _hand_over(self) -> None:
        assert self.member is not None
        if self._actions.tasks:  # let accepted actions finish before we stop running any
            await asyncio.wait(set(self._actions.tasks), timeout=5.0)
        self._flush_publish()
        released = await self.member.leave(self.hub_options.handover_timeout + 5.0)
        if released is None:
            log.warning("no release from the hub: closing without unregistering (a successor "
                        "may own the binding)")
        unregister = released is not None and released.unregister
        if unregister and not await self.member.ping():
            # The hub promotes nobody while we are connected as "unregistering"; if it no
            # longer answers, someone may be registering already: let the binding expire.
            log.warning("the hub did not confirm the release: closing without unregistering")
            unregister = False
        await self._teardown(unregister=unregister)

    async def _teardown(self, *, unregister: bool) -> None:
        self._disposed = True
        for task in (self._role_worker, self._tick):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._publisher.cancel()
        self._placement.cancel()
        if not unregister:  # a successor (or nobody) owns the calls: their holders go on
            self._placement.abandon_remote()
        await self.media_host.close_all()
        if not unregister and self.member is not None:
            await self.member.close()
        for phone in (self._candidate, self._real):
            if phone is None:
                continue
            if not unregister:
                phone.sip_client.fence()
            with contextlib.suppress(Exception):
                await phone.dispose()  # unregisters only if not fenced
        self._real = self._candidate = None
        if self.member is not None:
            await self.member.close()  # after the unregister: nobody is promoted before
        await self.phone.dispose()
        self._actions.close()
        if self.transport is not None and isinstance(self.hub, str) and self.hub != "memory":
            await self.transport.aclose()  # ours alone: let closed links leave (Redis)

    def _crash(self) -> None:
        """Stop like a SIGKILL would (tests): no frames, no SIP, nothing awaited."""
        self._disposed = True
        if self.member is not None:
            self.member.abort()
        for task in (self._role_worker, self._tick):
            if task is not None:
                task.cancel()
        self._actions.close()
        self._placement.cancel()
        self._background(self.media_host.close_all())  # the audio stops, as with a SIGKILL
        for phone in (self._candidate, self._real):
            if phone is not None and isinstance(phone.sip_client, SipClient):
                phone.sip_client.fence()
                self._background(phone.sip_client.dispose(unregister=False))
        self._real = self._candidate = None

    # -- MemberListener --------------------------------------------------------------------------

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        if new == "dummy":
            # Fence at once, before anything else can run: a deposed real never sends SIP again.
            for phone in (self._candidate, self._real):
                if phone is not None:
                    phone.sip_client.fence()
        self._role_events.put_nowait((old, new, epoch))

    def on_snapshot(self, snapshot: Snapshot) -> None:
        if self._real is None and self._candidate is None:
            self._sync_proxies(snapshot.state)

    def on_action(self, action: Action, token: LinkToken) -> None:
        assert self.member is not None
        self._actions.start(self.member, action, token)

    def on_released(self, released: Released) -> None:
        log.info("released by the hub (unregister=%s)", released.unregister)

    # -- PlaneListener: the media plane (shared/media_host.py, placement.py) --------------------

    def on_delegate(self, request: Delegate, token: LinkToken) -> None:
        member = self.member

        def reply(value: dict[str, Any] | None, error: BaseException | None) -> None:
            if member is not None:
                member.send_delegate_result(token, request, value=value, error=error)

        self.media_host.serve(request.op, request.call_id, request.args, reply)

    def on_member_lost(self, member_id: str, reason: str) -> None:
        if self._real is not None:
            self._placement.member_lost(member_id, reason)

    def on_continuity(self, state: Continuity) -> None:
        """A newer continuity state (every member but the real). Adoption reads
        `member.continuity.state` when this member is promoted; a deposed real waits for
        its successor's (`_until_succeeded`)."""
        self._continuity_news.set()

    async def _until_succeeded(self, phone: WebPhone) -> None:
        """(deposed, fenced: it sends nothing) Keep the SIP connection of a real with answered
        calls until a successor published the continuity state of a later reign (it registered
        and adopted them), at most `SUCCESSION_WAIT` s: a server may end the dialogs of a
        device whose only connection closes (the sandbox does), which would lose the calls
        when a real steps down (a Redis lease it could not renew) before its successor came."""
        member = self.member
        reign = self._reign
        if (member is None or self._disposed  # leaving: released once the successor settled
                or not any(s.state == "answered" for s in phone.call_sessions)):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SUCCESSION_WAIT
        while (state := member.continuity.state) is None or state.epoch <= reign:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.info("no successor took the calls over within %g s", SUCCESSION_WAIT)
                return
            self._continuity_news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._continuity_news.wait(), remaining)

    async def _delegate(self, to: str, op: str, call_id: str, args: dict[str, Any],
                        timeout: float = 10.0) -> Any:
        if self.member is None:
            raise NoRealPhoneError("this SharedWebPhone is not started (or disposed)")
        return await self.member.delegate(to, op, call_id, args, timeout=timeout)

    def _taker_id(self) -> str | None:
        """The member id a dummy's answer()/call() names as the media holder (None with the
        "real" placement)."""
        return None if self.media_policy == "real" else self.member_id

    def _media_taken(self, call_id: str, media: Any) -> None:
        media.on("dtmf", lambda digit: self._mirror.relay(call_id, "dtmf", digit))
        self._mirror.attach_media()

    # -- roles -----------------------------------------------------------------------------------

    async def _role_loop(self) -> None:
        while True:
            old, new, epoch = await self._role_events.get()
            try:
                if new == "real":
                    await self._become_real(old, epoch)
                elif new == "dummy":
                    await self._become_dummy()
            except Exception as exc:  # never let the role worker die
                log.exception("role change to %s failed", new)
                self._settle(exc)

    def _settle(self, error: BaseException | None = None) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(error)

    def _still_real(self, epoch: int) -> bool:
        member = self.member
        return (member is not None and member.role == "real" and member.epoch == epoch
                and not self._disposed)

    async def _become_real(self, old: Role | None, epoch: int) -> None:
        assert self.member is not None
        if self._real is not None:
            # adopted by a restarted hub, or a new epoch for the same real: still registered
            if not self._real.sip_client.registered:
                log.warning("real at epoch %d but not registered; the SIP client reconnects",
                            epoch)
            self.member.registered(epoch)
            self._schedule_publish()
            return
        if not self._still_real(epoch):
            return  # deposed again before we began
        phone: WebPhone | None = None
        try:
            phone = self._candidate = self._real_phone()
            await phone.start()  # connect + REGISTER first: media code loads afterwards
        except Exception as exc:  # any reason at all: never stay a real that cannot register
            self._candidate = None
            if phone is not None:
                phone.sip_client.fence()
                with contextlib.suppress(Exception):
                    await phone.dispose()
            if self._settled is not None and not self._settled.done():
                self._settle(exc)  # start() raises it
            elif self._still_real(epoch):
                self._give_up_real(exc)
            return
        self._candidate = None
        if not self._still_real(epoch):
            phone.sip_client.fence()
            with contextlib.suppress(Exception):
                await phone.dispose()
            return
        self._retry_delays = None
        self._reign = self.member.epoch
        adopted = self._adoption.adopt(phone, self._predecessor_calls())
        self._install_real(phone)
        if not adopted:
            self.member.registered(self.member.epoch)
        self._flush_publish()
        self._settle()
        self.emit("role", "real")
        if adopted:
            self._background(self._settle_adopted(phone, adopted, self.member.epoch))
        if self.preload_media:
            loaded = asyncio.get_running_loop().run_in_executor(None, _preload_media)
            loaded.add_done_callback(lambda _: self.emit("media_ready"))
            self._bg.add(loaded)
            loaded.add_done_callback(self._bg.discard)

    # -- continuity: the calls outlive their real (shared/adoption.py) ------------------------

    def _media_for(self, call_id: str, holder: str, record: Mapping[str, Any]
                  ) -> CallMedia | None:
        """The media an adopted call goes on with while member `holder` (alive) holds it: the
        MediaSession this member held as a dummy, or a `RemoteMedia` reaching `holder` (built
        from the media `record`); None: not there after all, the media is renewed here."""
        if holder == self.member_id:
            return self.media_host.hand_over(call_id)
        session = self._real.find_session(call_id) if self._real is not None else None
        if session is None:
            return None
        return self._placement.adopted(session, holder, record)

    def _predecessor_calls(self) -> dict[str, Any]:
        """The calls of the continuity state a previous real published (to adopt)."""
        assert self.member is not None
        state = self.member.continuity.state
        if state is None or state.epoch >= self.member.epoch:
            return {}
        return state.calls

    async def _settle_adopted(self, phone: WebPhone, adopted: list[Adopted], epoch: int
                              ) -> None:
        """Step 2 of the takeover; only then does the hub hear we are ready (`registered`):
        a real handing over keeps its SIP connection until our target refreshes have moved
        its dialogs (a server may end the dialogs of a connection that closes: the sandbox
        does), and the group's actions are queued for us until the calls are ours."""
        assert self.member is not None
        try:
            alive = {m.member_id for m in await self.member.members(self.action_timeout)}
        except WebPhoneError as exc:  # the hub is away: every holder counts as gone
            log.warning("adoption: no member list (%s); renewing the media of every call", exc)
            alive = set()
        await self._adoption.settle(phone, adopted, self.member.member_id or "", alive)
        if self._still_real(epoch):
            self.member.registered(epoch)
        self._flush_publish()

    def _publish_continuity(self, calls: dict[str, dict[str, Any]]) -> None:
        if self.member is None:
            return
        try:
            self.member.publish_continuity(calls)
        except GroupProtocolError as exc:  # too large, not JSON: the calls stay, unprotected
            log.error("could not publish the continuity state: %s", exc)

    def _give_up_real(self, error: Exception) -> None:
        """A promotion failed: leave the real role at once so the group promotes another
        member, and come back as a dummy after a backoff (1, 2, 4 ... 30 s)."""
        assert self.member is not None
        if self._retry_delays is None:
            # 1 s, 2 s, 4 s ... 30 s: even the first rejoin waits, so that another member takes
            # the role first (over Redis the freed lease goes to whoever acquires it first)
            self._retry_delays = backoff(first=1.0, initial=2.0)
        rejoin_after = next(self._retry_delays)
        log.error("could not become the group's real phone: %s: %s; giving the real role up "
                  "so that another member is promoted (back in the group in %.1f s)",
                  type(error).__name__, error, rejoin_after)
        if isinstance(error, RegistrationError):
            self.emit("registration_failed", error)  # as a WebPhone whose REGISTER failed
        self.emit("promotion_failed", error)
        self.member.resign(rejoin_after)

    def _real_phone(self) -> WebPhone:
        assert self.member is not None
        client = GroupSipClient(self.sip_info, member=self.member, instance_id=self.instance_id,
                                 debug=self.debug, **self._client_options)
        options = {**self._phone_options, "media_factory": self._placement.factory}
        phone = WebPhone(self.sip_info, instance_id=self.instance_id, debug=self.debug,
                         sip_client=client, auto_answer=self.auto_answer, **options)
        for event in _RELAYED:  # from the first REGISTER on: every SIP message is visible
            phone.on(event, self._relay(event))
        phone.on("disconnected", lambda reason: self._server_changed(server_state(False, reason)))
        phone.on("reconnected", lambda: self._server_changed(server_state(True)))
        return phone

    def _server_changed(self, state: dict[str, Any]) -> None:
        """The real's SIP connection went down or came back: dummies hear of it (snapshot)."""
        self._publisher.server = state
        self._schedule_publish()

    def _install_real(self, phone: WebPhone) -> None:
        self._real = phone
        self._publisher.server = server_state(True)  # registered just now
        old_dummy, self.phone = self.phone, phone
        self._background(old_dummy.dispose())
        self._mirror.clear()  # the real sessions replace the dummy view
        phone.on("inbound_call", self._on_real_call("inbound_call"))
        phone.on("outbound_call", self._on_real_call("outbound_call"))
        phone.on("call_changed", self._on_real_changed)
        for session in phone.call_sessions:
            self._publisher.watch(session)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _relay(self, event: str) -> Any:
        def relay(*args: Any) -> None:
            self.emit(event, *args)

        return relay

    def _on_real_call(self, event: str) -> Any:
        def handler(session: Any) -> None:
            self._placement.refresh_soon()  # a callable policy sees the members of now
            self._publisher.watch(session)
            self._schedule_publish()
            self.emit(event, session)

        return handler

    def _on_real_changed(self, session: Any) -> None:
        self._schedule_publish()
        self._calls_changed.set()
        self.emit("call_changed", session)

    def _on_session_event(self) -> None:
        self._calls_changed.set()
        self._schedule_publish()

    async def _become_dummy(self) -> None:
        phone, self._real = self._real, None
        candidate, self._candidate = self._candidate, None
        if phone is not None:
            phone.sip_client.fence()
            await self._until_succeeded(phone)
        for p in (phone, candidate):
            if p is None:
                continue
            p.sip_client.fence()  # already fenced in on_role; dispose sends nothing
            with contextlib.suppress(Exception):
                await p.dispose()
        if phone is not None:
            log.warning("deposed: another member is the group's real phone now")
            self.phone = self._dummy_phone()
            self._publisher.reset()
            self._records.reset()
        if self.member is not None and self.member.view.snapshots.state is not None:
            self._sync_proxies(self.member.view.snapshots.state)
        if phone is not None:  # `role` was "real" (announced once registered): now it is not
            self.emit("role", "dummy")
        if self._settled is not None and not self._settled.done():
            # the first welcome said dummy: settled once the group has a real, unless the
            # promotion frame that follows the welcome makes us the real (that settles later)
            await self._wait_for_real()
            if self.member is not None and self.member.role != "real":
                self._settle()

    async def _wait_for_real(self) -> None:
        member = self.member
        if member is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + member.heartbeat_timeout
        while member.view.real_id is None and member.role == "dummy":
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            member.view_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(member.view_changed.wait(), remaining)

    def _dummy_phone(self) -> WebPhone:
        client = DummySipClient(self.sip_info, instance_id=self.instance_id)
        return WebPhone(self.sip_info, instance_id=self.instance_id, sip_client=client,
                        auto_answer=False)

    # -- snapshots: real side --------------------------------------------------------------------

    @property
    def _ended(self) -> dict[str, tuple[float, dict[str, Any]]]:
        return self._publisher.ended

    def _schedule_publish(self) -> None:
        if self._real is not None:
            self._publisher.schedule(self._flush_publish)

    def _flush_publish(self) -> None:
        if self._real is None or self.member is None:
            self._publisher.cancel()
            return
        self._publisher.flush(self._real.call_sessions, self.member.publish)
        self._records.flush(self._real.call_sessions, self.member.member_id or "")

    async def _tick_loop(self) -> None:
        # a safety net for changes no event announces (mute flags, ended-call retention)
        while True:
            await asyncio.sleep(self.hub_options.heartbeat_interval)
            if self._real is not None:
                self._flush_publish()

    # -- snapshots: dummy side (shared/mirror.py) -------------------------------------------------

    @property
    def _proxies(self) -> dict[str, ProxyCallSession]:
        return self._mirror.proxies

    def _sync_proxies(self, state: Mapping[str, Any]) -> None:
        self._mirror.sync(state)

    # -- actions ---------------------------------------------------------------------------------

    async def _request(self, name: str, call_id: str | None, args: dict[str, Any]) -> Any:
        if self.member is None or self._disposed:
            raise NoRealPhoneError("this SharedWebPhone is not started (or disposed)")
        return await self.member.request(name, call_id, args)

    def _publish_pending(self) -> None:
        if self._publisher.pending:
            self._flush_publish()  # the caller sees the new state before the result


@functools.cache
def _own_options() -> dict[str, Any]:
    """SharedWebPhone's own keywords and their annotations."""
    return keyword_options(SharedWebPhone.__init__, ("sip_info",), keyword_only=False)


@functools.cache
def _webphone_options() -> tuple[dict[str, Any], dict[str, Any]]:
    """The keywords of the WebPhone and of the SipClient a real runs, with annotations."""
    return (keyword_options(WebPhone.__init__, _FIXED_OPTIONS, keyword_only=False),
            keyword_options(SipClient.__init__, _FIXED_OPTIONS, keyword_only=False))


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check `options` (TypeError naming the first bad one) and split them into the WebPhone's
    and the SipClient's: checked here, on every member, not when a dummy is promoted."""
    phone, client = _webphone_options()
    check_values("SharedWebPhone", options, {**phone, **client})
    return ({k: v for k, v in options.items() if k in phone},
            {k: v for k, v in options.items() if k in client})


def _preload_media() -> None:
    """Import the media stack in the background once registered (a dummy never does this)."""
    for name in ("webphone.media", "aiortc"):
        try:
            importlib.import_module(name)
        except Exception as exc:
            log.debug("preloading %s failed: %s", name, exc)
