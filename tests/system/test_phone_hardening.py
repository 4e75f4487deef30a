"""`webphone phone` processes under what users do to them: closing the terminal (SIGHUP) during
a call, and a huge command line (issue 13 items 3 and 4). Real processes, the sandbox, a call."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_phone_cli

from webphone.cli.phone_app import MAX_COMMAND_CHARS
from webphone.sandbox import Sandbox

is_call = test_phone_cli.is_call
sandbox = test_phone_cli.sandbox  # the fixtures
phones = test_phone_cli.phones

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]


async def _real_and_dummy_with_a_call(sandbox: Sandbox, phones: Callable[..., Any],
                                      tmp_path: Path, *real_args: str) -> tuple[Any, Any, str]:
    sip_info = tmp_path / "sip-info.json"
    sip_info.write_text(json.dumps(sandbox.sip_info("101")))
    a = await phones("a", "--sip-info", str(sip_info), *real_args)
    assert (await a.wait(lambda e: e["event"] == "ready", 20))["role"] == "real"
    b = await phones("b", "--sip-info", str(sip_info))
    assert (await b.wait(lambda e: e["event"] == "ready", 20))["role"] == "dummy"
    call = await sandbox.party_call("101", party="tone")
    await a.wait(is_call(call.call_id, "ringing"))
    assert (await a.send(f"answer {call.call_id}"))["ok"]
    await call.wait_answered(10)
    return a, b, call.call_id


async def test_sighup_during_a_call_drains_and_hands_over_like_sigterm(
    sandbox: Sandbox, phones: Callable[..., Any], tmp_path: Path
) -> None:
    """SIGHUP (the terminal closed) leaves like quit: drain, hand over, exit 0 — not a crash."""
    a, b, call_id = await _real_and_dummy_with_a_call(
        sandbox, phones, tmp_path, "--drain-timeout", "1")
    mark = len(a.events)
    a.proc.send_signal(signal.SIGHUP)
    notice = await a.wait(lambda e: e["event"] == "notice", since=mark)
    assert "waiting up to 1 s for 1 call(s)" in notice["message"]
    await a.wait(is_call(call_id, "disposed"), since=mark)
    assert await asyncio.wait_for(a.proc.wait(), 15) == 0
    await asyncio.wait_for(a.reader, 5)  # every line it printed has been read
    assert a.events[-2]["event"] == "bye"
    await b.wait(lambda e: e["event"] == "role" and e["role"] == "real")
    await b.wait(lambda e: e["event"] == "registered")
    assert len(sandbox.bindings("101")) == 1


async def test_a_one_megabyte_command_line_is_refused_without_stalling_the_real(
    sandbox: Sandbox, phones: Callable[..., Any], tmp_path: Path
) -> None:
    """A 1 MB line gets a UsageError result; the real's loop keeps running: it stays real (the
    hub deposes a real silent for 5 s) and its answered call stays up."""
    a, b, call_id = await _real_and_dummy_with_a_call(sandbox, phones, tmp_path)
    assert a.proc.stdin is not None
    mark = len(a.events)
    started = time.monotonic()
    a.proc.stdin.write(b"call " + b"'x " * ((1 << 20) // 3) + b"\n" + b"status\n")
    await a.proc.stdin.drain()
    a.seq += 2  # two command lines written by hand
    refused = await a.wait(lambda e: e["event"] == "result" and not e["ok"], since=mark)
    status = await a.wait(lambda e: e["event"] == "result" and "status" in e, since=mark)
    lag = time.monotonic() - started
    assert refused["error"] == "UsageError"
    assert f"longer than the {MAX_COMMAND_CHARS} taken" in refused["message"]
    assert len(json.dumps(refused)) < 1000  # the line is not echoed back whole
    assert status["status"]["role"] == "real"
    assert [c["state"] for c in status["status"]["calls"]] == ["answered"]
    assert not [e for e in a.events[mark:] if e["event"] == "role"]
    assert not [e for e in b.events if e["event"] == "role"]
    print(f"1 MB line: refused and the next command answered after {lag * 1000:.0f} ms")
    assert (await a.send(f"hangup {call_id}"))["ok"]


async def test_sigint_in_line_mode_leaves_and_exits_130(
    sandbox: Sandbox, phones: Callable[..., Any]
) -> None:
    """Ctrl-C (SIGINT) to a line-mode phone leaves the group and exits 130, as documented
    (it exited 0; the TUI exited 130)."""
    a = await phones("a", "--sandbox", sandbox.url, "--user", "102")
    assert (await a.wait(lambda e: e["event"] == "ready", 20))["role"] == "real"
    a.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(a.proc.wait(), 15) == 130
    await asyncio.wait_for(a.reader, 5)  # every line it printed has been read
    assert a.events[-2]["event"] == "bye"
    assert sandbox.bindings("102") == []


async def test_quitting_a_real_while_a_call_rings_declines_it_at_once(
    sandbox: Sandbox, phones: Callable[..., Any]
) -> None:
    """A ringing call cannot be answered by a leaving real: declined at quit, with that reason
    (it rang through the 10 s drain and ended as "caller cancelled")."""
    a = await phones("a", "--sandbox", sandbox.url, "--user", "102")
    assert (await a.wait(lambda e: e["event"] == "ready", 20))["role"] == "real"
    call = await sandbox.party_call("102", party="tone")
    await a.wait(is_call(call.call_id, "ringing"))
    mark = len(a.events)
    assert (await a.send("quit"))["ok"]
    ended = await a.wait(lambda e: e["event"] == "call" and e["state"] in ("failed", "disposed"),
                         since=mark)
    assert ended["reason"] != "caller cancelled", ended
    assert not [e for e in a.events[mark:] if e["event"] == "notice"]  # nothing to drain
    assert await asyncio.wait_for(a.proc.wait(), 15) == 0
    await call.wait_ended(5)
