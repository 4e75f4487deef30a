"""Actions over Redis, for one `RedisLink`: exactly one outcome for each action a member sends,
and each action run at most once by the real that claimed it.

The rules (the scripts are in `redis_scripts`; `webphone.shared.transports.redis` has the whole
picture): the caller's ENQUEUE writes ``act:<id>`` (queued, or claimed at once for the ready
real at its epoch) and adds the entry to the actions stream, which it also pushes to the real.
The real runs an entry claimed for it as it reads it (or CLAIMs a queued one, when claims wait
for the replicas) and answers with RESULT, which refuses a real that is no longer the holder of
the claim's epoch and pushes the result to the caller's inbox. The caller decides what the real
cannot: at its deadline EXPIRE turns queued into NoRealPhoneError, and when the lease leaves the
claim's epoch INTERRUPT turns claimed into ActionInterruptedError. RESULT, EXPIRE and INTERRUPT
decide on the same key, atomically: exactly one outcome.

The hot path (a ready real, no replica acknowledgements) takes no task wake-up of its own on
either side: the caller's ENQUEUE goes out from the link's `send` when its worker is idle; the
real is handed the pushed entry from the push connection's ``data_received`` and runs it there
(the runner starts it eagerly), and sends RESULT as soon as the member answers, the same way;
the caller's link is handed the pushed result from ``data_received`` too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from webphone.shared.protocol import Action, ActionAccepted, ActionResult, Error, ErrorInfo, Frame
from webphone.shared.transports.redis_scripts import ACTION_PUSH, GroupKeys, is_gid, text
from webphone.shared.transports.redis_wire import Wire, follow

__all__ = ["MAX_USED_IDS", "ActionsHost", "Op", "RedisActions"]

log = logging.getLogger("webphone.shared.redis")

#: how many of its latest action ids a link remembers to refuse a repeated one
MAX_USED_IDS = 1024


@dataclass(frozen=True, kw_only=True)
class Op:
    """Work for the link's own worker (not a member frame)."""

    kind: str  # "acquire" | "expire" | "interrupt" | "release" | "continuity"
    arg: str = ""
    epoch: int = 0


@dataclass(eq=False, kw_only=True)
class _Call:
    """An action this member sent, until its one outcome."""

    action_id: str  # the member's id
    deadline: asyncio.TimerHandle | None = None
    epoch: int | None = None  # claimed at this epoch (accepted), once we know it
    checked: int | None = None  # the lease epoch at which INTERRUPT last looked at it


class ActionsHost(Protocol):
    """What `RedisActions` needs of its `RedisLink`."""

    group: str
    keys: GroupKeys
    nonce: str
    reply_key: str
    #: the newest epoch the link knows (the epoch an error outcome carries)
    epoch: int

    async def run_script(self, name: str, extra_keys: list[str], args: list[Any]) -> Any:
        """Run one of the group's scripts (base keys first)."""

    async def run_acked(self, name: str, extra_keys: list[str],
                        args: list[Any]) -> tuple[Any, bool]:
        """`run_script`, and whether enough replicas acknowledged it."""

    async def wait_acks(self, what: str) -> bool:
        """True when enough replicas hold our writes."""

    def script_sha(self, name: str) -> str:
        """The SHA1 of one of the group's scripts (EVALSHA)."""

    def wire(self) -> Wire | None:
        """The hot command connection, if open."""

    def client(self) -> Redis:
        """The command connection (redis-py)."""

    def reader(self) -> Redis:
        """The connection pool for stream reads (redis-py)."""

    def deliver(self, frame: Frame) -> None:
        """Hand a frame to the member, as a hub would."""

    def decode(self, raw: Any, kind: type[Frame]) -> Frame | None:
        """A frame read from Redis, or None (logged) if malformed or of another type."""

    def member_id(self) -> str:
        """Our member id."""

    def serving(self) -> int | None:
        """The epoch at which we are the ready real, if we are (else None)."""

    def lease_valid(self) -> bool:
        """True while we are the real and our lease is valid by our own clock."""

    def queue(self, item: Frame | Op) -> None:
        """Give an item to the link's worker (handled in order, retried after recovery)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run `coro` in the current session (None: no session runs)."""


