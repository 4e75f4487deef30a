"""`webphone phone`: a phone for a terminal that joins its extension's group.

Every terminal (or script) running `webphone phone` for one extension is a member of one
`SharedWebPhone` group: one of them holds the registration (the *real* phone), the others are
*dummies* that show the same calls and whose commands run on the real. Three frontends share
`PhoneApp` (the state, the commands, the events):

* a prompt with a live status bar (prompt_toolkit, when stdin and stdout are terminals and the
  `tui` extra is installed);
* line mode (stdin is not a terminal, or `--plain`): one command per input line, one text line
  per event;
* `--json`: the same, one JSON object per output line (what scripts, tests and `webphone demo`
  read). Every object has "event" and "t" (`time.monotonic()`, one clock for the host).

Commands (see `HELP`): call N, answer [CALL], decline [CALL], hangup [CALL], hold [CALL],
unhold [CALL], mute [CALL], unmute [CALL], dtmf DIGITS [CALL], transfer N [CALL], status,
members, help, quit. CALL is the short number shown with each call (1, 2, ...), a Call-ID or
its unique prefix; without it the command takes the one call it can apply to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from webphone.errors import WebPhoneError
from webphone.shared.phone import SharedWebPhone
from webphone.shared.transports.base import HubOptions

from ._common import (
    EXIT_OK,
    EXIT_RUNTIME,
    CliError,
    UsageError,
    error_line,
    exit_code_for,
    is_loopback_server,
    resolve_sip_info,
    setup_logging,
)

__all__ = ["HELP", "PhoneApp", "run"]

Event = dict[str, Any]
Emit = Callable[[Event], None]

FINAL = ("failed", "disposed")

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
        live = [s for s in self.shared.call_sessions if s.state not in FINAL]
        if self.shared.role == "real" and live:
            self.emit("notice", message=f"waiting up to {self.drain_timeout:g} s for "
                      f"{len(live)} call(s) to end before handing over; quit again to hang up now")
        try:
            await self.shared.dispose(timeout=self.drain_timeout)
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

    def request_quit(self) -> None:
        """Quit (a second request hangs up the real's calls instead of waiting for them)."""
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

    async def _run_line(self, seq: int, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.emit("result", seq=seq, line=line, cmd=None, ok=False, error="UsageError",
                      message=str(exc))
            return
        name = _ALIASES.get(words[0].lower(), words[0].lower())
        try:
            if name in ("status", "members", "help"):
                fields = await self._run(name, words[1:])
            else:
                async with self._serial:  # one action at a time, in input order
                    fields = await self._run(name, words[1:])
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
            raise UsageError(f"{name}: too many arguments")
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
            raise CliError(f"{command}: no single call matches {which!r}"
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
            raise CliError(f"{command}: no call to {command}")
        raise CliError(f"{command}: which call? {self._list(candidates)}")

    def _list(self, sessions: list[Any]) -> str:
        for session in sessions:
            self._describe(session)  # gives it a number
        return ", ".join(f"{self._refs[s.call_id]} ({s.direction} {s.remote_number} {s.state})"
                         for s in sessions)


# -- output formats ---------------------------------------------------------------------------


def json_line(event: Event) -> str:
    return json.dumps(event, default=str)


def text_line(event: Event) -> str:
    """One human line per event."""
    name = event.get("event")
    if name == "ready":
        role = event["role"]
        what = "the real phone (holds the registration)" if role == "real" else \
            "a dummy (the real phone holds the registration; commands run there)"
        return (f"joined group {event['group']} as {what}; pid {event['pid']}, "
                f"member {event['member_id']}")
    if name == "role":
        return f"role: now {event['role']} (epoch {event['epoch']})"
    if name == "registered":
        return f"registered (expires in {event['expires']} s)"
    if name == "registration":
        reason = f": {event['reason']}" if event.get("reason") else ""
        return f"registration {event['state']}{reason}"
    if name == "call":
        return "call " + _call_text(event)
    if name == "result":
        return _result_text(event)
    if name == "notice":
        return str(event["message"])
    if name == "bye":
        return "left the group"
    if name == "fatal":
        return f"error: {event.get('error')}: {event.get('message')}"
    return json_line(event)


def _call_text(call: Event) -> str:
    who = call.get("remote") or "?"
    if call.get("remote_name"):
        who += f" ({call['remote_name']})"
    direction = "from" if call.get("direction") == "inbound" else "to"
    flags = "".join(f" [{f}]" for f in ("held", "muted") if call.get(f))
    text = f"{call['ref']}: {call.get('direction')} {direction} {who}: {call['state']}{flags}"
    if call.get("duration") is not None:
        text += f" {_clock(call['duration'])}"
    if call.get("reason") and call["state"] in FINAL:
        text += f" ({call['reason']})"
    return text


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def status_text(status: Event) -> str:
    members = status.get("members") or []
    real = sum(1 for m in members if m.get("role") == "real")
    text = (f"{status['user']}: {status['role']} (epoch {status['epoch']}), "
            f"registration {status['registration']}, {len(members)} member(s), {real} real")
    calls = status.get("calls") or []
    text += "; calls: " + ("; ".join(_call_text(c) for c in calls) if calls else "none")
    return text


def _result_text(event: Event) -> str:
    cmd = event.get("cmd") or event.get("line")
    if not event.get("ok"):
        return f"error: {cmd}: {event.get('message')}"
    if "help" in event:
        return str(event["help"])
    if "status" in event:
        return status_text(event["status"])
    if "members" in event:
        return "members: " + ", ".join(
            f"pid {m.get('pid')} {m.get('role')}{' (this one)' if m.get('self') else ''}"
            for m in event["members"])
    ref = f" (call {event['ref']})" if event.get("ref") else ""
    return f"ok: {cmd}{ref}"


# -- running it --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_sip_info_options, hub_arg

    add_sip_info_options(parser)
    parser.add_argument("--group", metavar="NAME",
                        help="group name (default: authorizationId@domain); every phone of a "
                        "group shares one registration")
    parser.add_argument("--hub", metavar="local|redis://...", default="local", type=hub_arg,
                        help="where the group meets: \"local\" (a hub process per group on "
                        "this host, the default) or "
                        "a Redis URL such as redis://10.0.0.5:6379/0, "
                        "redis+sentinel://s1:26379,s2:26379/SERVICE or "
                        "redis+cluster://n1:6379,n2:6379 (groups across hosts)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="one JSON object per output line (for scripts)")
    out.add_argument("--plain", action="store_true",
                     help="line mode even on a terminal (no status bar)")
    parser.add_argument("--debug", action="store_true",
                        help="log every SIP message sent and received (stderr), tracebacks")
    parser.add_argument("--drain-timeout", type=float, default=10.0, metavar="S",
                        help="on quit, how long a real phone waits for its calls to end before "
                        "hanging them up and handing over (default %(default)s)")
    parser.add_argument("--loopback-media", action="store_true",
                        help="ICE on 127.0.0.1 only (automatic when the server is on loopback)")
    advanced = parser.add_argument_group("group internals (tests and demos)")
    advanced.add_argument("--runtime-dir", metavar="DIR",
                          help="private directory of the group hub's socket (default: "
                          "$WEBPHONE_RUNTIME_DIR, $XDG_RUNTIME_DIR/webphone or /tmp/webphone-UID)")
    advanced.add_argument("--hub-idle-timeout", type=float, default=10.0, metavar="S",
                          help="a hub started by this phone exits S seconds after its last "
                          "member left (default %(default)s)")


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Read stdin lines in a thread (works for pipes, files and terminals alike)."""

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError, RuntimeError):
            pass
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="webphone-stdin", daemon=True).start()


async def _line_mode(app: PhoneApp) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _stdin_reader(loop, queue)
    done = asyncio.ensure_future(app.done.wait())
    try:
        while not app.done.is_set():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            line = getter.result()
            if line is None:  # EOF: leave like `quit`, once the commands before it are done
                await app.commands_done()
                if not app.quitting:
                    app.request_quit()
                await app.done.wait()
                break
            app.command(line)
    finally:
        done.cancel()


def _printer(json_mode: bool) -> Emit:
    def emit(event: Event) -> None:
        line = json_line(event) if json_mode else text_line(event)
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away: keep running until stdin closes or a signal

    return emit


async def _main(args: argparse.Namespace, emit: Emit, tui: Any) -> int:
    sip_info = await resolve_sip_info(args)
    shared = SharedWebPhone(
        sip_info, group=args.group, hub=args.hub, runtime_dir=args.runtime_dir, debug=args.debug,
        hub_options=HubOptions(idle_timeout=args.hub_idle_timeout),
        loopback_media=args.loopback_media or is_loopback_server(sip_info),
    )
    app = PhoneApp(shared, emit, drain_timeout=args.drain_timeout)
    try:
        await app.start()
    except Exception as exc:
        if args.json:
            emit({"event": "fatal", "t": time.monotonic(), "error": type(exc).__name__,
                  "message": " ".join(str(exc).split()), "exit_code": exit_code_for(exc)})
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, app.request_quit)
    try:
        if tui is not None:
            await tui(app)
        else:
            await _line_mode(app)
        if not app.done.is_set():
            app.request_quit()
            await app.done.wait()
    finally:
        if not app.done.is_set():
            await app.close()
    return app.exit_code


def run(args: argparse.Namespace) -> int:
    """`webphone phone` with parsed arguments; returns the exit code."""
    tui = None
    if not (args.json or args.plain) and sys.stdin.isatty() and sys.stdout.isatty():
        from . import _tui

        tui = _tui.frontend()
    if tui is not None:
        from . import _tui

        emit: Emit = _tui.printer
        setup_logging(args.debug, stream=sys.stdout)
    else:
        emit = _printer(args.json)
        setup_logging(args.debug)
    try:
        return asyncio.run(_main(args, emit, tui))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(error_line("webphone phone", exc), file=sys.stderr)
        return exit_code_for(exc)
