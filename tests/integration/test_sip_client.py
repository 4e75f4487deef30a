"""SipClient against real servers: transaction matching, clean failure on a lost connection,
verified TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.kamailio import Kamailio
from webphone import SipInfo
from webphone.errors import TransportError
from webphone.sandbox import Sandbox
from webphone.sip_client import SipClient

pytestmark = pytest.mark.kamailio


def forged_response(request_text: str, branch: str, status: str = "200 OK") -> str:
    """A response to `request_text` with the given Via branch (nothing else changed)."""
    head = request_text.split("\r\n\r\n", 1)[0].split("\r\n")
    keep = ("From", "To", "Call-ID", "CSeq")
    fields = [line for line in head[1:] if line.split(":", 1)[0] in keep]
    via = next(line for line in head if line.startswith("Via:")).split(";branch=")[0]
    lines = [f"SIP/2.0 {status}", f"{via};branch={branch}", *fields, "Content-Length: 0"]
    return "\r\n".join(lines) + "\r\n\r\n"


async def test_response_with_same_cseq_but_other_branch_does_not_complete(
    kamailio_proc: Callable[..., Kamailio],
) -> None:
    kam = kamailio_proc()
    client = SipClient(SipInfo.from_dict(kam.sip_info("alice")), instance_id="tx-1")
    await client.start()
    try:
        kam.pause()  # the server stays silent: only the frames we inject answer
        options = client.new_request("OPTIONS", f"sip:{kam.domain}")
        sent = asyncio.ensure_future(client.wait_for("outbound_message", timeout=5))
        pending = asyncio.create_task(client.request(options, timeout=10))
        await sent
        real_branch = options.branch
        assert real_branch
        # Same Call-ID and CSeq number: one with another branch, one with another method.
        client._on_frame(forged_response(str(options), "z9hG4bKsomeoneelse", "200 Wrong Branch"))
        other = str(options).replace("OPTIONS", "INFO")
        client._on_frame(forged_response(other, real_branch, "200 Wrong Method"))
        client._on_frame(forged_response(str(options), real_branch, "202 Accepted"))
        response = await asyncio.wait_for(pending, 2)
        assert (response.status_code, response.reason) == (202, "Accepted")
    finally:
        kam.resume()
        await client.dispose()


async def test_pending_request_fails_when_the_connection_closes(
    kamailio_proc: Callable[..., Kamailio],
) -> None:
    kam = kamailio_proc()
    client = SipClient(SipInfo.from_dict(kam.sip_info("bob")), instance_id="tx-2",
                       reconnect=False)
    await client.start()
    try:
        kam.pause()
        options = client.new_request("OPTIONS", f"sip:{kam.domain}")
        sent = asyncio.ensure_future(client.wait_for("outbound_message", timeout=5))
        pending = asyncio.create_task(client.request(options, timeout=30))
        await sent
        # The server dies without answering: SIGKILL to its whole process group closes the
        # WebSocket; the pending request must fail now, not after its 30 s timeout.
        kam.proc.send_signal(signal.SIGKILL, group=True)
        with pytest.raises(TransportError):
            await asyncio.wait_for(pending, 5)
    finally:
        await client.dispose()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


async def test_wss_verifies_the_server_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    async with Sandbox(certfile=str(cert), keyfile=str(key), parties=False) as sb:
        data = sb.sip_info(sb.users[0].extension)
        assert data["transport"] == "WSS"
        info = SipInfo.from_dict(data)
        untrusted = SipClient(info, instance_id="tls-1", reconnect=False)
        with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await untrusted.start()
        await untrusted.dispose()
        trusting = ssl.create_default_context(cafile=str(cert))
        client = SipClient(info, instance_id="tls-2", ssl_context=trusting)
        await client.start()
        assert client.registered and client.url.startswith("wss://")
        await client.dispose()
