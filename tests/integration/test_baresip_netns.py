"""Real audio between the WebPhone and baresip over ICE host candidates, in a network namespace
the test makes itself.

baresip leaves loopback out of its ICE candidates, so here it runs inside a namespace of ours,
joined to this one by a veth pair (10.77.K.2 inside, 10.77.K.1 here): its host candidate is its
veth address, the phone's media gathers on our veth end only (`MediaSession(ice_networks=...)`),
and Kamailio takes baresip's REGISTER on our veth end too. The namespace has no default route:
nothing in it reaches any address but our end of the pair. The ICE pair used must be the two
host candidates, and baresip's `ausine` tone must be heard at 440 Hz, in both call directions.

Needs root and `ip netns`; skipped otherwise, except under CI=true, where a machine that has
Kamailio and baresip but cannot make the namespace FAILS the test instead of skipping it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.calls import heard, next_inbound, phones
from support.kamailio import Kamailio
from support.netns import Netns, NetnsBaresip, NetnsError, kamailio_cfg_listening_on, unavailable
from support.wait import wait_until
from webphone.call_session import CallSession
from webphone.media import MediaSession

pytestmark = [pytest.mark.kamailio, pytest.mark.baresip, pytest.mark.timeout(60)]

AUSINE = 440.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skip_or_fail(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"CI=true, Kamailio and baresip are installed, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh namespace + veth pair, deleted at teardown (even when the test fails)."""
    from shutil import which

    for binary, package in (("baresip", "baresip-core"), ("kamailio", "kamailio")):
        if which(binary) is None:
            reason = f"{binary!r} not found (apt-get install {package})"
            if _in_ci():
                pytest.fail(f"CI=true and {reason}", pytrace=False)
            pytest.skip(reason)
    why = unavailable()
    if why is not None:
        _skip_or_fail(why)
    try:
        ns = Netns.create()
    except NetnsError as exc:
        _skip_or_fail(str(exc))
        raise  # unreachable: skip/fail raise
    try:
        yield ns
    finally:
        ns.delete()
        assert not ns.exists, f"{ns} still exists after delete"


@dataclass
class Setup:
    ns: Netns
    kamailio: Kamailio
    bob: NetnsBaresip

    def media(self, _session: object) -> MediaSession:
        """The phone's media: ICE on our veth end only."""
        return MediaSession(ice_networks=[self.ns.outer_network])


@pytest.fixture
async def setup(netns: Netns, tmp_path: Path) -> AsyncIterator[Setup]:
    """A Kamailio that also listens on our veth end, and baresip `bob` registered from inside."""
    cfg = kamailio_cfg_listening_on(netns.outer_address, tmp_path / "cfg")
    kam = Kamailio(tmp_path / "kamailio", cfg=cfg, name="kamailio-netns")
    kam.start()
    bob: NetnsBaresip | None = None
    try:
        bob = NetnsBaresip(netns, tmp_path / "bob", "bob", kam.password("bob"),
                           registrar=f"{netns.outer_address}:{kam.sip_port}", domain=kam.domain,
                           ice=True)
        await bob.start()
        await bob.wait_registered()
        yield Setup(netns, kam, bob)
    finally:
        if bob is not None:
            await bob.stop()
        kam.close()


def host_pair(session: CallSession) -> tuple[str, str]:
    """(local, remote) address of the ICE pair aiortc selected, and check both are host ones."""
    assert session.media is not None
    for transceiver in session.media.peer_connection.getTransceivers():
        connection = transceiver.sender.transport.transport._connection
        pair = connection._nominated.get(1)
        assert pair is not None, "no nominated ICE pair"
        assert pair.local_candidate.type == "host", pair
        return pair.local_candidate.host, pair.remote_candidate.host
    raise AssertionError("no transceiver")


async def connected(session: CallSession) -> None:
    await wait_until(lambda: session.state == "answered", 5, message=f"{session} answered")
    assert session.media is not None
    await session.media.wait_connected(10)


async def test_phone_calls_baresip_in_a_namespace_and_hears_its_tone(setup: Setup) -> None:
    user = "101"
    async with phones(setup.kamailio, [user], media_factory=setup.media) as (phone,):
        out = await phone.call("bob")
        await setup.bob.wait_event("CALL_INCOMING", timeout=5)
        await setup.bob.accept()
        await connected(out)
        assert host_pair(out) == (setup.ns.outer_address, setup.ns.inner_address)
        assert await heard(out, lambda t: t == AUSINE) == AUSINE
        await out.hangup()
        await setup.bob.wait_event("CALL_CLOSED", timeout=5)


async def test_baresip_in_a_namespace_calls_the_phone_which_hears_its_tone(
    setup: Setup,
) -> None:
    user = "102"
    async with phones(setup.kamailio, [user], media_factory=setup.media) as (phone,):
        ringing = next_inbound(phone)
        await setup.bob.dial(f"sip:{user}@{setup.kamailio.domain}")
        inc = await asyncio.wait_for(ringing, 5)
        await inc.answer()
        await setup.bob.wait_event("CALL_ESTABLISHED", timeout=5)
        await connected(inc)
        assert host_pair(inc) == (setup.ns.outer_address, setup.ns.inner_address)
        assert await heard(inc, lambda t: t == AUSINE) == AUSINE
        await setup.bob.hangup()
        await asyncio.wait_for(inc.wait_closed(), 5)
