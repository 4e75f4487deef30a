"""The sandbox's shell: bad input, frame limits, shutdown, wss://, exposure warning, the CLI."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import random
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from support.sandbox_server import sandbox_users
from support.wait import wait_until
from webphone import SipInfo, WebPhone
from webphone.sandbox import Sandbox
from webphone.sandbox.connection import Connection
from webphone.sandbox.server import SipServer
from webphone.sip import SipRequest, SipResponse, parse_message
from webphone.sip_client import SipClient

OPTIONS = (
    "OPTIONS sip:sip.test SIP/2.0\r\n"
    "Via: SIP/2.0/WS x.invalid;branch=z9hG4bK{n}\r\n"
    "Max-Forwards: 70\r\nTo: <sip:sip.test>\r\nFrom: <sip:101@sip.test>;tag=a\r\n"
    "Call-ID: opt{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(users=sandbox_users(), domain="sip.test", parties=False) as sandbox:
        yield sandbox


async def raw(sb: Sandbox) -> ClientConnection:
    return await connect(sb.url, subprotocols=["sip"])  # type: ignore[list-item]


async def answer(ws: ClientConnection, timeout: float = 2.0) -> SipResponse:
    message = parse_message(await asyncio.wait_for(ws.recv(), timeout))
    assert isinstance(message, SipResponse)
    return message


async def test_malformed_messages_get_400_or_are_dropped_and_the_socket_lives(sb: Sandbox) -> None:
    ws = await raw(sb)
    try:
        await ws.send("hello, not SIP")  # dropped with a log line
        await ws.send(b"\xff\xfe\x00 binary junk")
        await ws.send("\r\n\r\n")  # a keepalive
        await ws.send(OPTIONS.format(n=1).replace("CSeq: 1 OPTIONS", "CSeq: nonsense"))
        bad_cseq = await answer(ws)
        assert bad_cseq.status_code == 400 and bad_cseq.branch == "z9hG4bK1"
        await ws.send(OPTIONS.format(n=2).replace("Content-Length: 0", "Content-Length: 50"))
        too_long = await answer(ws)
        assert too_long.status_code == 400 and "Content-Length" in too_long.reason
        await ws.send(OPTIONS.format(n=3).replace("Max-Forwards: 70", "Max-Forwards: 0"))
        assert (await answer(ws)).status_code == 483
        await ws.send("SIP/2.0 200 OK\r\nVia: SIP/2.0/WS x;branch=z9hG4bKnobody\r\n"
                      "CSeq: 1 BYE\r\nCall-ID: x\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n\r\n")
        await ws.send(OPTIONS.format(n=4))
        ok = await answer(ws)
        assert ok.status_code == 200 and ok.branch == "z9hG4bK4"
    finally:
        await ws.close()


async def test_oversized_frame_closes_only_that_connection(sb: Sandbox) -> None:
    ws = await raw(sb)
    await ws.send("x" * (65 * 1024))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 2)
    other = await raw(sb)
    try:
        await other.send(OPTIONS.format(n=5))
        assert (await answer(other)).status_code == 200
    finally:
        await other.close()


class _Sink(Connection):
    kind = "test"

    def __init__(self) -> None:
        super().__init__("fuzz")
        self.sent: list[SipRequest | SipResponse] = []

    def send(self, message: SipRequest | SipResponse) -> None:
        self.sent.append(message)


async def test_the_proxy_survives_mangled_messages(
    sb: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Truncated, byte-flipped and spliced versions of real messages never raise, and never
    reach the proxy's last-resort exception handler (which logs at ERROR)."""
    sink = _Sink()
    sb.proxy.connection_opened(sink)
    seeds = [OPTIONS.format(n=9).encode()] + [bytes(r.message) for r in list(sb.messages)]
    client = SipClient(SipInfo.from_dict(sb.sip_info("101")), instance_id="fuzz")
    await client.start()
    await client.dispose()
    seeds += [bytes(r.message) for r in list(sb.messages)]
    rng = random.Random(5)
    for _ in range(1500):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[position] = rng.randrange(256)
            elif action == 1:
                del data[position:position + rng.randint(1, 40)]
            else:
                data[position:position] = rng.choice(seeds)[: rng.randint(1, 60)]
        sb.proxy.receive(sink, bytes(data))  # must never raise
    sb.proxy.connection_closed(sink)
    assert all(isinstance(m, (SipRequest, SipResponse)) for m in sink.sent)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_close_disconnects_every_client_and_frees_the_port() -> None:
    sb = await Sandbox(users=sandbox_users(), parties=False).start()
    phone = WebPhone(SipInfo.from_dict(sb.sip_info("101")), instance_id="bye",
                     reconnect=False)
    await phone.start()
    lost: list[str] = []
    phone.on("disconnected", lost.append)
    port = sb.port
    await sb.close()
    await wait_until(lambda: lost, 2, message="client notices the close")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    await phone.dispose()
    await sb.close()  # idempotent


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_wss_with_a_given_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with Sandbox(host="localhost", users=sandbox_users(), parties=False,
                       certfile=cert, keyfile=key) as sb:
        assert sb.url.startswith("wss://localhost:")
        info = sb.sip_info("101")
        assert info["transport"] == "WSS"
        trust = ssl.create_default_context(cafile=str(cert))
        client = SipClient(SipInfo.from_dict(info), instance_id="tls", ssl_context=trust)
        await client.start()
        assert sb.bindings("101")[0]["contact"].endswith(";transport=wss")
        await client.dispose()


async def test_listening_beyond_loopback_warns_loudly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def no_bind(self: SipServer) -> None:  # nothing actually listens on 0.0.0.0
        self.port = 5999

    async def no_close(self: SipServer) -> None:
        return None

    monkeypatch.setattr(SipServer, "start", no_bind)
    monkeypatch.setattr(SipServer, "close", no_close)
    async with Sandbox(host="0.0.0.0", parties=False) as sb:
        assert sb.outbound_proxy == "127.0.0.1:5999"
    assert "WARNING" in capsys.readouterr().err
    async with Sandbox(parties=False):
        pass
    assert capsys.readouterr().err == ""


async def test_cli_serves_prints_sipinfo_and_stops_on_sigint(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": [{"extension": "301", "password": "s3cret"}]}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "webphone.sandbox", "--users", str(users), "--no-parties"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not lines or not lines[-1].startswith("Ctrl-C"):
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
            assert line, proc.stderr.read() if proc.stderr else "no output"
            lines.append(line.strip())
        assert lines[0].startswith("webphone sandbox listening on ws://127.0.0.1:")
        info = json.loads(next(line for line in lines if line.startswith("{")))
        assert info["username"] == "301" and info["password"] == "s3cret"
        assert info["transport"] == "WS" and info["stunServers"] == []
        async with WebPhone(SipInfo.from_dict(info), instance_id="cli") as phone:
            assert phone.sip_client.registered
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
