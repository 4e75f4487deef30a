"""The documentation is executable: the python blocks of README.md and docs/*.md run against the
sandbox, and docs/api.md lists exactly the public methods the classes have.

How a block is marked (the line right before its ```python fence):

    <!-- test: -->                                  run it as it is
    <!-- test: call=tone -->                        ... and once its phone is registered, the
                                                    sandbox's tone party calls that user
    <!-- test: replace="OLD=>NEW" -->               replace text first (repeatable), e.g. make
                                                    `asyncio.sleep(3600)` short
    <!-- test: skip="why" -->                       not run (a fragment); says why

Every python block of README.md must be marked; in docs/*.md only marked blocks run. A block runs
as a script (`python block.py`, 30 s at most, exit 0 expected) in a fresh directory holding
`sip-info.json` (a sandbox user), `sip-info-2.json` (another user) and `greeting.wav` (1 s of
16-bit mono audio), with WEBPHONE_RUNTIME_DIR set to a private directory whose group hubs are
stopped afterwards. Each block gets users of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import sys
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.group import hub_pids, short_runtime_dir
from support.wait import wait_until
from webphone.media import sine_wave
from webphone.sandbox import Sandbox

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
_MARK = re.compile(r"^<!--\s*test:(?P<spec>.*?)-->\s*$")
_users = itertools.count(201)


@dataclass
class Block:
    path: Path
    line: int
    code: str
    call: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)
    skip: str | None = None
    marked: bool = False

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            block = Block(path, start + 1, "\n".join(lines[start + 1:j]) + "\n")
            mark = _MARK.match(lines[start - 1].strip()) if start else None
            if mark:
                block.marked = True
                for word in shlex.split(mark.group("spec")):
                    key, _, value = word.partition("=")
                    if key == "call":
                        block.call = value
                    elif key == "replace":
                        old, sep, new = value.partition("=>")
                        assert sep, f"{block.id}: replace needs OLD=>NEW"
                        block.replace.append((old, new))
                    elif key == "skip":
                        block.skip = value or "skipped"
                    else:
                        raise AssertionError(f"{block.id}: unknown test option {word!r}")
            blocks.append(block)
            i = j
        i += 1
    return blocks


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ALL_BLOCKS = [b for doc in DOCS for b in python_blocks(doc)]
RUNNABLE = [b for b in ALL_BLOCKS if b.marked and b.skip is None]


def test_readme_keeps_the_two_set_up_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ("\npython3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/webphone demo\n"
            in readme)
    assert "\nbash scripts/test\n" in readme


def test_every_readme_python_block_is_marked() -> None:
    readme = [b for b in ALL_BLOCKS if b.path.name == "README.md"]
    assert readme, "README.md has no python blocks"
    assert [b.id for b in readme if not b.marked] == []
    assert len(RUNNABLE) >= 5


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(users={}, domain="sandbox.webphone") as sb:
        yield sb


def write_wav(path: Path, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(sine_wave(440, 1.0, rate, 0.3))


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
async def test_doc_block_runs(block: Block, sandbox: Sandbox, tmp_path: Path) -> None:
    code = block.code
    for old, new in block.replace:
        assert old in code, f"{block.id}: {old!r} is not in the block"
        code = code.replace(old, new)
    users = [str(next(_users)) for _ in range(2)]
    for user in users:
        sandbox.add_user(user, f"pw-{user}")
    (tmp_path / "sip-info.json").write_text(json.dumps(sandbox.sip_info(users[0])))
    (tmp_path / "sip-info-2.json").write_text(json.dumps(sandbox.sip_info(users[1])))
    write_wav(tmp_path / "greeting.wav")
    (tmp_path / "block.py").write_text(code)
    runtime_dir = short_runtime_dir()
    env = {**os.environ, "WEBPHONE_RUNTIME_DIR": str(runtime_dir)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "block.py", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        output = asyncio.ensure_future(proc.communicate())
        if block.call:
            await wait_until(lambda: sandbox.bindings(users[0]) or output.done(), 20,
                             message=f"{block.id}: the block's phone registers")
            if not output.done():
                await sandbox.party_call(users[0], party=block.call)
        done, _ = await asyncio.wait([output], timeout=30)
        if not done:  # SIGTERM first: Python prints nothing, but the pipes then give what it said
            proc.terminate()
            stdout, stderr = await asyncio.wait_for(output, 10)
            pytest.fail(f"{block.id} did not finish within 30 s\n--- stdout\n{stdout.decode()}"
                        f"--- stderr\n{stderr.decode()[-3000:]}")
        stdout, stderr = output.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in hub_pids(runtime_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(runtime_dir, ignore_errors=True)
    report = (f"{block.id} exited {proc.returncode}\n--- stdout\n{stdout.decode()}"
              f"--- stderr\n{stderr.decode()[-3000:]}")
    assert proc.returncode == 0, report
    assert b"Traceback" not in stderr, report


# -- docs/api.md lists every public method and property, and nothing that does not exist --------

_SECTION = re.compile(r"^#{2,3} `(?P<name>[\w.]+)`")
_CODE = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"^(?:await )?(?:[A-Za-z_]\w*\.)?(?P<name>[A-Za-z_]\w*)")


def api_sections() -> dict[str, set[str]]:
    """{section: names in the first column of its tables} ("async for/with" rows left out)."""
    sections: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in (ROOT / "docs" / "api.md").read_text(encoding="utf-8").splitlines():
        heading = _SECTION.match(line)
        if heading:
            current = sections.setdefault(heading.group("name"), set())
            continue
        if current is None or not line.startswith("|") or line.startswith("|---"):
            continue
        first_cell = line.split("|")[1]
        for code in _CODE.findall(first_cell):
            name = _NAME.match(code)
            if name and not code.startswith(("async for ", "async with ")):
                current.add(name.group("name"))
    return sections


def _classes() -> dict[str, type]:
    from webphone import SharedWebPhone, SipInfo, WebPhone
    from webphone._events import EventEmitter
    from webphone.call_session import (
        CallSession,
        InboundCallSession,
        OutboundCallSession,
        WarmTransfer,
    )
    from webphone.media import AudioFrame, AudioStream, MediaSession
    from webphone.sandbox import PartyCall, Sandbox
    from webphone.shared import ProxyCallSession, ProxyWarmTransfer

    return {c.__name__: c for c in (
        EventEmitter, WebPhone, CallSession, InboundCallSession, OutboundCallSession,
        WarmTransfer, SharedWebPhone, ProxyCallSession, ProxyWarmTransfer, SipInfo,
        MediaSession, AudioFrame, AudioStream, Sandbox, PartyCall)}


#: public by name but not API: SharedWebPhone's listener hooks called by its GroupMember (and
#: the continuity plane's),
#: PartyCall.spawn (the party's task helper), AudioStream.put (the media session feeds it)
_NOT_API = {"SharedWebPhone": {"on_action", "on_released", "on_role", "on_snapshot",
                                "on_delegate", "on_member_lost", "on_continuity"},
            "PartyCall": {"spawn"}, "AudioStream": {"put"}}


def _public(cls: type) -> set[str]:
    names = set()
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if callable(attr) or isinstance(attr, property | classmethod | staticmethod):
            names.add(name)
    return names - _NOT_API.get(cls.__name__, set())


def _has_attribute(cls: type, name: str) -> bool:
    if hasattr(cls, name):
        return True
    source = "".join(inspect.getsource(c) for c in cls.__mro__
                     if c.__module__.startswith("webphone"))
    return re.search(rf"self\.{name}\s*[:=]|^\s+{name}\s*:", source, re.M) is not None


def test_api_reference_lists_every_public_method_and_property() -> None:
    sections = api_sections()
    missing = {}
    for name, cls in _classes().items():
        documented = set().union(*(sections.get(c.__name__, set()) for c in cls.__mro__))
        if name != "EventEmitter":
            documented |= sections.get("EventEmitter", set())
        missing[name] = sorted(_public(cls) - documented)
    assert {k: v for k, v in missing.items() if v} == {}, "undocumented in docs/api.md"


def test_api_reference_names_only_what_exists() -> None:
    import importlib

    sections = api_sections()
    classes = _classes()
    unknown: dict[str, list[str]] = {}
    for section, names in sections.items():
        if section in classes:
            cls = classes[section]
            unknown[section] = sorted(n for n in names
                                      if n != section and not _has_attribute(cls, n))
        elif section.startswith("webphone"):
            module = importlib.import_module(section)
            unknown[section] = sorted(n for n in names if not hasattr(module, n))
    assert {k: v for k, v in unknown.items() if v} == {}, "in docs/api.md but not in the code"
