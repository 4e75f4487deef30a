"""The exception hierarchy: every error webphone raises derives from `WebPhoneError`.

Messages say what went wrong, with the offending value where it is safe to show, and what to do
about it. No message ever contains the SIP password. The tree (docs/api.md lists the same)::

    WebPhoneError
    ├── SipInfoError (ValueError)          a sipInfo field missing or malformed
    ├── SipParseError (ValueError)         bytes that are not SIP
    ├── TransportError (ConnectionError)   the WebSocket could not be opened or was lost
    ├── SipTimeoutError (TimeoutError)     the SIP server did not answer in time
    ├── RegistrationError                  REGISTER did not succeed
    │   ├── AuthenticationError            credentials rejected
    │   └── TooManyContactsError           603: the extension's registrations are all taken
    ├── CallError                          a call action could not be carried out
    ├── NotRealPhoneError                  SIP work asked of a DummySipClient phone
    ├── NoRealPhoneError                   a dummy's action found no real phone in time
    ├── ActionInterruptedError             the real took the action and was lost
    │   ├── MemberLostError                a delegate's member was lost before answering
    │   └── DelegateTimeoutError (TimeoutError)  a delegate's member did not answer in time
    ├── HubTimeoutError (TimeoutError)     the group's hub did not answer in time
    └── GroupProtocolError (ValueError)    a malformed group frame

Modules add leaves of their own under these (`webphone.media.MediaError` under `CallError`,
`webphone.sip.sdp.SdpError`, the group transports' errors); nothing public raises an exception
outside the tree but `TypeError`/`ValueError` for a wrong argument.
"""

from __future__ import annotations


class WebPhoneError(Exception):
    """Root of every webphone error."""


class SipInfoError(WebPhoneError, ValueError):
    """A sipInfo document is missing a field or has a field of the wrong shape."""


class SipParseError(WebPhoneError, ValueError):
    """Bytes that are not a valid SIP message; the message says what and where."""


class TransportError(WebPhoneError, ConnectionError):
    """The WebSocket to the SIP server could not be opened or was lost."""


class SipTimeoutError(WebPhoneError, TimeoutError):
    """The SIP server did not answer a request in time."""


class RegistrationError(WebPhoneError):
    """REGISTER did not succeed."""


class AuthenticationError(RegistrationError):
    """The server rejected the credentials (authorizationId / password)."""


class TooManyContactsError(RegistrationError):
    """The extension already has the maximum number of live registrations (603)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "REGISTER was refused with 603 Too Many Contacts: this extension already has 5 live "
            "registrations with distinct instance ids (RingCentral's limit; a Kamailio or other "
            "registrar may set another). A slot frees up when a device unregisters or when its "
            "binding expires without refresh (about 1 minute for a crashed device). Reuse one "
            "instance_id per device, or run several processes of one extension as a group with "
            "webphone.SharedWebPhone, which holds a single registration for all of them."
            + (f" ({detail})" if detail else "")
        )


class CallError(WebPhoneError):
    """A call action could not be carried out (wrong state, rejected by the peer, ...)."""


class NotRealPhoneError(WebPhoneError):
    """SIP work was asked of a phone built on DummySipClient, which opens no connection."""


class NoRealPhoneError(WebPhoneError):
    """A dummy's action found no real phone in its group before the deadline."""


class ActionInterruptedError(WebPhoneError):
    """The real phone accepted an action and then died or was deposed before answering.

    The action may or may not have taken effect; it is never run a second time.
    """


class MemberLostError(ActionInterruptedError):
    """A delegate (the real asking one member to do something for a call) found its member
    gone: it crashed, hung, or left before answering, or was not in the group at all.

    An ActionInterruptedError because the meaning is the same: the operation may or may not
    have taken effect on that member, and it is never re-sent. The real decides what next
    (another member, or itself).
    """


class DelegateTimeoutError(ActionInterruptedError, TimeoutError):
    """The member a delegate went to did not answer within the delegate's timeout (it may
    still be running it: the outcome is unknown, and the delegate is never re-sent)."""


class HubTimeoutError(WebPhoneError, TimeoutError):
    """The group's hub (or, over Redis, the group's keys) did not answer in time."""


class GroupProtocolError(WebPhoneError, ValueError):
    """A frame between group members was malformed, too large, or not allowed."""
