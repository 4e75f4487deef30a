"""`webphone demo`, run like a newcomer runs it: the installed command, a fresh environment.

The environment has none of the developer's variables: PATH, a HOME and XDG_RUNTIME_DIR of its
own, TMPDIR pointing at a directory of this test (so every path the demo creates, and so every
process it starts, can be recognised afterwards). The demo must tell the whole story (a dummy
answers, the real is killed, a dummy is promoted and registers, the call and its audio survive,
then the media holder is killed and the audio comes back; a second call is served), exit 0,
and leave no process behind: none running, no zombie.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


def _proc_stat(pid: str) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _now_ticks() -> int:
    """Now, in the unit of /proc/PID/stat's start time (clock ticks since boot)."""
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def leftovers(marker: str, since_ticks: int) -> list[str]:
    """Processes started since `since_ticks` that mention `marker` in their command line, or
    that are zombies whose parent is this process (orphans adopted through the subreaper)."""
    found = []
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        stat = _proc_stat(pid)
        if stat is None or stat[2] < since_ticks:
            continue
        state, ppid, _ = stat
        cmdline = _cmdline(pid)
        if marker in cmdline or (state == "Z" and ppid == me):
            found.append(f"{pid} {state} {cmdline or '<zombie>'}")
    return found


@pytest.fixture
def fresh_env() -> Iterator[tuple[dict[str, str], str]]:
    root = tempfile.mkdtemp(prefix="wpdt-")  # short: Unix socket paths are limited
    home, xdg, tmp = (Path(root) / name for name in ("home", "xdg", "tmp"))
    for path in (home, xdg, tmp):
        path.mkdir(mode=0o700)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "XDG_RUNTIME_DIR": str(xdg), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}
    try:
        yield env, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_demo_tells_the_whole_story_and_leaves_no_process(
    fresh_env: tuple[dict[str, str], str],
) -> None:
    env, root = fresh_env
    command = Path(sys.executable).with_name("webphone")  # the installed console script
    assert command.exists(), f"{command} is not installed (pip install -e .)"
    since = _now_ticks() - 1
    started = time.monotonic()
    done = subprocess.run([str(command), "demo"], env=env, cwd=root, capture_output=True,
                          text=True, timeout=50)
    elapsed = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr}"
    assert "Traceback" not in done.stderr and "error" not in done.stderr, done.stderr
    assert elapsed < 45, f"the demo took {elapsed:.1f} s"

    # three processes, one real, one registration
    assert re.search(r"phone A \(pid \d+\) joined as real", out), out
    assert re.search(r"phone B \(pid \d+\) joined as dummy", out), out
    assert re.search(r"phone C \(pid \d+\) joined as dummy", out), out
    assert "the sandbox has 1 registration for 101 for 3 processes" in out
    # the first call rings everywhere and is answered from a dummy
    assert "ringing on A, B, C" in out
    answerer = re.search(r"step 3: phone ([BC]), a DUMMY, answers", out)
    assert answerer, out
    assert re.search(rf"{answerer.group(1)} \(pid \d+\) dummy .*call 1: inbound from 901 "
                     r"answered", out), out
    # the real is killed; a dummy is promoted and the binding is replaced, still one
    assert re.search(r"step 4: kill -9 phone A \(pid \d+\), the real phone", out), out
    promoted = re.search(r"phone ([BC]) was promoted to real and registered (\d+) ms after "
                         r"the kill", out)
    assert promoted, out
    assert f"the sandbox has 1 registration for 101, now {promoted.group(1)}'s" in out
    # the call outlives the real, then its media holder
    assert re.search(r"adopted the call .* tone never stopped at the party: longest gap "
                     r"\d+ ms", out), out
    assert re.search(r"step 4b: kill -9 phone [BC] \(pid \d+\), the call's media holder",
                     out), out
    assert re.search(r"the party hears [A-C]'s tone \(\d+ Hz\) \d+ ms after the kill; "
                     r"gap \d+ ms; no BYE", out), out
    # two of the three were killed: the last one, the real, serves the second call
    last = re.search(r"step 5: a second call; the new real \(([BC])\) serves it", out)
    assert last, out
    assert f"phone {last.group(1)}, the real (the only member left), answers" in out
    assert "ended: the party got the BYE" in out
    assert "all phones exited 0; the sandbox has 0 registration(s) for 101" in out
    assert "the group hub exited by itself (exit 0)" in out
    assert re.search(r"done in \d+\.\d s", out), out
    # every line of the story carries its time
    assert all(re.match(r"\[\s*\d+\.\d\ds\]|\s{9}", line) for line in out.splitlines()[1:]), out

    assert leftovers(root, since) == []
