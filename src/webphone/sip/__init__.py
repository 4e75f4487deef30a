"""SIP, pure (no I/O): message parsing/serialization and header grammar, and the user agent
core in the h11 way: transactions (`transaction.py`), dialogs (`dialog.py`), the call state
machine (`ua.py`) and the messages built by rule (`build.py`). Messages and `now` in; messages,
events and `next_deadline()` out.

Other sub-modules (digest, sdp, rc) are imported by name.
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
from webphone.sip.dialog import Dialog, DialogState
from webphone.sip.message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    parse_message,
)
from webphone.sip.transaction import ClientTransaction, ServerTransaction, TransactionState
from webphone.sip.ua import CallCore, CallState, Local

__all__ = [
    "Address",
    "CSeq",
    "CallCore",
    "CallState",
    "ClientTransaction",
    "Dialog",
    "DialogState",
    "Headers",
    "Local",
    "ServerTransaction",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "TransactionState",
    "Via",
    "parse_message",
    "parse_params",
    "quote",
    "split_list",
    "unquote",
]
