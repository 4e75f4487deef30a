"""The webphone sandbox as a test server, with the interface of `support.kamailio.Kamailio`.

    srv = SandboxServer()            # users 101..110 (password "pw"+user), alice/bob/carol
    srv.start()                      # runs in its own thread and event loop, like a process
    srv.sip_info("101"); srv.bindings("101"); srv.clear_bindings("101")
    srv.pause(); srv.resume()        # the server hangs (its loop blocks), sockets stay open
    srv.stop(); srv.start()          # restart on the same port (bindings are gone)
    await srv.astart(); await srv.astop()

The sandbox runs in a thread of its own so that one server can outlive the per-test event
loops of pytest-asyncio (a session fixture), exactly like an external Kamailio; `bindings()`
and friends are synchronous calls into that loop. Also here: `ScriptedPhone`, a SIP phone
scripted message by message (on webphone's SipClient) that answers like RingCentral's browser
SDK, for flows the WebPhone cannot do yet; and `DialogView` for its in-dialog requests.

Unlike the rest of `support`, this module imports webphone (lazily): the sandbox is webphone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .wait import wait_until

if TYPE_CHECKING:
    from webphone.sandbox import Sandbox
    from webphone.sip import SipRequest, SipResponse
    from webphone.sip_client import SipClient

__all__ = ["DOMAIN", "USERS", "DialogView", "SandboxServer", "ScriptedPhone", "sandbox_users"]

DOMAIN = "sip.test"
USERS: dict[str, str] = {
    **{str(n): f"pw{n}" for n in range(101, 111)},
    "alice": "alicepw",
    "bob": "bobpw",
    "carol": "carolpw",
    "8021": "pw",
}


def sandbox_users() -> dict[str, str]:
    """The user table shared with tests/support/kamailio.cfg (a copy)."""
    return dict(USERS)


class SandboxServerError(RuntimeError):
    pass


class SandboxServer:
    """A `webphone.sandbox.Sandbox` in a background thread, Kamailio-adapter compatible."""

    domain = DOMAIN
    users = USERS

    def __init__(self, workdir: object = None, *, port: int = 0, **sandbox_options: Any) -> None:
        self.port = port
        self.options = {"users": dict(USERS), "domain": DOMAIN, "parties": False,
                        **sandbox_options}
        self.sandbox: Sandbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._resume = threading.Event()
        self._paused = False

    # -- addresses -----------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def outbound_proxy(self) -> str:
        return f"127.0.0.1:{self.port}"

    def password(self, user: str) -> str:
        try:
            return self.users[user]
        except KeyError:
            raise KeyError(f"{user!r} is not a sandbox test user") from None

    def sip_info(self, user: str, **overrides: Any) -> dict[str, Any]:
        """camelCase sipInfo for webphone (transport WS, no STUN), as Kamailio's adapter."""
        info: dict[str, Any] = {
            "username": user,
            "password": self.password(user),
            "authorizationId": user,
            "domain": self.domain,
            "outboundProxy": self.outbound_proxy,
            "transport": "WS",
            "stunServers": [],
        }
        info.update(overrides)
        return info

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the sandbox thread and wait until it listens (same port on a restart)."""
        if self.running:
            return
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, errors), name="sandbox-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise SandboxServerError(f"sandbox did not start within {timeout} s")
        if errors:
            self._thread.join(timeout)
            raise SandboxServerError(f"sandbox failed to start: {errors[0]!r}") from errors[0]

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        asyncio.run(self._main(ready, errors))

    async def _main(self, ready: threading.Event, errors: list[BaseException]) -> None:
        from webphone.sandbox import Sandbox

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sandbox = Sandbox(port=self.port, **self.options)
        try:
            await sandbox.start()
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            return
        self.sandbox, self.port = sandbox, sandbox.port
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await sandbox.close()
            self.sandbox = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the sandbox (closes every connection); keeps the port for `start()`."""
        if not self.running:
            return
        self.resume()
        loop, stop, thread = self._loop, self._stop, self._thread
        assert loop is not None and stop is not None and thread is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = self._loop = None

    close = stop

    def restart(self, timeout: float = 10.0) -> None:
        self.stop(timeout)
        self.start(timeout)

    async def astart(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.start, timeout)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def pause(self) -> None:
        """Block the sandbox's event loop (like SIGSTOP): connections stay open, nothing is
        answered, until `resume()`."""
        if self._paused or self._loop is None:
            return
        self._resume.clear()
        started = threading.Event()

        def block() -> None:
            started.set()
            self._resume.wait()

        self._paused = True
        self._loop.call_soon_threadsafe(block)
        started.wait(5.0)

    def resume(self) -> None:
        self._paused = False
        self._resume.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def log_tail(self, lines: int = 60) -> str:
        sandbox = self.sandbox
        if sandbox is None:
            return ""
        return "\n".join(r.first_line for r in list(sandbox.messages)[-lines:])

    # -- bindings ------------------------------------------------------------------------------

    def _call(self, fn: Any, timeout: float = 5.0) -> Any:
        if self._paused:
            raise SandboxServerError("the sandbox is paused: it cannot answer")
        if self._loop is None or self.sandbox is None:
            raise SandboxServerError("the sandbox is not running")

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def bindings(self, user: str) -> list[dict[str, Any]]:
        """Live bindings of `user`: dicts with contact, instance (no <>), expires (s left)."""
        return self._call(lambda: self._sandbox().bindings(user))  # type: ignore[no-any-return]

    def clear_bindings(self, user: str) -> None:
        self._call(lambda: self._sandbox().clear_bindings(user))

    def _sandbox(self) -> Sandbox:
        if self.sandbox is None:
            raise SandboxServerError("the sandbox is not running")
        return self.sandbox

    async def wait_bindings(
        self, user: str, count: int, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal result
            result = self.bindings(user)
            return len(result) == count

        await wait_until(check, timeout, 0.02, message=f"{user} to have {count} binding(s)")
        return result

    def __repr__(self) -> str:
        return f"<SandboxServer {self.ws_url} {'up' if self.running else 'down'}>"


# -- scripted phones --------------------------------------------------------------------------

AUTO_OK = ("MESSAGE", "BYE", "CANCEL", "INFO", "NOTIFY", "UPDATE")
FAKE_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 9 RTP/AVP 0\r\na=sendrecv\r\n"
)


