"""`WebPhone.call()` refuses what it cannot send, before any INVITE, on a real server
(issue 13 items 6 and 7): the registration and the WebSocket survive."""

from __future__ import annotations

from typing import Any

import pytest

from webphone import SipInfo, WebPhone
from webphone.errors import CallError

pytestmark = pytest.mark.timeout(60)


async def test_bad_callee_and_headers_are_refused_and_the_registration_survives(
    sandbox_server: Any,
) -> None:
    """📞900, a core header, a 100 KB value and an int value: CallError naming the field; the
    phone stays registered (a 100 KB header used to make the server close the WebSocket)."""
    sent: list[Any] = []
    async with WebPhone(SipInfo.from_dict(sandbox_server.sip_info("109"))) as phone:
        phone.on("outbound_message", sent.append)
        bad: list[tuple[str, dict[str, Any], str]] = [
            ("\N{TELEPHONE RECEIVER}900", {}, "callee"),
            ("900", {"Call-ID": "x"}, "header 'Call-ID': written by webphone itself"),
            ("900", {"X-Big": "a" * 100_000}, "header 'X-Big': the value has 100000"),
            ("900", {"X-Int": 5}, "header 'X-Int': the value must be a string, got int"),
        ]
        for callee, headers, fragment in bad:
            with pytest.raises(CallError, match=fragment):
                await phone.call(callee, headers=headers)
        assert not [m for m in sent if getattr(m, "method", None) == "INVITE"]
        assert phone.call_sessions == []
        assert phone.sip_client.registered
        assert len(sandbox_server.bindings("109")) == 1
