"""`webphone phone` on a terminal: the prompt_toolkit frontend (status bar, prompt), in a pty.

Skipped when prompt_toolkit (the `tui` extra) is not installed; `toolbar_text` is tested
without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.group import hub_pids, short_runtime_dir
from support.sandbox_server import SandboxServer

pytestmark = pytest.mark.timeout(60)

_FORWARD = re.compile(rb"\x1b\[(\d*)C")
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0]|\x1b[=>]|\r")


def _plain(screen: bytes) -> bytes:
    """The text of a terminal stream: cursor-forward as spaces, other escapes dropped."""
    screen = _FORWARD.sub(lambda m: b" " * int(m.group(1) or 1), screen)
    return _ANSI.sub(b"", screen)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    srv = SandboxServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _take_the_terminal() -> None:
    """In the child, after its setsid(): stdin (the pty) becomes its controlling terminal, so
    that the pty's line discipline signals it as a shell's terminal signals its foreground job.
    prompt_toolkit prints events above the prompt in cooked mode (`run_in_terminal`), where a
    Ctrl-C is a SIGINT from the terminal, not a key: without a controlling terminal that SIGINT
    went nowhere and the Ctrl-C was lost (the test then timed out under load, where the cooked
    window around each print is longer)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A process on a pseudo-terminal (its controlling terminal, in a session of its own, as
    a shell would run it); `expect` reads the screen stream without escapes."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 140, 0, 0))
        os.set_blocking(self.master, False)
        env = {**os.environ, "TERM": "xterm"}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, preexec_fn=_take_the_terminal)
        os.close(slave)
        self.seen = b""

    def expect(self, pattern: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern.encode())
        while not regex.search(_plain(self.seen)):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} on the terminal: {_plain(self.seen)!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                with contextlib.suppress(BlockingIOError, OSError):
                    data = os.read(self.master, 65536)
                    self.seen += data
                    for _ in range(data.count(b"\x1b[6n")):  # answer cursor position requests
                        os.write(self.master, b"\x1b[20;1R")

    def type(self, text: str) -> None:
        self.seen = b""
        os.write(self.master, text.encode())

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait(10)
        os.close(self.master)
        return code


def test_the_prompt_shows_a_live_status_bar_and_takes_commands(
    server: SandboxServer, tmp_path: Path
) -> None:
    pytest.importorskip("prompt_toolkit")
    runtime_dir = short_runtime_dir()
    term = Terminal([sys.executable, "-m", "webphone", "phone", "--sandbox", server.ws_url,
                     "--user", "106", "--runtime-dir", str(runtime_dir),
                     "--hub-idle-timeout", "0.1"])
    try:
        term.expect(r"webphone> ")
        term.expect(r"106@sip\.test \| real \(epoch \d+\) \| registration registered")
        term.type("status\r")
        term.expect(r"106: real \(epoch \d+\), registration registered, 1 member")
        term.type("call 999\r")  # nobody is registered as 999: the call fails
        term.expect(r"call 1: outbound to 999: failed")
        term.expect(r"\| no calls")
        term.type("quit\r")
        term.expect(r"left the group", 10)
        assert term.proc.wait(10) == 0
    finally:
        term.close()
        for pid in hub_pids(runtime_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        shutil.rmtree(runtime_dir, ignore_errors=True)
    assert server.bindings("106") == []


def test_toolbar_text_without_prompt_toolkit() -> None:
    from types import SimpleNamespace

    from webphone.cli._tui import toolbar_text

    app = SimpleNamespace(
        shared=SimpleNamespace(sip_info=SimpleNamespace(username="101", domain="d"),
                               role="dummy", epoch=3),
        members=[{}, {}], registration=lambda: "held by the real (pid 7)",
        calls=lambda: [{"ref": 1, "direction": "outbound", "remote": "900", "state": "answered",
                        "duration": 3.0}])
    text = toolbar_text(app)  # type: ignore[arg-type]
    assert text.splitlines() == [
        " 101@d | dummy (epoch 3) | registration held by the real (pid 7) | 2 members | "
        "type 'help' ",
        " call 1: outbound to 900: answered 00:03"]


def test_ctrl_c_during_a_call_leaves_and_exits_130() -> None:
    """Ctrl-C at the prompt with a call up: the phone drains, hangs up and exits 130 (before,
    KeyboardInterrupt escaped the event loop and the process hung until SIGKILL)."""
    pytest.importorskip("prompt_toolkit")
    server = SandboxServer(parties=True)
    server.start()
    runtime_dir = short_runtime_dir()
    term = Terminal([sys.executable, "-m", "webphone", "phone", "--sandbox", server.ws_url,
                     "--user", "107", "--runtime-dir", str(runtime_dir),
                     "--hub-idle-timeout", "0.1", "--drain-timeout", "0.5"])
    try:
        term.expect(r"registration registered")
        term.type("call 900\r")  # the echo party answers
        term.expect(r"call 1: outbound to 900: answered")
        term.type("\x03")
        term.expect(r"left the group", 15)
        assert term.proc.wait(10) == 130
    finally:
        term.close()
        for pid in hub_pids(runtime_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        shutil.rmtree(runtime_dir, ignore_errors=True)
        bindings = server.bindings("107")
        server.stop()
    assert bindings == []
