"""GroupMember against an in-memory hub (no SIP): a member gives the real role up (a promotion
that could not register) and the group promotes another at once; members() fails with errors of
the documented hierarchy only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from support.wait import wait_until
from webphone.errors import HubTimeoutError, WebPhoneError
from webphone.shared.member import GroupMember, LinkToken
from webphone.shared.protocol import Action, Released, Role, Snapshot
from webphone.shared.transports.base import HubOptions
from webphone.shared.transports.memory import MemoryLink, MemoryTransport

OPTIONS = HubOptions(heartbeat_interval=0.05, heartbeat_timeout=0.4, idle_timeout=5.0)


class Listener:
    """Records roles; as the real, reports `registered` unless told not to (a failing one)."""

    def __init__(self, register: bool) -> None:
        self.register = register
        self.member: GroupMember | None = None
        self.roles: list[tuple[Role | None, Role, int]] = []

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        self.roles.append((old, new, epoch))
        if new == "real" and self.register and self.member is not None:
            self.member.registered(epoch)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        pass

    def on_action(self, action: Action, token: LinkToken) -> None:
        pass

    def on_released(self, released: Released) -> None:
        pass


@pytest.fixture
async def transport() -> AsyncIterator[MemoryTransport]:
    t = MemoryTransport(OPTIONS)
    yield t
    await t.aclose()


async def join(transport: MemoryTransport, name: str, *, register: bool = True,
               **kwargs: Any) -> tuple[GroupMember, Listener]:
    listener = Listener(register)
    member = GroupMember(transport, "g", listener, member_id=name, **kwargs)
    listener.member = member
    await member.start(timeout=3)
    return member, listener


async def test_a_real_that_resigns_is_replaced_at_once_and_rejoins_as_a_dummy(
    transport: MemoryTransport,
) -> None:
    """The oldest dummy is promoted as soon as the resigning real's link closes; the resigner
    is told dummy first (so it fences), and comes back without claiming the role."""
    a, la = await join(transport, "a", register=False)  # real, but cannot register
    b, _ = await join(transport, "b")
    assert (a.role, b.role) == ("real", "dummy")
    epoch = a.epoch
    a.resign()
    assert la.roles[-1] == ("real", "dummy", epoch)  # synchronously: fenced before anything
    await wait_until(lambda: b.role == "real", 3, message="b promoted")
    await wait_until(lambda: a.connected and a.view.real_id == "b", 3, message="a is back")
    assert a.role == "dummy" and b.epoch > epoch
    assert [r for r in la.roles if r[1] == "real"] == [(None, "real", epoch)]
    assert [m.role for m in await b.members()] == ["real", "dummy"]  # b now, a rejoined
    await a.close()
    await b.close()


async def test_a_resigning_member_stays_out_for_its_backoff(transport: MemoryTransport) -> None:
    """`rejoin_after` keeps the member out of the group that long (the next promotion attempt of
    a lone broken member waits for it)."""
    a, _ = await join(transport, "a", register=False)
    a.resign(rejoin_after=0.3)
    assert not a.connected
    await wait_until(lambda: a.connected, 5, message="a rejoins after its backoff")
    await wait_until(lambda: a.role == "real", 5, message="alone: promoted again, to retry")
    a.resign()  # only a real resigns; a dummy or closed member ignores it
    await a.close()
    a.resign()


async def test_members_fails_with_hub_timeout_or_closed_never_a_bare_timeout(
    transport: MemoryTransport,
) -> None:
    """A hub that does not answer: HubTimeoutError (a TimeoutError too); a closed member:
    WebPhoneError."""
    a, _ = await join(transport, "a", hub_timeout=30.0)
    token = a._token
    assert token is not None and isinstance(token.link, MemoryLink)
    token.link.freeze()
    with pytest.raises(HubTimeoutError, match=r"did not answer a members query within 0\.2 s"):
        await a.members(timeout=0.2)
    token.link.thaw()
    assert [m.member_id for m in await a.members()] == ["a"]
    await a.close()
    with pytest.raises(WebPhoneError, match="closed"):
        await asyncio.wait_for(a.members(), 5)
