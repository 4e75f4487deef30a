"""`webphone sandbox call` and the control channel with bad input: one line on stderr or in the
log, never a traceback (issue 13 item 8)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

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
