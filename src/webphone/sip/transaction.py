"""Transaction keys and identifiers, pure.

A response belongs to the client transaction whose request carried the same top-Via branch and
the same CSeq method (RFC 3261 §17.1.3). Matching on the CSeq number alone, as the upstream SDK
does, lets an unrelated message with an equal number complete the wrong request.
"""

from __future__ import annotations

import secrets

from .message import SipRequest, SipResponse

MAGIC_COOKIE = "z9hG4bK"

TransactionKey = tuple[str, str]


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 64 random bits)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag."""
    return secrets.token_hex(6)


def new_call_id() -> str:
    """A fresh Call-ID."""
    return secrets.token_hex(12)


def transaction_key(message: SipRequest | SipResponse) -> TransactionKey:
    """(top-Via branch, CSeq method) of a request or response.

    A CANCEL has its own transaction (same branch, method CANCEL); the ACK of a non-2xx final
    response belongs to the INVITE transaction, so it is keyed as INVITE.
    """
    branch = message.branch or ""
    method = message.cseq.method.upper()
    if method == "ACK":
        method = "INVITE"
    return branch, method
