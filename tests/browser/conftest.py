"""Fixtures of the browser tier: one headless Chromium for the whole tier, a sandbox on wss://
with a throw-away certificate (the official SDK only opens wss://), Kamailio for JsSIP, and the
interop table every scenario step writes into.

Needs Debian's `chromium`, Node.js and `npm ci` in tests/browser (scripts/test does both); a
missing piece skips the tier, or fails it under CI=true.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import BROWSER_DIR, CHROMIUM, Browser, ChromiumDriver
from interop import Interop

from support.kamailio import Kamailio
from support.sandbox_server import SandboxServer


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


# -- Chromium ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromiumDriver]:
    """The driver of one headless Chromium, shared by every browser test."""
    _require(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing (apt-get install chromium)")
    _require((BROWSER_DIR / "node_modules" / "puppeteer-core").is_dir(),
             "tests/browser/node_modules missing (cd tests/browser && npm ci)")
    driver = ChromiumDriver(tmp_path_factory.mktemp("chromium"))
    driver.start()
    try:
        yield driver
    finally:
        driver.stop()


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
async def browser(
    chromium: ChromiumDriver, request: pytest.FixtureRequest
) -> AsyncIterator[Browser]:
    """A control connection for this test; its tabs close at the end of the test. When the
    test failed, each tab's console (the SDKs log every SIP message) is printed first."""
    async with chromium.connect() as connected:
        yield connected
        if request.node.stash.get(_FAILED, False):
            for tab in connected.tabs:
                print(f"--- console of {tab.page} ({tab.id}) ---")
                print(await tab.console(last=150))


# -- TLS and the sandbox ---------------------------------------------------------------------------


class TestTls:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it."""

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webphone test CA")])
        ca = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "cert.pem"
        self.key_file = directory / "key.pem"
        self.ca_file.write_bytes(ca.public_bytes(pem))
        self.cert_file.write_bytes(leaf.public_bytes(pem))
        self.key_file.write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def client_context(self) -> ssl.SSLContext:
        """What Python phones verify the sandbox with (the test CA only)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


class TlsSandbox:
    """The sandbox on wss://: sipInfo says WSS, Python phones get the CA in `options`."""

    def __init__(self, server: SandboxServer, tls: TestTls) -> None:
        self.server, self.tls = server, tls
        self.domain = server.domain
        self.options: dict[str, Any] = {"ssl_context": tls.client_context()}

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.server.port}"

    def sip_info(self, user: str, **overrides: Any) -> dict[str, Any]:
        return self.server.sip_info(user, **{"transport": "WSS", **overrides})

    def clear_bindings(self, user: str) -> None:
        self.server.clear_bindings(user)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)


@pytest.fixture(scope="session")
def test_tls(tmp_path_factory: pytest.TempPathFactory) -> TestTls:
    return TestTls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def rc_sandbox(test_tls: TestTls) -> Iterator[TlsSandbox]:
    """The sandbox on wss:// with its parties (voicemail 903 ...), for the whole tier."""
    server = SandboxServer(certfile=test_tls.cert_file, keyfile=test_tls.key_file, parties=True)
    server.start()
    try:
        yield TlsSandbox(server, test_tls)
    finally:
        server.stop()


_users = itertools.cycle(str(n) for n in range(101, 111))


@pytest.fixture
def take_users(request: pytest.FixtureRequest) -> Callable[[Any, int], list[str]]:
    """`take_users(server, n)`: the next n of 101..110 with their bindings cleared."""

    def take(server: Any, count: int) -> list[str]:
        chosen = [next(_users) for _ in range(count)]
        for user in chosen:
            server.clear_bindings(user)
        return chosen

    return take


@pytest.fixture(params=["rc-sandbox", "jssip-sandbox", "jssip-kamailio"])
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server_for(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    """The SIP server a stack runs against (Kamailio is started on first use)."""

    def get(stack: str) -> Any:
        if stack.endswith("kamailio"):
            kam: Kamailio = request.getfixturevalue("kamailio")
            return kam
        return request.getfixturevalue("rc_sandbox")

    return get


# -- the interop table -----------------------------------------------------------------------------

_INTEROP = Interop()


@pytest.fixture
def interop() -> Interop:
    return _INTEROP


def pytest_sessionfinish(session: pytest.Session) -> None:
    cache = getattr(session.config, "cache", None)  # absent with -p no:cacheprovider
    if _INTEROP.results and cache is not None:
        path = cache.mkdir("webphone") / "interop.json"
        path.write_text(json.dumps(_INTEROP.as_json(), indent=1))
