"""A sipInfo from RingCentral's REST API (Device SIP Registration), for `WebPhone(SipInfo...)`.

RingCentral hands a web phone its SIP credentials through
``POST /restapi/v1.0/client-info/sip-provision`` with the body
``{"sipInfo": [{"transport": "WSS"}]}``; the answer's ``sipInfo[0]`` is exactly what
`SipInfo.from_dict` reads. The app needs the "VoIP Calling" permission.

With the official SDK (``pip install ringcentral``; not a dependency of webphone)::

    from ringcentral import SDK
    from webphone.rc_api import provision_sip_info

    sdk = SDK(client_id, client_secret, "https://platform.ringcentral.com")
    platform = sdk.platform()
    platform.login(jwt=jwt_token)
    sip_info = provision_sip_info(platform)          # a webphone.SipInfo (blocking call)

or from a shell (the same, reading RINGCENTRAL_SERVER_URL, RINGCENTRAL_CLIENT_ID,
RINGCENTRAL_CLIENT_SECRET and RINGCENTRAL_JWT_TOKEN; prints the sipInfo JSON, password included,
so keep the file private)::

    python -m webphone.rc_api > sip-info.json && chmod 600 sip-info.json

The request is built by the pure `sip_provision_request()` and the answer read by the pure
`sip_info_from_response()`; any HTTP client can use them (the SDK is synchronous: from async code
call `provision_sip_info` through `asyncio.to_thread`). Checked with ringcentral 0.9.2 (the
request its platform sends, captured before the network: tests/unit/test_rc_api.py, skipped
where the package is not installed). The `ringcentral` package pins
``websockets==15.*``, which webphone (``websockets>=13``) accepts; install it in the same
environment only if that pin suits your other packages.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import SipInfoError
from .sip_info import SipInfo

__all__ = [
    "SIP_PROVISION_PATH",
    "ApiRequest",
    "provision_sip_info",
    "sip_info_from_response",
    "sip_provision_request",
]

SIP_PROVISION_PATH = "/restapi/v1.0/client-info/sip-provision"
DEFAULT_SERVER = "https://platform.ringcentral.com"


@dataclass(frozen=True)
class ApiRequest:
    """One REST request: method, path (relative to the platform server), JSON body, headers."""

    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def url(self, server: str = DEFAULT_SERVER) -> str:
        return server.rstrip("/") + self.path


def sip_provision_request(transport: str = "WSS") -> ApiRequest:
    """The Device SIP Registration request for a web phone (`transport` "WSS", or "WS")."""
    transport = transport.upper()
    if transport not in ("WSS", "WS"):
        raise ValueError(f"transport must be 'WSS' or 'WS' (SIP over WebSocket), not {transport!r}")
    return ApiRequest("POST", SIP_PROVISION_PATH, {"sipInfo": [{"transport": transport}]},
                      {"Content-Type": "application/json", "Accept": "application/json"})


def sip_info_from_response(data: Mapping[str, Any], transport: str = "WSS") -> SipInfo:
    """The `SipInfo` in a sip-provision answer: the first entry of ``sipInfo`` with that
    transport (else the first entry)."""
    entries = data.get("sipInfo") if isinstance(data, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise SipInfoError("the sip-provision answer has no 'sipInfo' entries")
    wanted = transport.upper()
    entry = next((e for e in entries if isinstance(e, Mapping)
                  and str(e.get("transport", "")).upper() == wanted), entries[0])
    return SipInfo.from_dict(entry)


class _Response(Protocol):
    def json_dict(self) -> Any: ...


class Platform(Protocol):
    """What `provision_sip_info` needs of ``ringcentral.SDK(...).platform()``."""

    def post(self, url: str, body: Any = None) -> _Response: ...


def provision_sip_info(platform: Platform, transport: str = "WSS") -> SipInfo:
    """Ask RingCentral for this device's sipInfo with a logged-in `ringcentral` platform."""
    request = sip_provision_request(transport)
    response = platform.post(request.path, request.body)
    return sip_info_from_response(response.json_dict(), transport)


_USAGE = f"""usage: python -m webphone.rc_api > sip-info.json

Print this device's sipInfo JSON from RingCentral's Device SIP Registration API (password
included: keep the file private, e.g. chmod 600). Reads RINGCENTRAL_CLIENT_ID,
RINGCENTRAL_CLIENT_SECRET, RINGCENTRAL_JWT_TOKEN and RINGCENTRAL_SERVER_URL (default
{DEFAULT_SERVER}); needs `pip install ringcentral` and the app's "VoIP Calling" permission.
Exit codes: 0 printed, 1 RingCentral refused, 2 missing settings or package."""


def main(argv: list[str] | None = None) -> int:
    """``python -m webphone.rc_api``: print the sipInfo JSON (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(_USAGE)
        return 0
    if args:
        print(f"webphone.rc_api: error: unexpected arguments {' '.join(args)!r} (see --help)",
              file=sys.stderr)
        return 2
    names = ("RINGCENTRAL_CLIENT_ID", "RINGCENTRAL_CLIENT_SECRET", "RINGCENTRAL_JWT_TOKEN")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        print(f"webphone.rc_api: error: set {', '.join(missing)} (and RINGCENTRAL_SERVER_URL "
              f"unless it is {DEFAULT_SERVER})", file=sys.stderr)
        return 2
    try:
        from ringcentral import SDK  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("webphone.rc_api: error: the `ringcentral` package is not installed "
              "(pip install ringcentral)", file=sys.stderr)
        return 2
    sdk = SDK(os.environ["RINGCENTRAL_CLIENT_ID"], os.environ["RINGCENTRAL_CLIENT_SECRET"],
              os.environ.get("RINGCENTRAL_SERVER_URL", DEFAULT_SERVER))
    platform = sdk.platform()
    try:
        platform.login(jwt=os.environ["RINGCENTRAL_JWT_TOKEN"])
        info = provision_sip_info(platform)
    except Exception as exc:
        print(f"webphone.rc_api: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({**info.to_dict(include_password=True), **dict(info.extra)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