class RedisActions:
    """One link's actions: those its member sent (the caller's side) and those it runs (the
    real's side). See the module docstring."""

    def __init__(self, host: ActionsHost, loop: asyncio.AbstractEventLoop, *,
                 replica_acks: int, retry_interval: float, command_timeout: float) -> None:
        self._host = host
        self._loop = loop
        self._replica_acks = replica_acks
        self._retry_interval = retry_interval
        self._command_timeout = command_timeout
        self.channel = ""  # where ENQUEUE pushes action entries (set when the link opens)
        # the caller's side
        self._calls: dict[str, _Call] = {}  # gid -> call
        # the newest MAX_USED_IDS action ids, oldest first (a dict: `in` must not scan them all
        # on every action, as a deque does)
        self._used_ids: dict[str, None] = {}
        self._interrupting: set[str] = set()  # gids with an INTERRUPT queued
        # the real's side
        self._claimed: dict[str, tuple[str, str]] = {}  # gid -> (caller's inbox, entry id)
        self._claiming: dict[str, str] = {}  # claims sent but not settled (gid -> inbox)
        self._consumer: asyncio.Task[None] | None = None

    # -- the caller's side -------------------------------------------------------------------

    async def enqueue(self, frame: Action) -> None:
        """ENQUEUE an action the member sent (its outcome comes later, exactly once)."""
        if frame.action_id in self._used_ids:
            self._host.deliver(Error("duplicate_action",
                                     f"action id {frame.action_id!r} was already used"))
            return
        gid, keys, args = self._prepare(frame)
        out = text(await self._host.run_script("enqueue", keys, args))
        self._remember(frame.action_id)
        self._enqueued(gid, out)

    def enqueue_at_once(self, frame: Action) -> bool:
        """ENQUEUE sent at once, from the link's `send` (only when its worker is idle, as
        `post_at_once`): no worker wake-up on an action's path. Its reply is read in `_sent`;
        False: the worker does it (a repeated id, or no connection)."""
        wire = self._host.wire()
        if wire is None or wire.closed or frame.action_id in self._used_ids:
            return False
        gid, extra, args = self._prepare(frame)
        self._remember(frame.action_id)  # now: a repeated id sent meanwhile is refused
        keys = [*self._host.keys.base(), *extra]
        reply = wire.command("EVALSHA", self._host.script_sha("enqueue"), len(keys), *keys,
                             *args)
        reply.add_done_callback(functools.partial(self._sent, frame, gid))
        return True

    def _sent(self, frame: Action, gid: str, reply: asyncio.Future[Any]) -> None:
        if reply.cancelled() or reply.exception() is not None:
            # Redis failed or lacks the script: the worker sends it again (EVAL, or after
            # recovery, when ENQUEUE answers "dup" if this one got through), as it would its own
            self._used_ids.pop(frame.action_id, None)
            self._host.queue(frame)
            return
        self._enqueued(gid, text(reply.result()))

    def _prepare(self, frame: Action) -> tuple[str, list[str], list[Any]]:
        """The call's record and deadline; ENQUEUE's extra keys and arguments."""
        host = self._host
        gid = f"{host.nonce}.{frame.action_id}"
        entry = frame.to_obj()  # already checked; the real checks it again when it reads it
        entry["action_id"] = gid
        timeout_ms = max(1, int(frame.timeout * 1000))
        # Claimed for a ready real by ENQUEUE itself (it runs it as soon as it reads it), unless
        # claims must wait for the replicas (`_claim_acked`): then the real claims it.
        claim = "1" if self._replica_acks <= 0 else "0"
        # Known before ENQUEUE is sent: its result is pushed on another connection, and may
        # be read before ENQUEUE's own answer.
        old = self._calls.get(gid)  # (a retry after a Redis failure: ENQUEUE answers "dup")
        if old is not None and old.deadline is not None:
            old.deadline.cancel()
        call = self._calls[gid] = _Call(action_id=frame.action_id)
        call.deadline = self._loop.call_later(frame.timeout, host.queue,
                                              Op(kind="expire", arg=gid))
        return gid, [host.keys.act(gid), host.reply_key], [
            gid, timeout_ms, json.dumps(entry, separators=(",", ":")), claim, self.channel]

    def _remember(self, action_id: str) -> None:
        self._used_ids[action_id] = None
        if len(self._used_ids) > MAX_USED_IDS:
            del self._used_ids[next(iter(self._used_ids))]

    def _enqueued(self, gid: str, out: str) -> None:
        if out.startswith("claimed:"):
            self._accepted(gid, int(out.split(":", 1)[1]))
            self.check_calls(self._host.epoch)  # the lease may have moved on while we waited

    async def expire(self, gid: str) -> None:
        """The action's deadline passed: EXPIRE decides (queued -> NoRealPhoneError)."""
        if gid not in self._calls:
            return
        out, acked = await self._host.run_acked("expire", [self._host.keys.act(gid)], [])
        state, epoch = text(out[0]), text(out[1])
        if not acked:  # a verdict the replicas do not hold yet is no verdict: ask again
            self._loop.call_later(self._retry_interval, self._host.queue,
                                  Op(kind="expire", arg=gid))
        elif state == "expired":
            self._expired(gid)
        elif state in ("interrupted", "gone"):
            self._interrupted(gid)
        elif state == "claimed":
            self._accepted(gid, int(epoch))  # the outcome comes from the real or INTERRUPT
            self.check_calls(self._host.epoch)

    async def interrupt(self, gid: str) -> None:
        """The lease left an epoch: INTERRUPT decides (claimed at an ended epoch ->
        ActionInterruptedError; queued or running -> left alone)."""
        self._interrupting.discard(gid)
        if gid not in self._calls:
            return
        out, acked = await self._host.run_acked("interrupt", [self._host.keys.act(gid)], [])
        state = text(out[0])
        if not acked:  # not replicated yet: ask again (the same verdict, or a newer one)
            self._interrupting.add(gid)
            self._loop.call_later(self._retry_interval, self._host.queue,
                                  Op(kind="interrupt", arg=gid))
        elif state in ("interrupted", "gone"):
            self._interrupted(gid)
        elif state == "expired":
            self._expired(gid)
        elif state in ("running", "claimed"):
            self._accepted(gid, int(text(out[1])))

    def check_calls(self, epoch: int) -> None:
        """The lease is at `epoch` (0: nobody holds it). A pending action may have been claimed
        at an earlier epoch (nobody tells the caller when: that would cost a wake-up on every
        action), so each one is looked at once per lease epoch: INTERRUPT decides atomically
        (claimed at an epoch that ended -> interrupted; queued -> left alone)."""
        for gid, call in self._calls.items():
            if call.checked != epoch and call.epoch != epoch and gid not in self._interrupting:
                call.checked = epoch
                self._interrupting.add(gid)
                self._host.queue(Op(kind="interrupt", arg=gid))

    def on_result(self, fields: dict[bytes, bytes]) -> None:
        """An entry of our inbox that is not the plane's: a result, if for a pending action."""
        kind, gid = text(fields.get(b"t", b"")), text(fields.get(b"g", b""))
        if gid not in self._calls or kind != "result":
            return
        epoch = int(text(fields.get(b"n", b"0")) or 0)
        result = self._host.decode(fields.get(b"d", b""), ActionResult)
        if isinstance(result, ActionResult) and result.epoch == epoch:
            self._finish(gid, result=result)

    def cancel_timers(self) -> None:
        """The link closed: no more deadlines."""
        for call in self._calls.values():
            if call.deadline is not None:
                call.deadline.cancel()

    def _expired(self, gid: str) -> None:
        self._finish(gid, error=ErrorInfo(
            "NoRealPhoneError", f"no real phone in group {self._host.group!r} was ready within "
            "the action's deadline"))

    def _accepted(self, gid: str, epoch: int) -> None:
        call = self._calls.get(gid)
        if call is not None and call.epoch is None:
            call.epoch = epoch
            self._host.deliver(ActionAccepted(call.action_id))

    def _interrupted(self, gid: str) -> None:
        self._finish(gid, error=ErrorInfo(
            "ActionInterruptedError", "the real phone lost the group's lease after accepting "
            "the action; it may or may not have run, and is not re-run"))

    def _finish(self, gid: str, *, error: ErrorInfo | None = None,
                result: ActionResult | None = None) -> None:
        call = self._calls.pop(gid, None)
        if call is None:
            return
        if call.deadline is not None:
            call.deadline.cancel()
        if result is not None:
            self._host.deliver(ActionResult(call.action_id, result.epoch, result.ok,
                                            result.value, result.error))
        else:
            self._host.deliver(ActionResult(call.action_id, self._host.epoch, False, None,
                                            error))

    # -- the real's side ---------------------------------------------------------------------

    def start_consumer(self) -> None:
        """We are the ready real: run the actions of the stream (once per session)."""
        if self._consumer is None:
            self._consumer = self._host.spawn(self._consume())

    def stop_consumer(self) -> None:
        """We stop serving (step down, leave): run no more actions."""
        task, self._consumer = self._consumer, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def session_stopped(self) -> None:
        """The session's tasks were cancelled (the consumer among them)."""
        self._consumer = None

    def reign_ended(self) -> None:
        """We stepped down: the actions we claimed get ActionInterruptedError from their
        callers' INTERRUPT, once the lease leaves our epoch."""
        self.stop_consumer()
        self._claimed.clear()
        self._claiming.clear()

    async def _consume(self) -> None:
        """Run the actions of the stream, in order: those queued before we were ready, then
        each one as ENQUEUE pushes it (`redis_wire.follow`). An entry that ENQUEUE claimed for
        us is run as it is read (a push: from ``data_received``, no wake-up); one that needs
        Redis first (CLAIM, or an entry not ours) goes to `backlog` for this task, and the
        entries after it follow it there (the order is the stream's)."""
        epoch = self._host.serving()
        backlog: deque[tuple[str, dict[bytes, bytes]]] = deque()
        wake = asyncio.Event()

        def on_entry(entry_id: str, fields: dict[bytes, bytes]) -> bool:
            if self._host.serving() != epoch:
                return False
            if backlog or not (b"c" in fields and self._claimed_now(entry_id, fields)):
                backlog.append((entry_id, fields))
                wake.set()
            return True

        reader = asyncio.ensure_future(follow(
            self._host.reader(), self._host.keys.actions, self.channel, ACTION_PUSH, "0-0",
            on_entry, timeout=self._command_timeout))
        reader.add_done_callback(lambda _: wake.set())
        try:
            while True:
                while not backlog:
                    if reader.done():
                        reader.result()  # a failed reader fails the session
                        return
                    wake.clear()
                    await wake.wait()
                entry_id, fields = backlog[0]
                if self._host.serving() != epoch:
                    return
                if b"c" in fields:
                    await self._claimed_for(entry_id, fields)
                elif not await self._claim(entry_id, fields):
                    return
                backlog.popleft()
        finally:
            reader.cancel()
            if reader.done() and not reader.cancelled():
                reader.exception()  # retrieved (we were cancelled: nobody else waits for it)

    def _claimed_now(self, entry_id: str, fields: dict[bytes, bytes]) -> bool:
        """An entry ENQUEUE claimed for the ready real of its epoch, if it is us and the entry
        is sound: run it now (the claim is what CLAIM would have written). True when it runs
        (or ran already: read again after a reconnect); False: see `_claimed_for`."""
        gid, reply = text(fields.get(b"g", b"")), text(fields.get(b"r", b""))
        if gid in self._claimed:
            return True
        if not (self._claimed_for_us(fields) and is_gid(gid)
                and self._host.keys.is_reply(reply)):
            return False
        action = self._host.decode(fields.get(b"a", b""), Action)
        if not isinstance(action, Action) or action.action_id != gid:
            return False
        self._claimed[gid] = (reply, entry_id)
        self._host.deliver(action)
        return True

    def _claimed_for_us(self, fields: dict[bytes, bytes]) -> bool:
        epoch = self._host.serving()
        return (epoch is not None and self._host.lease_valid()
                and text(fields.get(b"c", b"")) == self._host.member_id()
                and text(fields.get(b"n", b"")) == str(epoch))

    async def _claimed_for(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """An entry ENQUEUE claimed: `_claimed_now`, or else it is not ours to run, ever (its
        caller's INTERRUPT decides: ActionInterruptedError once that epoch is over), or ours but
        unreadable (answered, so that its caller is not left waiting)."""
        if self._claimed_now(entry_id, fields):
            return
        gid, reply = text(fields.get(b"g", b"")), text(fields.get(b"r", b""))
        epoch = self._host.serving()
        if (epoch is not None and self._claimed_for_us(fields) and is_gid(gid)
                and self._host.keys.is_reply(reply)):
            await self._post(gid, reply, _malformed(gid, epoch), entry_id)
        else:
            await self._host.client().xdel(self._host.keys.actions, entry_id)

    async def _claim(self, entry_id: str, fields: dict[bytes, bytes]) -> bool:
        host = self._host
        gid, reply = text(fields.get(b"g", b"")), text(fields.get(b"r", b""))
        if not is_gid(gid) or not host.keys.is_reply(reply):
            log.warning("dropping a malformed action entry %s", entry_id)
            await host.client().xdel(host.keys.actions, entry_id)
            return True
        epoch = host.serving()
        if epoch is None:
            return False
        self._claiming[gid] = reply  # until we know: a Redis failure may hide the answer
        out, acked = await host.run_acked("claim", [host.keys.act(gid), reply],
                                          [host.member_id(), epoch, gid, entry_id])
        result = text(out)
        if result != "ok" or not await self._claim_acked(acked):
            self._claiming.pop(gid, None)
            # not ours, or stepping down (the caller's INTERRUPT decides: never run);
            # "not_real": it stays in the stream for the next real
            return result not in ("ok", "not_real")
        self._claiming.pop(gid, None)
        action = host.decode(fields.get(b"a", b""), Action)
        if not isinstance(action, Action) or action.action_id != gid:
            # claimed but unreadable: answer it so that the caller is not left waiting
            await self._post(gid, reply, _malformed(gid, epoch))
            return True
        self._claimed[gid] = (reply, entry_id)
        host.deliver(action)
        return True

    async def settle_claims(self, epoch: int) -> None:
        """Back after a Redis failure, still the real at `epoch`: a claim whose answer was lost
        may have taken an action that we never ran, and its caller would wait for a result
        while our lease lasts. Answer each one (it did not run); a claim that never happened
        is refused by RESULT and its entry is still in the stream for us to claim."""
        for gid, reply in list(self._claiming.items()):
            await self._post(gid, reply, ActionResult(gid, epoch, False, None, ErrorInfo(
                "ActionInterruptedError", "the group's Redis failed while the real phone "
                "claimed the action; it did not run, and is not re-run")))
            self._claiming.pop(gid, None)

    async def _claim_acked(self, acked: bool) -> bool:
        """Run a claimed action only once the replicas hold the claim: a promoted replica
        without it would hand the action to the next real, and it would run twice. Waits
        (``WAIT`` again) while our lease is valid; False once it is not."""
        while not acked:
            if not self._host.lease_valid():
                return False
            acked = await self._host.wait_acks("claim")
        return True

    async def post_result(self, frame: ActionResult) -> None:
        """The member's answer to an action we claimed: RESULT (from the worker)."""
        claimed = self._claimed.get(frame.action_id)
        if claimed is None:
            return
        # forgotten once posted, not before: a RESULT that fails with Redis is sent again by
        # the worker after recovery, and meanwhile its entry, read again, is not run again
        await self._post(frame.action_id, claimed[0], frame, claimed[1])
        self._claimed.pop(frame.action_id, None)

    def post_at_once(self, frame: ActionResult) -> bool:
        """RESULT sent at once, from the link's `send` (only when its worker is idle: nothing
        queued before it, so our commands keep the member's order): no worker wake-up on an
        action's path. Its reply is read in `_posted`; False: the worker posts it (not
        claimed, or no connection)."""
        claimed = self._claimed.get(frame.action_id)
        wire = self._host.wire()
        if claimed is None or wire is None or wire.closed:
            return False
        keys = [*self._host.keys.base(), self._host.keys.act(frame.action_id), claimed[0]]
        reply = wire.command("EVALSHA", self._host.script_sha("result"), len(keys), *keys,
                             self._host.member_id(), frame.epoch, frame.action_id,
                             frame.to_json(), claimed[1])
        reply.add_done_callback(functools.partial(self._posted, frame))
        return True

    def _posted(self, frame: ActionResult, reply: asyncio.Future[Any]) -> None:
        if reply.cancelled() or reply.exception() is not None:
            # Redis failed (the session starts over) or lacks the script: as a RESULT that
            # failed in the worker, it is sent again by the worker (EVAL, or after recovery)
            self._host.queue(frame)
            return
        self._claimed.pop(frame.action_id, None)
        _check_posted(frame.action_id, text(reply.result()))

    async def _post(self, gid: str, reply: str, frame: ActionResult, entry_id: str = "") -> None:
        args = [self._host.member_id(), frame.epoch, gid, frame.to_json()]
        _check_posted(gid, text(await self._host.run_script(
            "result", [self._host.keys.act(gid), reply], [*args, entry_id] if entry_id else args)))


def _malformed(gid: str, epoch: int) -> ActionResult:
    return ActionResult(gid, epoch, False, None, ErrorInfo(
        "GroupProtocolError", "the action entry in Redis was malformed"))


def _check_posted(gid: str, result: str) -> None:
    """RESULT's answer: "ok", or why the caller gets ActionInterruptedError instead."""
    if result != "ok":
        log.info("result of %s not delivered (%s): the caller gets ActionInterruptedError",
                 gid, result)
