"""A dummy never loads the media stack (aiortc): checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import webphone
    from webphone import SharedWebPhone
    from webphone.shared.member import GroupMember
    from webphone.shared.transports.memory import MemoryTransport

    INFO = {"username": "101", "password": "pw", "authorizationId": "101", "domain": "d",
            "outboundProxy": "127.0.0.1:1", "transport": "WS", "stunServers": []}

    class FakeReal:  # a group member that is the real without any SIP
        def on_role(self, old, new, epoch):
            if new == "real":
                self.member.registered(epoch)
        def on_snapshot(self, snapshot): pass
        def on_action(self, action, token): pass
        def on_released(self, released): pass

    async def main():
        transport = MemoryTransport()
        fake = FakeReal()
        fake.member = GroupMember(transport, "g", fake)
        await fake.member.start()
        dummy = SharedWebPhone(INFO, group="g", hub=transport)
        await dummy.start()
        assert dummy.role == "dummy", dummy.role
        dummy._sync_proxies({"calls": [{"id": "c", "direction": "inbound", "state": "ringing"}]})
        assert len(dummy.call_sessions) == 1
        await dummy.dispose()
        await fake.member.close()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aiortc", "av", "aioice")
                        or m.startswith("webphone.media"))
        print("LOADED", loaded)

    asyncio.run(main())
""")


def test_a_dummy_never_imports_aiortc() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
