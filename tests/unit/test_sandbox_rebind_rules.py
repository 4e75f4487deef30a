"""Who may carry on a dialog leg over another connection (`rebind_refusal`, pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from webphone.sandbox.dialogs import Leg, rebind_refusal


def leg(instance: str | None = "urn:uuid:x", user: str | None = "101") -> Leg:
    return Leg(connection=1, tag="t", header="<sip:101@d>;tag=t", contact="sip:101@h",
               user=user, instance=instance)


def test_the_same_user_and_instance_may() -> None:
    assert rebind_refusal(leg(), "101", "urn:uuid:x") is None


def test_refusals_say_why() -> None:
    assert "registered no +sip.instance" in (rebind_refusal(leg(None), "101", "urn:uuid:x") or "")
    assert "another user" in (rebind_refusal(leg(), "102", "urn:uuid:x") or "")
    assert "another user" in (rebind_refusal(leg(), None, "urn:uuid:x") or "")
    assert "not registered" in (rebind_refusal(leg(), "101", None) or "")
    assert "differs" in (rebind_refusal(leg(), "101", "urn:uuid:y") or "")


@given(st.text(max_size=8), st.text(max_size=8) | st.none(), st.text(max_size=8) | st.none())
def test_only_an_exact_match_is_accepted(leg_instance: str, user: str | None,
                                         instance: str | None) -> None:
    accepted = rebind_refusal(leg(leg_instance), user, instance) is None
    assert accepted == (user == "101" and instance == leg_instance)
