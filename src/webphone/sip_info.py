"""SipInfo: the credentials and servers of one SIP device.

RingCentral's Device SIP Registration API returns them as camelCase JSON ("sipInfo"); other
servers can be described with the same keys or their snake_case forms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import SipInfoError

_REQUIRED = ("username", "password", "domain", "outbound_proxy")
_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class SipInfo:
    """One device's SIP credentials and servers.

    `outbound_proxy` is `host:port` (RingCentral's form) or a full `ws://`/`wss://` URL.
    `transport` is "WSS" (TLS, certificate verified; the default) or "WS" (plain, for local
    servers). `authorization_id` defaults to `username`. The password is kept out of `repr`,
    `to_dict()` (unless asked for) and every log line.
    """

    username: str
    password: str = field(repr=False)
    domain: str
    outbound_proxy: str
    authorization_id: str = ""
    outbound_proxy_backup: str = ""
    transport: str = "WSS"
    stun_servers: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _REQUIRED:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise SipInfoError(
                    f"sipInfo field {_camel(name)!r} must be a non-empty string, got "
                    f"{'<hidden>' if name == 'password' else repr(value)}"
                )
        if not self.authorization_id:
            object.__setattr__(self, "authorization_id", self.username)
        transport = self.transport.upper() if isinstance(self.transport, str) else None
        if transport not in ("WSS", "WS"):
            raise SipInfoError(
                f"sipInfo field 'transport' must be 'WSS' or 'WS', got {self.transport!r} "
                "(webphone speaks SIP over WebSocket only)"
            )
        object.__setattr__(self, "transport", transport)
        for name in ("outbound_proxy", "outbound_proxy_backup"):
            value = getattr(self, name)
            if not isinstance(value, str) or (value and "://" not in value and not (
                    _HOSTPORT.match(value) and _port_ok(value))):
                raise SipInfoError(
                    f"sipInfo field {_camel(name)!r} must be 'host:port' (port 1-65535) or a "
                    f"ws:// / wss:// URL, got {value!r}"
                )
        object.__setattr__(self, "stun_servers", tuple(self.stun_servers))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SipInfo:
        """Build from RingCentral's camelCase sipInfo JSON (snake_case keys work too).

        Unknown keys are kept in `extra` (never including the password). A missing or empty
        required field raises `SipInfoError` naming it.
        """
        if not isinstance(data, Mapping):
            raise SipInfoError(f"sipInfo must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            name = _snake(str(key))
            if name in known:
                values[name] = value
            else:
                extra[str(key)] = value
        missing = [n for n in _REQUIRED if n not in values]
        if missing:
            camel = ", ".join(_camel(n) for n in missing)
            raise SipInfoError(
                f"sipInfo is missing {camel}; pass the sipInfo object returned by "
                "RingCentral's Device SIP Registration API, or write these keys yourself"
            )
        stun = values.get("stun_servers", ())
        if not isinstance(stun, list | tuple) or not all(isinstance(s, str) for s in stun):
            raise SipInfoError("sipInfo field 'stunServers' must be a list of 'host:port' strings")
        values["stun_servers"] = tuple(stun)
        return cls(**values, extra=extra)

    def to_dict(self, *, include_password: bool = False) -> dict[str, Any]:
        """The camelCase form; the password only when `include_password` is True."""
        out: dict[str, Any] = {
            "username": self.username,
            "authorizationId": self.authorization_id,
            "domain": self.domain,
            "outboundProxy": self.outbound_proxy,
            "outboundProxyBackup": self.outbound_proxy_backup,
            "transport": self.transport,
            "stunServers": list(self.stun_servers),
        }
        if include_password:
            out["password"] = self.password
        return out

    def websocket_url(self, *, backup: bool = False) -> str:
        """The WebSocket URL of the outbound proxy (or of the backup one)."""
        target = self.outbound_proxy_backup if backup else self.outbound_proxy
        if not target:
            raise SipInfoError("sipInfo has no 'outboundProxyBackup' to switch to")
        if "://" in target:
            return target
        scheme = "wss" if self.transport == "WSS" else "ws"
        return f"{scheme}://{target}"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _port_ok(hostport: str) -> bool:
    """The port of `host:port` (if any) is 1-65535."""
    _, colon, port = hostport.rpartition(":")
    return not colon or "]" in port or 0 < int(port) <= 65535
