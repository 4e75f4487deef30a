"""The local transport with real hub processes (no SIP): one hub per group however many members
start at once, stale files, idle exit, a hung hub replaced, status without joining, and the
private runtime directory."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.group import enable_subreaper, hub_pids, reap_adopted_zombies, short_runtime_dir
from support.wait import wait_until
from webphone.shared.member import GroupMember, LinkToken
from webphone.shared.phone import SharedWebPhone, group_status
from webphone.shared.protocol import Action, Released, Role, Snapshot
from webphone.shared.transports.base import GroupTransportError, HubOptions
from webphone.shared.transports.local import LocalTransport, group_paths

FAST = HubOptions(heartbeat_interval=0.1, heartbeat_timeout=1.0, idle_timeout=0.5)


class Quiet:
    """A listener that registers at once as the real and answers nothing else."""

    def __init__(self) -> None:
        self.member: GroupMember | None = None
        self.roles: list[Role] = []

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        self.roles.append(new)
        if new == "real" and self.member is not None:
            self.member.registered(epoch)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        pass

    def on_action(self, action: Action, token: LinkToken) -> None:
        assert self.member is not None
        self.member.send_result(token, action.action_id, value="ok")

    def on_released(self, released: Released) -> None:
        pass


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def hub_processes(runtime_dir: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ours = b"webphone.shared.hub" in cmdline and os.fsencode(runtime_dir) in cmdline
        if ours and alive(int(entry)):
            found.append(int(entry))
    return found


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    enable_subreaper()
    path = short_runtime_dir()
    yield path
    for pid in hub_processes(path):
        os.kill(pid, signal.SIGKILL)
    reap_adopted_zombies(exclude=set())
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def members(runtime_dir: Path) -> AsyncIterator[Any]:
    made: list[GroupMember] = []

    async def join(n: int, **kwargs: Any) -> list[GroupMember]:
        async def one(i: int) -> GroupMember:
            listener = Quiet()
            member = GroupMember(LocalTransport(FAST, runtime_dir=runtime_dir), "g", listener,
                                 member_id=f"m{len(made)}-{i}", **kwargs)
            listener.member = member
            made.append(member)
            await member.start(timeout=10)
            return member

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    yield join
    for member in made:
        await member.close()


async def test_members_starting_at_once_share_exactly_one_hub(
    runtime_dir: Path, members: Any
) -> None:
    group = await members(8)
    pids = {m.peer_pid for m in group}
    assert len(pids) == 1 and None not in pids
    assert hub_processes(runtime_dir) == list(pids)
    assert hub_pids(runtime_dir) == list(pids)  # the lock holder wrote its pid
    assert sorted(m.role or "" for m in group) == ["dummy"] * 7 + ["real"]
    paths = group_paths(runtime_dir, "g")
    for path in (runtime_dir, paths.socket, paths.lock):
        assert path.stat().st_mode & 0o077 == 0, path
    # a status query sees all 8 and does not join
    status = await group_status("g", runtime_dir=str(runtime_dir))
    assert len(status) == 8 and [s["role"] for s in status].count("real") == 1
    assert len(await group[0].members()) == 8


async def test_the_hub_exits_when_the_group_is_empty(runtime_dir: Path, members: Any) -> None:
    [member] = await members(1)
    hub = member.peer_pid
    assert hub is not None
    await member.close()
    await wait_until(lambda: not alive(hub), 5, message="hub idle exit")
    assert not group_paths(runtime_dir, "g").socket.exists()
    assert await group_status("g", runtime_dir=str(runtime_dir)) == []


async def test_a_stale_socket_file_is_replaced(runtime_dir: Path, members: Any) -> None:
    paths = group_paths(runtime_dir, "g")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(paths.socket))
    stale.close()  # a socket file nobody listens on, as a SIGKILLed hub leaves it
    [member] = await members(1)
    assert member.peer_pid in hub_processes(runtime_dir)


async def test_a_killed_hub_is_replaced_and_the_real_keeps_its_role(
    runtime_dir: Path, members: Any
) -> None:
    group = await members(3)
    real = next(m for m in group if m.role == "real")
    epoch, old_hub = real.epoch, real.peer_pid
    assert old_hub is not None
    os.kill(old_hub, signal.SIGKILL)
    await wait_until(lambda: all(m.hubs_seen == 2 and m.connected for m in group), 10,
                     message="everyone on a new hub")
    assert {m.peer_pid for m in group} != {old_hub}
    assert real.role == "real" and real.epoch == epoch
    assert [m.role for m in group].count("real") == 1


async def test_a_hung_hub_is_killed_and_replaced(runtime_dir: Path, members: Any) -> None:
    group = await members(3, hub_timeout=0.6)
    real = next(m for m in group if m.role == "real")
    old_hub = real.peer_pid
    assert old_hub is not None
    os.kill(old_hub, signal.SIGSTOP)  # alive, socket open, never answers (F13)
    try:
        await wait_until(lambda: all(m.hubs_seen >= 2 and m.connected for m in group), 15,
                         message="everyone on a new hub")
    finally:
        if alive(old_hub):
            os.kill(old_hub, signal.SIGKILL)
    assert not alive(old_hub)
    assert real.role == "real" and [m.role for m in group].count("real") == 1
    dummy = next(m for m in group if m.role == "dummy")
    assert await dummy.request("hold", "c", {}) == "ok"


async def test_an_insecure_runtime_dir_is_refused(runtime_dir: Path) -> None:
    os.chmod(runtime_dir, 0o777)
    phone = SharedWebPhone({"username": "101", "password": "p", "authorizationId": "101",
                            "domain": "d", "outboundProxy": "127.0.0.1:1"},
                           runtime_dir=str(runtime_dir))
    with pytest.raises(GroupTransportError, match="0777"):
        await phone.start(timeout=5)
    os.chmod(runtime_dir, 0o700)
    assert hub_processes(runtime_dir) == []
