"""The local transport without spawning processes: the private runtime directory, framing, and
an in-process hub on a real Unix socket (peer credentials, status probes, rogue clients)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webphone.shared.hub import Hub
from webphone.shared.protocol import (
    MAX_FRAME_BYTES,
    Error,
    Frame,
    Heartbeat,
    Hello,
    Members,
    MembersQuery,
    RoleChange,
    Welcome,
)
from webphone.shared.transports.base import GroupTransportError, HubOptions
from webphone.shared.transports.local import (
    FramedProtocol,
    LocalTransport,
    check_runtime_dir,
    default_runtime_dir,
    ensure_runtime_dir,
    group_paths,
    serve_hub,
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wpt-"))
    yield path
    shutil.rmtree(path)


# -- the runtime directory ------------------------------------------------------------------------


def test_runtime_dir_is_created_private(short_dir: Path) -> None:
    path = ensure_runtime_dir(short_dir / "rt")
    assert (path.stat().st_mode & 0o777) == 0o700
    check_runtime_dir(path)
    path.rmdir()


def test_runtime_dir_with_group_or_other_access_is_refused(short_dir: Path) -> None:
    path = short_dir / "open"
    path.mkdir()
    os.chmod(path, 0o755)
    with pytest.raises(GroupTransportError, match="0755"):
        check_runtime_dir(path)
    path.rmdir()


def test_runtime_dir_symlink_is_refused(short_dir: Path) -> None:
    real = short_dir / "real"
    real.mkdir(mode=0o700)
    link = short_dir / "link"
    link.symlink_to(real)
    with pytest.raises(GroupTransportError, match="symlink"):
        check_runtime_dir(link)
    link.unlink()
    real.rmdir()


def test_default_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBPHONE_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_runtime_dir() == Path("/run/user/1000/webphone")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_runtime_dir() == Path(f"/tmp/webphone-{os.geteuid()}")
    monkeypatch.setenv("WEBPHONE_RUNTIME_DIR", "/x/y")
    assert default_runtime_dir() == Path("/x/y")


def test_group_paths_are_hashed_and_bounded(short_dir: Path) -> None:
    a = group_paths(short_dir, "101@sip.test")
    b = group_paths(short_dir, "../../etc/passwd\x00")
    assert a.socket.parent == b.socket.parent == short_dir
    assert a.socket.name.endswith(".sock") and len(a.socket.name) == 29
    assert a.socket != b.socket and a.lock.suffix == ".lock"
    with pytest.raises(GroupTransportError, match="too long"):
        group_paths(short_dir / ("x" * 100), "g")


# -- framing --------------------------------------------------------------------------------------


class Collect(FramedProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []
        self.lost_reasons: list[str] = []

    def frame_bytes(self, data: bytes) -> None:
        self.frames.append(data)

    def lost(self, reason: str) -> None:
        self.lost_reasons.append(reason)


def framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_frames_split_and_joined_across_reads() -> None:
    p = Collect()
    stream = framed(b"one") + framed(b"") + framed(b"three" * 1000)
    for i in range(0, len(stream), 7):
        p.data_received(stream[i:i + 7])
    assert p.frames == [b"one", b"", b"three" * 1000]
    p.data_received(framed(b"a") + framed(b"b"))
    assert p.frames[-2:] == [b"a", b"b"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300) | st.builds(lambda n, b: bytes([b]) * n,
                                                     st.integers(0, 150_000),
                                                     st.integers(0, 255)), max_size=8),
       st.data())
def test_frames_come_out_whole_whatever_the_reads_into_the_buffer(
        payloads: list[bytes], data: st.DataObject) -> None:
    # the transport's reads: get_buffer, the kernel fills part of it, buffer_updated; frames
    # larger than the first buffer make it grow (and it is dropped once empty), a partial one
    # is moved to the front
    p = Collect()
    stream = memoryview(b"".join(framed(x) for x in payloads))
    while stream:
        room = p.get_buffer(-1)
        assert len(room) > 0
        n = min(len(room), len(stream), data.draw(st.integers(1, 70_000)))
        room[:n] = stream[:n]
        del room  # asyncio drops its view before the next read
        p.buffer_updated(n)
        stream = stream[n:]
    assert p.frames == payloads and p.lost_reasons == []
    assert len(p.get_buffer(-1)) <= 64 * 1024  # nothing buffered: no large buffer kept


def test_an_oversized_length_is_a_protocol_error() -> None:
    p = Collect()
    p.data_received(struct.pack(">I", MAX_FRAME_BYTES + 1) + b"x")
    assert p.frames == [] and "more than" in p.lost_reasons[0]
    p.data_received(framed(b"late"))  # nothing is read after the error
    assert p.frames == []


# -- an in-process hub on a real socket -----------------------------------------------------------


@pytest.fixture
async def hub_socket(short_dir: Path) -> AsyncIterator[tuple[Hub, Path]]:
    hub = Hub("g", HubOptions(heartbeat_interval=0.05, heartbeat_timeout=1.0))
    path = short_dir / "hub.sock"
    server = await serve_hub(hub, path)
    assert (path.stat().st_mode & 0o777) == 0o600
    yield hub, path
    server.close()
    hub.close()
    await server.wait_closed()


class RawClient:
    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def connect(self, path: Path) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(str(path))
        asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                (n,) = struct.unpack(">I", await self.reader.readexactly(4))
                await self.frames.put(await self.reader.readexactly(n))
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.frames.put(None)

    def send(self, payload: bytes) -> None:
        self.writer.write(framed(payload))

    async def next(self) -> dict[str, object] | None:
        data = await asyncio.wait_for(self.frames.get(), 3)
        return None if data is None else json.loads(data)


async def test_members_connect_through_local_transport(hub_socket: tuple[Hub, Path]) -> None:
    _hub, path = hub_socket
    transport = LocalTransport(runtime_dir=path.parent, spawn=False)
    got: asyncio.Queue[Frame] = asyncio.Queue()
    link = await transport._open(path, got.put_nowait, lambda reason: None)
    assert link.peer_pid == os.getpid()  # SO_PEERCRED of the hub's end
    link.send(Hello("m1", os.getpid(), "h", "g", 1.0))
    assert isinstance(await asyncio.wait_for(got.get(), 3), Welcome)
    assert isinstance(await asyncio.wait_for(got.get(), 3), RoleChange)  # promoted
    link.send(Heartbeat())
    assert isinstance(await asyncio.wait_for(got.get(), 3), Heartbeat)
    link.close()


async def test_a_status_probe_is_answered_and_never_joins(hub_socket: tuple[Hub, Path]) -> None:
    hub, path = hub_socket
    member = RawClient()
    await member.connect(path)
    member.send(Hello("m1", 1, "h", "g", 1.0).to_json())
    assert (await member.next() or {})["type"] == "welcome"
    probe = RawClient()
    await probe.connect(path)
    probe.send(MembersQuery().to_json())
    answer = await probe.next()
    assert answer is not None and answer["type"] == "members"
    assert [m["member_id"] for m in answer["members"]] == ["m1"]  # type: ignore[index, union-attr]
    assert await probe.next() is None  # closed after the answer
    assert [m.member_id for m in hub.coordinator.members()] == ["m1"]


async def test_a_rogue_client_is_disconnected_and_the_hub_lives(
    hub_socket: tuple[Hub, Path],
) -> None:
    _hub, path = hub_socket
    for garbage in (b"not json", b'{"v":1,"type":"action","action_id":"a","name":"os.system",'
                    b'"call_id":null,"args":{},"timeout":1}', b'{"v":1,"type":"welcome"}'):
        rogue = RawClient()
        await rogue.connect(path)
        rogue.send(garbage)
        error = await rogue.next()
        assert error is not None and error["type"] == "error" and error["code"] == "protocol"
        assert await rogue.next() is None
    huge = RawClient()
    await huge.connect(path)
    huge.writer.write(struct.pack(">I", MAX_FRAME_BYTES + 1))
    assert await huge.next() is None  # cut off without reading the body
    # the hub still serves a well-behaved member
    good = RawClient()
    await good.connect(path)
    good.send(Hello("ok", 1, "h", "g", 1.0).to_json())
    assert (await good.next() or {})["type"] == "welcome"


async def test_query_members_without_a_hub_is_none(short_dir: Path) -> None:
    transport = LocalTransport(runtime_dir=short_dir / "nothing-here", spawn=False)
    assert await transport.query_members("g") is None


async def test_stale_socket_file_without_hub_is_refused_not_hung(short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens: connect is refused at once
    transport = LocalTransport(runtime_dir=short_dir, spawn=False)
    with pytest.raises(ConnectionRefusedError):
        await transport._open(path, lambda f: None, lambda r: None)


def test_error_frames_are_hub_frames() -> None:
    assert Error("protocol", "x").TYPE == "error" and Members(()).TYPE == "members"
