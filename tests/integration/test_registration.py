"""Registration against a real Kamailio AND the built-in sandbox (one suite, parametrized by the
`sip_server` fixture): refresh, auth failure, the 5-binding limit, instance replacement,
unregister, and a registrar that stops answering."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from support.wait import wait_until
from webphone import AuthenticationError, SipInfo, SipTimeoutError, TooManyContactsError, WebPhone
from webphone.errors import NotRealPhoneError
from webphone.sip import SipRequest
from webphone.sip_client import DummySipClient, SipClient


def info(kam: Any, user: str, **overrides: object) -> SipInfo:
    return SipInfo.from_dict(kam.sip_info(user, **overrides))


async def test_register_refresh_keeps_call_id_and_raises_cseq(
    sip_server: Any, server_user: Callable[[], str]
) -> None:
    """... and reuses the nonce (RFC 7616 §3.4): the refresh's binding fetch and REGISTER answer
    the registrar's last challenge again (nc 2, 3) and get their 200 at once."""
    user = server_user()
    sent: list[SipRequest] = []
    statuses: list[int] = []
    client = SipClient(info(sip_server, user), instance_id="refresh-1", register_expires=10)
    client.on("outbound_message", lambda m: sent.append(m) if isinstance(m, SipRequest) else None)
    client.on("inbound_message", lambda m: statuses.append(getattr(m, "status_code", 0))
              if getattr(m, "status_code", 0) >= 200 else None)  # not the sandbox's 100s
    refreshed = []
    client.on("registered", refreshed.append)
    await client.start()
    try:
        assert refreshed == [10]
        assert len(sip_server.bindings(user)) == 1
        await wait_until(lambda: len(refreshed) >= 2, timeout=12, message="refresh REGISTER")
        registers = [m for m in sent if m.method == "REGISTER"]
        assert len({m.call_id for m in registers}) == 1
        numbers = [m.cseq.number for m in registers]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert len(sip_server.bindings(user)) == 1
        assert statuses[:4] == [401, 200, 200, 200]  # register; then fetch + refresh
        counts = [m.headers.get("Authorization", "").rpartition("nc=")[2][:8] for m in sent]
        assert counts[:4] == ["", "00000001", "00000002", "00000003"]
    finally:
        await client.dispose()


async def test_wrong_password_is_authentication_error(
    sip_server: Any, server_user: Callable[[], str]
) -> None:
    user = server_user()
    phone = WebPhone(info(sip_server, user, password="wrong"), instance_id="bad-pw")
    with pytest.raises(AuthenticationError, match="rejected"):
        await phone.start()
    await phone.dispose()
    assert sip_server.bindings(user) == []


async def test_sixth_instance_gets_too_many_contacts(
    sip_server: Any, server_user: Callable[[], str]
) -> None:
    user = server_user()
    phones = [WebPhone(info(sip_server, user), instance_id=f"inst-{n}") for n in range(6)]
    try:
        for phone in phones[:5]:
            await phone.start()
        assert len(sip_server.bindings(user)) == 5
        with pytest.raises(TooManyContactsError, match="SharedWebPhone"):
            await phones[5].start()
        assert len(sip_server.bindings(user)) == 5
    finally:
        for phone in phones:
            await phone.dispose()
    assert sip_server.bindings(user) == []


async def test_same_instance_replaces_binding(
    sip_server: Any, server_user: Callable[[], str]
) -> None:
    user = server_user()
    first = WebPhone(info(sip_server, user), instance_id="same-id")
    second = WebPhone(info(sip_server, user), instance_id="same-id")
    try:
        await first.start()
        before = sip_server.bindings(user)
        await second.start()
        after = sip_server.bindings(user)
        assert len(before) == len(after) == 1
        assert before[0]["contact"] != after[0]["contact"]
        assert "same-id" in str(after[0].get("instance", ""))
    finally:
        await second.dispose()
        # The first phone's binding was replaced: its unregister removes nothing of the second's
        # contact URI, and after both are gone nothing is left.
        await first.dispose()
    assert sip_server.bindings(user) == []


async def test_instance_id_defaults_to_authorization_id(
    sip_server: Any, server_user: Callable[[], str]
) -> None:
    user = server_user()
    async with WebPhone(info(sip_server, user)) as phone:
        assert phone.instance_id == user
        assert f"urn:uuid:{user}" in str(sip_server.bindings(user)[0].get("instance"))


async def test_dispose_removes_binding(sip_server: Any, server_user: Callable[[], str]) -> None:
    user = server_user()
    phone = WebPhone(info(sip_server, user), instance_id="dispose-1")
    await phone.start()
    assert len(sip_server.bindings(user)) == 1
    await phone.dispose()
    assert sip_server.bindings(user) == []


async def test_restart_closes_old_socket(sip_server: Any, server_user: Callable[[], str]) -> None:
    user = server_user()
    client = SipClient(info(sip_server, user), instance_id="restart-1")
    await client.start()
    old = client._transport
    await client.start()
    try:
        assert old is not None and not old.is_open
        assert len(sip_server.bindings(user)) == 1
    finally:
        await client.dispose()


async def test_silent_server_times_out_then_reconnects(
    throwaway_server: Any,
) -> None:
    kam = throwaway_server
    client = SipClient(
        info(kam, "alice"),
        instance_id="timeout-1",
        request_timeout=1.0,
        reconnect_delay=(0.2, 1.0),
    )
    reconnected = []
    client.on("reconnected", lambda: reconnected.append(True))
    await client.start()
    try:
        kam.pause()
        with pytest.raises(SipTimeoutError, match="no answer to REGISTER"):
            await client.register()
        assert not client.registered
        kam.resume()
        await wait_until(lambda: reconnected, timeout=15, message="reconnect after SIGCONT")
        assert client.registered
        assert len(kam.bindings("alice")) == 1
    finally:
        if kam.paused:
            kam.resume()
        await client.dispose()


async def test_lost_connection_reconnects(throwaway_server: Any) -> None:
    kam = throwaway_server
    client = SipClient(info(kam, "bob"), instance_id="lost-1", reconnect_delay=(0.2, 1.0))
    reconnected = []
    client.on("reconnected", lambda: reconnected.append(True))
    await client.start()
    try:
        # Stopped and started from this loop (not the blocking restart()): the client lives in
        # it and must answer the server's WebSocket close; a blocked loop made the sandbox wait
        # out its 10 s close timeout.
        await kam.astop()
        await kam.astart()
        await wait_until(lambda: reconnected, timeout=15, message="reconnect after restart")
        assert len(kam.bindings("bob")) == 1
    finally:
        await client.dispose()


async def test_debug_logs_every_message_without_password(
    sip_server: Any, server_user: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    user = server_user()
    with caplog.at_level(logging.INFO, logger="webphone.sip.trace"):
        async with WebPhone(info(sip_server, user), instance_id="debug-1", debug=True):
            pass
    text = caplog.text
    assert "Sending to ws://" in text and "Received from ws://" in text
    assert text.count("REGISTER sip:") >= 3  # 401 round + unregister (reusing the nonce)
    assert "SIP/2.0 401" in text and "SIP/2.0 200" in text
    assert sip_server.password(user) not in text


async def test_dummy_client_refuses_sip_work_at_once(sip_server: Any) -> None:
    phone = WebPhone(info(sip_server, "alice"), sip_client=DummySipClient())
    await phone.start()
    with pytest.raises(NotRealPhoneError, match="SharedWebPhone"):
        await phone.sip_client.request(SipRequest("OPTIONS", "sip:x"))
    await phone.dispose()
