"""What dummies show: call state extraction on the real, proxy sessions and their events from
snapshots, result values, group names and instance ids."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from webphone import SipInfo
from webphone.shared.group import group_instance_id, group_name
from webphone.shared.phone import SharedWebPhone
from webphone.shared.proxy import ProxyCallSession, call_state, jsonable
from webphone.shared.schema import check_state
from webphone.shared.transports.memory import MemoryTransport

INFO = SipInfo.from_dict({"username": "101", "password": "secret-pw", "authorizationId": "101",
                          "domain": "sip.test", "outboundProxy": "127.0.0.1:1",
                          "transport": "WS", "stunServers": []})


class FakeSession:
    call_id = "abc@host"
    direction = "inbound"
    state = "ringing"
    remote_number = "+16505550100"
    local_number = "101"
    remote_name = "Alice\r\nInjected: yes"
    local_name = None
    held = False
    muted = True
    started_at = 1700000000.5
    answered_at = None
    ended_at = None
    session_id = "s-1"
    party_id = "p-1-1"
    invite = "INVITE sip:101@sip.test SIP/2.0\r\n..."  # never published
    password = "secret-pw"  # never published


def test_call_state_is_derived_single_line_and_schema_valid() -> None:
    data = call_state(FakeSession())
    assert data["id"] == "abc@host" and data["state"] == "ringing" and data["muted"] is True
    assert data["remote_name"] == "Alice  Injected: yes"
    assert "invite" not in data and "password" not in data
    assert "secret-pw" not in repr(data)
    check_state({"calls": [data]})


def test_jsonable_results() -> None:
    @dataclasses.dataclass
    class InfoResult:
        code: int
        description: str

    assert jsonable(InfoResult(0, "ok")) == {"code": 0, "description": "ok"}
    assert jsonable({"a": (1, 2.5, float("nan"))}) == {"a": [1, 2.5, None]}
    assert jsonable(object()).startswith("<object")


def event_log(emitter: Any, events: tuple[str, ...], log: list[tuple[str, Any]]) -> None:
    for event in events:
        emitter.on(event, lambda *args, e=event: log.append((e, args[0] if args else None)))


def call(state: str, **fields: Any) -> dict[str, Any]:
    return {"id": "c1", "direction": "inbound", "state": state, "remote_number": "102",
            **fields}


async def test_dummy_builds_proxies_and_events_from_snapshots() -> None:
    shared = SharedWebPhone(INFO, hub=MemoryTransport())
    phone_log: list[tuple[str, Any]] = []
    event_log(shared, ("inbound_call", "outbound_call", "call_changed"), phone_log)
    shared._sync_proxies({"calls": [call("ringing")]})
    [proxy] = shared.call_sessions
    assert isinstance(proxy, ProxyCallSession) and proxy.remote_number == "102"
    assert phone_log == [("inbound_call", proxy)]
    session_log: list[tuple[str, Any]] = []
    event_log(proxy, ("ringing", "answered", "held", "unheld", "disposed", "failed"),
              session_log)
    shared._sync_proxies({"calls": [call("ringing")]})  # same state: nothing happens
    shared._sync_proxies({"calls": [call("answered", held=True, answered_at=5.0)]})
    assert session_log == [("answered", None), ("held", None)] and proxy.answered_at == 5.0
    shared._sync_proxies({"calls": [call("answered", held=False)]})
    shared._sync_proxies({"calls": []})  # gone from the real: disposed
    assert session_log[-2:] == [("unheld", None), ("disposed", None)]
    assert shared.call_sessions == [] and proxy.state == "disposed"
    await shared.dispose()


async def test_a_failed_call_is_failed_not_disposed_and_late_joiners_see_no_event() -> None:
    shared = SharedWebPhone(INFO, hub=MemoryTransport())
    log: list[tuple[str, Any]] = []
    event_log(shared, ("inbound_call", "outbound_call"), log)
    shared._sync_proxies({"calls": [call("ringing", direction="outbound", id="c2")]})
    [proxy] = shared.call_sessions
    session_log: list[tuple[str, Any]] = []
    event_log(proxy, ("failed", "disposed"), session_log)
    shared._sync_proxies({"calls": [call("failed", direction="outbound", id="c2")]})
    assert session_log == [("failed", None)] and shared.call_sessions == []
    shared._sync_proxies({"calls": [call("disposed", id="c3")]})  # already over when seen
    assert [e for e, _ in log] == ["outbound_call"]
    await shared.dispose()


def test_group_name_and_instance_id() -> None:
    assert group_name(INFO) == "101@sip.test"
    assert group_name({"username": "1", "password": "p", "authorizationId": "x" * 200,
                       "domain": "d", "outboundProxy": "h:1"}).startswith("sha256:")
    assert group_instance_id("101@sip.test") == group_instance_id("101@sip.test")
    assert group_instance_id("101@sip.test") != group_instance_id("102@sip.test")
    shared = SharedWebPhone(INFO)
    assert shared.group == "101@sip.test"
    assert shared.instance_id == group_instance_id("101@sip.test")
    assert SharedWebPhone(INFO, group="team", instance_id="fixed").instance_id == "fixed"


def test_unknown_hub_is_refused() -> None:
    from webphone.shared.group import make_transport
    from webphone.shared.transports.base import HubOptions

    with pytest.raises(ValueError, match="hub must be"):
        make_transport("tcp://x", HubOptions(), None)
