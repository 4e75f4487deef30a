"""Is our registration still ours? A binding fetch before every refresh finds out.

A group's phones share one instance id (RFC 5626 §4.1), so that the registrar keeps one binding
for the group however many processes it has. Two groups of one extension that cannot see each
other (another OS user, another runtime directory, two hosts without a shared Redis) therefore
both register that instance: the registrar replaces the binding of one with the other's
(RFC 5626 §6, a binding is matched by instance id and reg-id), each refresh takes it back, and
inbound calls reach whichever registered last. Neither REGISTER's 200 shows it (each lists the
binding just written), so before each refresh the real phone fetches the bindings
(RFC 3261 §10.2.3: a REGISTER without Contact; §10.3 step 8: the 200 lists every binding of the
address of record). A binding with our instance id and a Contact URI that is not ours means
another group holds our registration: `check_binding` logs it and returns those contacts, and
the client emits ``binding_conflict``. The cure is for the groups to meet (one hub, or Redis).
"""

from __future__ import annotations

import logging
from typing import Protocol

from webphone._refresh import MAX_EXPIRES
from webphone.errors import SipParseError
from webphone.sip import Address, SipRequest, SipResponse
from webphone.sip._grammar import split_list
from webphone.sip.address import SipUri

__all__ = ["BindingClient", "check_binding", "foreign_contacts", "granted_expires"]

log = logging.getLogger("webphone.registration")

#: Contacts looked at in one answer: a registrar lists the bindings of one address of record
#: (RingCentral allows 5); a longer list is cut rather than parsed on the event loop.
MAX_CONTACTS = 64


class BindingClient(Protocol):
    """What the check needs of a SIP client (`SipClient` is one)."""

    instance_id: str

    @property
    def aor(self) -> Address:
        """Our address of record."""

    @property
    def contact(self) -> str:
        """Our Contact header value."""

    def new_request(self, method: str, uri: str, *, to: Address | str | None = None,
                    from_tag: str | None = None, call_id: str | None = None) -> SipRequest:
        """A request outside any dialog."""

    async def request(self, request: SipRequest, *, timeout: float | None = None) -> SipResponse:
        """Send and return the final response (digest challenges answered)."""


def foreign_contacts(response: SipResponse, instance_id: str, own_contact: str) -> list[str]:
    """The Contact URIs of `response` (a 2xx to REGISTER) that carry `instance_id` but are not
    `own_contact`'s URI. Contacts that do not parse are skipped (they are not ours to judge)."""
    marker = f"<urn:uuid:{instance_id}>".lower()
    try:
        own = Address.parse(own_contact).uri
    except SipParseError:
        return []
    found: list[str] = []
    for value in response.headers.get_all("Contact")[:MAX_CONTACTS]:
        for item in _contact_items(value):
            instance = (item.params.get("+sip.instance") or "").strip('"').lower()
            if instance == marker and not _same_uri(item.uri, own):
                found.append(str(item.uri))
    return found


def granted_expires(response: SipResponse, markers: tuple[str, ...], requested: int) -> int:
    """The seconds our binding got from `response` (a 2xx to our REGISTER): the `expires` of
    the first Contact holding one of `markers` (our instance id, our Contact host), else the
    Expires header (RFC 3261 §10.2.4), else `requested`. A value that is not ASCII digits
    counts as absent (a registrar's odd answer must not raise); a huge one is capped at
    `MAX_EXPIRES`."""
    for value in response.headers.get_all("Contact")[:MAX_CONTACTS]:
        if not any(marker in value for marker in markers):
            continue
        for item in _contact_items(value):
            if (seconds := _seconds(item.params.get("expires"))) is not None:
                return seconds
    seconds = _seconds(response.headers.get("Expires"))
    return requested if seconds is None else seconds


def _seconds(value: str | None) -> int | None:
    text = (value or "").strip()
    # ASCII only: str.isdigit() also accepts "²", which int() refuses
    if not (text.isascii() and text.isdigit()):
        return None
    return min(int(text), MAX_EXPIRES)


def _contact_items(value: str) -> list[Address]:
    items = []
    for part in split_list(value)[:MAX_CONTACTS]:
        try:
            items.append(Address.parse(part))
        except SipParseError:
            continue
    return items


def _same_uri(a: SipUri, b: SipUri) -> bool:
    # RFC 3261 §19.1.4 in short: user case-sensitive, host case-insensitive (params ignored:
    # registrars add or reorder them, and our user part alone is random per process).
    return a.user == b.user and (a.host or "").lower() == (b.host or "").lower()


async def check_binding(client: BindingClient, *, call_id: str, from_tag: str,
                        timeout: float) -> list[str]:
    """Fetch the bindings of our address of record; the contacts that hold our instance id but
    are not ours (empty when the binding is ours or absent). Errors propagate to the caller."""
    fetch = client.new_request("REGISTER", f"sip:{client.aor.uri.host}", to=client.aor,
                               from_tag=from_tag, call_id=call_id)
    response = await client.request(fetch, timeout=timeout)
    if not 200 <= response.status_code < 300:
        return []
    others = foreign_contacts(response, client.instance_id, client.contact)
    if others:
        log.warning("another phone holds this group's registration (instance %s): %s; "
                    "separate groups of one extension must share a hub or Redis "
                    "(see README, 'Groups')", client.instance_id, ", ".join(others))
    return others
