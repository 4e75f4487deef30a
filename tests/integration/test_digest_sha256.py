"""A registrar that challenges with SHA-256 (RFC 8760), not MD5: a real Kamailio with the test
cfg's DIGEST_ALGORITHM switch. Before, the client could not answer the challenge and reported a
wrong password (`AuthenticationError`, "check authorizationId and password")."""

from __future__ import annotations

from pathlib import Path

from support.kamailio import Kamailio
from webphone import SipInfo
from webphone.sip import SipRequest, SipResponse
from webphone.sip_client import SipClient


async def test_register_and_refresh_answer_a_sha256_challenge(tmp_path: Path) -> None:
    kam = Kamailio(tmp_path / "kamailio", defines={"DIGEST_ALGORITHM": '"SHA-256"'})
    kam.start()
    try:
        client = SipClient(SipInfo.from_dict(kam.sip_info("bob")), instance_id="sha-256")
        sent: list[str] = []
        finals: list[int] = []
        client.on("outbound_message", lambda m: sent.append(m.headers.get("Authorization", ""))
                  if isinstance(m, SipRequest) else None)
        client.on("inbound_message", lambda m: finals.append(m.status_code)
                  if isinstance(m, SipResponse) and m.status_code >= 200 else None)
        await client.start()
        try:
            assert await client.register() > 0  # the refresh reuses the SHA-256 nonce (nc 2)
            assert finals == [401, 200, 200]
            assert sent[0] == "" and all("algorithm=SHA-256," in a for a in sent[1:])
            assert "nc=00000002" in sent[2]
            assert len(kam.bindings("bob")) == 1
        finally:
            await client.dispose()
    finally:
        kam.close()
