"""A dummy never loads the media stack (aiortc) unless a call of the group needs new media
should the real die: checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PRELUDE = textwrap.dedent("""
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

    async def group():  # (the fake real, a dummy) on one memory transport
        transport = MemoryTransport()
        fake = FakeReal()
        fake.member = GroupMember(transport, "g", fake)
        await fake.member.start()
        dummy = SharedWebPhone(INFO, group="g", hub=transport)
        await dummy.start()
        return fake, dummy
""")

SCRIPT = PRELUDE + textwrap.dedent("""
    async def main():
        fake, dummy = await group()
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


STANDBY = PRELUDE + textwrap.dedent("""
    def loaded():
        return "aiortc" in sys.modules and "webphone.media.session" in sys.modules

    async def published(dummy, fake, calls):
        fake.member.publish_continuity(calls)
        while (dummy.member.continuity.state is None
               or dummy.member.continuity.state.calls != calls):
            await asyncio.sleep(0)  # the memory transport delivers on the next loop turns

    async def main():
        fake, dummy = await group()
        real = fake.member.member_id
        await published(dummy, fake, {"c1": {"v": 1, "holder": dummy.member.member_id,
                                             "real": real}})
        print("HELD BY A DUMMY", loaded(), dummy._media_loaded is not None)
        await published(dummy, fake, {"c1": {"v": 1, "holder": real, "real": real}})
        await dummy._media_loaded
        print("HELD BY THE REAL", loaded())
        await dummy.dispose()
        await fake.member.close()

    asyncio.run(main())
""")


def test_a_dummy_loads_the_media_stack_when_a_successor_renews_media() -> None:
    """A dummy loads aiortc (in a thread) once the real publishes a call whose media it holds
    itself: a successor renews that media, and the import (~0.45 s) would otherwise sit between
    its promotion and its re-INVITE. A call whose media a dummy holds needs no new media."""
    out = subprocess.run([sys.executable, "-c", STANDBY], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "HELD BY A DUMMY False False" in out.stdout, out.stdout + out.stderr
    assert "HELD BY THE REAL True" in out.stdout, out.stdout + out.stderr
