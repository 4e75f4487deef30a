"""Smoke tests of the test infrastructure itself: real servers, raw tools, no webphone code."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid

import pytest
import websockets

from support.kamailio import Kamailio, parse_ul_lookup
from support.ports import free_sip_port, free_tcp_port, free_udp_port, free_udp_range
from support.wait import wait_tcp, wait_tcp_async, wait_until, wait_until_sync

# -- ports / wait --------------------------------------------------------------------------------


def test_ports_are_distinct_and_bindable() -> None:
    ports = [free_tcp_port(), free_udp_port(), free_sip_port(), free_tcp_port()]
    assert len(set(ports)) == len(ports)
    first = free_udp_range(10)
    assert 20000 <= first < 32000 - 10


async def test_wait_until_returns_value_and_times_out() -> None:
    calls = []

    async def pred() -> str | None:
        calls.append(1)
        return "ok" if len(calls) >= 3 else None

    assert await wait_until(pred, 1.0, 0.001) == "ok"
    with pytest.raises(TimeoutError, match="never"):
        await wait_until(lambda: False, 0.05, message="never")
    with pytest.raises(TimeoutError) as info:
        wait_until_sync(lambda: 1 / 0, 0.05)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(TimeoutError):
        wait_tcp("127.0.0.1", free_tcp_port(), 0.05)
    with pytest.raises(TimeoutError):
        await wait_tcp_async("127.0.0.1", free_tcp_port(), 0.05)


# -- Kamailio ------------------------------------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _register(
    user: str,
    domain: str,
    call_id: str,
    cseq: int,
    instance: str,
    auth: str | None = None,
    expires: int = 600,
) -> str:
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        f"Via: SIP/2.0/WS infra.invalid;branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
        "Max-Forwards: 70",
        f"To: <sip:{user}@{domain}>",
        f"From: <sip:{user}@{domain}>;tag={uuid.uuid4().hex[:8]}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f'Contact: <sip:{user}x@infra.invalid;transport=ws>;+sip.instance="<{instance}>"'
        f";reg-id=1;expires={expires}",
        f"Expires: {expires}",
    ]
    if auth:
        lines.append(auth)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines)


def _digest(user: str, password: str, challenge: str, method: str, uri: str) -> str:
    header = next(
        line for line in challenge.split("\r\n") if line.lower().startswith("www-authenticate:")
    )
    realm = re.search(r'realm="([^"]+)"', header).group(1)  # type: ignore[union-attr]
    nonce = re.search(r'nonce="([^"]+)"', header).group(1)  # type: ignore[union-attr]
    assert re.search(r'qop="?auth', header), header
    cnonce, nc = uuid.uuid4().hex[:16], "00000001"
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", algorithm=MD5, response="{response}", cnonce="{cnonce}", qop=auth, nc={nc}'
    )


def _status(msg: str) -> int:
    return int(msg.split(" ", 2)[1])


async def _ws_register(kam: Kamailio, ws: websockets.ClientConnection, user: str) -> str:
    """REGISTER with digest over an open WS; returns the 200 OK. Instance is a fresh UUID."""
    instance = f"urn:uuid:{uuid.uuid4()}"
    call_id = uuid.uuid4().hex
    await ws.send(_register(user, kam.domain, call_id, 1, instance))
    challenge = str(await asyncio.wait_for(ws.recv(), 5))
    assert _status(challenge) == 401, challenge
    auth = _digest(user, kam.password(user), challenge, "REGISTER", f"sip:{kam.domain}")
    await ws.send(_register(user, kam.domain, call_id, 2, instance, auth))
    ok = str(await asyncio.wait_for(ws.recv(), 5))
    assert _status(ok) == 200, ok
    return ok


@pytest.mark.kamailio
async def test_kamailio_ws_handshake_subprotocol(kamailio: Kamailio) -> None:
    assert kamailio.ws_url == f"ws://127.0.0.1:{kamailio.ws_port}"
    async with websockets.connect(kamailio.ws_url, subprotocols=["sip"]) as ws:
        assert ws.subprotocol == "sip"


@pytest.mark.kamailio
async def test_kamailio_register_digest_bindings_and_lost_tcp(
    kamailio: Kamailio, fresh_user
) -> None:
    user = fresh_user()
    info = kamailio.sip_info(user)
    assert info == {
        "username": user,
        "password": f"pw{user}",
        "authorizationId": user,
        "domain": "sip.test",
        "outboundProxy": f"127.0.0.1:{kamailio.ws_port}",
        "transport": "WS",
        "stunServers": [],
    }
    assert kamailio.bindings(user) == []
    async with websockets.connect(kamailio.ws_url, subprotocols=["sip"]) as ws:
        ok = await _ws_register(kamailio, ws, user)
        assert "+sip.instance" in ok
        [binding] = kamailio.bindings(user)
        assert binding["contact"] == f"sip:{user}x@infra.invalid;transport=ws"
        assert binding["instance"].startswith("urn:uuid:")
        assert 590 <= binding["expires"] <= 600
        assert binding["received"].startswith("sip:127.0.0.1:")
        assert binding["received"].endswith(";transport=ws")
    # handle_lost_tcp: closing the WebSocket drops the binding
    await kamailio.wait_bindings(user, 0, timeout=5)
    kamailio.clear_bindings(user)  # no-op on an empty AoR


@pytest.mark.kamailio
async def test_kamailio_wrong_password_and_unknown_user(kamailio: Kamailio) -> None:
    async with websockets.connect(kamailio.ws_url, subprotocols=["sip"]) as ws:
        instance = f"urn:uuid:{uuid.uuid4()}"
        await ws.send(_register("nobody", kamailio.domain, "c1", 1, instance))
        challenge = str(await asyncio.wait_for(ws.recv(), 5))
        auth = _digest("nobody", "x", challenge, "REGISTER", f"sip:{kamailio.domain}")
        await ws.send(_register("nobody", kamailio.domain, "c1", 2, instance, auth))
        assert _status(str(await asyncio.wait_for(ws.recv(), 5))) == 401
    assert kamailio.bindings("nobody") == []


def test_parse_ul_lookup_sample() -> None:
    sample = """{
\tAoR: alice
\tContacts: {
\t\tContact: {
\t\t\tAddress: sip:a@x.invalid;transport=ws
\t\t\tExpires: 599
\t\t\tCall-ID: cid1
\t\t\tReceived: sip:127.0.0.1:35902;transport=ws
\t\t\tPath: [not set]
\t\t\tInstance: <urn:uuid:6a46>
\t\t\tReg-Id: 1
\t\t}
\t\tContact: {
\t\t\tAddress: sip:bob@127.0.0.1:5070
\t\t\tExpires: permanent
\t\t\tReceived: [not set]
\t\t\tInstance: [not set]
\t\t}
\t}
}
"""
    a, b = parse_ul_lookup(sample)
    assert (a["contact"], a["expires"], a["instance"], a["reg_id"]) == (
        "sip:a@x.invalid;transport=ws",
        599,
        "urn:uuid:6a46",
        1,
    )
    assert a["received"] == "sip:127.0.0.1:35902;transport=ws"
    assert (b["expires"], b["instance"], b["received"]) == ("permanent", None, None)


@pytest.mark.kamailio
async def test_kamailio_proc_pause_resume_restart(kamailio_proc) -> None:
    kam = kamailio_proc()
    ports = (kam.sip_port, kam.ws_port)
    async with websockets.connect(kam.ws_url, subprotocols=["sip"]) as ws:
        await _ws_register(kam, ws, "alice")
        assert len(kam.bindings("alice")) == 1
        kam.pause()
        await ws.send(_register("alice", kam.domain, "p1", 1, "urn:uuid:paused"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)  # frozen: nothing answers
        kam.resume()
        assert _status(str(await asyncio.wait_for(ws.recv(), 5))) == 401  # answered late
        await kam.astop()
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    await kam.astart()
    assert (kam.sip_port, kam.ws_port) == ports
    assert kam.bindings("alice") == []  # usrloc is memory only
    async with websockets.connect(kam.ws_url, subprotocols=["sip"]) as ws:
        await _ws_register(kam, ws, "alice")
    kam.stop()
    assert not kam.running


# -- redis ---------------------------------------------------------------------------------------


def _resp(port: int, *args: str) -> bytes:
    import socket

    cmd = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(cmd.encode())
        return s.recv(4096)


@pytest.mark.redis
async def test_redis_ping_no_persistence_and_restart(redis_server) -> None:
    import redis.asyncio as aioredis

    assert redis_server.ping()
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert _resp(redis_server.port, "CONFIG", "GET", "save") == b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.set("k", "v")
        port = redis_server.port
        await redis_server.astop()
        assert not redis_server.ping()
        with pytest.raises(aioredis.ConnectionError):
            await client.get("k")
        await redis_server.astart()
        assert redis_server.port == port
        assert await client.get("k") is None  # reconnects; nothing was persisted
    finally:
        await client.aclose()


# -- baresip + sipp ------------------------------------------------------------------------------


@pytest.mark.kamailio
@pytest.mark.baresip
async def test_baresip_registers_and_calls(kamailio: Kamailio, baresip) -> None:
    bob, carol = await asyncio.gather(baresip("bob"), baresip("carol"))
    assert "OK" in await bob.reginfo()
    [binding] = kamailio.bindings("bob")
    assert (
        binding["contact"].startswith("sip:bob-")
        and f"127.0.0.1:{bob.sip_port}" in binding["contact"]
    )
    await bob.dial("sip:carol@sip.test")
    incoming = await carol.wait_event("CALL_INCOMING", 5)
    assert incoming["peeruri"] == "sip:bob@sip.test"
    await carol.accept()
    await bob.wait_event("CALL_ESTABLISHED", 5)
    await carol.wait_event("CALL_ESTABLISHED", 5)
    assert "/hold" in await bob.help()  # call commands only exist during a call
    await bob.hangup()
    await carol.wait_event("CALL_CLOSED", 5)
    await bob.stop()
    await kamailio.wait_bindings("bob", 0, timeout=5)  # quit unregisters


@pytest.mark.kamailio
@pytest.mark.baresip
async def test_baresip_ice_account_registers(kamailio: Kamailio, baresip) -> None:
    bob = await baresip("bob", ice=True)
    assert "medianat=ice" in (bob.confdir / "accounts").read_text()
    assert len(kamailio.bindings("bob")) == 1


@pytest.mark.kamailio
def test_sipp_invite_unregistered_user_gets_404(sipp) -> None:
    res = sipp("invite_404.xml", "nobody")
    assert res.returncode == 0, res.logs()
    assert "SIP/2.0 404 Not Found" in res.messages


@pytest.mark.kamailio
@pytest.mark.baresip
async def test_sipp_uac_rr_calls_baresip(baresip, sipp) -> None:
    bob = await baresip("bob", answermode="auto")
    res = await sipp.arun("uac_rr.xml", "bob")
    assert res.returncode == 0, res.logs()
    assert "Record-Route" in res.messages
    await bob.wait_event("CALL_ESTABLISHED", 5)
    await bob.wait_event("CALL_CLOSED", 5)
