"""`webphone sandbox call` and the control channel with bad input: one line on stderr or in the
log, never a traceback (issue 13 item 8)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect

from support.sandbox_server import SandboxServer

pytestmark = pytest.mark.timeout(60)


def _sandbox_call(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webphone", "sandbox", "call", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_header_over_64_kb_is_refused_in_one_line() -> None:
    """A 70 KB --header: exit 2, one line naming the header (was a traceback)."""
    result = _sandbox_call("101", "--port", "1", "--header", "X-Big: " + "a" * 70_000)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "header 'X-Big'" in result.stderr


def test_bad_control_input_is_logged_as_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """A control `call` with malformed headers: an error event and a one-line warning."""
    server = SandboxServer(parties=True)
    server.start()
    try:
        with (caplog.at_level(logging.WARNING, logger="webphone.sandbox"),
              connect(server.ws_url, subprotocols=["webphone-sandbox-control"]) as ws):
            ws.send(json.dumps({"action": "call", "user": "101", "headers": [[1, 2, 3]]}))
            event = json.loads(ws.recv(timeout=10))
    finally:
        server.stop()
    assert event["event"] == "error"
    failures = [r for r in caplog.records if "control action" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None


async def test_the_sandbox_dying_mid_call_ends_the_command_with_one_line(
    tmp_path: Path,
) -> None:
    """101 rings, then the sandbox process is SIGKILLed: `sandbox call` exits 1 with one line
    on stderr (a traceback before)."""
    import asyncio
    import re

    from webphone import SipInfo, WebPhone

    users = tmp_path / "users.json"
    users.write_text('{"101": "pw101"}')
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "webphone", "sandbox", "--port", "0", "--users", str(users),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert server.stdout is not None
        first = (await asyncio.wait_for(server.stdout.readline(), 20)).decode()
        url = re.search(r"ws://[0-9.]+:\d+", first)
        assert url is not None, first
        info = {"username": "101", "password": "pw101", "authorizationId": "101",
                "domain": "sandbox.webphone", "outboundProxy": url.group(0), "transport": "WS"}
        async with WebPhone(SipInfo.from_dict(info), reconnect=False) as phone:
            ringing = asyncio.Event()
            phone.on("inbound_call", lambda _: ringing.set())
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "webphone", "sandbox", "call", "101", "--url",
                url.group(0), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await asyncio.wait_for(ringing.wait(), 20)
            server.kill()
            _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()
    text = err.decode()
    assert "Traceback" not in text, text
    assert proc.returncode == 1 and text.count("\n") == 1, (proc.returncode, text)
    assert "closed the connection" in text
