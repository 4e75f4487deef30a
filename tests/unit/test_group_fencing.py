"""The real's SIP client stays silent after its loop stalled until the group confirms it is still
the real (invariant 8): a deposed real that wakes from SIGSTOP sends nothing in a dialog its
successor adopted, even from a timer that fires before it hears of its demotion."""

from __future__ import annotations

import pytest

from webphone.errors import TransportError
from webphone.shared.group import GroupSipClient
from webphone.sip import SipRequest
from webphone.sip_info import SipInfo

INFO = SipInfo.from_dict({"username": "101", "password": "pw", "authorizationId": "101",
                          "domain": "sip.test", "outboundProxy": "127.0.0.1:5060",
                          "transport": "WSS"})


class Member:
    """The group member as the SIP client sees it (`RealCheck`)."""

    def __init__(self, *, stalled: bool, real: bool) -> None:
        self._stalled, self._real = stalled, real
        self.asked = 0

    async def confirm_real(self) -> bool:
        self.asked += 1
        return self._real

    def stalled(self) -> bool:
        return self._stalled


def bye() -> SipRequest:
    return SipRequest("BYE", "sip:102@sip.test")


async def test_a_stalled_real_that_was_deposed_is_fenced_before_sending() -> None:
    """Stalled, and the hub says we are no longer the real: fenced, nothing sent."""
    member = Member(stalled=True, real=False)
    client = GroupSipClient(INFO, member=member, instance_id="i")
    with pytest.raises(TransportError, match="fenced"):
        await client.send(bye())
    assert member.asked == 1 and client._fenced
    with pytest.raises(TransportError, match="fenced"):
        await client.send(bye())
    assert member.asked == 1  # fenced for good: not asked again


async def test_a_real_that_did_not_stall_sends_without_asking() -> None:
    """No stall: no round trip to the hub before a send (the normal path stays fast); it
    reaches the transport (not connected here: TransportError, not the fence)."""
    member = Member(stalled=False, real=False)
    client = GroupSipClient(INFO, member=member, instance_id="i")
    with pytest.raises(TransportError) as caught:
        await client.send(bye())
    assert "fenced" not in str(caught.value) and member.asked == 0 and not client._fenced
