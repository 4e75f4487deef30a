"""Two groups of one extension that cannot see each other (two runtime directories): the phone
whose binding the other took finds out at its next refresh (issue 13 item 2). Against the
sandbox and against Kamailio."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from support.group import short_runtime_dir
from webphone import SharedWebPhone
from webphone.shared.transports.base import HubOptions

pytestmark = pytest.mark.timeout(60)


async def _two_groups_conflict(sip_info: dict[str, Any]) -> None:
    dirs = [short_runtime_dir(), short_runtime_dir()]
    phones = [SharedWebPhone(sip_info, runtime_dir=str(d), register_expires=10,
                             hub_options=HubOptions(idle_timeout=0.2)) for d in dirs]
    conflicts: asyncio.Queue[list[str]] = asyncio.Queue()
    phones[0].on("binding_conflict", conflicts.put_nowait)
    try:
        await phones[0].start()
        assert phones[0].role == "real"
        contact_b = phones[1]  # registers the same instance id from another group
        await contact_b.start()
        assert contact_b.role == "real"
        assert phones[0].instance_id == contact_b.instance_id
        async with asyncio.timeout(20):  # the first refresh comes 5 s after registering
            others = await conflicts.get()
        ours = contact_b.phone.sip_client.contact
        assert len(others) == 1 and others[0] in ours
    finally:
        for phone in phones:
            await phone.dispose(timeout=1)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


async def test_a_group_sees_another_group_take_its_binding_on_the_sandbox(
    sandbox_server: Any,
) -> None:
    """Sandbox registrar (replaces by instance id, RFC 5626 §6): the fetch shows the other."""
    await _two_groups_conflict(sandbox_server.sip_info("108"))


@pytest.mark.kamailio
async def test_a_group_sees_another_group_take_its_binding_on_kamailio(kamailio: Any) -> None:
    """Kamailio's registrar: the same detection from its 200 to the binding fetch."""
    await _two_groups_conflict(kamailio.sip_info("carol"))
