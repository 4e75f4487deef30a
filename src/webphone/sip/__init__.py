"""SIP, pure (no I/O): message parsing/serialization and header grammar.

Other sub-modules (digest, transaction, sdp, rc) add their re-exports here.
"""

from webphone.errors import SipParseError
from webphone.sip.address import (
    Address,
    CSeq,
    SipUri,
    Via,
    parse_params,
    quote,
    split_list,
    unquote,
)
from webphone.sip.message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    parse_message,
)

__all__ = [
    "Address",
    "CSeq",
    "Headers",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "Via",
    "parse_message",
    "parse_params",
    "quote",
    "split_list",
    "unquote",
]