@dataclass
class DialogView:
    """One side of a dialog, enough to send in-dialog requests."""

    call_id: str
    local: str  # our From/To value, with our tag
    remote: str  # theirs, with their tag
    target: str  # their Contact URI
    route: list[str]

    @classmethod
    def as_caller(cls, invite: SipRequest, answer: SipResponse) -> DialogView:
        from webphone.sandbox.dialogs import contact_uri

        return cls(invite.call_id, invite.headers["From"], answer.headers["To"],
                   contact_uri(answer.headers.get("Contact"), invite.uri),
                   list(reversed(answer.headers.get_all("Record-Route"))))

    @classmethod
    def as_callee(cls, invite: SipRequest, tag: str) -> DialogView:
        from webphone.sandbox.dialogs import contact_uri

        return cls(invite.call_id, f"{invite.headers['To']};tag={tag}", invite.headers["From"],
                   contact_uri(invite.headers.get("Contact"), str(invite.from_address.uri)),
                   list(invite.headers.get_all("Record-Route")))


class ScriptedPhone:
    """A phone scripted message by message, answering like RingCentral's SDK (§2.1): every
    inbound MESSAGE/BYE/CANCEL/INFO/NOTIFY/UPDATE gets an automatic 200; everything inbound is
    also queued for the test (`next(method)`). `trace` holds every message in and out."""

    def __init__(self, sip_info: dict[str, Any], instance_id: str) -> None:
        from webphone import SipInfo
        from webphone.sip_client import SipClient

        self.info = SipInfo.from_dict(sip_info)
        self.client: SipClient = SipClient(self.info, instance_id=instance_id, reconnect=False)
        self.trace: list[tuple[str, SipRequest | SipResponse]] = []
        self._inbox: list[SipRequest] = []
        self._arrived = asyncio.Event()
        self.client.on("inbound_message", lambda m: self.trace.append(("in", m)))
        self.client.on("outbound_message", lambda m: self.trace.append(("out", m)))
        self.client.request_handler = self._on_request
        self._cseq = 100

    async def start(self) -> ScriptedPhone:
        await self.client.start()
        self.trace.clear()
        return self

    async def stop(self) -> None:
        await self.client.dispose()

    async def _on_request(self, request: SipRequest) -> None:
        if request.method in AUTO_OK:
            await self.client.reply(request, 200, "OK")
        self._inbox.append(request)
        self._arrived.set()

    async def next(self, method: str, timeout: float = 5.0) -> SipRequest:
        """The oldest unclaimed inbound request with `method` (waits for it)."""

        def find() -> SipRequest | None:
            for request in self._inbox:
                if request.method == method:
                    self._inbox.remove(request)
                    return request
            return None

        found = await wait_until(find, timeout, 0.005, message=f"inbound {method}")
        return found  # type: ignore[no-any-return]

    def sequence(self, *, skip_register: bool = True) -> list[str]:
        """["out MESSAGE", "in 100", ...] like the upstream tests' shortString."""
        out = []
        for direction, message in self.trace:
            if skip_register and message.cseq.method == "REGISTER":
                continue
            what = getattr(message, "method", None) or str(message.status_code)  # type: ignore[union-attr]
            out.append(f"{direction} {what}")
        return out

    def clear(self) -> None:
        self.trace.clear()

    # -- building requests ---------------------------------------------------------------------

    def invite(
        self, number: str, *, body: bytes = FAKE_SDP, headers: Iterable[tuple[str, str]] = ()
    ) -> SipRequest:
        domain = self.info.domain
        return self.client.new_request(
            "INVITE", f"sip:{number}@{domain}", to=f"<sip:{number}@{domain}>", body=body,
            content_type="application/sdp", headers=list(headers),
        )

    def in_dialog(
        self, dialog: DialogView, method: str, *, body: bytes = b"", content_type: str | None = None
    ) -> SipRequest:
        self._cseq += 1
        request = self.client.new_request(
            method, dialog.target, to=dialog.remote, call_id=dialog.call_id, cseq=self._cseq,
            route=dialog.route, body=body, content_type=content_type,
        )
        request.headers.set("From", dialog.local)
        return request

    def ack(self, invite: SipRequest, answer: SipResponse) -> SipRequest:
        dialog = DialogView.as_caller(invite, answer)
        request = self.client.new_request(
            "ACK", dialog.target, to=dialog.remote, call_id=dialog.call_id,
            cseq=answer.cseq.number, route=dialog.route,
        )
        request.headers.set("From", dialog.local)
        return request

    async def rc(
        self, invite: SipRequest, cmd: int, extra: dict[str, str] | None = None
    ) -> SipResponse:
        """Send an x-rc/agent MESSAGE answering `invite`'s P-rc, as the upstream SDK does;
        return the final response."""
        from webphone.sip.rc import (
            RC_MESSAGE_CONTENT_TYPE,
            parse_rc_message,
            reply_to_p_rc,
            request_uri,
        )

        p_rc = parse_rc_message(invite.headers["P-rc"])
        message = reply_to_p_rc(p_rc, cmd, self.info.authorization_id, extra)
        uri = request_uri(message)
        request = self.client.new_request(
            "MESSAGE", uri, to=f"<{uri}>", call_id=invite.call_id,
            body=message.to_xml().encode(), content_type=RC_MESSAGE_CONTENT_TYPE,
        )
        return await self.client.request(request)
