"""`webphone.shared.transports.redis_wire` against a real redis-server: replies in order, error
replies as redis-py raises them, a silent server times the connection out, a killed connection
fails what waits, ACL users and their channel rules, pushes kept until handled, TLS and Unix
socket connections taken over. The link's own behaviour over it is in test_shared_redis.py."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from support.ports import HOST, free_tcp_port
from support.procs import ManagedProcess
from support.redis_server import RedisServer
from support.wait import wait_until, wait_until_sync
from webphone.shared.transports.redis_wire import Subscription, open_wire, subscribe

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


async def test_replies_come_back_in_order_and_errors_as_redis_py_raises_them(
        redis_server: RedisServer) -> None:
    """Pipelined commands each get their own reply (bytes, int, list); an error reply raises
    ResponseError (NOSCRIPT: NoScriptError) for its command only."""
    client = Redis.from_url(redis_server.url)
    wire = await open_wire(client, timeout=5.0)
    try:
        replies = [wire.command("SET", "k", "v"), wire.command("INCR", "n"),
                   wire.command("EVALSHA", "0" * 40, 0), wire.command("GET", "k"),
                   wire.command("EVAL", "return {1, 'two', ARGV[1]}", 0, 3.5),
                   wire.command("INCR", "k")]
        done = await asyncio.gather(*replies, return_exceptions=True)
        assert done[:2] == [b"OK", 1] and done[3:5] == [b"v", [1, b"two", b"3.5"]]
        assert isinstance(done[2], redis_errors.NoScriptError)
        assert isinstance(done[5], redis_errors.ResponseError)
        assert "not an integer" in str(done[5])
        assert await wire.command("PING") == b"PONG"  # the connection goes on
    finally:
        wire.close()
        await client.aclose()


async def test_a_server_that_stops_answering_times_the_connection_out(
        redis_server: RedisServer) -> None:
    """The oldest command unanswered after `timeout`: every waiting command fails with
    TimeoutError, on_lost is told, the connection is closed and later commands fail at once."""
    client = Redis.from_url(redis_server.url)
    lost: list[BaseException] = []
    wire = await open_wire(client, timeout=0.3, on_lost=lost.append)
    redis_server.pause()
    try:
        first, second = wire.command("PING"), wire.command("PING")
        with pytest.raises(redis_errors.TimeoutError):
            await first
        with pytest.raises(redis_errors.TimeoutError):
            await second
        assert wire.closed and len(lost) == 1
        with pytest.raises(redis_errors.ConnectionError):
            await wire.command("PING")
    finally:
        redis_server.resume()
        wire.close()
        await client.aclose()


async def test_a_killed_connection_fails_what_waits_and_a_closed_one_tells_nobody(
        redis_server: RedisServer) -> None:
    """CLIENT KILL: the waiting command fails with ConnectionError and on_lost is called once;
    close() fails what waits but does not call on_lost (the owner knows)."""
    client = Redis.from_url(redis_server.url)
    lost: list[BaseException] = []
    wire = await open_wire(client, timeout=None, on_lost=lost.append)
    name = "wire-under-test"
    assert await wire.command("CLIENT", "SETNAME", name) == b"OK"
    waiting = wire.command("BLPOP", "nothing", 0)
    killed = await client.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    assert killed >= 1
    with pytest.raises(redis_errors.ConnectionError):
        await waiting
    await wait_until(lambda: len(lost) == 1, 2)
    other = await open_wire(client, timeout=None, on_lost=lost.append)
    pending = other.command("BLPOP", "nothing", 0)
    other.close()
    with pytest.raises(redis_errors.ConnectionError):
        await pending
    assert len(lost) == 1
    await client.aclose()


async def test_an_acl_user_connects_by_its_url_and_its_channel_rules_hold(
        redis_server: RedisServer) -> None:
    """The wire connects as the URL says (AUTH user:password): a user limited to the group's
    keys and channels (``~webphone:* &webphone:*``) runs scripts and subscribes to its
    channels; a channel outside them is refused (NOPERM), not silently unsubscribed."""
    admin = Redis.from_url(redis_server.url)
    await admin.execute_command("ACL", "SETUSER", "phone", "on", ">secret", "~webphone:*",
                                "&webphone:*", "+@all")
    url = f"redis://phone:secret@{redis_server.host}:{redis_server.port}/0"
    client = Redis.from_url(url)
    wire = await open_wire(client, timeout=5.0)
    try:
        assert await wire.command("EVAL", "return redis.call('SET', KEYS[1], 'x')", 1,
                                  "webphone:k") == b"OK"
        with pytest.raises(redis_errors.ResponseError, match=r"(?i)noperm|permission"):
            await wire.command("SET", "other:k", "x")
        sub = await subscribe(client, "webphone:chan", 5.0)
        sub.close()
        with pytest.raises(redis_errors.ResponseError, match=r"(?i)noperm|permission"):
            await subscribe(client, "other:chan", 5.0)
    finally:
        wire.close()
        await client.aclose()
        await admin.aclose()


async def test_pushes_are_kept_until_handled_then_handed_over_as_they_come(
        redis_server: RedisServer) -> None:
    """Messages published before `handle` are kept, in order; then each one goes to the
    handler as it arrives; `stop` ends `handle`; a lost connection makes it raise."""
    client = Redis.from_url(redis_server.url)
    sub = await subscribe(client, "webphone:c", 5.0)
    got: list[bytes] = []
    try:
        for n in range(3):
            await client.publish("webphone:c", f"m{n}")

        def handler(data: bytes) -> None:
            got.append(data)
            if len(got) == 5:
                sub.stop()

        async def publish_later() -> None:
            await wait_until(lambda: len(got) == 3, 5)
            for n in range(3, 6):
                await client.publish("webphone:c", f"m{n}")

        await asyncio.gather(sub.handle(handler), publish_later())
        assert got == [f"m{n}".encode() for n in range(5)]
        handling = asyncio.ensure_future(sub.handle(got.append))
        await wait_until(lambda: len(got) == 6, 5)  # m5 came while nobody handled: kept
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        with pytest.raises(redis_errors.ConnectionError):
            await asyncio.wait_for(handling, 5)
    finally:
        sub.close()
        await client.aclose()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (cryptography: aiortc's dependency already)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
                ipaddress.ip_address(HOST))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A second redis-server on TLS only and a Unix socket: (rediss:// URL, unix:// URL)."""
    cert, key = _self_signed(tmp_path)
    port, sock = free_tcp_port(), tmp_path / "redis.sock"
    proc = ManagedProcess("redis-tls", [
        "redis-server", "--port", "0", "--bind", HOST, "--tls-port", str(port),
        "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
        "--tls-auth-clients", "no", "--unixsocket", sock, "--save", "", "--appendonly", "no",
        "--loglevel", "warning"], tmp_path / "redis-tls.log")
    proc.start()
    try:
        wait_until_sync(lambda: proc.check_alive() or sock.exists(), 10)
        yield (f"rediss://{HOST}:{port}/0?ssl_ca_certs={cert}", f"unix://{sock}?db=2")
    finally:
        proc.stop()


async def _first(sub: Subscription) -> bytes:
    got: list[bytes] = []

    def handler(data: bytes) -> None:
        got.append(data)
        sub.stop()

    await sub.handle(handler)
    return got[0]


async def test_tls_and_unix_socket_connections_are_taken_over_as_redis_py_made_them(
        tls_redis: tuple[str, str]) -> None:
    """`open_wire` over TLS (``rediss://``, verified against its CA) and a Unix socket (with a
    database number): commands and pushes go over the connection redis-py opened."""
    for url, db in zip(tls_redis, (0, 2), strict=True):
        client = Redis.from_url(url, protocol=2)
        wire = await open_wire(client, timeout=5.0)
        sub = await subscribe(client, "webphone:c", 5.0)
        try:
            info = (await wire.command("CLIENT", "INFO")).decode()
            assert f" db={db} " in info and await wire.command("PING") == b"PONG"
            assert await wire.command("PUBLISH", "webphone:c", url) == 1
            assert await asyncio.wait_for(_first(sub), 5) == url.encode()
        finally:
            sub.close()
            wire.close()
            await client.aclose()
