"""baresip 1.0 (Debian baresip-core) as the far party of `dtls_roles_bench`, over real SIP.

baresip is a SIP user agent, not an API: the holders reach it through Kamailio (both started
here from tests/support, on loopback), with a scripted SipClient. H1's media runs in the
bench's child process; H2 takes over with an in-dialog re-INVITE (an offer `actpass` /
`active`, or none). baresip's hearing cannot be observed (its player is `alsa,null`), so
"audio back" here is H2 hearing baresip's 440 Hz (`ausine`): the same DTLS handshake carries
both directions. Media on loopback works through a peer-reflexive pair (see
tests/integration/test_baresip.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"


def available() -> bool:
    return all(shutil.which(b) for b in ("baresip", "kamailio", "kamcmd"))


class BaresipFar:
    """One Kamailio and one auto-answering baresip "bob" for every run. `netns=True`: baresip
    in a network namespace of our own (tests/support/netns.py, root only), so its host
    candidate is reachable and our media uses our veth end instead of loopback."""

    def __init__(self, *, netns: bool = False) -> None:
        if str(TESTS) not in sys.path:
            sys.path.insert(0, str(TESTS))
        self.workdir = Path(tempfile.mkdtemp(prefix="dtls-baresip-"))
        self.kamailio: Any = None
        self.bob: Any = None
        self.ns: Any = None
        self.netns = netns
        self.networks: list[str] | None = None
        self._calls = 0

    async def start(self) -> BaresipFar:
        from support.baresip import Baresip
        from support.kamailio import Kamailio
        from support.netns import Netns, NetnsBaresip, kamailio_cfg_listening_on, unavailable

        options: dict[str, Any] = {"ice": True, "answermode": "auto", "sip_trace": False}
        if not self.netns:
            self.kamailio = Kamailio(self.workdir / "kamailio")
            await self.kamailio.astart()
            self.bob = Baresip(self.workdir / "bob", "bob", "bobpw",
                               registrar=self.kamailio.sip_uri_host, **options)
        else:
            why = unavailable()
            if why is not None:
                raise RuntimeError(why)
            ns = self.ns = Netns.create()
            self.networks = [ns.outer_network]
            cfg = kamailio_cfg_listening_on(ns.outer_address, self.workdir / "cfg")
            self.kamailio = Kamailio(self.workdir / "kamailio", cfg=cfg, name="kamailio-netns")
            await self.kamailio.astart()
            self.bob = NetnsBaresip(ns, self.workdir / "bob", "bob", "bobpw",
                                    registrar=f"{ns.outer_address}:{self.kamailio.sip_port}",
                                    domain=self.kamailio.domain, **options)
        await self.bob.start()
        await self.bob.wait_registered()
        return self

    async def close(self) -> None:
        if self.bob is not None:
            await self.bob.stop()
        if self.kamailio is not None:
            await self.kamailio.astop()
        if self.ns is not None:
            self.ns.delete()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def one(self, holder: Any, media: Any, stop: str, mode: str, tone: float,
                  stopper: Any, ear_class: Any, give_up: float) -> dict[str, Any]:
        """One run: call bob with H1's media, end H1, take over with H2 (see the bench)."""
        from support.sandbox_server import DialogView, ScriptedPhone

        self._calls += 1
        ctx = mp.get_context("spawn")
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=holder, args=(theirs, self.networks), daemon=True)
        child.start()
        phone = await ScriptedPhone(self.kamailio.sip_info("101"), f"bench-{self._calls}").start()
        new: Any = None
        try:
            offer = await asyncio.to_thread(ours.recv)
            started = time.monotonic()
            answer = await phone.client.request(phone.invite("bob", body=offer.encode()))
            if answer.status_code != 200:
                raise RuntimeError(f"bob answered {answer.status_code} {answer.reason}")
            sent = next(m for d, m in reversed(phone.trace)
                        if d == "out" and getattr(m, "method", None) == "INVITE")
            await phone.client.send(phone.ack(sent, answer))
            dialog = DialogView.as_caller(sent, answer)
            ours.send(answer.body.decode())
            _, first = await asyncio.to_thread(ours.recv)
            if first is None:
                raise RuntimeError("H1 never heard baresip")
            await stopper(child, ours, stop)
            new = media(self.networks)
            ear = ear_class(new)
            loop = asyncio.get_running_loop()
            began, error, back = loop.time(), None, None
            try:
                await self._take_over(phone, dialog, sent.cseq.number + 10, new, mode)
                back = await ear.when(tone, began, give_up)
            except Exception as exc:  # a refused exchange is a result, not a crash
                error = f"{type(exc).__name__}: {exc}"
            ear.close()
            bye = phone.in_dialog(dialog, "BYE")
            bye.headers.set("CSeq", f"{sent.cseq.number + 11} BYE")  # above the re-INVITE's
            await phone.client.request(bye)
            await self.bob.wait_event("CALL_CLOSED", timeout=5)
            return {"baseline_ms": (first - started) * 1000,
                    "ms": None if back is None else (back - began) * 1000, "error": error}
        finally:
            if new is not None:
                await new.close()
            await phone.stop()
            if child.is_alive():
                child.kill()
            child.join(5)

    @staticmethod
    async def _take_over(phone: Any, dialog: Any, cseq: int, new: Any, mode: str) -> None:
        sdp = "application/sdp"
        body = b""
        if mode != "offerless":
            offer = await new.create_offer()
            if mode == "active":
                offer = offer.replace("a=setup:actpass", "a=setup:active")
            body = offer.encode()
        request = phone.in_dialog(dialog, "INVITE", body=body,
                                  content_type=sdp if body else None)
        request.headers.set("CSeq", f"{cseq} INVITE")
        response = await phone.client.request(request)
        if response.status_code != 200:
            raise RuntimeError(f"re-INVITE: {response.status_code} {response.reason}")
        ack_body = b""
        if mode == "offerless":
            ack_body = (await new.create_answer(response.body.decode())).encode()
        else:
            await new.apply_answer(response.body.decode())
        ack = phone.in_dialog(dialog, "ACK", body=ack_body,
                              content_type=sdp if ack_body else None)
        ack.headers.set("CSeq", f"{cseq} ACK")
        await phone.client.send(ack)
