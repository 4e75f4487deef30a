"""RFC 4028 session timers, the pure part (`webphone.sip.session_timer`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from webphone.errors import SipParseError
from webphone.sip import Headers, SipRequest, SipResponse
from webphone.sip import session_timer as st


def request(*headers: tuple[str, str]) -> SipRequest:
    base = [("Via", "SIP/2.0/WS a.invalid;branch=z9hG4bK1"), ("From", "<sip:a@x>;tag=1"),
            ("To", "<sip:b@x>"), ("Call-ID", "c1"), ("CSeq", "1 INVITE")]
    return SipRequest("INVITE", "sip:b@x", Headers(base + list(headers)), b"")


def response(code: int, *headers: tuple[str, str]) -> SipResponse:
    base = [("Via", "SIP/2.0/WS a.invalid;branch=z9hG4bK1"), ("From", "<sip:a@x>;tag=1"),
            ("To", "<sip:b@x>;tag=2"), ("Call-ID", "c1"), ("CSeq", "1 INVITE")]
    return SipResponse(code, "OK" if code == 200 else "Session Interval Too Small",
                       Headers(base + list(headers)), b"")


def test_parse_session_expires() -> None:
    assert st.parse_session_expires("1800") == (1800, None)
    assert st.parse_session_expires("90 ; Refresher=UAS") == (90, "uas")
    assert st.parse_session_expires("300;foo=bar;refresher=uac") == (300, "uac")
    with pytest.raises(SipParseError, match="whole seconds"):
        st.parse_session_expires("soon")
    with pytest.raises(SipParseError, match="whole seconds"):  # a digit to str.isdigit()
        st.parse_session_expires("18²;refresher=uac")
    assert st.retry_expires(response(422, ("Min-SE", "9²")), 90) is None
    with pytest.raises(SipParseError, match="uac or uas"):
        st.parse_session_expires("90;refresher=both")


def test_offer_headers_and_their_bounds() -> None:
    assert st.offer_headers(1800) == [("Supported", "timer"), ("Session-Expires", "1800"),
                                      ("Min-SE", "90")]
    with pytest.raises(ValueError, match="at least Min-SE"):
        st.offer_headers(60)


def test_uas_below_min_se_answers_422_with_its_min_se() -> None:
    answer = st.accept_request(request(("Session-Expires", "60")), 0.0)
    assert answer.reject and answer.timer is None
    assert answer.headers == [("Min-SE", "90")]
    assert st.retry_expires(response(422, *answer.headers), 60) == 90
    assert st.retry_expires(response(422, ("Min-SE", "60")), 60) is None  # nothing higher


def test_uas_picks_the_requester_as_refresher_when_it_supports_timers() -> None:
    answer = st.accept_request(request(("Supported", "timer"), ("Session-Expires", "600")), 5.0)
    assert answer.headers == [("Session-Expires", "600;refresher=uac"), ("Require", "timer")]
    assert answer.timer == st.SessionTimer(interval=600, we_refresh=False, refreshed_at=5.0)
    # the peer cannot refresh without `timer` support: we do, and no Require is sent
    answer = st.accept_request(request(("Session-Expires", "600")), 5.0)
    assert answer.headers == [("Session-Expires", "600;refresher=uas")]
    assert answer.timer is not None and answer.timer.we_refresh


def test_no_session_expires_no_timer() -> None:
    assert st.accept_request(request(("Supported", "timer")), 0.0).timer is None
    assert st.from_response(response(200), 0.0) is None


def test_timer_deadlines() -> None:
    timer = st.SessionTimer(interval=1800, we_refresh=True, refreshed_at=100.0)
    assert timer.refresh_at() == 1000.0 and timer.deadline() == 1000.0
    assert timer.expires_at() == 100.0 + 1800 - 32  # §10: interval - min(32, interval/3)
    theirs = st.SessionTimer(interval=90, we_refresh=False, refreshed_at=0.0)
    assert theirs.deadline() == theirs.expires_at() == 60.0
    assert theirs.refreshed(70.0).expires_at() == 130.0


@given(interval=hs.integers(1, 100_000), asked=hs.sampled_from([None, "uac", "uas"]),
       supported=hs.booleans(), now=hs.floats(0, 1e9))
def test_exactly_one_side_refreshes(interval: int, asked: str | None, supported: bool,
                                    now: float) -> None:
    """Whatever the request asks, the UAS's view and the UAC's view (from the 2xx the UAS
    sends) agree: exactly one of them refreshes, and the interval is the same."""
    value = f"{interval}" + (f";refresher={asked}" if asked else "")
    headers = [("Session-Expires", value)] + ([("Supported", "timer")] if supported else [])
    answer = st.accept_request(request(*headers), now, min_se=1)
    assert answer.timer is not None and not answer.reject
    caller = st.from_response(response(200, *answer.headers), now)
    assert caller is not None and caller.interval == answer.timer.interval == interval
    assert caller.we_refresh != answer.timer.we_refresh
    if asked is None and not supported:
        assert answer.timer.we_refresh  # a UAC without timer support never has to refresh


@given(interval=hs.integers(1, 10**6), at=hs.floats(0, 1e9))
def test_the_refresh_comes_before_the_other_side_gives_up(interval: int, at: float) -> None:
    timer = st.SessionTimer(interval=interval, we_refresh=True, refreshed_at=at)
    assert at <= timer.refresh_at() < timer.expires_at() <= at + interval
