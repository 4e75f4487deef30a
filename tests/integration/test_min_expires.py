"""A registrar whose shortest binding is longer than we ask for answers 423 Interval Too Brief
with Min-Expires (RFC 3261 §10.3 step 7): a real Kamailio with the test cfg's MIN_EXPIRES_423
switch (`min_expires_mode` 1). Before, the phone could not register there at all
(`RegistrationError: REGISTER failed: 423 Interval Too Brief`)."""

from __future__ import annotations

from pathlib import Path

from support.kamailio import Kamailio
from webphone import SipInfo
from webphone.sip import SipRequest, SipResponse
from webphone.sip_client import SipClient


async def test_a_423_registers_again_for_min_expires_and_refreshes_keep_it(
    tmp_path: Path
) -> None:
    kam = Kamailio(tmp_path / "kamailio", defines={"MIN_EXPIRES_423": "120"})
    kam.start()
    try:
        client = SipClient(SipInfo.from_dict(kam.sip_info("carol")), instance_id="min-expires")
        asked: list[str | None] = []
        finals: list[int] = []
        client.on("outbound_message", lambda m: asked.append(m.headers.get("Expires"))
                  if isinstance(m, SipRequest) else None)
        client.on("inbound_message", lambda m: finals.append(m.status_code)
                  if isinstance(m, SipResponse) and m.status_code >= 200 else None)
        granted: list[int] = []
        client.on("registered", granted.append)
        await client.start()
        try:
            assert finals == [401, 423, 200] and asked == ["60", "60", "120"]
            assert granted == [120] and kam.bindings("carol")[0]["expires"] == 120
            await client.register()  # a refresh asks for the registrar's minimum at once
            assert finals[3:] == [200] and asked[3:] == ["120"] and granted == [120, 120]
        finally:
            await client.dispose()
        assert finals[-1] == 200 and asked[-1] == "0"  # an unregister is never too brief
    finally:
        kam.close()
