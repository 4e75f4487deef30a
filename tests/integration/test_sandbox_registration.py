"""Registration against the sandbox with webphone's real client: RingCentral's registrar rules.

Also exercises `support.sandbox_server.SandboxServer`, the Kamailio-compatible adapter the
shared registration suite runs on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from support.sandbox_server import SandboxServer, ScriptedPhone, sandbox_users
from support.wait import wait_until
from webphone import (
    AuthenticationError,
    SipInfo,
    SipTimeoutError,
    TooManyContactsError,
    WebPhone,
)
from webphone.sandbox import Sandbox
from webphone.sip_client import SipClient


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test", parties=False) as sandbox:
        yield sandbox


def info(sb: Sandbox, user: str, **overrides: object) -> SipInfo:
    return SipInfo.from_dict(sb.sip_info(user, **overrides))


async def test_register_gets_401_then_200_and_a_60s_binding(sb: Sandbox) -> None:
    """misc/register.spec.ts: REGISTER,100,401,REGISTER,100,200; Contact expires=60."""
    client = SipClient(info(sb, "101"), instance_id="reg-1")
    granted: list[int] = []
    client.on("registered", granted.append)
    started = time.perf_counter()
    await client.start()
    elapsed = time.perf_counter() - started
    try:
        assert granted == [60]
        lines = [r.first_line.split(" sip:")[0] for r in sb.messages_of("101")]
        assert lines == ["REGISTER", "SIP/2.0 100 Trying", "SIP/2.0 401 Unauthorized",
                         "REGISTER", "SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
        [binding] = sb.bindings("101")
        assert binding["instance"] == "urn:uuid:reg-1" and binding["expires"] == 60
        assert elapsed < 2.0
    finally:
        await client.dispose()
    assert sb.bindings("101") == []


async def test_grant_is_capped_and_refresh_keeps_the_binding() -> None:
    async with Sandbox(users=sandbox_users(), parties=False, max_expires=2) as sb:
        client = SipClient(info(sb, "102"), instance_id="refresh", register_expires=60)
        granted: list[int] = []
        client.on("registered", granted.append)
        await client.start()
        try:
            await wait_until(lambda: len(granted) >= 3, 5, message="two refreshes")
            assert set(granted) == {2}
            assert len(sb.bindings("102")) == 1
        finally:
            await client.dispose()


async def test_binding_expires_without_refresh() -> None:
    async with Sandbox(users=sandbox_users(), parties=False, max_expires=1) as sb:
        client = SipClient(info(sb, "103"), instance_id="lazy")
        await client.start()
        client.fence()  # never REGISTER again, keep the socket open
        assert len(sb.bindings("103")) == 1
        await wait_until(lambda: sb.bindings("103") == [], 3, message="binding expiry")
        await client.dispose()


async def test_wrong_password_is_refused(sb: Sandbox) -> None:
    phone = WebPhone(info(sb, "104", password="wrong"), instance_id="bad-pw")
    with pytest.raises(AuthenticationError, match="rejected"):
        await phone.start()
    await phone.dispose()
    assert sb.bindings("104") == []


async def test_sixth_instance_gets_401_then_603(sb: Sandbox) -> None:
    phones = [WebPhone(info(sb, "105"), instance_id=f"inst-{n}") for n in range(6)]
    try:
        for phone in phones[:5]:
            await phone.start()
        assert len(sb.bindings("105")) == 5
        sb.messages.clear()
        with pytest.raises(TooManyContactsError, match="SharedWebPhone"):
            await phones[5].start()
        statuses = [r.first_line for r in sb.messages if r.direction == "out"]
        assert statuses == ["SIP/2.0 100 Trying", "SIP/2.0 401 Unauthorized",
                            "SIP/2.0 100 Trying", "SIP/2.0 603 Too Many Contacts"]
        assert len(sb.bindings("105")) == 5
    finally:
        for phone in phones:
            await phone.dispose()
    assert sb.bindings("105") == []


async def test_same_instance_replaces_its_binding(sb: Sandbox) -> None:
    first = WebPhone(info(sb, "106"), instance_id="same-id")
    second = WebPhone(info(sb, "106"), instance_id="same-id")
    try:
        await first.start()
        before = sb.bindings("106")
        await second.start()
        after = sb.bindings("106")
        assert len(before) == len(after) == 1
        assert before[0]["contact"] != after[0]["contact"]
        assert after[0]["instance"] == "urn:uuid:same-id"
        assert after[0]["connection"] != before[0]["connection"]
    finally:
        await second.dispose()
        await first.dispose()
    assert sb.bindings("106") == []


async def test_closed_websocket_removes_binding_at_once_and_gets_no_calls(sb: Sandbox) -> None:
    callee = SipClient(info(sb, "107"), instance_id="gone", reconnect=False)
    await callee.start()
    assert len(sb.bindings("107")) == 1
    await callee.dispose(unregister=False)  # no REGISTER expires=0: just the socket closing
    await wait_until(lambda: sb.bindings("107") == [], 1, message="binding removed on close")
    caller = await ScriptedPhone(sb.sip_info("108"), "caller").start()
    try:
        final = await caller.client.request(caller.invite("107"))
        assert final.status_code == 480
    finally:
        await caller.stop()


async def test_register_without_contact_lists_bindings(sb: Sandbox) -> None:
    clients = [SipClient(info(sb, "109"), instance_id=f"q{n}") for n in range(2)]
    for client in clients:
        await client.start()
    try:
        query = clients[0].new_request("REGISTER", "sip:sip.test", to=clients[0].aor)
        response = await clients[0].request(query)
        assert response.status_code == 200
        contacts = response.headers.get_all("Contact")
        assert len(contacts) == 2 and all(";expires=" in c for c in contacts)
    finally:
        for client in clients:
            await client.dispose()


async def test_register_for_someone_else_is_forbidden(sb: Sandbox) -> None:
    client = SipClient(info(sb, "110"), instance_id="x")
    await client.start()
    try:
        other = client.new_request("REGISTER", "sip:sip.test", to="<sip:101@sip.test>",
                                   contact=f"{client.contact};expires=60")
        assert (await client.request(other)).status_code == 403
        assert sb.bindings("101") == []
    finally:
        await client.dispose()


async def test_users_added_while_running_can_register(sb: Sandbox) -> None:
    sb.add_user("4000", "late-pw", name="Late")
    async with WebPhone(info(sb, "4000"), instance_id="late") as phone:
        assert phone.sip_client.registered and len(sb.bindings("4000")) == 1
    assert sb.sip_info("4000")["password"] == "late-pw"


# -- the Kamailio-compatible adapter -------------------------------------------------------------


async def test_adapter_runs_in_its_own_thread_with_kamailio_interface() -> None:
    server = SandboxServer()
    await server.astart()
    try:
        assert server.ws_url.startswith("ws://127.0.0.1:")
        assert server.sip_info("101")["outboundProxy"] == server.outbound_proxy
        assert server.password("alice") == "alicepw" and server.domain == "sip.test"
        phone = WebPhone(SipInfo.from_dict(server.sip_info("alice")), instance_id="adapter")
        await phone.start()
        [binding] = server.bindings("alice")
        assert set(binding) >= {"contact", "instance", "expires"}
        server.clear_bindings("alice")
        assert server.bindings("alice") == []
        await phone.dispose()
    finally:
        await server.astop()
    assert not server.running


async def test_adapter_pause_makes_the_server_silent_then_restart_keeps_the_port() -> None:
    server = SandboxServer()
    await server.astart()
    client = SipClient(SipInfo.from_dict(server.sip_info("bob")), instance_id="pause",
                       request_timeout=0.5, reconnect=False)
    try:
        await client.start()
        server.pause()
        with pytest.raises(SipTimeoutError):
            await client.register()
        server.resume()
        port = server.port
        await client.dispose(unregister=False)
        await server.astop()
        await server.astart()
        assert server.port == port and server.bindings("bob") == []
    finally:
        server.resume()
        await client.dispose(unregister=False)
        await server.astop()
