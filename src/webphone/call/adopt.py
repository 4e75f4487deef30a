"""A call another process answered, continued here (issue #11: the signalling holder died).

`adopted_session(link, record)` rebuilds the answered `InboundCallSession` or
`OutboundCallSession` that `CallSession.continuity_record()` wrote down in the old process:
the SIP core from the record (`CallCore.from_dict`) with this process's Contact, and the local
CSeq moved `gap` above anything the old holder may have sent after the record was made (RFC 3261
§12.2.1.1, `Dialog.adopt`). The session has no media yet: the caller gives it the media the call
goes on with, then sends the target refresh (`refresh()`) or renews the media (`renew_media`).
"""

from __future__ import annotations

from typing import Any

from ..errors import NotRealPhoneError, SipParseError
from ..sip.dialog import CSEQ_ADOPTION_GAP
from ..sip.ua import CallCore
from ..sip_client import SipClient
from ._base import PhoneLink
from ._renew import CALL_RECORD_VERSION, record_field
from .inbound import InboundCallSession
from .outbound import OutboundCallSession
from .session import CallSession

__all__ = ["adopted_session"]


def adopted_session(link: PhoneLink, record: dict[str, Any], *,
                    gap: int = CSEQ_ADOPTION_GAP) -> CallSession:
    """An answered call session continuing `record` (from `continuity_record()`) on `link`'s
    phone. `SipParseError` names the field of the record that is wrong."""
    if not isinstance(record, dict):
        raise SipParseError(f"a call record must be an object, got {type(record).__name__}")
    if record.get("version") != CALL_RECORD_VERSION:
        raise SipParseError(f"call record field 'version' is {record.get('version')!r}, "
                            f"expected {CALL_RECORD_VERSION}")
    client = link.sip_client
    if not isinstance(client, SipClient):
        raise NotRealPhoneError("adopting a call needs a phone with a real SipClient")
    direction = record_field(record, "direction", str)
    core = CallCore.from_dict(record_field(record, "core", dict), client.local)
    session: CallSession
    if direction == "inbound" and not core.outbound:
        session = InboundCallSession(link, core.invite)
    elif direction == "outbound" and core.outbound:
        target = record_field(record, "target", str)
        outbound = OutboundCallSession(link, target)
        outbound._invite = core.invite
        session = outbound
    else:
        raise SipParseError(f"call record field 'direction' is {direction!r}, but its core "
                            f"says {'outbound' if core.outbound else 'inbound'}")
    session._adopt_record(core, record, gap)
    return session
