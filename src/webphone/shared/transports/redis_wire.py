"""The link's hot path to Redis, spoken directly: RESP over an `asyncio.Protocol`.

Why not redis-py here. A redis-py asyncio command costs ~95 us of CPU on this kind of machine
besides the server's work (PING: 110 us per command against 15 us for the same PING written and
parsed here, both with hiredis): the connection pool's lock and checkout, argument encoding in
Python, the per-command response callbacks, an ``asyncio.timeout`` and a StreamReader await per
reply. An action round trip over Redis takes four such steps (the caller's ENQUEUE, the real's
read of the pushed entry, its RESULT, the caller's read of the pushed result), so they were most
of its cost. Here a command is one `hiredis.pack_command` and one ``transport.write``; a reply
is parsed by `hiredis.Reader` (C) in ``data_received`` and resolves the oldest waiting future
(Redis answers a connection's commands in order); a pushed message is handed to a callback
from ``data_received`` itself, without a task wake-up of its own.

Connecting is left to redis-py: `open_wire` lets a redis-py connection of the link's client
connect (TCP, TLS, Unix socket, AUTH with an ACL user, SELECT, the same URL and timeouts as
the link's other connections) and then takes its transport over. The commands the link sends
through redis-py (INFO, XREAD of a backlog, the plane's reads) stay there: they are not hot.

Commands of several tasks share one connection without a lock (redis-py's single-connection
client takes one per command): they are pipelined, and a cancelled waiter only drops its reply.
Timeouts: a connection whose oldest command got no answer within its `timeout` is closed, as a
redis-py socket timeout closes its connection; every waiting command then fails with
`redis.exceptions.TimeoutError`, and a lost connection fails them with ``ConnectionError``.

`follow` is the push reader of a stream (the real's actions, each link's inbox) built on these
connections: see its docstring.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

try:
    import hiredis
except ImportError as exc:  # the redis extra brings both
    raise ImportError(f"the Redis transport needs hiredis besides redis ({exc}): "
                      "pip install 'webphone[redis]'") from exc

from webphone.shared.transports.redis_scripts import entry_key, push_entry, streams, text

__all__ = ["REDIS_ERRORS", "EntryHandler", "PushHandler", "Subscription", "Wire", "follow",
           "open_wire", "subscribe"]

log = logging.getLogger("webphone.shared.redis")

#: what a broken, slow or restarted Redis raises through redis-py (and a `Wire`)
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis_errors.RedisError, OSError, TimeoutError)
#: called with (channel, data) for each pub/sub message a subscribed `Wire` receives
PushHandler = Callable[[bytes, bytes], None]


def _error(reply: hiredis.ReplyError) -> redis_errors.ResponseError:
    """A Redis error reply as redis-py raises it (the link already handles those)."""
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return redis_errors.NoScriptError(message)
    return redis_errors.ResponseError(message)


class Wire(asyncio.Protocol):
    """One Redis connection: commands answered in order, and pub/sub messages if subscribed.

    `command(*args)` returns a future of the reply (bytes, int, list, as redis-py gives them
    with ``decode_responses=False``; an error reply raises ``ResponseError``). A connection
    that subscribed gets each message through `on_push`. `on_lost(exc)` is called once when
    the connection is lost or closed by a timeout (not by `close`)."""

    def __init__(self, *, timeout: float | None, on_push: PushHandler | None = None,
                 on_lost: Callable[[BaseException], None] | None = None) -> None:
        self._timeout = timeout
        self.on_push = on_push
        self.on_lost = on_lost
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._keep: object = None  # what must outlive us (see `open_wire`)
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._failure: BaseException | None = None

    @property
    def closed(self) -> bool:
        """True once the connection is lost or closed."""
        return self._transport is None or self._failure is not None

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Send one command; its reply comes in the future (see the class docstring)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._failure is not None or self._transport is None:
            future.set_exception(redis_errors.ConnectionError(
                f"the connection to Redis is closed ({self._failure})"))
            return future
        self._transport.write(hiredis.pack_command(args))
        deadline = self._loop.time() + self._timeout if self._timeout is not None else 0.0
        self._waiting.append((future, deadline))
        if self._timer is None and self._timeout is not None:
            self._timer = self._loop.call_at(deadline, self._check_timeout)
        return future

    def close(self) -> None:
        """Close the connection; commands still waiting fail with ``ConnectionError``."""
        self.on_lost = None
        self._fail(redis_errors.ConnectionError("the connection to Redis was closed"))

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if (self.on_push is not None and isinstance(reply, list) and len(reply) == 3
                    and reply[0] == b"message"):
                self.on_push(reply[1], reply[2])
            elif self._waiting:
                future, _ = self._waiting.popleft()
                if future.done():  # its caller gave up (cancelled)
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_error(reply))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis_errors.ConnectionError(
            f"the connection to Redis was lost{f': {exc}' if exc else ''}"))

    # -- internals --------------------------------------------------------------------------

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if deadline > self._loop.time():
            self._timer = self._loop.call_at(deadline, self._check_timeout)
            return
        self._fail(redis_errors.TimeoutError(
            f"Redis did not answer within {self._timeout} s"))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a waiter may have gone (no "never retrieved")
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(exc)


async def open_wire(client: Redis, *, timeout: float | None,
                    on_push: PushHandler | None = None,
                    on_lost: Callable[[BaseException], None] | None = None) -> Wire:
    """A `Wire` on a new connection made as `client`'s pool makes them (its URL, TLS, AUTH,
    database, connect timeout): redis-py connects and says hello, then the wire takes its
    transport over. Its StreamWriter is kept with the wire (a collected StreamWriter closes its
    transport) and detached from the redis-py connection, which therefore never touches it."""
    pool = client.connection_pool
    conn = pool.connection_class(**pool.connection_kwargs)
    await conn.connect()  # type: ignore[no-untyped-call]
    writer = conn._writer
    if writer is None or conn._reader is None:  # pragma: no cover - redis-py changed
        raise redis_errors.ConnectionError("redis-py connected without a stream writer")
    conn._writer = conn._reader = None
    transport = writer.transport
    wire = Wire(timeout=timeout, on_push=on_push, on_lost=on_lost)
    wire._keep = writer
    if transport.is_closing():
        raise redis_errors.ConnectionError("the connection to Redis closed while opening")
    transport.set_protocol(wire)
    wire.connection_made(transport)
    return wire


class Subscription:
    """The messages of one subscribed channel, in order, for one consumer: kept until it
    `handle`s them, then handed to it as they come (from ``data_received``: no wake-up)."""

    def __init__(self) -> None:
        self._messages: deque[bytes] = deque()
        self._handler: Callable[[bytes], None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.wire: Wire | None = None

    def push(self, _channel: bytes, data: bytes) -> None:
        """A `PushHandler`: to the consumer's handler, or kept until it has one."""
        if self._handler is None:
            self._messages.append(data)
            return
        try:
            self._handler(data)
        except Exception as exc:  # the consumer's bug: it ends `handle`, not data_received
            self.lost(exc)

    def lost(self, exc: BaseException) -> None:
        """The connection is gone (or the handler failed): `handle` raises `exc`."""
        self._error = exc
        self._handler = None
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    async def handle(self, handler: Callable[[bytes], None]) -> None:
        """Call `handler` with every message, those kept first, until the connection is lost
        (raises why) or `stop` is called (returns)."""
        self._done = asyncio.get_running_loop().create_future()
        while self._messages and self._error is None:
            handler(self._messages.popleft())
        if self._error is not None:
            raise self._error
        self._handler = handler
        try:
            await self._done
        finally:
            self._handler = None

    def stop(self) -> None:
        """Make `handle` return (after the message being handled)."""
        self._handler = None
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def close(self) -> None:
        """Close the connection."""
        self._handler = None
        if self.wire is not None:
            self.wire.close()


