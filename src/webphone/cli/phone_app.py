"""`PhoneApp`: the state, the commands and the events every `webphone phone` frontend shares.

A `SharedWebPhone` with a command interpreter on one side and a stream of event dicts on the
other (`_format.py` prints them; `phone.py` runs the frontends). Commands (see `HELP`): call N,
answer [CALL], decline [CALL], hangup [CALL], hold [CALL], unhold [CALL], mute [CALL],
unmute [CALL], dtmf DIGITS [CALL], transfer N [CALL], status, members, help, quit. CALL is the
short number shown with each call (1, 2, ...), a Call-ID or its unique prefix; without it the
command takes the one call it can apply to.

Input is bounded where it enters: a command line longer than `MAX_COMMAND_CHARS` is refused
before it is looked at, and `split_words` reads a line in one linear pass (`shlex` is quadratic
on long lines: a 1 MB line held the event loop for 34 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from webphone.errors import WebPhoneError
from webphone.shared.phone import SharedWebPhone

from ._common import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, CliError, UsageError
from ._format import FINAL, Event

__all__ = ["HELP", "MAX_COMMAND_CHARS", "Emit", "PhoneApp", "parse_command", "split_words"]

Emit = Callable[[Event], None]

#: the longest command line taken (the longest real one, a transfer to a sip: URI with a Call-ID,
#: is under 300 characters)
MAX_COMMAND_CHARS = 4096

HELP = """commands (CALL: the call's number as shown, a Call-ID or its prefix; optional when only
one call fits):
  call NUMBER            place a call (from whichever member: it runs on the real phone)
  answer [CALL]          answer a ringing inbound call
  decline [CALL]         decline a ringing inbound call
  hangup [CALL]          end a call (cancels an outbound call that still rings)
  hold [CALL] / unhold [CALL]
  mute [CALL] / unmute [CALL]
  dtmf DIGITS [CALL]     send DTMF (0-9 * # A-D)
  transfer NUMBER [CALL] blind transfer
  status                 role, registration, members and calls
  members                the group's members
  quit                   leave the group (a real hands its registration over; quit again to
                         hang up its calls now instead of waiting for them to end)"""

_ACTIONS = {  # command -> (session method, needs an argument first, which calls it applies to)
    "answer": ("answer", False, "ringing"),
    "decline": ("decline", False, "ringing"),
    "hangup": ("hangup", False, "live"),
    "hold": ("hold", False, "answered"),
    "unhold": ("unhold", False, "answered"),
    "mute": ("mute", False, "answered"),
    "unmute": ("unmute", False, "answered"),
    "dtmf": ("send_dtmf", True, "answered"),
    "transfer": ("transfer", True, "answered"),
}
_ALIASES = {"bye": "hangup", "end": "hangup", "exit": "quit", "q": "quit", "?": "help",
            "resume": "unhold", "reject": "decline"}


class PhoneApp:
    """A `SharedWebPhone` with commands and a stream of events (the frontends print them)."""

    def __init__(self, shared: SharedWebPhone, emit: Emit, *, drain_timeout: float = 10.0) -> None:
        self.shared = shared
        self._emit = emit
        self.drain_timeout = drain_timeout
        self.done = asyncio.Event()
        self.quitting = False
        self.members: list[dict[str, Any]] = []
        self._refs: dict[str, int] = {}
        self._known: dict[str, Event] = {}
        self._final: dict[str, tuple[str, str | None]] = {}
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()  # sessions with our handlers
        self._refresh_handle: asyncio.Handle | None = None
        self._seq = 0
        self._serial = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._commands: set[asyncio.Future[None]] = set()
        self._tick: asyncio.Task[None] | None = None
        self._quit_task: asyncio.Task[None] | None = None
        self._ready = False
        #: the process's exit code once it has left (1 when leaving failed)
        self.exit_code = EXIT_OK
        #: refresh `members` every 2 s (for a live view; line mode refreshes them on demand)
        self.live_members = False
        for name in ("inbound_call", "outbound_call", "call_changed"):
            shared.on(name, self._on_call_event)
        shared.on("role", self._on_role)
        shared.on("registered", self._on_registered)
        shared.on("binding_conflict", self._on_binding_conflict)
        #: contacts of another group that held our registration at the last refresh, if any
        self.binding_conflict: list[str] | None = None
        for name, state in (("unregistered", "unregistered"), ("disconnected", "disconnected"),
                            ("reconnected", "reconnected"),
                            ("registration_failed", "failed")):
            shared.on(name, self._registration(state))

    # -- output ----------------------------------------------------------------------------------

    def emit(self, event: str, **fields: Any) -> None:
        self._emit({"event": event, "t": time.monotonic(), **fields})

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group (raises the real's `RegistrationError`, `TransportError`, ...)."""
        await self.shared.start()
        self._tick = asyncio.create_task(self._tick_loop(), name="webphone-cli-tick")
        member = self.shared.member
        self._ready = True
        self.emit("ready", role=self.shared.role, epoch=self.shared.epoch,
                  member_id=self.shared.member_id, pid=os.getpid(), group=self.shared.group,
                  user=self.shared.sip_info.username, instance_id=self.shared.instance_id,
                  hub_pid=getattr(member, "peer_pid", None))
        self._refresh()
        await self._update_members()

    async def close(self) -> None:
        """Leave the group (drains calls on the real for `drain_timeout`), then stop."""
        self.quitting = True
        if self._tick is not None:
            self._tick.cancel()
        if self.shared.role == "real":
            await self._decline_ringing()
        live = [s for s in self.shared.call_sessions if s.state not in FINAL]
        if self.shared.role == "real" and live:
            self.emit("notice", message=f"waiting up to {self.drain_timeout:g} s for "
                      f"{len(live)} call(s) to end before handing over; quit again to hang up now")
        try:
            await self.shared.dispose(timeout=self.drain_timeout, drain=True)
        except Exception as exc:  # leave anyway; the exit code says it went wrong
            self.exit_code = EXIT_RUNTIME
            self.emit("notice", message=f"leaving the group failed: {type(exc).__name__}: {exc}")
        finally:
            for task in [*self._tasks, *self._commands]:
                if task is not asyncio.current_task():
                    task.cancel()
            self._refresh()
            self.emit("bye")
            self.done.set()

    async def _decline_ringing(self) -> None:
        """A leaving real runs nothing new, so nobody could answer the calls still ringing: they
        are declined now, instead of ringing through the drain and ending, when the registration
        goes, as "caller cancelled"."""
        for session in list(self.shared.call_sessions):
            if session.direction == "inbound" and session.state in ("init", "ringing"):
                with contextlib.suppress(Exception):
                    await session.decline()

    def request_quit(self, *, interrupted: bool = False) -> None:
        """Quit (a second request hangs up the real's calls instead of waiting for them).
        `interrupted` (Ctrl-C, SIGINT): the process then exits 130 once it has left."""
        if interrupted and self.exit_code == EXIT_OK:
            self.exit_code = EXIT_INTERRUPTED
        if self._quit_task is None:
            self._quit_task = asyncio.ensure_future(self.close())
        else:
            self._spawn(self._hang_up_all())

    async def _hang_up_all(self) -> None:
        for session in list(self.shared.call_sessions):
            with contextlib.suppress(Exception):
                await session.hangup()

    async def commands_done(self) -> None:
        """Until every command read so far has its result."""
        while self._commands:
            await asyncio.wait(set(self._commands))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick_loop(self) -> None:
        ticks = 0
        while True:  # a safety net for changes no event announces (mute flags, ended calls)
            await asyncio.sleep(1.0)
            self._refresh()
            ticks += 1
            if self.live_members and ticks % 2 == 0:  # the status bar shows the member count
                await self._update_members()

    # -- events from the phone --------------------------------------------------------------------

    def _on_call_event(self, session: Any) -> None:
        self._watch(session)
        self._schedule_refresh()

    def _watch(self, session: Any) -> None:
        if session in self._watched:
            return
        self._watched.add(session)
        for state in FINAL:
            session.on(state, lambda *args, s=session, st=state: self._ended(s, st, args))
        for name in ("ringing", "answered", "held", "unheld"):
            session.on(name, lambda *_: self._schedule_refresh())

    def _ended(self, session: Any, state: str, args: tuple[Any, ...]) -> None:
        reason = getattr(session, "end_reason", None) or (str(args[0]) if args else None)
        self._final.setdefault(session.call_id, (state, reason))
        self._schedule_refresh()

    def _on_role(self, role: str) -> None:
        if self._ready:  # the first role is in the "ready" event
            self.emit("role", role=role, epoch=self.shared.epoch)
        self._schedule_refresh()
        self._spawn(self._update_members())

    def _on_registered(self, expires: Any) -> None:
        self.emit("registered", expires=expires, instance_id=self.shared.instance_id)

    def _on_binding_conflict(self, contacts: list[str]) -> None:
        self.binding_conflict = list(contacts)
        self.emit("binding_conflict", contacts=self.binding_conflict,
                  message="another group of this extension took the registration (it cannot "
                  "see this one): run every phone of an extension with one hub or one Redis")

    def _registration(self, state: str) -> Callable[..., None]:
        def handler(*args: Any) -> None:
            fields: dict[str, Any] = {"state": state}
            if args:
                fields["reason"] = str(args[0])
            self.emit("registration", **fields)

        return handler

    def _schedule_refresh(self) -> None:
        if self._refresh_handle is None:
            self._refresh_handle = asyncio.get_running_loop().call_soon(self._refresh)

    def _refresh(self) -> None:
        """Emit a "call" event for every call that appeared, changed, or ended."""
        self._refresh_handle = None
        current: dict[str, Any] = {}
        for session in self.shared.call_sessions:
            self._watch(session)
            current[session.call_id] = session
        for call_id, session in current.items():
            info = self._describe(session)
            if call_id in self._final:
                info["state"], info["reason"] = self._final[call_id]
            if self._known.get(call_id) != info:
                self._known[call_id] = info
                self.emit("call", **info)
        for call_id in [c for c in self._known if c not in current]:
            info = dict(self._known.pop(call_id))
            if info["state"] in FINAL:
                continue
            state, reason = self._final.get(call_id, ("disposed", "gone from the group's calls"))
            info.update(state=state, reason=reason)
            self.emit("call", **info)
        for call_id in [c for c in self._final if c not in current and c not in self._known]:
            del self._final[call_id]

    def _describe(self, session: Any) -> Event:
        call_id = session.call_id
        if call_id not in self._refs:
            self._refs[call_id] = len(self._refs) + 1
        return {"ref": self._refs[call_id], "call_id": call_id, "direction": session.direction,
                "state": session.state, "remote": session.remote_number,
                "remote_name": session.remote_name, "held": bool(session.held),
                "muted": bool(session.muted)}

    # -- the view --------------------------------------------------------------------------------

    def calls(self) -> list[Event]:
        """The live calls with their duration (seconds since answered, else since started)."""
        now = time.time()
        out = []
        for session in self.shared.call_sessions:
            if session.state in FINAL:
                continue
            info = self._describe(session)
            since = session.answered_at or session.started_at
            info["duration"] = round(now - since, 1) if since else None
            out.append(info)
        return out

    def registration(self) -> str:
        if self.shared.role == "real":
            client = self.shared.phone.sip_client
            return "registered" if getattr(client, "registered", False) else "not registered"
        real = next((m for m in self.members if m.get("role") == "real"), None)
        return f"held by the real (pid {real['pid']})" if real else "held by the real"

    def status(self) -> Event:
        return {"user": self.shared.sip_info.username, "group": self.shared.group,
                "role": self.shared.role, "epoch": self.shared.epoch, "pid": os.getpid(),
                "member_id": self.shared.member_id, "registration": self.registration(),
                "binding_conflict": self.binding_conflict,
                "members": [{"pid": m.get("pid"), "role": m.get("role"), "self": m.get("self")}
                            for m in self.members],
                "calls": self.calls()}

    async def _update_members(self) -> None:
        with contextlib.suppress(WebPhoneError, TimeoutError, OSError):
            self.members = await self.shared.members(timeout=2.0)

    # -- commands --------------------------------------------------------------------------------

    def command(self, line: str) -> None:
        """Run one command line (in the background; its "result" event says how it went)."""
        line = line.strip()
        if not line or line.startswith("#"):
            return
        self._seq += 1
        task = asyncio.ensure_future(self._run_line(self._seq, line))
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    def refuse_line(self, size: int) -> None:
        """A command line of `size` characters was too long to be read (see `MAX_COMMAND_CHARS`)."""
        self._seq += 1
        self.emit("result", seq=self._seq, line=f"({size} characters)", cmd=None, ok=False,
                  error="UsageError", message=f"a command line of {size} characters is longer "
                  f"than the {MAX_COMMAND_CHARS} taken")

    async def _run_line(self, seq: int, line: str) -> None:
        try:
            name, args = parse_command(line)
        except UsageError as exc:
            self.emit("result", seq=seq, line=_shown(line), cmd=None, ok=False,
                      error="UsageError", message=str(exc))
            return
        try:
            if name in ("status", "members", "help"):
                fields = await self._run(name, args)
            else:
                async with self._serial:  # one action at a time, in input order
                    fields = await self._run(name, args)
        except Exception as exc:
            self.emit("result", seq=seq, line=line, cmd=name, ok=False,
                      error="UsageError" if isinstance(exc, UsageError) else type(exc).__name__,
                      message=" ".join(str(exc).split()))
        else:
            self.emit("result", seq=seq, line=line, cmd=name, ok=True, **fields)

    async def _run(self, name: str, args: list[str]) -> Event:
        if name == "help":
            return {"help": HELP}
        if name == "status":
            await self._update_members()
            return {"status": self.status()}
        if name == "members":
            await self._update_members()
            return {"members": self.members}
        if name == "quit":
            self.request_quit()
            return {}
        if name == "call":
            if len(args) != 1:
                raise UsageError("usage: call NUMBER")
            session = await self.shared.call(args[0])
            self._watch(session)
            self._refresh()
            return {"call_id": session.call_id, "ref": self._refs.get(session.call_id)}
        if name not in _ACTIONS:
            raise UsageError(f"unknown command {name!r} (try: help)")
        method, needs_arg, fits = _ACTIONS[name]
        if needs_arg and not args:
            raise UsageError(f"usage: {name} {'DIGITS' if name == 'dtmf' else 'NUMBER'} [CALL]")
        positional = args[:1] if needs_arg else []
        rest = args[1:] if needs_arg else args
        if len(rest) > 1:
            raise UsageError("too many arguments")
        session = self._pick(rest[0] if rest else None, fits, name)
        await getattr(session, method)(*positional)
        self._refresh()
        return {"call_id": session.call_id, "ref": self._refs.get(session.call_id)}

    def _pick(self, which: str | None, fits: str, command: str) -> Any:
        sessions = [s for s in self.shared.call_sessions if s.state not in FINAL]
        if which is not None:
            if which.isdigit():
                found = [s for s in sessions if self._refs.get(s.call_id) == int(which)]
                if found:
                    return found[0]
            found = [s for s in sessions if s.call_id.startswith(which)]
            if len(found) == 1:
                return found[0]
            raise CliError(f"no single call matches {which!r}"
                           + (f" (calls: {self._list(sessions)})" if sessions else ""))
        if fits == "ringing":
            candidates = [s for s in sessions if s.direction == "inbound"
                          and s.state in ("init", "ringing")]
        elif fits == "answered":
            candidates = [s for s in sessions if s.state == "answered"] or sessions
        else:
            candidates = sessions
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise CliError(f"no call to {command}")
        raise CliError(f"which call? {self._list(candidates)}")

    def _list(self, sessions: list[Any]) -> str:
        for session in sessions:
            self._describe(session)  # gives it a number
        return ", ".join(f"{self._refs[s.call_id]} ({s.direction} {s.remote_number} {s.state})"
                         for s in sessions)


def _shown(line: str) -> str:
    """A command line as a result event repeats it: cut, so that a huge line is not echoed."""
    return line if len(line) <= 200 else line[:200] + f"... ({len(line)} characters)"


def parse_command(line: str) -> tuple[str, list[str]]:
    """The command name (lowercase, aliases resolved) and its arguments; `UsageError` for a line
    that is too long, empty, or has an unterminated quote."""
    if len(line) > MAX_COMMAND_CHARS:
        raise UsageError(f"a command line of {len(line)} characters is longer than the "
                         f"{MAX_COMMAND_CHARS} taken")
    words = split_words(line)
    if not words:
        raise UsageError("empty command (try: help)")
    name = words[0].lower()
    return _ALIASES.get(name, name), words[1:]


def split_words(line: str) -> list[str]:
    """Split like a POSIX shell, in one linear pass: whitespace separates words, '...' quotes
    literally, "..." quotes with backslash escapes, a backslash outside quotes escapes the next
    character. `UsageError` for an unterminated quote or a trailing backslash."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote = ""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                word.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                i += 1
                word.append(line[i])
            else:
                word.append(c)
        elif c.isspace():
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif c in "'\"":
            quote, in_word = c, True
        elif c == "\\":
            if i + 1 == n:
                raise UsageError("the command line ends with a backslash")
            i += 1
            word.append(line[i])
            in_word = True
        else:
            word.append(c)
            in_word = True
        i += 1
    if quote:
        raise UsageError(f"no closing quotation ({quote}) in the command line")
    if in_word:
        words.append("".join(word))
    return words
