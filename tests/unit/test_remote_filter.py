"""`ignore_remote_outside`: an aioice Connection restricted to some networks neither answers
nor learns (as peer-reflexive candidates) checks from addresses outside them."""

from __future__ import annotations

import ipaddress
from typing import Any

import aioice
import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from webphone.media._interop import networks
from webphone.media._remote_filter import allowed_address, ignore_remote_outside

LOOPBACK = networks(["127.0.0.1/8"])


class RecordingProtocol:
    """Stands in for aioice's StunProtocol (the socket): records what would be sent."""

    def __init__(self, component: int = 1) -> None:
        self.sent: list[tuple[Any, tuple[str, int]]] = []
        self.local_candidate = aioice.Candidate(
            foundation="x", component=component, transport="udp", priority=1,
            host="127.0.0.1", port=4000, type="host")

    def send_stun(self, message: Any, addr: tuple[str, int]) -> None:
        self.sent.append((message, addr))


def binding_request(connection: aioice.Connection) -> stun.Message:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{connection.local_username}:peer"
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLED"] = 1
    request.add_message_integrity(connection.local_password.encode())
    return request


@pytest.mark.parametrize(("source", "answered"), [
    ("127.0.0.2", True), ("192.0.2.2", False), ("::ffff:127.0.0.1", True), ("::1", False),
])
async def test_checks_from_outside_are_neither_answered_nor_learnt(
    source: str, answered: bool
) -> None:
    connection = aioice.Connection(ice_controlling=True)
    connection.remote_username, connection.remote_password = "peer", "peerpassword0000000000"
    assert ignore_remote_outside(connection, LOOPBACK)
    protocol = RecordingProtocol()
    connection.request_received(binding_request(connection), (source, 5000), protocol)
    assert bool(protocol.sent) is answered
    learnt = [c.host for c in connection._remote_candidates]
    assert (source in learnt) is (answered and connection._early_checks_done)
    await connection.close()


def test_installing_twice_replaces_the_networks() -> None:
    connection = aioice.Connection(ice_controlling=False)
    assert ignore_remote_outside(connection, LOOPBACK)
    assert ignore_remote_outside(connection, networks(["192.0.2.0/24"]))
    protocol = RecordingProtocol()
    connection.request_received(binding_request(connection), ("127.0.0.1", 5000), protocol)
    assert protocol.sent == []


@given(st.ip_addresses())
def test_allowed_address_is_network_membership(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
                                                ) -> None:
    inside = any(ip.version == n.version and ip in n for n in LOOPBACK)
    assert allowed_address(str(ip), LOOPBACK) is inside


def test_names_are_never_allowed() -> None:
    assert not allowed_address("localhost", LOOPBACK)
    assert not allowed_address("abc.local", LOOPBACK)
