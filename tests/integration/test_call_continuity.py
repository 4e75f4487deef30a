"""A call survives its own process losing the SIP server, and ends (with a reason) when it
cannot be confirmed: target refresh after a reconnect, RTP inactivity, RFC 4028 timers.

Issue #11 item 6. Real servers; audio checked by frequency at both ends."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from support.baresip import Baresip
from support.calls import connect, heard, phones
from support.continuity import tone_in_wav
from support.kamailio import Kamailio
from support.ports import free_tcp_port
from support.procs import ManagedProcess
from support.wait import wait_tcp_async
from webphone import SipInfo, WebPhone

pytestmark = pytest.mark.timeout(90)

AUSINE = 440.0  # baresip's audio source (tests/support/baresip.py)
TONE = 1000.0  # what our phone plays


def kill_and_restart(server: Kamailio | ManagedProcess) -> None:
    """SIGKILL (nothing is sent: no BYE, no close frame), reap, start on the same ports."""
    proc = server.proc if isinstance(server, Kamailio) else server
    proc.send_signal(signal.SIGKILL, group=True)
    proc.stop()  # reaps the killed process
    if isinstance(server, Kamailio):
        server.start()


@pytest.mark.kamailio
@pytest.mark.baresip
async def test_kamailio_killed_and_restarted_the_call_goes_on(
    kamailio_proc: Callable[..., Kamailio], baresip: Callable[..., Awaitable[Baresip]],
    tmp_path: Path,
) -> None:
    """SIGKILL of Kamailio mid-call, restart on the same ports: the phone reconnects,
    re-registers and re-INVITEs with the same SDP; baresip (UDP, never disconnected) gets no
    BYE and both ends hear each other's tone after the restart."""
    kam = kamailio_proc()
    record = tmp_path / "heard"
    record.mkdir()
    bob = await baresip("bob", ice=True, kam=kam, record_dir=record)
    async with phones(kam, ["alice"], reconnect_delay=(0.2, 1.0)) as (phone,):
        out = await phone.call("bob")
        await bob.wait_event("CALL_INCOMING", timeout=5)
        await bob.accept()
        await bob.wait_event("CALL_ESTABLISHED", timeout=5)
        established = time.monotonic()
        await out.wait_for("answered", timeout=5) if out.state != "answered" else None
        assert out.media is not None
        sdp_before = out.media.local_sdp
        playing = asyncio.create_task(out.media.play_tone(TONE, 60))
        assert await heard(out, lambda t: t == AUSINE) == AUSINE
        refreshed = asyncio.ensure_future(out.wait_for("refreshed", timeout=20))
        reconnected = asyncio.ensure_future(phone.wait_for("reconnected", timeout=20))
        killed = time.monotonic()
        await asyncio.to_thread(kill_and_restart, kam)
        await reconnected
        registered = time.monotonic() - killed  # the baseline: reconnect + REGISTER
        (response,) = await refreshed
        confirmed = time.monotonic() - killed
        assert response.status_code == 200 and out.state == "answered"
        assert out.media.local_sdp == sdp_before  # RFC 3264 §8: the same o= version
        after = time.monotonic() - established
        # a whole second of baresip's tone at our end, after the restart
        assert await heard(out, lambda t: t == AUSINE, window=1.0) == AUSINE
        heard_until = time.monotonic() - established
        assert "CALL_CLOSED" not in [e.get("type") for e in bob.events]
        await out.hangup()
        await bob.wait_event("CALL_CLOSED", timeout=5)
        playing.cancel()
    (dump,) = record.glob("dump-*-dec.wav")
    assert tone_in_wav(dump, after + 0.2, heard_until - 0.1) == TONE, "baresip's end"
    print(f"kamailio restart: registered again {registered * 1000:.0f} ms, call confirmed "
          f"again {confirmed * 1000:.0f} ms after SIGKILL")