async def subscribe(client: Redis, channel: str, timeout: float | None) -> Subscription:
    """A new connection (see `open_wire`) subscribed to `channel`: it has answered SUBSCRIBE
    (`timeout`: how long that may take) when this returns, so every message published from now
    on is in the subscription."""
    sub = Subscription()
    sub.wire = await open_wire(client, timeout=None, on_push=sub.push, on_lost=sub.lost)
    try:
        await asyncio.wait_for(sub.wire.command("SUBSCRIBE", channel), timeout)
    except BaseException:
        sub.close()
        raise
    return sub


#: called with each entry (id, fields) of a followed stream; False: stop following
EntryHandler = Callable[[str, dict[bytes, bytes]], bool]


async def follow(blk: Redis, stream: str, channel: str, names: tuple[bytes, ...], after: str,
                 on_entry: EntryHandler, *, timeout: float) -> None:
    """Call `on_entry` with every entry of `stream` after `after`, in order, each once, as it
    is written, until it returns False; raises when Redis fails.

    The scripts that XADD to the stream also PUBLISH the entry on `channel` (`push_entry`), so
    a reader is woken with the entry itself, on a connection of its own that only waits.
    Subscribed first, then the entries the stream already holds (written while nobody listened;
    XREAD over `blk`, not the command connection: renewals use that), then the pushes, each
    handed to `on_entry` as it is parsed: a push of an entry already read is skipped (stream
    ids only grow, and a channel delivers in the order Redis published).

    A broken push connection (Redis dropped it: ``CLIENT KILL TYPE pubsub``, a proxy's idle
    timeout) is subscribed again at once and the stream read from the last entry seen: the
    pushes lost meanwhile are in the stream, nothing is read twice, and the reader's session
    goes on. Only when that fails too (Redis itself is away) does the error end the reader."""
    last = entry_key(after)
    broken: BaseException | None = None
    stopped = False

    def on_push(data: bytes) -> None:
        nonlocal after, last, stopped
        entry = push_entry(data, names)
        if entry is None:
            log.warning("ignoring a malformed push on %s", channel)
        elif entry_key(entry[0]) > last and not stopped:
            after, last = entry[0], entry_key(entry[0])
            if not on_entry(*entry):
                stopped = True
                sub.stop()

    while True:
        sub = Subscription()
        try:
            sub = await subscribe(blk, channel, timeout)
            while not stopped:
                resp: Any = await blk.xread({stream: after}, count=64)
                batch = [(text(i), f) for _stream, entries in streams(resp) for i, f in entries]
                for entry_id, fields in batch:
                    after, last = entry_id, entry_key(entry_id)
                    if not on_entry(entry_id, fields):
                        stopped = True
                        break
                if len(batch) < 64:
                    break
            broken = None
            if not stopped:
                await sub.handle(on_push)
            return
        except REDIS_ERRORS as exc:
            if broken is not None:
                raise
            broken = exc
            log.info("the push connection of %s broke (%s: %s); subscribing again", channel,
                     type(exc).__name__, exc)
        finally:
            sub.close()
