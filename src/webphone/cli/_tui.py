"""The terminal frontend of `webphone phone`: a prompt with a live status bar (prompt_toolkit).

Optional: `pip install 'webphone[tui]'`. Without prompt_toolkit (or when stdin/stdout are not
terminals) `webphone phone` runs in line mode instead, with the same commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .phone import Event, PhoneApp

__all__ = ["frontend", "printer", "toolbar_text"]


def frontend() -> Callable[[PhoneApp], Awaitable[None]] | None:
    """The prompt_toolkit frontend, or None when prompt_toolkit is not installed."""
    try:
        importlib.import_module("prompt_toolkit")
    except ImportError:
        return None
    return _run


def printer(event: Event) -> None:
    """Print one event as a text line above the prompt (stdout is patched while it runs)."""
    from .phone import text_line

    print(text_line(event), flush=True)


def toolbar_text(app: PhoneApp) -> str:
    """The status bar: who we are, the role, the registration, and every call with its clock."""
    from .phone import _call_text

    shared = app.shared
    members = len(app.members)
    head = (f" {shared.sip_info.username}@{shared.sip_info.domain} | {shared.role} "
            f"(epoch {shared.epoch}) | registration {app.registration()} | "
            f"{members} member{'s' if members != 1 else ''} | type 'help' ")
    calls = app.calls()
    if not calls:
        return head + "| no calls"
    lines = [head] + [" call " + _call_text(c) for c in calls]
    return "\n".join(lines)


async def _run(app: PhoneApp) -> None:
    prompt_toolkit: Any = importlib.import_module("prompt_toolkit")
    patch_stdout: Any = importlib.import_module("prompt_toolkit.patch_stdout").patch_stdout
    session = prompt_toolkit.PromptSession(bottom_toolbar=lambda: toolbar_text(app),
                                           refresh_interval=1.0)
    app.live_members = True
    done = asyncio.ensure_future(app.done.wait())
    try:
        with patch_stdout():
            while not app.done.is_set():
                prompt = asyncio.ensure_future(session.prompt_async("webphone> "))
                await asyncio.wait({prompt, done}, return_when=asyncio.FIRST_COMPLETED)
                if not prompt.done():
                    if session.app.is_running:
                        session.app.exit(result="")
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await prompt
                    break
                try:
                    line = prompt.result()
                except KeyboardInterrupt:  # Ctrl-C: quit (twice: hang up now)
                    app.request_quit()
                    continue
                except EOFError:  # Ctrl-D
                    app.request_quit()
                    continue
                app.command(line)
    finally:
        done.cancel()
        sys.stdout.flush()
