"""The `webphone` command's contract for scripts: --help everywhere, exit codes, one-line errors
on stderr (no traceback unless --debug), line mode, `webphone status`; against a sandbox.

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 registration refused, 4 unreachable.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.group import hub_pids, short_runtime_dir
from support.sandbox_server import SandboxServer
from webphone.cli import main
from webphone.cli._common import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UsageError,
    exit_code_for,
    is_loopback_server,
    load_sip_info_file,
)
from webphone.cli.phone import status_text, text_line
from webphone.errors import (
    AuthenticationError,
    SipTimeoutError,
    TooManyContactsError,
    TransportError,
)
from webphone.sip_info import SipInfo

pytestmark = pytest.mark.timeout(60)


def webphone(*args: str, stdin: str | None = None, timeout: float = 30,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webphone", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=env)


def one_line_error(result: subprocess.CompletedProcess[str], prog: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    srv = SandboxServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    path = short_runtime_dir()
    try:
        yield path
    finally:
        for pid in hub_pids(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- help and usage ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["phone"], ["status"], ["demo"]])
def test_help_everywhere_with_examples(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: webphone" in out and "examples:" in out


def test_sandbox_help_is_the_sandbox_cli() -> None:
    result = webphone("sandbox", "--help")
    assert result.returncode == 0 and "webphone sandbox" in result.stdout


def test_python_m_webphone_version_and_no_command() -> None:
    assert webphone("--version").stdout.strip().startswith("webphone ")
    result = webphone()
    assert result.returncode == EXIT_USAGE and "usage: webphone" in result.stderr


@pytest.mark.parametrize("args", [
    ["phone"],                                    # no sipInfo source
    ["phone", "--sip-info", "a", "--sandbox", "ws://x"],
    ["phone", "--sandbox", "ws://127.0.0.1:1"],   # no --user
    ["phone", "--sip-info", "/nonexistent/sip-info.json"],
    ["status"],
    ["demo", "--members", "9"],
    ["frobnicate"],
])
def test_usage_errors_exit_2_with_one_line(args: list[str]) -> None:
    result = webphone(*args)
    assert result.returncode == EXIT_USAGE, result
    prog = "webphone" if args[0] == "frobnicate" else f"webphone {args[0]}"
    one_line_error(result, prog)


def test_an_invalid_sip_info_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "sip-info.json"
    path.write_text(json.dumps({"username": "101", "domain": "d", "outboundProxy": "h:1"}))
    result = webphone("phone", "--sip-info", str(path))
    assert result.returncode == EXIT_USAGE
    assert "missing password" in one_line_error(result, "webphone phone")
    path.write_text("{not json")
    assert webphone("phone", "--sip-info", str(path)).returncode == EXIT_USAGE


# -- runtime errors ------------------------------------------------------------------------------


def test_unreachable_sandbox_exits_4() -> None:
    result = webphone("phone", "--sandbox", f"ws://127.0.0.1:{free_port()}", "--user", "101")
    assert result.returncode == EXIT_UNREACHABLE
    assert "cannot reach the sandbox" in one_line_error(result, "webphone phone")


def test_unreachable_sip_server_exits_4(tmp_path: Path, runtime_dir: Path) -> None:
    path = tmp_path / "sip-info.json"
    path.write_text(json.dumps({"username": "101", "password": "pw", "domain": "d",
                                "outboundProxy": f"127.0.0.1:{free_port()}", "transport": "WS"}))
    result = webphone("phone", "--sip-info", str(path), "--runtime-dir", str(runtime_dir),
                      "--hub-idle-timeout", "0.1")
    assert result.returncode == EXIT_UNREACHABLE
    assert "TransportError" in one_line_error(result, "webphone phone")


def test_unknown_sandbox_user_exits_2(server: SandboxServer) -> None:
    result = webphone("phone", "--sandbox", server.ws_url, "--user", "nobody")
    assert result.returncode == EXIT_USAGE
    assert "no user 'nobody'" in one_line_error(result, "webphone phone")


def test_wrong_password_is_refused_with_exit_3_and_a_fatal_event(
    server: SandboxServer, runtime_dir: Path
) -> None:
    result = webphone("phone", "--sandbox", server.ws_url, "--user", "103", "--password",
                      "wrong", "--domain", server.domain, "--json", "--runtime-dir",
                      str(runtime_dir), "--hub-idle-timeout", "0.1")
    assert result.returncode == EXIT_REFUSED, result
    assert "AuthenticationError" in one_line_error(result, "webphone phone")
    fatal = json.loads(result.stdout.strip().splitlines()[-1])
    assert fatal["event"] == "fatal" and fatal["exit_code"] == EXIT_REFUSED
    assert "wrong" not in result.stdout + result.stderr  # never the password


def test_debug_prints_the_sip_trace_and_tracebacks(
    server: SandboxServer, runtime_dir: Path
) -> None:
    result = webphone("phone", "--sandbox", server.ws_url, "--user", "103", "--password",
                      "wrong", "--domain", server.domain, "--debug", "--runtime-dir",
                      str(runtime_dir), "--hub-idle-timeout", "0.1")
    assert result.returncode == EXIT_REFUSED
    assert "REGISTER sip:" in result.stderr and "Traceback" in result.stderr


# -- line mode and status ------------------------------------------------------------------------


def test_line_mode_text_one_line_per_event(server: SandboxServer, runtime_dir: Path,
                                           tmp_path: Path) -> None:
    path = tmp_path / "sip-info.json"
    path.write_text(json.dumps(server.sip_info("104")))
    script = "help\nstatus\nfrobnicate\nanswer\n\n# a comment\nquit\n"
    result = webphone("phone", "--sip-info", str(path), "--runtime-dir", str(runtime_dir),
                      "--hub-idle-timeout", "0.1", stdin=script)
    assert result.returncode == 0, result
    out = result.stdout
    assert "joined group 104@sip.test as the real phone" in out
    assert "registered (expires in" in out
    assert "call NUMBER" in out  # help
    assert "104: real (epoch" in out and "registration registered" in out  # status
    assert "error: frobnicate: unknown command" in out
    assert "error: answer: no call to answer" in out  # said once (issue 13 item 14)
    assert out.rstrip().endswith("left the group")
    assert server.bindings("104") == []  # the last member unregistered


def test_status_of_a_running_group(server: SandboxServer, runtime_dir: Path,
                                   tmp_path: Path) -> None:
    empty = webphone("status", "--group", "nobody@nowhere", "--runtime-dir", str(runtime_dir))
    assert empty.returncode == 0 and "no members" in empty.stdout
    phone = subprocess.Popen(
        [sys.executable, "-m", "webphone", "phone", "--sandbox", server.ws_url, "--user", "105",
         "--json", "--runtime-dir", str(runtime_dir), "--hub-idle-timeout", "0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert phone.stdout is not None and phone.stdin is not None
        events = [json.loads(phone.stdout.readline())]  # blocks until the phone says something
        while events[-1]["event"] != "ready":
            events.append(json.loads(phone.stdout.readline()))
        assert [e["event"] for e in events] == ["registered", "ready"]
        assert events[-1]["role"] == "real"
        result = webphone("status", "--sandbox", server.ws_url, "--user", "105",
                          "--runtime-dir", str(runtime_dir), "--json")
        assert result.returncode == 0, result
        status = json.loads(result.stdout)
        assert status["group"] == "105@sip.test"
        assert [(m["pid"], m["role"]) for m in status["members"]] == [(phone.pid, "real")]
        text = webphone("status", "--group", "105@sip.test", "--runtime-dir", str(runtime_dir))
        assert f"{phone.pid}  real" in text.stdout
        phone.stdin.close()  # EOF: quit
        assert phone.wait(10) == 0
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.wait()


# -- pure helpers --------------------------------------------------------------------------------


def test_exit_codes_by_error() -> None:
    assert exit_code_for(AuthenticationError("x")) == EXIT_REFUSED
    assert exit_code_for(TooManyContactsError()) == EXIT_REFUSED
    assert exit_code_for(TransportError("x")) == EXIT_UNREACHABLE
    assert exit_code_for(SipTimeoutError("x")) == EXIT_UNREACHABLE
    assert exit_code_for(UsageError("x")) == EXIT_USAGE
    assert exit_code_for(RuntimeError("x")) == 1


def test_sip_info_file_forms(tmp_path: Path) -> None:
    info = {"username": "101", "password": "pw", "domain": "d", "outboundProxy": "h:5090",
            "transport": "WSS"}
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"sipInfo": [info], "sipFlags": {}}))  # sip-provision's answer
    assert load_sip_info_file(path).username == "101"
    path.write_text(json.dumps(info))
    assert load_sip_info_file(path).outbound_proxy == "h:5090"
    with pytest.raises(UsageError):
        path.write_text("[]")
        load_sip_info_file(path)


@pytest.mark.parametrize(("proxy", "loopback"), [
    ("127.0.0.1:5066", True), ("localhost:1", True), ("ws://[::1]:80", True),
    ("sip10.ringcentral.com:8083", False), ("wss://10.0.0.1:443/ws", False),
])
def test_loopback_servers(proxy: str, loopback: bool) -> None:
    info = SipInfo(username="1", password="p", domain="d", outbound_proxy=proxy)
    assert is_loopback_server(info) is loopback


def test_text_lines() -> None:
    call = {"event": "call", "ref": 2, "call_id": "c", "direction": "inbound", "state": "answered",
            "remote": "901", "remote_name": "Tone", "held": True, "muted": False}
    assert text_line(call) == "call 2: inbound from 901 (Tone): answered [held]"
    assert text_line({"event": "result", "cmd": "hold", "ok": False,
                      "message": "no call"}) == "error: hold: no call"
    status = {"user": "101", "role": "dummy", "epoch": 2, "registration": "held by the real",
              "members": [{"role": "real"}, {"role": "dummy"}],
              "calls": [{**call, "duration": 65}]}
    assert status_text(status) == ("101: dummy (epoch 2), registration held by the real, "
                                   "2 member(s), 1 real; calls: 2: inbound from 901 (Tone): "
                                   "answered [held] 01:05")
