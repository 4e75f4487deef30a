"""Real processes: a member that cannot register when it is promoted never stays the real
(issue #10 item 4); the group promotes the next member, which registers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from support.group import MemberGroup
from support.kamailio import Kamailio
from support.wait import wait_until

pytestmark = [pytest.mark.system, pytest.mark.kamailio]


def contact_user(contact: str) -> str:
    return contact.split("sip:", 1)[1].split("@", 1)[0]


async def test_a_member_whose_promotion_fails_never_stays_real(
    kamailio: Kamailio, fresh_user: Callable[[], str], member_group: Callable[..., MemberGroup],
    tmp_path: Path,
) -> None:
    """b (a wrong password: same extension, same group) is the oldest dummy when the real is
    SIGKILLed: its REGISTER is refused, it reports why and gives the role up, and c becomes the
    real with the group's only binding; b stays a member, as a dummy."""
    user = fresh_user()
    group = member_group(user)
    bad_info = tmp_path / "bad-sip-info.json"
    fd = os.open(bad_info, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({**kamailio.sip_info(user), "password": "not-the-password"}, out)
    [a] = await group.spawn_ready(["a"])
    [b] = await group.spawn_ready(["b"], "--sip-info", str(bad_info))  # the later one wins
    [c] = await group.spawn_ready(["c"])
    assert [a.role, b.role, c.role] == ["real", "dummy", "dummy"]
    since_b, since_c = len(b.events), len(c.events)
    a.kill()
    failed = await b.wait_event(lambda e: e["event"] == "promotion_failed", 10, since=since_b)
    assert failed["error"] == "AuthenticationError", failed
    await c.wait_event(lambda e: e["event"] == "role" and e["role"] == "real", 10, since=since_c)
    reg = await c.wait_event(lambda e: e["event"] == "registered", 10, since=since_c)
    await wait_until(
        lambda: [contact_user(x["contact"]) for x in kamailio.bindings(user)]
        == [contact_user(reg["contact"])], 5, message="one binding, c's")
    assert all(not (e["event"] == "role" and e["role"] == "real") for e in b.events)
    members = (await b.command("members"))["value"]
    assert sorted((m["member_id"], m["role"]) for m in members) == [("b", "dummy"), ("c", "real")]
    state = (await b.command("state"))["value"]
    assert state["role"] == "dummy" and state["registered"] is False
    assert "could not become the group's real phone" in b.log_tail(200)
