"""`Sandbox`: the local RingCentral-like SIP server, as one object (what the CLI runs too)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from .config import MessageRecord, SandboxConfig
from .control import serve_control
from .parties import PARTY_NUMBERS, Party, PartyCall, VoicemailMessage
from .proxy import Proxy
from .server import SipServer, is_loopback
from .users import User, UserTable, generate_users, load_users, sip_info, users_from_data

log = logging.getLogger("webphone.sandbox")

UsersSpec = Iterable[User] | Mapping[str, str] | str | Path | None


class Sandbox:
    """A SIP-over-WebSocket server for development and CI, RingCentral's rules built in.

        async with Sandbox() as sb:              # ws://127.0.0.1:<free port>, users 101..105
            info = sb.sip_info("101")            # camelCase sipInfo for WebPhone / SipInfo
            sb.bindings("101")                   # [{"contact", "instance", "expires", ...}]
            call = await sb.party_call("101", party="tone", auto_answer=True)
            await call.hangup()

    `users`: None (generate `generate` users 101.. with random passwords), User objects, a
    mapping {extension: password}, or a JSON/TOML file path. `host` other than loopback makes
    the server reachable from the network: it says so loudly on stderr. `certfile`/`keyfile`
    switch to wss://. Parties (900 echo, 901 tone, 902 busy, 903 voicemail) need aiortc for
    their audio (`parties=False` leaves them out). A call parked with INFO `callpark` is
    picked up by dialling `*` + its park extension (`*801`, ...). A call leg whose WebSocket
    broke waits `rebind_grace` seconds for its device (same `+sip.instance`) to re-register
    on a new connection and re-INVITE (the dialog then follows it) before the other leg gets
    a BYE; a WebSocket closed cleanly hangs its calls up at once. `refuse_reused_nonce` (401,
    403 or 400) refuses a nonce answered a second time with that status, as registrars with
    single-use nonces do; None (the default) accepts it (RFC 7616 §3.4). Every SIP message in and
    out is appended to `messages` (the last `max_messages`) and passed to the `on_message`
    hooks.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        users: UsersSpec = None,
        domain: str = "sandbox.webphone",
        *,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        generate: int = 5,
        max_contacts: int = 5,
        max_expires: int = 60,
        min_expires: int = 1,
        nonce_ttl: float = 300.0,
        refuse_reused_nonce: int | None = None,
        ring_timeout: float = 60.0,
        reject_delay: float = 1.0,
        rebind_grace: float = 32.0,
        parties: bool = True,
        tone_hz: float = 440.0,
        max_messages: int = 10000,
    ) -> None:
        self.host = host
        self.port = port
        self.domain = domain
        self.config = SandboxConfig(
            domain=domain,
            max_contacts=max_contacts,
            max_expires=max_expires,
            min_expires=min_expires,
            nonce_ttl=nonce_ttl,
            refuse_reused_nonce=refuse_reused_nonce,
            ring_timeout=ring_timeout,
            reject_delay=reject_delay,
            rebind_grace=rebind_grace,
        )
        self._users = UserTable(_users(users, generate))
        self._ssl = _ssl_context(certfile, keyfile)
        self._with_parties = parties
        self.tone_hz = tone_hz
        self.messages: deque[MessageRecord] = deque(maxlen=max_messages)
        self._hooks: list[Callable[[MessageRecord], Any]] = []
        self._proxy: Proxy | None = None
        self._server: SipServer | None = None
        self.parties: dict[str, Party] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> Sandbox:
        """Listen; afterwards `url`/`port` are the real ones."""
        if self._proxy is not None:
            raise RuntimeError("this Sandbox is already started")
        if not is_loopback(self.host):
            _warn_exposed(self.host)
        proxy = self._proxy = Proxy(self.config, self._users, recorder=self._record)
        self._server = SipServer(proxy, host=self.host, port=self.port, ssl_context=self._ssl,
                                 control=lambda ws: serve_control(self, ws))
        await self._server.start()
        self.port = self._server.port
        proxy.via_host = f"{_host_for_url(self.host)}:{self.port}"
        proxy.transport = self.transport
        if self._with_parties:
            for number, kind in PARTY_NUMBERS.items():
                self.parties[number] = Party(proxy, number, kind, tone_hz=self.tone_hz)
        self._sweeper = asyncio.create_task(self._sweep(), name="sandbox-expiry")
        log.info("sandbox listening on %s (domain %s)", self.url, self.domain)
        return self

    async def close(self) -> None:
        """End party calls, close every connection and the listener. Idempotent."""
        if self._proxy is None:
            return
        for party in list(self.parties.values()):
            await party.close()
        self.parties.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.close()
        self._proxy.close()
        self._proxy = self._server = None

    async def __aenter__(self) -> Sandbox:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.5)  # expiry timer granularity, not synchronisation
            self.proxy.expire()

    # -- addresses and users ----------------------------------------------------------------

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("the Sandbox is not started (use `async with Sandbox()`)")
        return self._proxy

    @property
    def transport(self) -> str:
        """"WSS" with a certificate, else "WS"."""
        return "WSS" if self._ssl is not None else "WS"

    @property
    def outbound_proxy(self) -> str:
        """`host:port`, as sipInfo's outboundProxy."""
        return f"{_host_for_url(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """`ws://127.0.0.1:PORT` (or wss://)."""
        return f"{self.transport.lower()}://{self.outbound_proxy}"

    @property
    def users(self) -> list[User]:
        return list(self._users)

    def add_user(self, extension: str, password: str, **fields: str) -> User:
        """Add a user while running."""
        user = User(extension, password, **fields)
        self._users.add(user)
        return user

    def _user(self, extension: str) -> User:
        user = self._users.get(extension)
        if user is None:
            raise KeyError(f"no user {extension!r} in this sandbox")
        return user

    def password(self, extension: str) -> str:
        return self._user(extension).password

    def sip_info(self, extension: str, **overrides: Any) -> dict[str, Any]:
        """The user's camelCase sipInfo (for `SipInfo.from_dict`), with `overrides` applied."""
        info = sip_info(self._user(extension), domain=self.domain,
                        outbound_proxy=self.outbound_proxy, transport=self.transport)
        info.update(overrides)
        return info

    # -- inspection -------------------------------------------------------------------------

    def bindings(self, extension: str) -> list[dict[str, Any]]:
        """Live registrations of `extension`: dicts with contact, instance, expires, ..."""
        now = self.proxy.now()
        return [b.as_dict(now) for b in self.proxy.registrar.lookup(extension, now)]

    def clear_bindings(self, extension: str) -> None:
        """Forget every registration of `extension` (devices are not told)."""
        self.proxy.registrar.clear(extension)

    def on_message(self, hook: Callable[[MessageRecord], Any]) -> Callable[[], None]:
        """Call `hook(record)` for every SIP message in/out; returns a remover."""
        self._hooks.append(hook)
        return lambda: self._hooks.remove(hook) if hook in self._hooks else None

    def messages_of(self, extension: str) -> list[MessageRecord]:
        """The recorded messages on the connections of `extension`."""
        return [r for r in self.messages if r.user == extension]

    @property
    def voicemails(self) -> list[VoicemailMessage]:
        party = self.parties.get(self.config.voicemail_number)
        return list(party.voicemails) if party is not None else []

    def _record(self, record: MessageRecord) -> None:
        self.messages.append(record)
        for hook in list(self._hooks):
            try:
                hook(record)
            except Exception:
                log.exception("message hook failed")

    # -- parties ----------------------------------------------------------------------------

    async def party_call(
        self,
        user: str,
        party: str = "tone",
        *,
        auto_answer: bool = False,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> PartyCall:
        """Make a built-in party ("echo", "tone", "voicemail" or its number) call `user`.

        Returns at once with the call handle: `await call.wait_answered()`, `await
        call.hangup()`, `await call` (until it ends). `auto_answer` adds `Alert-Info: Auto
        Answer` and `Call-Info: <...>;purpose=info;Answer-After=0`.
        """
        caller = self._party(party)
        extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        return await caller.call(user, auto_answer=auto_answer, headers=extra)

    def _party(self, name: str) -> Party:
        for number, party in self.parties.items():
            if name in (number, party.kind):
                return party
        known = ", ".join(f"{number} ({kind})" for number, kind in self.party_numbers.items())
        raise KeyError(f"no party {name!r}; parties: {known or 'none'}")

    @property
    def party_numbers(self) -> dict[str, str]:
        """{number: kind} of the built-in parties."""
        return {number: party.kind for number, party in self.parties.items()}


def _users(spec: UsersSpec, generate: int) -> list[User]:
    if spec is None:
        return generate_users(generate)
    if isinstance(spec, (str, Path)):
        return load_users(spec)
    if isinstance(spec, Mapping):
        return users_from_data(dict(spec))
    return list(spec)


def _ssl_context(certfile: str | Path | None, keyfile: str | Path | None) -> ssl.SSLContext | None:
    if certfile is None and keyfile is None:
        return None
    if certfile is None:
        raise ValueError("keyfile given without certfile")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return context


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # the wildcard: reach it via loopback
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _warn_exposed(host: str) -> None:
    banner = "!" * 78
    sys.stderr.write(
        f"\n{banner}\n"
        f"!!  WARNING: the webphone sandbox listens on {host}, not only on loopback.\n"
        "!!  Anyone who can reach this machine can register as its users and place calls;\n"
        "!!  its passwords are test passwords. Use --host 127.0.0.1 unless you mean it.\n"
        f"{banner}\n\n"
    )
    sys.stderr.flush()
    log.warning("sandbox listening on non-loopback address %s", host)