@pytest.mark.kamailio
async def test_both_ends_on_websockets_of_the_restarted_proxy_end_within_the_bound(
    kamailio_proc: Callable[..., Kamailio],
) -> None:
    """Both phones lose their WebSocket to Kamailio: each re-INVITE goes to the other's old
    connection (its ;alias), which no longer exists, so neither dialog can be confirmed; both
    calls end with the reason after redial_timeout instead of staying answered."""
    kam = kamailio_proc()
    async with phones(kam, ["alice", "bob"], reconnect_delay=(0.2, 1.0),
                      redial_timeout=3.0) as (a, b):
        out, inc = await connect(a, b, "bob")
        await asyncio.to_thread(kill_and_restart, kam)
        await asyncio.wait_for(asyncio.gather(out.wait_closed(), inc.wait_closed()), 10)
        reason = ("the call could not be confirmed within 3 s after the connection to the SIP "
                  "server was lost")
        assert out.end_reason == inc.end_reason == reason


class SandboxProcess:
    """`python -m webphone.sandbox` as a real process (parties on), to SIGKILL and restart on
    the same port; the Kamailio adapter's `sip_info` for `phones()`."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_tcp_port()
        users = workdir / "users.json"
        users.write_text(json.dumps({"101": "pw101"}))
        argv = [sys.executable, "-m", "webphone.sandbox", "--port", str(self.port),
                "--users", str(users), "--domain", "sip.test"]
        self.proc = ManagedProcess("sandbox", argv, workdir / "sandbox.log")

    async def start(self) -> None:
        self.proc.start()
        await wait_tcp_async("127.0.0.1", self.port, 15)

    def sip_info(self, user: str) -> dict[str, object]:
        return {"username": user, "password": f"pw{user}", "authorizationId": user,
                "domain": "sip.test", "outboundProxy": f"127.0.0.1:{self.port}",
                "transport": "WS", "stunServers": []}


async def test_sandbox_killed_and_restarted_ends_the_call_with_481(tmp_path: Path) -> None:
    """SIGKILL of the sandbox mid-call (no BYE from anyone), restart on the same port: it has
    no dialog any more, so the refresh after the reconnect gets 481 and the call ends with that
    reason, within reconnect + register + one re-INVITE (redial_timeout bounds it anyway)."""
    server = SandboxProcess(tmp_path)
    await server.start()
    try:
        async with phones(server, ["101"], reconnect_delay=(0.2, 1.0),
                          redial_timeout=10.0) as (phone,):
            out = await phone.call("901")  # the tone party: 440 Hz
            if out.state != "answered":
                await out.wait_for("answered", timeout=10)
            assert await heard(out, lambda t: t == AUSINE) == AUSINE
            killed = time.monotonic()
            await asyncio.to_thread(kill_and_restart, server.proc)
            await server.start()
            await asyncio.wait_for(out.wait_closed(), 10)
            took = time.monotonic() - killed
            assert out.state == "disposed"
            assert out.end_reason == "dialog lost (481)", out.end_reason
            assert phone.call_sessions == []
            print(f"sandbox SIGKILL + restart: call ended {took * 1000:.0f} ms after the kill")
    finally:
        server.proc.stop()


@pytest.mark.kamailio
async def test_silent_media_ends_the_call_with_a_bye(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    """Audio flows both ways; the far party's media stops (its peer connection closed): the
    phone ends the call after media_timeout and the far party gets the BYE."""
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user], media_timeout=1.0) as (a,), \
            phones(kamailio, [b_user], media_timeout=None) as (b,):
        out, inc = await connect(a, b, b_user)
        assert out.media is not None and inc.media is not None
        tones = [asyncio.create_task(out.media.play_tone(TONE, 30)),
                 asyncio.create_task(inc.media.play_tone(AUSINE, 30))]
        assert await heard(out, lambda t: t == AUSINE) == AUSINE
        assert await heard(inc, lambda t: t == TONE) == TONE
        silenced = time.monotonic()
        await inc.media.peer_connection.close()
        await asyncio.wait_for(out.wait_closed(), 5)
        took = time.monotonic() - silenced
        assert out.end_reason == "no audio received for 1 s (media timeout)"
        await asyncio.wait_for(inc.wait_closed(), 5)
        assert inc.end_reason == "remote hung up"
        for task in tones:
            task.cancel()
        print(f"media timeout 1 s: call ended {took * 1000:.0f} ms after the far media stopped")


@pytest.mark.kamailio
async def test_hold_is_not_silence(kamailio: Kamailio, fresh_user: Callable[[], str]) -> None:
    """While we hold the peer it sends nothing, and that is expected: media_timeout does not
    end the call; after unhold the audio is back and the check resumes."""
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user], media_timeout=1.0) as (a,), \
            phones(kamailio, [b_user], media_timeout=None) as (b,):
        out, inc = await connect(a, b, b_user)
        assert inc.media is not None
        tone = asyncio.create_task(inc.media.play_tone(AUSINE, 30))
        assert await heard(out, lambda t: t == AUSINE) == AUSINE
        await out.hold()
        with pytest.raises(TimeoutError):  # three media timeouts of silence: still answered
            await asyncio.wait_for(out.wait_closed(), 3.0)
        assert out.state == "answered"
        await out.unhold()
        assert await heard(out, lambda t: t == AUSINE) == AUSINE
        tone.cancel()


@pytest.mark.kamailio
async def test_session_timer_refreshes_then_expires_when_the_refresher_vanishes(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    """RFC 4028 between two phones: the caller asks for 4 s (both accept such short intervals
    here), the callee makes the caller the refresher (it supports timers); the caller
    re-INVITEs at half the interval. When the caller's SIP client goes away (no BYE, no more
    refreshes), the callee ends the call before the interval is over (§10)."""
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user], session_expires=4) as (a,), \
            phones(kamailio, [b_user], session_expires=4) as (b,):
        out, inc = await connect(a, b, b_user)
        assert out.session_timer is not None and inc.session_timer is not None
        assert out.session_timer.interval == inc.session_timer.interval == 4
        assert out.session_timer.we_refresh and not inc.session_timer.we_refresh
        started = time.monotonic()
        for _ in range(2):
            await out.wait_for("refreshed", timeout=5)
        assert time.monotonic() - started >= 3.5  # two refreshes, 2 s apart
        assert inc.state == "answered"
        gone = time.monotonic()
        await a.sip_client.dispose(unregister=False)  # the refresher vanishes, says nothing
        await asyncio.wait_for(inc.wait_closed(), 6)
        took = time.monotonic() - gone
        assert inc.end_reason == "session timer expired: no refresh within 4 s (RFC 4028 §10)"
        print(f"session timer 4 s: callee ended the call {took * 1000:.0f} ms after the "
              "refresher vanished")


@pytest.mark.kamailio
async def test_session_interval_too_small_is_retried_with_the_min_se(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> None:
    """422 (RFC 4028 §7.3): the callee's minimum is 10 s, the caller asked for 4: the caller
    asks again with Min-SE 10 and the call connects with a 10 s timer."""
    a_user, b_user = fresh_user(), fresh_user()
    async with phones(kamailio, [a_user], session_expires=4) as (a,), \
            phones(kamailio, [b_user], session_expires=10) as (b,):
        seen: list[int] = []
        a.on("inbound_message", lambda m: seen.append(getattr(m, "status_code", 0)))
        out, inc = await connect(a, b, b_user)
        assert 422 in seen
        assert out.session_timer is not None and out.session_timer.interval == 10
        assert inc.session_timer is not None and inc.session_timer.interval == 10


def test_call_timer_options_are_checked() -> None:
    info = SipInfo.from_dict({"username": "1", "password": "p", "authorization_id": "1",
                              "domain": "sip.test", "outbound_proxy": "127.0.0.1:1"})
    with pytest.raises(ValueError, match="media_timeout must be a positive number"):
        WebPhone(info, media_timeout=0)
    with pytest.raises(ValueError, match="session_expires"):
        WebPhone(info, session_expires=0)
