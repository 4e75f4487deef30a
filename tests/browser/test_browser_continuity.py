"""A browser as the far party of a call that survives the group's faults (issue #11): JsSIP in
headless Chromium, through Kamailio, calls an extension whose member processes each play their
own tone into the calls whose media they hold (tests/support/continuity.py). A dummy answers and
holds the audio; the real is SIGKILLed: the browser keeps hearing that dummy's tone and the call
stays up (the successor's target-refresh re-INVITE is accepted); then the media holder is
SIGKILLed: the browser hears another member's tone, in the same call. Audio by frequency at both
ends (the page's analyser, the holder's `heard` events); the times are printed (they include
the page's 200 ms "heard" criterion)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from chromium import Browser
from scenario import browser_phone

from support.continuity import (
    FAR_TONE,
    GroupCall,
    dummies_of,
    is_,
    marks,
    real_of,
    spawn_holders,
)
from support.group import MemberGroup, short_runtime_dir
from support.kamailio import Kamailio

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.kamailio,
              pytest.mark.timeout(120)]

GROUP_USER, FAR_USER = "107", "108"


async def test_jssip_far_party_keeps_its_call_through_the_real_and_the_media_holder(
    browser: Browser, kamailio: Kamailio, tmp_path: Path
) -> None:
    kamailio.clear_bindings(GROUP_USER)
    runtime_dir = short_runtime_dir()
    group = MemberGroup(runtime_dir, tmp_path, kamailio.sip_info(GROUP_USER))
    try:
        members = await spawn_holders(group, ["a", "b", "c"], loopback=False)
        async with browser_phone(browser, "jssip-kamailio", kamailio, FAR_USER) as tab:
            await tab.api("setTone", FAR_TONE)
            dummy = dummies_of(members)[-1]  # the youngest: the oldest is promoted next
            since = marks([m for m, _ in members.values()])
            cid = await tab.api("call", GROUP_USER)
            ringing = await dummy.wait_event(is_("inbound_call"), 10, since=since[dummy.name])
            call_id = ringing["call_id"]
            assert (await dummy.command("session", call_id=call_id, name="answer"))["ok"]
            await tab.api("waitState", cid, ["answered"])
            await dummy.wait_event(is_("holding", call_id), 10, since=since[dummy.name])
            await tab.api("hears", cid, members[dummy.name][1], 10000)
            await dummy.wait_event(is_("heard", call_id, hz=FAR_TONE), 10)

            real = real_of(members)
            killed = time.monotonic()
            real.kill()
            await tab.api("hears", cid, members[dummy.name][1], 10000)
            heard = time.monotonic() - killed
            successor = real_of({n: mt for n, mt in members.items() if mt[0] is not real})
            assert await tab.api("state", cid) == "answered"
            print(f"\nSIGKILL of the real: {successor.name} adopted the call; the browser hears "
                  f"{dummy.name}'s tone {heard * 1000:.0f} ms after the kill (200 ms of it)")

            call = GroupCall(call_id=call_id, members={n: mt for n, mt in members.items()
                                                        if mt[0] is not real},
                             far=None, holder=dummy)  # type: ignore[arg-type]
            since = marks([m for m in call.alive() if m is not dummy])
            killed = time.monotonic()
            dummy.kill()
            holder = await call.new_holder(since)
            await tab.api("hears", cid, call.tone(holder), 15000)
            back = time.monotonic() - killed
            await holder.wait_event(is_("heard", call_id, hz=FAR_TONE), 10,
                                    since=since[holder.name])
            assert await tab.api("state", cid) == "answered"
            print(f"SIGKILL of the media holder: the browser hears {holder.name}'s tone "
                  f"{back * 1000:.0f} ms after the kill (200 ms of it); the call never ended")
            await tab.api("hangup", cid)
    finally:
        await group.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)
