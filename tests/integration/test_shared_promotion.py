"""A promotion that fails never leaves a real that cannot register (issue #10 item 4), and dummies
hear when the real loses and regains the SIP server (issue #13 item 12). SharedWebPhones in one
process (memory transport) on a real Kamailio and a real sandbox server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from support.kamailio import Kamailio
from support.ports import free_tcp_port
from support.wait import wait_until
from webphone import SipInfo
from webphone.errors import AuthenticationError, TransportError
from webphone.sandbox import Sandbox
from webphone.shared import SharedWebPhone
from webphone.shared.transports.base import HubOptions
from webphone.shared.transports.memory import MemoryTransport

OPTIONS = HubOptions(heartbeat_interval=0.1, heartbeat_timeout=0.8, idle_timeout=5.0)


class Seen:
    """The role and promotion_failed events of one member."""

    def __init__(self, phone: SharedWebPhone) -> None:
        self.roles: list[str] = []
        self.failures: list[BaseException] = []
        self.server: list[tuple[Any, ...]] = []
        phone.on("role", self.roles.append)
        phone.on("promotion_failed", self.failures.append)
        phone.on("disconnected", lambda reason: self.server.append(("disconnected", reason)))
        phone.on("reconnected", lambda: self.server.append(("reconnected",)))


@pytest.fixture
async def members() -> AsyncIterator[Callable[..., Any]]:
    """`await members(sip_info_dict)` -> a started SharedWebPhone on one memory hub (and its
    `Seen` as `.seen`); all disposed at the end."""
    transport = MemoryTransport(OPTIONS)
    made: list[SharedWebPhone] = []

    async def join(info: dict[str, Any]) -> SharedWebPhone:
        phone = SharedWebPhone(SipInfo.from_dict(info), hub=transport, preload_media=False)
        phone.seen = Seen(phone)  # type: ignore[attr-defined]
        made.append(phone)
        await phone.start()
        return phone

    yield join
    for phone in made:
        with contextlib.suppress(Exception):
            await phone.dispose(timeout=1)
    await transport.aclose()


@pytest.mark.kamailio
@pytest.mark.parametrize(("broken", "error"), [
    ({"password": "not-the-password"}, AuthenticationError),
    ({"outboundProxy": f"127.0.0.1:{free_tcp_port()}"}, TransportError),
], ids=["refused-credentials", "unreachable-server"])
async def test_a_member_that_cannot_register_gives_the_real_role_up(
    kamailio: Kamailio, fresh_user: Callable[[], str], members: Callable[..., Any],
    broken: dict[str, str], error: type[Exception], caplog: pytest.LogCaptureFixture,
) -> None:
    """The oldest dummy cannot register when promoted: it says why (event + log), gives the role
    up, and the next member becomes the real; the broken one stays in the group as a dummy."""
    user = fresh_user()
    good = kamailio.sip_info(user)
    first = await members(good)
    bad = await members({**good, **broken})  # same extension, so the same group
    third = await members(good)
    assert [first.role, bad.role, third.role] == ["real", "dummy", "dummy"]
    caplog.set_level(logging.ERROR, logger="webphone.shared.phone")
    first._crash()  # the hub promotes the oldest dummy: the broken one
    await wait_until(lambda: third.role == "real", 10, message="the third member takes over")
    assert [type(e) for e in bad.seen.failures] == [error]
    assert bad.seen.roles == [] and bad.role == "dummy"  # its `role` never changed
    assert any("could not become the group's real phone" in r.getMessage()
               and error.__name__ in r.getMessage() for r in caplog.records)
    await wait_until(lambda: len(kamailio.bindings(user)) == 1, 5, message="one binding")
    assert bad.member is not None
    await wait_until(lambda: bad.member.connected and bad.member.view.real_id == third.member_id,
                     5, message="the broken member is back (after 1 s), as a dummy")
    members_now = await third.members()
    assert sorted(m["role"] for m in members_now) == ["dummy", "real"]
    assert [m["self"] for m in members_now if m["role"] == "real"] == [True]


@pytest.mark.kamailio
async def test_a_lone_member_that_cannot_register_never_stays_real(
    kamailio: Kamailio, fresh_user: Callable[[], str], members: Callable[..., Any]
) -> None:
    """Alone, the broken member is promoted again and again (with backoff) and never holds the
    role; a good member that joins becomes the real at the broken one's next failure."""
    user = fresh_user()
    good = kamailio.sip_info(user)
    first = await members(good)
    bad = await members({**good, "password": "not-the-password"})
    first._crash()
    await wait_until(lambda: len(bad.seen.failures) >= 2, 10,
                     message="the lone member fails and retries")
    assert "real" not in bad.seen.roles
    late = await members(good)
    await wait_until(lambda: late.role == "real", 15, message="the good member takes over")
    assert bad.role == "dummy" and len(kamailio.bindings(user)) == 1


