"""What `WebPhone.call()` takes as callee and custom headers (issue 13 items 6 and 7)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webphone.errors import CallError
from webphone.sip import Headers, SipRequest, parse_message
from webphone.sip.validate import (
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    check_callee,
    check_headers,
)


@pytest.mark.parametrize("callee", ["101", "+14155550100", "*67", "alice", "sip:900@sip.test",
                                    "sips:bob@example.com:5061;transport=tls"])
def test_numbers_names_and_sip_uris_are_taken(callee: str) -> None:
    """What users call: extensions, E.164 numbers, feature codes, names, sip: URIs."""
    assert check_callee(callee) == callee


@pytest.mark.parametrize(("callee", "fragment"), [
    ("\N{TELEPHONE RECEIVER}900", "is not a number or user name"),
    ("10 1", "is not a number or user name"),
    ("101;x=1", "is not a number or user name"),
    ("", "empty"),
    ("1" * 300, "at most 256"),
    (101, "got int"),
    ("sip:", "callee: URI"),
    ("sip:\N{TELEPHONE RECEIVER}@d", "user part"),
])
def test_a_callee_that_cannot_be_called_is_refused_naming_the_field(callee: Any,
                                                                     fragment: str) -> None:
    """`call 📞900` used to send `INVITE sip:📞900@...`; now a CallError names the callee."""
    with pytest.raises(CallError, match=fragment) as info:
        check_callee(callee)
    assert str(info.value).startswith("callee")


def test_custom_headers_come_back_as_pairs() -> None:
    """A mapping or pairs, in order."""
    assert check_headers({"X-A": "1", "X-B": ""}) == [("X-A", "1"), ("X-B", "")]
    assert check_headers([("X-A", "1")]) == [("X-A", "1")]
    assert check_headers(None) == []


@pytest.mark.parametrize(("headers", "fragment"), [
    ({"Call-ID": "x"}, "written by webphone itself"),
    ({"cseq": "1 INVITE"}, "written by webphone itself"),
    ({"v": "SIP/2.0/WS x"}, "written by webphone itself"),
    ({"X-Big": "a" * 100_000}, f"at most {MAX_HEADER_VALUE_CHARS}"),
    ({"X-Int": 5}, "the value must be a string, got int"),
    ({"X Bad": "1"}, "not a header name"),
    ({"X-Inject": "a\r\nVia: evil"}, "control characters"),
    ({"X-Bell": "a\x07"}, "control characters"),
    ({f"X-{i}": "v" for i in range(MAX_HEADERS + 1)}, f"more than {MAX_HEADERS}"),
    ({f"X-{i}": "v" * 1000 for i in range(9)}, "characters in all"),
    ("X-A: 1", "expected a mapping"),
    ([("X-A",)], "pairs"),
])
def test_bad_custom_headers_are_refused_naming_the_header(headers: Any, fragment: str) -> None:
    """Core names, huge or non-string values, injections: a CallError that says which."""
    with pytest.raises(CallError, match=fragment):
        check_headers(headers)


_ANY_HEADERS = st.one_of(
    st.none(), st.text(max_size=50),
    st.dictionaries(st.text(max_size=70), st.one_of(st.text(max_size=1500), st.integers()),
                    max_size=40),
    st.lists(st.one_of(st.tuples(st.text(max_size=70), st.text(max_size=1500)),
                       st.lists(st.text(max_size=5), max_size=3), st.integers()), max_size=40),
)


# Each input's CPU time (thread_time) is bounded, not its wall time: a quadratic parse shows in
# both, a process that a busy machine leaves waiting only in the wall clock.
@settings(max_examples=300, deadline=None)
@given(_ANY_HEADERS)
def test_fuzz_custom_headers_give_pairs_that_make_a_valid_request_or_call_error(
    headers: Any,
) -> None:
    """Any input: CallError, or pairs that serialise into a request that parses back."""
    started = time.thread_time()
    try:
        pairs = check_headers(headers)
    except CallError:
        return
    finally:
        assert time.thread_time() - started < 1.0
    request = SipRequest("INVITE", "sip:101@d", headers=Headers([
        ("Via", "SIP/2.0/WS x.invalid;branch=z9hG4bK1"), ("From", "<sip:a@d>;tag=1"),
        ("To", "<sip:101@d>"), ("Call-ID", "c"), ("CSeq", "1 INVITE"), *pairs]))
    assert parse_message(bytes(request)).headers.get_all("Call-ID") == ["c"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.integers(), st.none()))
def test_fuzz_callee_is_a_valid_request_uri_or_call_error(callee: Any) -> None:
    """Any callee: CallError, or one that makes a Request-URI the parser reads back."""
    try:
        checked = check_callee(callee)
    except CallError:
        return
    uri = checked if checked.startswith(("sip:", "sips:")) else f"sip:{checked}@d"
    assert parse_message(bytes(SipRequest("INVITE", uri))).uri == uri  # type: ignore[union-attr]
