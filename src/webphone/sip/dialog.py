"""SIP dialogs (RFC 3261 §12), pure: the state two user agents share for one call.

A dialog is identified by Call-ID, local tag and remote tag. It remembers the remote target
(the peer's Contact), the route set (Record-Route, reversed for the caller), and the CSeq counters
in each direction. In-dialog requests are addressed to the remote target through the route set;
the upstream SDK ignored both and sent BYE to `sip:{domain}`, which only works on RingCentral.

A dialog is data: `to_dict()` gives plain JSON types (versioned) and `from_dict()` takes them
back, so another process can adopt it. `adopt()` moves the local CSeq well above anything the
previous holder may have sent after its last snapshot (RFC 3261 §12.2.1.1: CSeq numbers of one
direction must increase; a repeated number would be taken for a retransmission).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..errors import SipParseError
from .address import Address
from .message import SipRequest, SipResponse

__all__ = ["CSEQ_ADOPTION_GAP", "DIALOG_STATE_VERSION", "Dialog", "DialogState"]

#: Version of the `to_dict()` layout; `from_dict()` refuses any other.
DIALOG_STATE_VERSION = 1
#: How far a process adopting a dialog moves the local CSeq: more in-dialog requests than one
#: holder sends between two snapshots (a call sends a handful per minute), far below 2**31.
CSEQ_ADOPTION_GAP = 1000
#: RFC 3261 §8.1.1.5: CSeq numbers are below 2**31.
MAX_CSEQ = 2**31 - 1


class DialogState(enum.Enum):
    """RFC 3261 §12: a dialog is early (after a 1xx with a tag) or confirmed (after a 2xx)."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


#: state -> {event: next state}; "1xx" keeps an early dialog early, "2xx" confirms it,
#: "end" terminates it (a non-2xx final, BYE, 481/408).
TRANSITIONS: dict[DialogState, dict[str, DialogState]] = {
    DialogState.EARLY: {
        "1xx": DialogState.EARLY, "2xx": DialogState.CONFIRMED, "end": DialogState.TERMINATED,
    },
    DialogState.CONFIRMED: {"2xx": DialogState.CONFIRMED, "end": DialogState.TERMINATED},
    DialogState.TERMINATED: {"end": DialogState.TERMINATED},
}  # fmt: skip


class DialogStateError(SipParseError):
    """A dialog event not allowed in the dialog's state, or unusable serialised state."""


