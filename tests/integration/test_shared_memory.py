"""SharedWebPhones in one process (memory transport) on a real Kamailio: one binding, graceful
make-before-break handover, last one out unregisters, crash and hang of the real, a hub crash,
late joiners and dummies' actions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from support.kamailio import Kamailio
from support.wait import wait_until
from webphone import SipInfo
from webphone.errors import CallError
from webphone.shared import SharedWebPhone
from webphone.shared.transports.base import HubOptions
from webphone.shared.transports.memory import MemoryLink, MemoryTransport
from webphone.sip import SipRequest

pytestmark = pytest.mark.kamailio

OPTIONS = HubOptions(heartbeat_interval=0.1, heartbeat_timeout=0.8, idle_timeout=5.0)


class Trace:
    """Every REGISTER a phone sends (Expires value) and its role events."""

    def __init__(self, phone: SharedWebPhone) -> None:
        self.registers: list[str | None] = []
        self.roles: list[str] = []
        phone.on("outbound_message", self._out)
        phone.on("role", self.roles.append)

    def _out(self, message: Any) -> None:
        if isinstance(message, SipRequest) and message.method == "REGISTER":
            self.registers.append(message.headers.get("Expires"))


@pytest.fixture
async def group(
    kamailio: Kamailio, fresh_user: Callable[[], str]
) -> AsyncIterator[Any]:
    user = fresh_user()
    transport = MemoryTransport(OPTIONS)
    made: list[SharedWebPhone] = []

    async def join(n: int = 1, **kwargs: Any) -> list[SharedWebPhone]:
        out = []
        for _ in range(n):
            phone = SharedWebPhone(SipInfo.from_dict(kamailio.sip_info(user)), hub=transport,
                                   preload_media=False, **kwargs)
            phone.trace = Trace(phone)  # type: ignore[attr-defined]
            await phone.start()
            made.append(phone)
            out.append(phone)
        return out

    join.user = user  # type: ignore[attr-defined]
    join.transport = transport  # type: ignore[attr-defined]
    yield join
    for phone in made:
        with contextlib.suppress(Exception):
            await phone.dispose(timeout=1)
    await transport.aclose()


def link(phone: SharedWebPhone) -> MemoryLink:
    assert phone.member is not None and phone.member._token is not None
    assert isinstance(phone.member._token.link, MemoryLink)
    return phone.member._token.link


async def test_one_real_one_binding(kamailio: Kamailio, group: Any) -> None:
    phones = await group(4)
    assert [p.role for p in phones] == ["real", "dummy", "dummy", "dummy"]
    assert len(kamailio.bindings(group.user)) == 1
    assert all(p.trace.registers == [] for p in phones[1:])
    members = await phones[2].members()
    assert [m["role"] for m in members] == ["real", "dummy", "dummy", "dummy"]
    assert [m["self"] for m in members] == [False, False, True, False]


async def test_graceful_leave_is_make_before_break(kamailio: Kamailio, group: Any) -> None:
    a, b, c = await group(3)
    before = kamailio.bindings(group.user)[0]["contact"]
    await a.dispose()
    assert b.role == "real" and c.role == "dummy"
    assert set(b.trace.registers) == {"60"}  # the successor registered (401, then 200) ...
    assert "0" not in a.trace.registers  # ... and the old real did not unregister
    bindings = kamailio.bindings(group.user)
    assert len(bindings) == 1 and bindings[0]["contact"] != before
    await b.dispose()
    await c.dispose()  # the last one out unregisters
    assert set(c.trace.registers) == {"60", "0"}
    assert kamailio.bindings(group.user) == []


async def test_crash_of_the_real_promotes_a_dummy(kamailio: Kamailio, group: Any) -> None:
    a, b, c = await group(3)
    a._crash()
    await wait_until(lambda: b.role == "real", 5, message="b promoted")
    assert c.role == "dummy" and b.epoch > 1
    await wait_until(lambda: len(kamailio.bindings(group.user)) == 1, 5)
    with pytest.raises(CallError, match="no call"):
        await c._request("hold", "nope", {})  # served by the new real


async def test_hung_real_is_replaced_and_stands_down_on_wake(
    kamailio: Kamailio, group: Any
) -> None:
    a, b = await group(2, hub_timeout=60)
    link(a).freeze()  # a hangs: no heartbeats reach the hub, nothing reaches a
    await wait_until(lambda: b.role == "real", 5, message="b promoted after the timeout")
    a.member._last_tick -= 10  # type: ignore[union-attr]  # a's loop did not run meanwhile
    registers_before = list(a.trace.registers)
    link(a).thaw()
    await wait_until(lambda: a.role == "dummy" and "dummy" in a.trace.roles, 5)
    assert a.trace.registers == registers_before  # no REGISTER after waking
    assert a.phone.sip_client.__class__.__name__ == "DummySipClient"
    bindings = kamailio.bindings(group.user)
    assert len(bindings) == 1


async def test_hub_crash_keeps_the_real_and_its_registration(
    kamailio: Kamailio, group: Any
) -> None:
    a, b, c = await group(3)
    binding = kamailio.bindings(group.user)[0]["contact"]
    group.transport.kill_hub(a.group)
    await wait_until(lambda: all(p.member.hubs_seen == 2 and p.member.connected  # type: ignore
                                 for p in (a, b, c)), 5, message="all on the new hub")
    assert [p.role for p in (a, b, c)] == ["real", "dummy", "dummy"]
    assert set(a.trace.registers) == {"60"} and len(a.trace.registers) == 2  # the first only
    assert kamailio.bindings(group.user)[0]["contact"] == binding
    with pytest.raises(CallError):
        await b._request("hold", "nope", {})


async def test_late_joiner_gets_the_snapshot_at_once(group: Any) -> None:
    [a] = await group(1)
    # stand-in for a call on the real (the snapshot path is what is tested here)
    a._ended["c1"] = (asyncio.get_running_loop().time() + 60,
                      {"id": "c1", "direction": "inbound", "state": "ringing",
                       "remote_number": "102"})
    a._flush_publish()
    [b] = await group(1)
    assert [(p.call_id, p.state) for p in b._proxies.values()] == [("c1", "ringing")]


async def test_members_and_status_of_a_memory_group(group: Any) -> None:
    from webphone.shared import group_status

    a, _b = await group(2)
    status = await group_status(a.group, hub=group.transport)
    assert [s["role"] for s in status] == ["real", "dummy"]
    assert all(isinstance(s["since"], float) for s in status)
