"""Authentication and REGISTER handling of the proxy (the registrar core is `registrar.py`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from webphone.sip import SipRequest

from .auth import DigestAuthenticator
from .config import SandboxConfig
from .connection import Connection
from .messages import uri_user
from .registrar import Registrar, RegistrarError, parse_register
from .users import User, UserTable

log = logging.getLogger("webphone.sandbox")

__all__ = ["RegistrationRouter", "authenticate", "register"]

_REASONS = {400: "Bad Request", 403: "Forbidden"}  # of `SandboxConfig.refuse_reused_nonce`


class RegistrationRouter(Protocol):
    """What REGISTER and authentication need of the proxy."""

    @property
    def auth(self) -> DigestAuthenticator: ...
    @property
    def users(self) -> UserTable: ...
    @property
    def registrar(self) -> Registrar: ...
    @property
    def config(self) -> SandboxConfig: ...

    def now(self) -> float: ...

    def reply(self, connection: Connection, request: SipRequest, status: int, reason: str,
              headers: Iterable[tuple[str, str]] = (), **kwargs: Any) -> None: ...


def authenticate(
    proxy: RegistrationRouter, connection: Connection, request: SipRequest
) -> User | None:
    """The user behind `request`, or None after sending the 401/407/403 it deserves."""
    is_register = request.method == "REGISTER"
    header = "Authorization" if is_register else "Proxy-Authorization"
    verdict = proxy.auth.verify(
        request.headers.get(header),
        method=request.method,
        password_for=lambda name: _password_for(proxy, name),
        now=proxy.now(),
    )
    user = proxy.users.by_authorization_id(verdict.username or "") if verdict.ok else None
    if user is not None:
        connection.user = user.extension
        return user
    hard = verdict.reason in ("wrong password", "unknown user") and not verdict.stale
    if hard:
        log.info("%s from %r refused: %s", request.method, connection, verdict.reason)
        proxy.reply(connection, request, 403, "Forbidden")
        return None
    refusal = proxy.config.refuse_reused_nonce if verdict.reused else None
    if refusal is not None and refusal != 401:  # 401: a fresh challenge without stale, below
        log.info("%s from %r refused with %d: %s", request.method, connection, refusal,
                 verdict.reason)
        proxy.reply(connection, request, refusal, _REASONS[refusal])
        return None
    status, name = (401, "WWW-Authenticate") if is_register else (407, "Proxy-Authenticate")
    reason = "Unauthorized" if is_register else "Proxy Authentication Required"
    challenge = proxy.auth.challenge(proxy.now(), stale=verdict.stale)
    proxy.reply(connection, request, status, reason, [(name, challenge)])
    return None

def _password_for(proxy: RegistrationRouter, authorization_id: str) -> str | None:
    user = proxy.users.by_authorization_id(authorization_id)
    return user.password if user is not None else None

def register(proxy: RegistrationRouter, connection: Connection, request: SipRequest) -> None:
    """Authenticate (401), then apply the REGISTER to the registrar and answer it."""
    proxy.reply(connection, request, 100, "Trying")
    user = authenticate(proxy, connection, request)
    if user is None:
        return
    aor = uri_user(str(request.to_address.uri))
    if aor != user.extension:
        proxy.reply(connection, request, 403, "Forbidden - To is not your address")
        return
    try:
        contacts = parse_register(
            aor,
            request.headers.get_all("Contact"),
            expires_header=request.headers.get("Expires"),
            call_id=request.call_id,
            cseq=request.cseq.number,
            user_agent=request.headers.get("User-Agent"),
        )
    except RegistrarError as exc:
        proxy.reply(connection, request, exc.status, exc.reason,
                    [("Warning", f'399 sandbox "{exc.detail}"')])
        return
    result = proxy.registrar.register(contacts, proxy.now(), connection.id)
    if not result.ok:
        log.info("REGISTER of %s refused: %s %s", aor, result.status, result.reason)
        proxy.reply(connection, request, result.status, result.reason)
        return
    now = proxy.now()
    listed = [("Contact", b.contact_header(now)) for b in result.bindings]
    proxy.reply(connection, request, 200, "OK", listed)
