"""A hostile hello cannot wedge a group: epochs near the JSON integer limit are refused."""

from __future__ import annotations

import json

import pytest

from webphone.errors import GroupProtocolError
from webphone.shared.protocol import MAX_HELLO_EPOCH, decode_frame


def hello(epoch: int) -> bytes:
    return json.dumps({
        "v": 1, "type": "hello", "member_id": "m1", "pid": 1, "host": "h", "group": "g",
        "started_at": 1.0, "protocol": 1, "epoch": epoch, "real": True,
    }).encode()


def test_epoch_beyond_the_hello_limit_is_refused() -> None:
    with pytest.raises(GroupProtocolError, match=r"hello\.epoch"):
        decode_frame(hello(2**53 - 1))


def test_epoch_at_the_limit_is_accepted() -> None:
    assert decode_frame(hello(MAX_HELLO_EPOCH)).epoch == MAX_HELLO_EPOCH  # type: ignore[attr-defined]
