"""SipInfo: RingCentral's camelCase JSON, clear errors, the password kept out of sight."""

from __future__ import annotations

import logging

import pytest

from webphone import SipInfo
from webphone.errors import SipInfoError

RC = {
    "username": "16505550100",
    "password": "s3cr3t-pw",
    "authorizationId": "802100",
    "domain": "sip.ringcentral.com",
    "outboundProxy": "sip123-1234.ringcentral.com:8083",
    "outboundProxyBackup": "sip124-1234.ringcentral.com:8083",
    "transport": "WSS",
    "stunServers": ["stun1.ringcentral.com:19302", "stun2.ringcentral.com:19302"],
    "certificate": "-----BEGIN ...",
    "switchBackInterval": 7200,
}


def test_from_ringcentral_json() -> None:
    info = SipInfo.from_dict(RC)
    assert info.authorization_id == "802100"
    assert info.outbound_proxy_backup == "sip124-1234.ringcentral.com:8083"
    assert info.stun_servers == ("stun1.ringcentral.com:19302", "stun2.ringcentral.com:19302")
    assert info.websocket_url() == "wss://sip123-1234.ringcentral.com:8083"
    assert info.websocket_url(backup=True) == "wss://sip124-1234.ringcentral.com:8083"
    assert info.extra["switchBackInterval"] == 7200


def test_snake_case_and_defaults() -> None:
    info = SipInfo.from_dict(
        {
            "username": "101",
            "password": "x",
            "domain": "sip.test",
            "outbound_proxy": "127.0.0.1:5066",
            "transport": "ws",
        }
    )
    assert info.authorization_id == "101"
    assert info.websocket_url() == "ws://127.0.0.1:5066"


def test_full_url_is_kept() -> None:
    info = SipInfo(username="a", password="b", domain="d", outbound_proxy="wss://h:1/sip")
    assert info.websocket_url() == "wss://h:1/sip"


@pytest.mark.parametrize("missing", ["username", "password", "domain", "outboundProxy"])
def test_missing_field_is_named(missing: str) -> None:
    data = {k: v for k, v in RC.items() if k != missing}
    with pytest.raises(SipInfoError, match=missing):
        SipInfo.from_dict(data)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("transport", "UDP", "'WSS' or 'WS'"),
        ("transport", None, "'WSS' or 'WS'"),  # not a string: named, not an AttributeError
        ("outboundProxy", "not a host!", "host:port"),
        ("stunServers", "stun:x", "list"),
        ("username", 42, "username"),
    ],
)
def test_bad_values_are_explained(key: str, value: object, fragment: str) -> None:
    with pytest.raises(SipInfoError, match=fragment):
        SipInfo.from_dict({**RC, key: value})


def test_not_a_mapping() -> None:
    with pytest.raises(SipInfoError, match="JSON object"):
        SipInfo.from_dict(["x"])  # type: ignore[arg-type]


def test_password_hidden(caplog: pytest.LogCaptureFixture) -> None:
    info = SipInfo.from_dict(RC)
    assert "s3cr3t-pw" not in repr(info) and "s3cr3t-pw" not in str(info)
    assert "password" not in info.to_dict()
    assert info.to_dict(include_password=True)["password"] == "s3cr3t-pw"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("info: %s %r", info, info)
    assert "s3cr3t-pw" not in caplog.text
    with pytest.raises(SipInfoError) as err:
        SipInfo.from_dict({**RC, "password": ""})
    assert "s3cr3t" not in str(err.value)
