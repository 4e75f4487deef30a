"""`webphone phone`: a phone for a terminal that joins its extension's group.

Every terminal (or script) running `webphone phone` for one extension is a member of one
`SharedWebPhone` group: one of them holds the registration (the *real* phone), the others are
*dummies* that show the same calls and whose commands run on the real. Three frontends share
`PhoneApp` (`phone_app.py`: the state, the commands, the events):

* a prompt with a live status bar (`_tui.py`, prompt_toolkit, when stdin and stdout are
  terminals and the `tui` extra is installed);
* line mode (stdin is not a terminal, or `--plain`): one command per input line, one text line
  per event (`_format.py`);
* `--json`: the same, one JSON object per output line (what scripts, tests and `webphone demo`
  read). Every object has "event" and "t" (`time.monotonic()`, one clock for the host).

This module holds the options and the process around them: stdin read in a thread (a line
longer than `MAX_COMMAND_CHARS` is skipped there, never buffered whole), and the signals:
SIGINT is Ctrl-C (leave, exit 130), SIGTERM and SIGHUP (the terminal went away) leave the same
way as `quit` (drain or hand over, exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TextIO

from webphone.media.realtime import tune_for_realtime
from webphone.shared.phone import SharedWebPhone
from webphone.shared.tone_probe import TonePlayer
from webphone.shared.transports.base import HubOptions

from ._common import (
    EXIT_INTERRUPTED,
    error_line,
    exit_code_for,
    hub_arg,
    is_loopback_server,
    resolve_sip_info,
    setup_logging,
)
from ._format import Event, json_line, status_text, text_line
from .phone_app import HELP, MAX_COMMAND_CHARS, Emit, PhoneApp

if TYPE_CHECKING:
    from ._tui import TuiApp

Frontend = Callable[["TuiApp"], Awaitable[None]]

__all__ = ["HELP", "PhoneApp", "add_arguments", "run", "status_text", "text_line"]

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `webphone phone`."""
    from ._common import add_sip_info_options

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
    advanced.add_argument("--tone", type=float, metavar="HZ",
                          help="play HZ into every call whose audio this process holds and "
                          "report what it hears (--json events holding/heard)")


def _stdin_reader(loop: asyncio.AbstractEventLoop,
                  queue: asyncio.Queue[str | int | None]) -> None:
    """Read stdin lines in a thread (works for pipes, files and terminals alike)."""

    def read() -> None:
        try:
            while (line := read_bounded_line(sys.stdin, MAX_COMMAND_CHARS)) != "":
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError, RuntimeError):
            pass
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="webphone-stdin", daemon=True).start()


def read_bounded_line(stream: TextIO, limit: int) -> str | int:
    """The next line of `stream` ("" at EOF). A line longer than `limit` characters is read to
    its end in pieces of `limit` and dropped: its length comes back instead."""
    line = stream.readline(limit + 1)
    if len(line) <= limit or (len(line) == limit + 1 and line.endswith("\n")):
        return line
    size = len(line)
    while (piece := stream.readline(limit)) and not piece.endswith("\n"):
        size += len(piece)
    return size + len(piece.rstrip("\n"))


async def _line_mode(app: PhoneApp) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | int | None] = asyncio.Queue()
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
            if isinstance(line, int):
                app.refuse_line(line)
            else:
                app.command(line)
    finally:
        done.cancel()


def _printer(json_mode: bool) -> Emit:
    """Print each event on stdout as a text line or a JSON object."""
    def emit(event: Event) -> None:
        line = json_line(event) if json_mode else text_line(event)
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away: keep running until stdin closes or a signal

    return emit


async def _main(args: argparse.Namespace, emit: Emit, tui: Frontend | None) -> int:
    sip_info = await resolve_sip_info(args)
    shared = SharedWebPhone(
        sip_info, group=args.group, hub=args.hub, runtime_dir=args.runtime_dir, debug=args.debug,
        hub_options=HubOptions(idle_timeout=args.hub_idle_timeout),
        loopback_media=args.loopback_media or is_loopback_server(sip_info),
    )
    app = PhoneApp(shared, emit, drain_timeout=args.drain_timeout)
    if args.tone is not None:
        TonePlayer(args.tone, (440.0,), lambda event, **fields: app.emit(event, **fields)
                   ).attach(shared)
    signals = _Signals(app)
    try:
        await signals.starting(app.start())
    except Exception as exc:
        if args.json:
            emit({"event": "fatal", "t": time.monotonic(), "error": type(exc).__name__,
                  "message": " ".join(str(exc).split()), "exit_code": exit_code_for(exc)})
        raise
    # this program carries calls: full collections of everything alive now would pause their
    # 20 ms audio frames (webphone.media.realtime says why and what it costs); again once a
    # real has loaded aiortc (~21 000 objects of its modules, never garbage)
    tune_for_realtime()
    shared.on("media_ready", _retune)
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


def _retune() -> None:
    """The real loaded aiortc (~21 000 objects of its modules): freeze them too."""
    tune_for_realtime()


class _Signals:
    """SIGINT (Ctrl-C: leave, exit 130), SIGTERM and SIGHUP (the terminal went away: leave as
    on quit, never as a crash). Installed before the phone joins: a signal while it joins is
    acted on once it has joined (a second one abandons the join, as KeyboardInterrupt)."""

    def __init__(self, app: PhoneApp) -> None:
        self.app = app
        self._start: asyncio.Future[None] | None = None
        self._early: list[bool] = []
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._received, True)
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, self._received, False)

    async def starting(self, start: Awaitable[None]) -> None:
        """Run the join; then act on a signal that came meanwhile."""
        self._start = asyncio.ensure_future(start)
        try:
            await self._start
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            self._start = None
        for interrupted in self._early:
            self.app.request_quit(interrupted=interrupted)

    def _received(self, interrupted: bool) -> None:
        if self._start is None:
            self.app.request_quit(interrupted=interrupted)
        elif self._early:
            self._start.cancel()
        else:
            self._early.append(interrupted)


def run(args: argparse.Namespace) -> int:
    """`webphone phone` with parsed arguments; returns the exit code."""
    tui: Frontend | None = None
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
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(error_line("webphone phone", exc), file=sys.stderr)
        return exit_code_for(exc)