@dataclass(kw_only=True)
class Dialog:
    """One early or confirmed dialog."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_address: Address
    remote_address: Address
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None
    local_contact: str | None = None
    state: DialogState = DialogState.EARLY

    @classmethod
    def from_uac(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """The caller's dialog from its INVITE and a 1xx-with-tag or 2xx response."""
        remote_tag = response.to_tag
        if not remote_tag:
            raise SipParseError("response creating a dialog has no To tag")
        local_tag = invite.from_tag or ""
        routes = list(reversed(response.headers.get_all("Record-Route")))
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_address=_without_tag(invite.from_address),
            remote_address=_without_tag(response.to_address),
            remote_target=_contact_uri(response) or invite.uri,
            route_set=routes,
            local_cseq=invite.cseq.number,
            local_contact=invite.headers.get("Contact"),
            state=DialogState.CONFIRMED if response.is_success else DialogState.EARLY,
        )

    @classmethod
    def from_uas(cls, invite: SipRequest, local_tag: str, contact: str | None = None) -> Dialog:
        """The callee's dialog from an inbound INVITE and the To tag it answers with."""
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_tag or "",
            local_address=_without_tag(invite.to_address),
            remote_address=_without_tag(invite.from_address),
            remote_target=_contact_uri(invite) or str(invite.from_address.uri),
            route_set=list(invite.headers.get_all("Record-Route")),
            local_cseq=0,
            remote_cseq=invite.cseq.number,
            local_contact=contact,
        )

    # -- state ------------------------------------------------------------------------------

    def _set_state(self, event: str) -> None:
        allowed = TRANSITIONS[self.state]
        if event not in allowed:
            raise DialogStateError(
                f"dialog {self.call_id}: event {event!r} not allowed in state {self.state.value}"
            )
        self.state = allowed[event]

    def confirm(self) -> None:
        """A 2xx to the INVITE was sent or received: the dialog is confirmed (§12.1)."""
        self._set_state("2xx")

    def terminate(self) -> None:
        """BYE, a non-2xx final to the INVITE, or a 481/408 in the dialog (§12.3)."""
        self._set_state("end")

    @property
    def confirmed(self) -> bool:
        """True once a 2xx was sent or received."""
        return self.state is DialogState.CONFIRMED

    # -- updates ----------------------------------------------------------------------------

    def update_from_response(self, response: SipResponse) -> None:
        """A 2xx to our INVITE fixes the route set and may move the remote target
        (§12.1.2: the route set is taken from the 2xx, it can differ from an early dialog's)."""
        if response.headers.get_all("Record-Route"):
            self.route_set = list(reversed(response.headers.get_all("Record-Route")))
        target = _contact_uri(response)
        if target:
            self.remote_target = target

    def next_cseq(self) -> int:
        """The CSeq number for the next request we send in this dialog."""
        self.local_cseq += 1
        return self.local_cseq

    def accepts(self, request: SipRequest) -> bool:
        """False for an out-of-order or retransmitted request (CSeq not above the last one,
        RFC 3261 §12.2.2); ACK and CANCEL reuse the INVITE's number and are always accepted."""
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq.number
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def refresh_target(self, message: SipRequest | SipResponse) -> None:
        """After a 2xx to a target refresh (re-INVITE, UPDATE): the peer's new Contact becomes
        the remote target (RFC 3261 §12.2.2, only once accepted as RFC 6141 clarifies)."""
        target = _contact_uri(message)
        if target:
            self.remote_target = target

    def request_fields(
        self, method: str, cseq: int | None = None
    ) -> tuple[str, list[tuple[str, str]]]:
        """(Request-URI, headers To/From/Call-ID/CSeq/Route) for an in-dialog request."""
        number = self.next_cseq() if cseq is None else cseq
        fields = [
            ("To", str(self.remote_address.with_tag(self.remote_tag))),
            ("From", str(self.local_address.with_tag(self.local_tag))),
            ("Call-ID", self.call_id),
            ("CSeq", f"{number} {method}"),
        ]
        fields += [("Route", route) for route in self.route_set]
        return self.remote_target, fields

    def matches(self, message: SipRequest | SipResponse) -> bool:
        """True when `message` belongs to this dialog (Call-ID and both tags)."""
        if message.call_id != self.call_id:
            return False
        if isinstance(message, SipRequest):
            return message.from_tag == self.remote_tag and message.to_tag == self.local_tag
        return message.from_tag == self.local_tag and message.to_tag == self.remote_tag

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The dialog as plain JSON types, versioned (see `from_dict`)."""
        return {
            "version": DIALOG_STATE_VERSION,
            "call_id": self.call_id,
            "local_tag": self.local_tag,
            "remote_tag": self.remote_tag,
            "local_address": str(self.local_address),
            "remote_address": str(self.remote_address),
            "remote_target": self.remote_target,
            "route_set": list(self.route_set),
            "local_cseq": self.local_cseq,
            "remote_cseq": self.remote_cseq,
            "local_contact": self.local_contact,
            "state": self.state.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dialog:
        """A dialog from `to_dict()` output; `DialogStateError` naming the field when wrong."""
        if data.get("version") != DIALOG_STATE_VERSION:
            raise DialogStateError(
                f"dialog.version is {data.get('version')!r}, expected {DIALOG_STATE_VERSION}"
            )
        text = {name: _field(data, name, str) for name in (
            "call_id", "local_tag", "remote_tag", "local_address", "remote_address",
            "remote_target", "state")}  # fmt: skip
        routes = _field(data, "route_set", list)
        if not all(isinstance(r, str) for r in routes):
            raise DialogStateError("dialog.route_set must be a list of strings")
        local_cseq = _field(data, "local_cseq", int)
        remote_cseq = _field(data, "remote_cseq", int, optional=True)
        contact = _field(data, "local_contact", str, optional=True)
        try:
            state = DialogState(text["state"])
        except ValueError as exc:
            raise DialogStateError(f"dialog.state {text['state']!r} is not a dialog state") from exc
        return cls(
            call_id=text["call_id"],
            local_tag=text["local_tag"],
            remote_tag=text["remote_tag"],
            local_address=Address.parse(text["local_address"]),
            remote_address=Address.parse(text["remote_address"]),
            remote_target=text["remote_target"],
            route_set=list(routes),
            local_cseq=local_cseq,
            remote_cseq=remote_cseq,
            local_contact=contact,
            state=state,
        )

    def adopt(self, gap: int = CSEQ_ADOPTION_GAP) -> None:
        """Continue this dialog in a new process: skip `gap` local CSeq numbers, so no request
        we send repeats one the previous holder sent after the state was written down."""
        if gap < 1:
            raise ValueError(f"adopt(gap={gap}): the gap must be at least 1")
        if self.local_cseq + gap > MAX_CSEQ:
            raise DialogStateError(
                f"dialog {self.call_id}: local CSeq {self.local_cseq} + {gap} passes 2**31 - 1"
            )
        self.local_cseq += gap


def _field(data: dict[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DialogStateError(
            f"dialog.{name} must be {kind.__name__}{' or null' if optional else ''}, "
            f"got {type(value).__name__}"
        )
    return value


def _without_tag(address: Address) -> Address:
    params = {k: v for k, v in address.params.items() if k.lower() != "tag"}
    return Address(address.uri, address.display_name, params)


def _contact_uri(message: SipRequest | SipResponse) -> str | None:
    contacts = message.headers.get_all("Contact")
    if not contacts or contacts[0].strip() == "*":
        return None
    try:
        return str(Address.parse(contacts[0]).uri)
    except SipParseError:
        return None
