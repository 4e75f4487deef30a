"""The terminal frontend of `webphone phone`: a prompt with a live status bar (prompt_toolkit).

Optional: `pip install 'webphone[tui]'`. Without prompt_toolkit (or when stdin/stdout are not
terminals) `webphone phone` runs in line mode instead, with the same commands.

The frontend drives a `TuiApp` (declared here: what it reads and calls; `PhoneApp` is one).
Ctrl-C is a key here, not a signal (the terminal is in raw mode): prompt_toolkit raises
KeyboardInterrupt from `prompt_async`, which is caught inside the prompt's own coroutine. Had it
escaped a task, asyncio would re-raise it out of the event loop, and the calls' media would be
torn down by task cancellation instead of by a quit.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ._format import Event, call_text, text_line

__all__ = ["TuiApp", "frontend", "printer", "toolbar_text"]


class _Identity(Protocol):
    @property
    def username(self) -> str: ...

    @property
    def domain(self) -> str: ...


class _Shared(Protocol):
    @property
    def sip_info(self) -> _Identity: ...

    @property
    def role(self) -> str: ...

    @property
    def epoch(self) -> int: ...


class TuiApp(Protocol):
    """What the terminal frontend needs of the phone application."""

    @property
    def shared(self) -> _Shared:
        """Who we are: the extension, the role and the epoch."""

    members: list[dict[str, Any]]
    live_members: bool
    done: asyncio.Event

    def registration(self) -> str:
        """The registration, as the status bar shows it."""

    def calls(self) -> list[Event]:
        """The live calls, with their duration."""

    def command(self, line: str) -> None:
        """Run one command line."""

    def request_quit(self, *, interrupted: bool = False) -> None:
        """Leave the group (`interrupted`: by Ctrl-C)."""


def frontend() -> Callable[[TuiApp], Awaitable[None]] | None:
    """The prompt_toolkit frontend, or None when prompt_toolkit is not installed."""
    try:
        importlib.import_module("prompt_toolkit")
    except ImportError:
        return None
    return _run


def printer(event: Event) -> None:
    """Print one event as a text line above the prompt (stdout is patched while it runs)."""
    print(text_line(event), flush=True)


def toolbar_text(app: TuiApp) -> str:
    """The status bar: who we are, the role, the registration, and every call with its clock."""
    shared = app.shared
    members = len(app.members)
    head = (f" {shared.sip_info.username}@{shared.sip_info.domain} | {shared.role} "
            f"(epoch {shared.epoch}) | registration {app.registration()} | "
            f"{members} member{'s' if members != 1 else ''} | type 'help' ")
    calls = app.calls()
    if not calls:
        return head + "| no calls"
    lines = [head] + [" call " + call_text(c) for c in calls]
    return "\n".join(lines)


_INTERRUPTED, _END = object(), object()


async def _prompt(session: Any) -> object:
    """One line from the prompt; Ctrl-C and Ctrl-D come back as markers, never as exceptions."""
    try:
        line: object = await session.prompt_async("webphone> ")
    except KeyboardInterrupt:
        return _INTERRUPTED
    except EOFError:
        return _END
    return line


async def _run(app: TuiApp) -> None:
    prompt_toolkit: Any = importlib.import_module("prompt_toolkit")
    patch_stdout: Any = importlib.import_module("prompt_toolkit.patch_stdout").patch_stdout
    session = prompt_toolkit.PromptSession(bottom_toolbar=lambda: toolbar_text(app),
                                           refresh_interval=1.0)
    app.live_members = True
    done = asyncio.ensure_future(app.done.wait())
    try:
        with patch_stdout():
            while not app.done.is_set():
                prompt = asyncio.ensure_future(_prompt(session))
                await asyncio.wait({prompt, done}, return_when=asyncio.FIRST_COMPLETED)
                if not prompt.done():
                    if session.app.is_running:
                        session.app.exit(result="")
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await prompt
                    break
                line = prompt.result()
                if line is _INTERRUPTED:  # Ctrl-C: quit (twice: hang up now), exit 130
                    app.request_quit(interrupted=True)
                elif line is _END:  # Ctrl-D
                    app.request_quit()
                elif isinstance(line, str):
                    app.command(line)
    finally:
        done.cancel()
        sys.stdout.flush()
