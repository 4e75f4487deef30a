"""Reading a registrar's 200 to a binding fetch for someone else's contact with our instance."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from webphone.sip import Headers, SipResponse
from webphone.sip.bindings import foreign_contacts, granted_expires

OURS = '<sip:aa@x1.invalid;transport=ws>;+sip.instance="<urn:uuid:ID-1>";reg-id=1'


def response(*contacts: str) -> SipResponse:
    return SipResponse(200, "OK", headers=Headers([("Contact", c) for c in contacts]))


def test_our_own_binding_is_no_conflict() -> None:
    """Only our contact with our instance: nothing to report."""
    ok = response('<sip:aa@X1.invalid;transport=ws>;expires=60;+sip.instance="<urn:uuid:id-1>"')
    assert foreign_contacts(ok, "ID-1", OURS) == []


def test_another_contact_with_our_instance_is_reported() -> None:
    """RFC 5626 §6: the registrar replaced our binding with another group's contact."""
    taken = response('<sip:bb@y2.invalid;transport=ws>;expires=60;+sip.instance="<urn:uuid:ID-1>",'
                     ' <sip:cc@z.invalid>;+sip.instance="<urn:uuid:other>"', "not an address <")
    assert foreign_contacts(taken, "ID-1", OURS) == ["sip:bb@y2.invalid;transport=ws"]


def test_a_huge_contact_list_is_cut_not_parsed_whole() -> None:
    """40,000 contacts from a hostile registrar: only the first MAX_CONTACTS are looked at."""
    from webphone.sip.bindings import MAX_CONTACTS

    many = ", ".join(f'<sip:u{i}@h>;+sip.instance="<urn:uuid:ID-1>"' for i in range(40_000))
    assert len(foreign_contacts(response(many), "ID-1", OURS)) == MAX_CONTACTS


MARKERS = ("urn:uuid:inst-1", "ours.invalid")


def test_granted_expiry_is_ours_then_the_header_then_what_we_asked() -> None:
    theirs = '<sip:x@other.invalid>;expires=30;+sip.instance="<urn:uuid:inst-2>"'
    ours = '<sip:me@ours.invalid;transport=ws>;expires=45;+sip.instance="<urn:uuid:inst-1>"'
    assert granted_expires(response(theirs, ours), MARKERS, 60) == 45
    with_header = response(theirs)
    with_header.headers.add("Expires", "50")
    assert granted_expires(with_header, MARKERS, 60) == 50
    assert granted_expires(response(theirs), MARKERS, 60) == 60
    assert granted_expires(response(ours.replace("45", "0")), MARKERS, 60) == 0


_FIELD_TEXT = st.text(st.characters(blacklist_characters="\r\n\0"), max_size=20)


@given(_FIELD_TEXT, _FIELD_TEXT)
def test_any_expires_a_registrar_writes_gives_a_number_never_an_exception(
    param: str, header: str
) -> None:
    """"1²" is a digit string to str.isdigit() and no number to int(): it once raised
    ValueError out of register(), ending the refresh task (no registration, no reconnect)."""
    odd = response(f'<sip:me@ours.invalid>;expires={param};+sip.instance="<urn:uuid:inst-1>"')
    odd.headers.add("Expires", header)
    assert 0 <= granted_expires(odd, MARKERS, 60) <= 2**32 - 1


def test_non_ascii_digits_count_as_absent() -> None:
    odd = response('<sip:me@ours.invalid>;expires=1²;+sip.instance="<urn:uuid:inst-1>"')
    odd.headers.add("Expires", "٣")
    assert granted_expires(odd, MARKERS, 60) == 60
    huge = response(f"<sip:me@ours.invalid>;expires={10**20}")
    assert granted_expires(huge, MARKERS, 60) == 2**32 - 1
