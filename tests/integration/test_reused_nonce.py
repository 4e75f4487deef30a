"""Registrars that accept each digest nonce once, against `SipClient`'s nonce reuse.

`SipClient` answers the registrar's last `qop=auth` challenge again on its next REGISTER (the
next `nc`, RFC 7616 §3.4). Some registrars allow a nonce once: Kamailio with `one_time_nonce`
(a fresh 401 without stale, or whatever its script sends: 403 here), OpenSIPS by default, and
the sandbox with `refuse_reused_nonce`. The client must then register anyway (one fresh try),
and stop reusing that registrar's nonces, also after a reconnection. Real servers over real
WebSockets: a Kamailio process with the test cfg's ONE_TIME_NONCE / REUSED_NONCE_403 switches,
and the sandbox (in this process).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.kamailio import Kamailio
from support.procs import ManagedProcess
from support.sandbox_server import sandbox_users
from support.wait import wait_until
from webphone import AuthenticationError, SipInfo
from webphone.sandbox import Sandbox
from webphone.sandbox.cli import main as sandbox_main
from webphone.sip import SipRequest, SipResponse
from webphone.sip_client import SipClient

FIRST = ["REGISTER", 401, "REGISTER nc=00000001", 200]  # no nonce to reuse: challenged


@pytest.fixture(params=[("kamailio", 403), ("kamailio", 401), ("sandbox", 403),
                        ("sandbox", 400), ("sandbox", 401)], ids=lambda p: f"{p[0]}-{p[1]}")
async def refusing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """(server, status): a registrar that answers a reused nonce with `status`."""
    kind, status = request.param
    if kind == "kamailio":
        defines = {"ONE_TIME_NONCE": "1", **({"REUSED_NONCE_403": "1"} if status == 403 else {})}
        kam = Kamailio(tmp_path / "kamailio", defines=defines)
        kam.start()
        try:
            yield kam, status
        finally:
            kam.close()
        return
    async with Sandbox(users=sandbox_users(), domain="sip.test", parties=False,
                       refuse_reused_nonce=status) as sb:
        yield sb, status


def transcript(client: SipClient) -> list[Any]:
    """What the client sends and gets, live: `REGISTER` (`nc=...` when it carries credentials)
    and the final statuses."""
    seen: list[Any] = []

    def sent(message: object) -> None:
        if isinstance(message, SipRequest) and message.method == "REGISTER":
            nc = (message.headers.get("Authorization") or "").rpartition("nc=")[2][:8]
            seen.append(f"REGISTER nc={nc}" if nc else "REGISTER")

    def received(message: object) -> None:
        if isinstance(message, SipResponse) and message.status_code >= 200:
            seen.append(message.status_code)

    client.on("outbound_message", sent)
    client.on("inbound_message", received)
    return seen


async def test_a_refused_reuse_registers_fresh_and_reuse_stays_off(
    refusing: tuple[Any, int], caplog: pytest.LogCaptureFixture
) -> None:
    server, status = refusing
    sip_info = SipInfo.from_dict(server.sip_info("alice"))
    client = SipClient(sip_info, instance_id=f"reuse-{status}")
    seen = transcript(client)
    caplog.set_level(logging.DEBUG, logger="webphone.sip")
    try:
        await client.start()
        assert seen == FIRST
        seen.clear()
        assert await client.register() > 0  # a refresh: reuses the nonce, refused
        refused = ["REGISTER nc=00000002", status]
        fresh = [] if status == 401 else ["REGISTER", 401]  # the 401 is itself the fresh one
        assert seen == [*refused, *fresh, "REGISTER nc=00000001", 200]
        seen.clear()
        await client.register()
        assert seen == FIRST  # reuse is off: no refused request per refresh
        seen.clear()
        await client.start()  # a new connection to the same registrar: still off
        await client.register()
        assert seen == FIRST + FIRST
        assert client.registered
    finally:
        await client.dispose()
    logged = [r.getMessage() for r in caplog.records if "reused nonce" in r.getMessage()]
    assert len(logged) == 1 and f"({status} " in logged[0]
    assert sip_info.password not in caplog.text and "response=" not in caplog.text


async def test_timer_refresh_against_a_403_registrar_keeps_the_connection() -> None:
    """The refresh timer's binding fetch carries the reused nonce and gets 403: the fetch is
    retried fresh, the refresh REGISTER reuses nothing, and the phone stays connected and
    registered (before: the REGISTER's 403 failed the refresh and the phone reconnected)."""
    async with Sandbox(users=sandbox_users(), domain="sip.test", parties=False,
                       refuse_reused_nonce=403) as sb:
        client = SipClient(SipInfo.from_dict(sb.sip_info("101")), instance_id="reuse-timer",
                           register_expires=2)  # refreshed within 1 s
        seen = transcript(client)
        events: list[str] = []
        for name in ("registered", "registration_failed", "disconnected"):
            client.on(name, lambda *_, n=name: events.append(n))
        await client.start()
        try:
            await wait_until(lambda: events.count("registered") >= 2, timeout=5,
                             message="the timer's refresh")
            fetch = ["REGISTER nc=00000002", 403, "REGISTER", 401, "REGISTER nc=00000001", 200]
            assert seen[:14] == FIRST + fetch + FIRST
            assert events[:2] == ["registered", "registered"]
            assert "registration_failed" not in events and "disconnected" not in events
            assert len(sb.bindings("101")) == 1
        finally:
            await client.dispose()


async def test_a_403_to_the_fresh_try_is_an_authentication_error() -> None:
    """One fresh try only: when it is refused too (the password changed meanwhile) the REGISTER
    fails with `AuthenticationError`, as any 403 to fresh credentials does."""
    async with Sandbox(users=sandbox_users(), domain="sip.test", parties=False,
                       refuse_reused_nonce=403) as sb:
        client = SipClient(SipInfo.from_dict(sb.sip_info("102")), instance_id="reuse-pw")
        seen = transcript(client)
        await client.start()
        try:
            seen.clear()
            client.sip_info = dataclasses.replace(client.sip_info, password="changed")
            with pytest.raises(AuthenticationError, match="403"):
                await client.register()
            assert seen == ["REGISTER nc=00000002", 403, "REGISTER", 401,
                            "REGISTER nc=00000001", 403]
        finally:
            await client.dispose(unregister=False)


async def test_the_cli_flag_serves_a_refusing_registrar(tmp_path: Path) -> None:
    """`webphone sandbox --refuse-reused-nonce 403` (a real process): the documented switch."""
    argv = [sys.executable, "-m", "webphone.sandbox", "--generate", "1", "--no-parties",
            "--refuse-reused-nonce", "403"]
    log = tmp_path / "sandbox.log"
    with ManagedProcess("sandbox", argv, log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                        stop_sequence=[(signal.SIGINT, 10.0)]) as proc:

        def sip_info() -> str | None:
            proc.check_alive()
            lines = log.read_text(encoding="utf-8").splitlines()
            return next((line for line in lines if line.startswith("{")), None)

        line = await wait_until(sip_info, timeout=10, message="the sandbox's sipInfo line")
        client = SipClient(SipInfo.from_dict(json.loads(line)), instance_id="reuse-cli")
        seen = transcript(client)
        await client.start()
        try:
            await client.register()
            assert seen[4:6] == ["REGISTER nc=00000002", 403] and seen[-1] == 200
        finally:
            await client.dispose()
        assert proc.stop() == 0


def test_a_refusal_other_than_401_403_400_is_refused_by_name(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sandbox_main(["--refuse-reused-nonce", "404"])
    assert exit_info.value.code == 2
    assert "--refuse-reused-nonce: invalid choice: 404" in capsys.readouterr().err
    with pytest.raises(ValueError, match="refuse_reused_nonce is 500: use one of None, 401"):
        Sandbox(refuse_reused_nonce=500)
