"""The status line of a REFER's NOTIFY body (message/sipfrag, RFC 3515 §2.4.5), read from a
far party's bytes: a malformed one is no status, never an exception."""

from __future__ import annotations

import pytest

from webphone.call.actions import _sipfrag_status


@pytest.mark.parametrize(("body", "status"), [
    (b"SIP/2.0 200 OK\r\n", 200),
    (b"SIP/2.0 100 Trying", 100),
    (b"SIP/2.0 2\xc2\xb200 OK", None),  # '2²00': str.isdigit() says yes, int() refuses it
    (b"SIP/2.0 OK", None),
    (b"", None),
])
def test_the_sipfrag_status_is_read_or_absent(body: bytes, status: int | None) -> None:
    assert _sipfrag_status(body) == status