async def test_dummies_hear_the_real_lose_and_regain_the_server() -> None:
    """The real's `disconnected` / `reconnected` reach every dummy (through the snapshot), and
    the real reconnects once the server is back on the same address."""
    port = free_tcp_port()
    transport = MemoryTransport(OPTIONS)
    sandbox = await Sandbox(port=port, users={"101": "pw101"}).start()
    info = sandbox.sip_info("101")
    real = SharedWebPhone(SipInfo.from_dict(info), hub=transport, preload_media=False)
    dummy = SharedWebPhone(SipInfo.from_dict(info), hub=transport, preload_media=False)
    seen_real, seen_dummy = Seen(real), Seen(dummy)
    try:
        await real.start()
        await dummy.start()
        assert (real.role, dummy.role) == ("real", "dummy")
        await sandbox.close()  # the outage
        await wait_until(lambda: seen_dummy.server, 10, message="the dummy hears disconnected")
        assert seen_dummy.server[0][0] == "disconnected" and seen_dummy.server[0][1]
        assert seen_real.server[0][0] == "disconnected"
        sandbox = await Sandbox(port=port, users={"101": "pw101"}).start()
        await wait_until(lambda: ("reconnected",) in seen_dummy.server, 15,
                         message="the dummy hears reconnected")
        assert seen_real.server[-1] == ("reconnected",)
        assert real.role == "real" and sandbox.bindings("101")
    finally:
        for phone in (dummy, real):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(phone.dispose(timeout=1), 10)
        await transport.aclose()
        await sandbox.close()


@pytest.mark.redis
async def test_over_redis_a_resigning_real_is_replaced_and_rejoins(redis_server: Any) -> None:
    """The same rule without a hub process: the resigner releases its lease as its link
    closes, another member acquires it, and the resigner comes back as a dummy."""
    from webphone.shared.member import GroupMember
    from webphone.shared.transports.redis import RedisTransport

    options = HubOptions(heartbeat_interval=0.1, heartbeat_timeout=0.9)
    made: list[tuple[GroupMember, RedisTransport]] = []

    class Listener:
        def __init__(self, register: bool) -> None:
            self.register, self.member = register, None
            self.roles: list[tuple[Any, Any, int]] = []

        def on_role(self, old: Any, new: Any, epoch: int) -> None:
            self.roles.append((old, new, epoch))
            if new == "real" and self.register and self.member is not None:
                self.member.registered(epoch)

        def on_snapshot(self, snapshot: Any) -> None: ...
        def on_action(self, action: Any, token: Any) -> None: ...
        def on_released(self, released: Any) -> None: ...

    async def join(name: str, register: bool) -> tuple[GroupMember, Listener]:
        transport = RedisTransport(redis_server.url, options)
        listener = Listener(register)
        member = GroupMember(transport, "g-resign", listener, member_id=name)
        listener.member = member  # type: ignore[assignment]
        made.append((member, transport))
        await member.start(timeout=5)
        return member, listener

    try:
        a, la = await join("a", register=False)
        await wait_until(lambda: a.role == "real", 5, message="a acquires the lease")
        b, _ = await join("b", register=True)
        a.resign(rejoin_after=1.0)  # as SharedWebPhone does: the others acquire first
        assert la.roles[-1][:2] == ("real", "dummy")
        await wait_until(lambda: b.role == "real", 10, message="b takes the lease over")
        await wait_until(lambda: a.connected and a.role == "dummy" and a.view.real_id == "b", 10,
                         message="a is back as a dummy")

        # the old link's LEAVE may run after the new link's JOIN (same member id, same process
        # ident): a's next heartbeat lists it again
        async def both_listed() -> bool:
            listed = sorted((m.member_id, m.role) for m in await b.members())
            return listed == [("a", "dummy"), ("b", "real")]

        await wait_until(both_listed, 5, message="members: a dummy, b real")
    finally:
        for member, transport in made:
            await member.close()
            await transport.aclose()
