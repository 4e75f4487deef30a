"""SharedWebPhone checks its options when it is made (typed options), the member-side role rules
(one implementation: MemberView.set_role) and what dummies learn of the real's SIP connection."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from webphone import SharedWebPhone, SipInfo
from webphone._options import check_values, conforms
from webphone.shared.proxy import server_events, server_state
from webphone.shared.views import MemberView

INFO = SipInfo.from_dict({"username": "101", "password": "pw", "authorizationId": "101",
                          "domain": "sip.test", "outboundProxy": "127.0.0.1:1",
                          "transport": "WS", "stunServers": []})


# -- typed options ---------------------------------------------------------------------------------


def test_a_misspelt_webphone_option_fails_at_construction_and_names_the_right_one() -> None:
    """The issue's bug: `register_expirse=30` used to be accepted and fail only at promotion."""
    with pytest.raises(TypeError, match=r"'register_expirse' \(did you mean 'register_expires'"):
        SharedWebPhone(INFO, hub="memory", register_expirse=30)


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("register_expires", "30", "register_expires must be int, got str '30'"),
    ("register_expires", True, "register_expires must be int, got bool"),
    ("request_timeout", None, "request_timeout must be float"),
    ("reconnect_delay", (1.0,), "reconnect_delay must be tuple"),
    ("reconnect_delay", [1.0, 30.0], "reconnect_delay must be tuple"),
    ("ssl_context", "yes", "ssl_context must be"),
    ("media_factory", 3, "media_factory must be"),
    ("loopback_media", "no", "loopback_media must be bool"),
    ("heartbeat_timeout", "3", "heartbeat_timeout must be float"),
    ("hub_options", {"heartbeat_timeout": 1}, "hub_options must be HubOptions | None"),
    ("debug", 1, "debug must be bool"),
])
def test_a_mistyped_option_fails_at_construction(option: str, value: Any, expected: str) -> None:
    """Every option, the WebPhone's and SharedWebPhone's own, is checked against its annotation."""
    with pytest.raises(TypeError, match=expected.replace("(", r"\(")):
        SharedWebPhone(INFO, hub="memory", **{option: value})


def test_valid_options_are_split_between_the_phone_and_its_sip_client() -> None:
    """What passes goes to the WebPhone (media options) or the SipClient (everything else)."""
    context = ssl.create_default_context()
    shared = SharedWebPhone(INFO, hub="memory", register_expires=30, request_timeout=2,
                            reconnect_delay=(1, 20.0), ssl_context=context, loopback_media=True,
                            media_factory=lambda session: session, user_agent="ua/1")
    assert shared._phone_options.keys() == {"loopback_media", "media_factory"}
    assert shared._client_options == {"register_expires": 30, "request_timeout": 2,
                                      "reconnect_delay": (1, 20.0), "ssl_context": context,
                                      "user_agent": "ua/1"}


def test_options_shared_webphone_sets_itself_are_refused_as_webphone_options() -> None:
    """`sip_client` and the group's instance id are the group's business."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'sip_client'"):
        SharedWebPhone(INFO, hub="memory", sip_client=None)


def test_the_type_check_covers_the_annotation_forms_in_use() -> None:
    """Unions, None, tuples (fixed and variadic), int for float, never bool for a number."""
    assert conforms(1, float) and not conforms(True, float) and not conforms(1.0, int)
    assert conforms(None, int | None) and not conforms("x", int | None)
    assert conforms((1, 2), tuple[int, ...]) and not conforms((1, "2"), tuple[int, ...])
    assert conforms(print, Any) and conforms({"a": 1}, dict[str, int])
    with pytest.raises(TypeError, match="x must be int, got str"):
        check_values("f", {"x": "1"}, {"x": int})


# -- the role rules, once --------------------------------------------------------------------------


def test_role_updates_say_when_the_owner_must_hear_of_them() -> None:
    """News: a new role, or real at a new epoch; not a dummy's epoch moving on; stale: None."""
    view = MemberView()
    first = view.set_role("dummy", 1, "a")
    assert first is not None and first.news and first.old is None
    later = view.set_role("dummy", 2, "b")
    assert later is not None and later.changed and not later.news
    promoted = view.set_role("real", 3, "me")
    assert promoted is not None and promoted.news and promoted.old == "dummy"
    again = view.set_role("real", 5, "me")
    assert again is not None and again.news  # promoted again / adopted at a new epoch
    assert view.set_role("dummy", 4, "x") is None  # stale: older than epoch 5
    assert view.role == "real" and view.epoch == 5
    forced = view.set_role("dummy", 4, "x", force=True)  # a welcome from a restarted hub
    assert forced is not None and forced.news and view.epoch == 5


# -- the real's SIP connection, as dummies see it -----------------------------------------------


def test_dummies_hear_disconnected_and_reconnected_from_the_snapshot() -> None:
    """A change of the published server state is one event; no change, or no key, is none."""
    seen = server_state(True)
    seen, events = server_events(seen, server_state(False, "WebSocket closed\r\n(1006)"))
    assert events == [("disconnected", "WebSocket closed  (1006)")]
    seen, events = server_events(seen, server_state(False, "still down"))
    assert events == []
    seen, events = server_events(seen, None)  # a snapshot of a real that publishes no state
    assert events == [] and seen["connected"] is False
    seen, events = server_events(seen, {"connected": "yes"})  # garbage: ignored
    assert events == [] and seen["connected"] is False
    seen, events = server_events(seen, server_state(True))
    assert events == [("reconnected",)] and seen == {"connected": True, "reason": None}
