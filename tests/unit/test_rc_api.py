"""webphone.rc_api: the Device SIP Registration request it builds, and how it reads the answer
(no network: a fake platform records the call)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from webphone.errors import SipInfoError
from webphone.rc_api import (
    SIP_PROVISION_PATH,
    main,
    provision_sip_info,
    sip_info_from_response,
    sip_provision_request,
)

ANSWER = {  # the shape of RingCentral's answer (values made up)
    "sipInfo": [{
        "username": "16505550100", "password": "secret", "authorizationId": "802398808016",
        "domain": "sip.ringcentral.com", "outboundProxy": "sip10.ringcentral.com:8083",
        "outboundProxyBackup": "sip20.ringcentral.com:8083", "transport": "WSS",
        "stunServers": ["stun1.ringcentral.com:19302"], "switchBackInterval": 1800,
    }],
    "sipFlags": {"voipFeatureEnabled": True},
    "pollingInterval": 7200,
}


def test_the_request_is_a_wss_sip_provision_post() -> None:
    request = sip_provision_request()
    assert (request.method, request.path) == ("POST", "/restapi/v1.0/client-info/sip-provision")
    assert request.body == {"sipInfo": [{"transport": "WSS"}]}
    assert request.headers["Content-Type"] == "application/json"
    assert request.url("https://platform.devtest.ringcentral.com/") == (
        "https://platform.devtest.ringcentral.com/restapi/v1.0/client-info/sip-provision")
    assert sip_provision_request("ws").body == {"sipInfo": [{"transport": "WS"}]}
    with pytest.raises(ValueError, match="WSS"):
        sip_provision_request("UDP")


def test_the_answer_becomes_a_sip_info() -> None:
    info = sip_info_from_response(ANSWER)
    assert info.username == "16505550100" and info.authorization_id == "802398808016"
    assert info.websocket_url() == "wss://sip10.ringcentral.com:8083"
    assert info.stun_servers == ("stun1.ringcentral.com:19302",)
    assert info.extra["switchBackInterval"] == 1800
    with pytest.raises(SipInfoError):
        sip_info_from_response({"sipFlags": {}})


def test_provision_with_a_platform_posts_the_request() -> None:
    calls: list[tuple[str, Any]] = []

    class Response:
        def json_dict(self) -> Any:
            return ANSWER

    class Platform:
        def post(self, url: str, body: Any = None) -> Response:
            calls.append((url, body))
            return Response()

    info = provision_sip_info(Platform())
    assert calls == [(SIP_PROVISION_PATH, {"sipInfo": [{"transport": "WSS"}]})]
    assert info.domain == "sip.ringcentral.com"


def test_the_command_says_what_is_missing(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("RINGCENTRAL_CLIENT_ID", "RINGCENTRAL_CLIENT_SECRET", "RINGCENTRAL_JWT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main([]) == 2
    assert "RINGCENTRAL_JWT_TOKEN" in capsys.readouterr().err


def test_with_the_official_sdk_the_request_is_the_same() -> None:
    """With the `ringcentral` package (when installed; not a dependency): the HTTP request its
    platform sends for `provision_sip_info`, captured before it reaches the network."""
    ringcentral = pytest.importorskip("ringcentral")
    from ringcentral.http.api_response import ApiResponse
    from ringcentral.http.client import Client

    sent: list[Any] = []

    def load_response(self: Any, request: Any) -> Any:
        import requests

        sent.append(request)
        response = requests.models.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(ANSWER).encode()
        return ApiResponse(request, response)

    sdk = ringcentral.SDK("client-id", "client-secret", "https://platform.example.test")
    platform = sdk.platform()
    platform.auth().set_data({"token_type": "bearer", "access_token": "token",
                              "expires_in": 3600, "refresh_token": "r",
                              "refresh_token_expires_in": 36000})
    original = Client.load_response
    Client.load_response = load_response
    try:
        info = provision_sip_info(platform)
    finally:
        Client.load_response = original
    (request,) = sent
    assert request.method == "POST"
    assert request.url == "https://platform.example.test/restapi/v1.0/client-info/sip-provision"
    assert json.loads(request.body) == {"sipInfo": [{"transport": "WSS"}]}
    assert request.headers["Authorization"] == "bearer token"
    assert info.username == "16505550100"


def test_help_exits_0_and_says_what_it_reads() -> None:
    """`python -m webphone.rc_api --help` (it used to exit 2 with the missing-settings error)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "webphone.rc_api", "--help"],
                            capture_output=True, text=True, timeout=30, env={"PATH": ""})
    assert result.returncode == 0, result
    assert "RINGCENTRAL_JWT_TOKEN" in result.stdout and result.stderr == ""
