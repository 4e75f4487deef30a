"""Reading a registrar's 200 to a binding fetch for someone else's contact with our instance."""

from __future__ import annotations

from webphone.sip import Headers, SipResponse
from webphone.sip.bindings import foreign_contacts

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
