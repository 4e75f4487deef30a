"""Run sipp (Debian `sip-tester`, SIPp 3.6.1) with a scenario against a loopback server.

    res = run_sipp("invite_404.xml", kamailio.sip_uri_host, service="nobody", workdir=tmp_path)
    assert res.returncode == 0, res.logs()

Scenarios in tests/support/scenarios/:
  uac_rr.xml      INVITE -> 200 -> ACK/BYE honouring Record-Route (the built-in uac does not)
  invite_404.xml  INVITE to a user without binding -> 404 -> ACK
  options.xml     OPTIONS to the server itself -> 200

sipp exit codes: 0 all calls succeeded, 1 at least one failed, 97 exit on internal command,
99 no call processed, 255/254 fatal error (254: socket bind).
Media IP is forced to 127.0.0.1 (-mi; sipp's default is the host's primary address).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .ports import HOST, free_sip_port, free_udp_port, free_udp_range

__all__ = ["SCENARIOS", "SippResult", "run_sipp", "run_sipp_async", "sipp_argv"]

SCENARIOS = Path(__file__).with_name("scenarios")


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    argv: list[str]
    workdir: Path
    error_log: Path
    message_log: Path
    local_port: int
    timed_out: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> str:
        return _read(self.error_log)

    @property
    def messages(self) -> str:
        """Every SIP message sent and received (-trace_msg)."""
        return _read(self.message_log)

    def logs(self) -> str:
        """Everything useful for an assertion message."""
        return (
            f"sipp rc={self.returncode} timed_out={self.timed_out}\n$ {' '.join(self.argv)}\n"
            f"--- stderr:\n{self.stderr[-3000:]}\n--- errors:\n{self.errors[-3000:]}\n"
            f"--- messages:\n{self.messages[-6000:]}"
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def sipp_argv(
    scenario: str | Path,
    target: str,
    *,
    service: str,
    workdir: Path,
    local_port: int,
    calls: int = 1,
    timeout: float = 10.0,
    transport: str = "u1",
    extra_args: tuple[str, ...] | list[str] = (),
) -> list[str]:
    scenario_path = Path(scenario)
    if not scenario_path.is_absolute() and not scenario_path.exists():
        scenario_path = SCENARIOS / scenario_path
    name = scenario_path.stem
    return [
        "sipp", "-sf", str(scenario_path), target,
        "-s", service,
        "-i", HOST, "-mi", HOST,
        "-p", str(local_port),
        "-mp", str(free_udp_range(4)),
        "-cp", str(free_udp_port()),
        "-t", transport,
        "-m", str(calls), "-l", str(calls),
        "-nostdin",
        "-timeout", f"{max(1, int(timeout))}s", "-timeout_error",
        "-trace_err", "-error_file", str(workdir / f"{name}.errors.log"),
        "-trace_msg", "-message_file", str(workdir / f"{name}.messages.log"),
        *extra_args,
    ]  # fmt: skip


def run_sipp(
    scenario: str | Path,
    target: str,
    *,
    service: str,
    workdir: str | Path,
    calls: int = 1,
    timeout: float = 10.0,
    local_port: int | None = None,
    transport: str = "u1",
    extra_args: tuple[str, ...] | list[str] = (),
) -> SippResult:
    """Run sipp to completion (blocking). `target` is "127.0.0.1:PORT"; `service` the user.

    sipp's own -timeout stops it after `timeout` s; the subprocess gets 5 s more before it is
    killed (and reaped)."""
    if shutil.which("sipp") is None:
        raise FileNotFoundError("sipp not found (apt install sip-tester)")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = local_port or free_sip_port()
    argv = sipp_argv(
        scenario, target, service=service, workdir=workdir, local_port=port, calls=calls,
        timeout=timeout, transport=transport, extra_args=extra_args,
    )  # fmt: skip
    name = Path(argv[2]).stem
    timed_out = False
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=workdir, text=True, errors="replace",
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        out, err = proc.communicate()
    return SippResult(
        returncode=proc.returncode,
        stdout=out,
        stderr=err,
        argv=argv,
        workdir=workdir,
        error_log=workdir / f"{name}.errors.log",
        message_log=workdir / f"{name}.messages.log",
        local_port=port,
        timed_out=timed_out,
    )


async def run_sipp_async(scenario: str | Path, target: str, **kwargs: object) -> SippResult:
    """`run_sipp` in a thread, so the event loop (e.g. a webphone under test) keeps running."""
    return await asyncio.to_thread(run_sipp, scenario, target, **kwargs)  # type: ignore[arg-type]
