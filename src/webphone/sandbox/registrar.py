"""The registrar, pure: bindings with RingCentral's rules, time passed in.

Rules (RFC 3261 §10.3 + RFC 5626 instance ids, with the limits RingCentral enforces):

* At most `max_contacts` (5) live bindings per address of record. A REGISTER that would add
  one more is refused whole with `603 Too Many Contacts` and changes nothing.
* A Contact with `+sip.instance` matches the binding with the same instance, whatever its URI,
  Call-ID or connection: it *replaces* it (a re-started device keeps its slot). A Contact
  without an instance matches by URI.
* The granted expiry is the asked one (Contact `expires`, else the `Expires` header, else the
  maximum) clamped to [`min_expires`, `max_expires`]; RingCentral grants at most 60 s. `0`
  removes the binding at once; `Contact: *` with `Expires: 0` removes them all.
* A binding not refreshed in time is gone (`lookup` never returns it; `expire` drops it).
* Each binding remembers the connection it came over; `remove_connection` drops every binding
  of a closed WebSocket at once (Kamailio's `handle_lost_tcp`): a dead socket gets no calls.
* A REGISTER with no Contact changes nothing and returns the current bindings.
* Within one Call-ID the CSeq must grow; a stale one is refused (`500`, RFC 3261 §10.3 step 7).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace

from webphone.errors import SipParseError
from webphone.sip import Address, SipUri, unquote

__all__ = [
    "Binding",
    "ContactSpec",
    "RegisterRequest",
    "RegisterResult",
    "Registrar",
    "RegistrarError",
    "normalize_instance",
    "parse_register",
]


class RegistrarError(Exception):
    """A REGISTER the registrar refuses before looking at its bindings (`status`, `reason`)."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{status} {reason}" + (f": {detail}" if detail else ""))
        self.status = status
        self.reason = reason
        self.detail = detail


def normalize_instance(value: str | None) -> str | None:
    """`"<urn:uuid:X>"` -> `urn:uuid:X` (quotes and angle brackets off), None stays None."""
    if value is None:
        return None
    text = unquote(value) if value.startswith('"') else value
    return text.strip().strip("<>") or None


@dataclass(frozen=True)
class ContactSpec:
    """One Contact of a REGISTER: URI, instance id, reg-id, asked expiry, other params."""

    uri: str
    instance: str | None = None
    reg_id: str | None = None
    expires: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class RegisterRequest:
    """What the registrar needs from a REGISTER (already authenticated for `aor`)."""

    aor: str
    contacts: tuple[ContactSpec, ...] = ()
    wildcard: bool = False
    expires_header: int | None = None
    call_id: str = ""
    cseq: int = 0
    user_agent: str | None = None


def _number(value: str | None) -> int | None:
    """`value` as a whole number; None unless it is 1 to 10 ASCII digits (`str.isdigit()` also
    accepts "²", which `int()` refuses)."""
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def _int_or_error(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    number = _number(value)
    if number is None:
        raise RegistrarError(400, "Bad Request", f"{what} {value!r} is not a number of seconds")
    return number


def parse_register(
    aor: str,
    contact_values: Iterable[str],
    *,
    expires_header: str | None = None,
    call_id: str = "",
    cseq: int = 0,
    user_agent: str | None = None,
) -> RegisterRequest:
    """Build a `RegisterRequest` from the Contact values of a REGISTER (`get_all("Contact")`).

    Raises `RegistrarError(400)` for an unparsable Contact or expiry, or a misused `*`.
    """
    values = [v for v in contact_values if v.strip()]
    expires = _int_or_error(expires_header, "Expires")
    if any(v.strip() == "*" for v in values):
        if len(values) != 1 or expires != 0:
            raise RegistrarError(400, "Bad Request", "'Contact: *' needs 'Expires: 0' alone")
        return RegisterRequest(aor, (), True, expires, call_id, cseq, user_agent)
    specs = tuple(_contact_spec(v) for v in values)
    return RegisterRequest(aor, specs, False, expires, call_id, cseq, user_agent)


def _contact_spec(value: str) -> ContactSpec:
    try:
        address = Address.parse(value)
    except SipParseError as exc:
        raise RegistrarError(400, "Bad Request", f"bad Contact {value!r}: {exc}") from None
    params = {k.lower(): v for k, v in address.params.items()}
    others = tuple(
        (k, v) for k, v in address.params.items() if k.lower() not in ("expires", "q")
    )
    return ContactSpec(
        uri=str(address.uri),
        instance=normalize_instance(params.get("+sip.instance")),
        reg_id=params.get("reg-id"),
        expires=_int_or_error(params.get("expires"), "Contact expires"),
        params=others,
    )


@dataclass
class Binding:
    """One registered contact of an address of record."""

    aor: str
    contact: str
    instance: str | None
    reg_id: str | None
    call_id: str
    cseq: int
    expires_at: float
    connection: Hashable | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    user_agent: str | None = None
    registered_at: float = 0.0

    def remaining(self, now: float) -> int:
        """Whole seconds left (rounded up, ignoring float noise), 0 once expired."""
        return max(0, math.ceil(self.expires_at - now - 1e-6))

    def contact_header(self, now: float) -> str:
        """The Contact value a 200 OK lists: `<uri>;expires=N;+sip.instance=...;reg-id=...`."""
        params: dict[str, str | None] = {"expires": str(self.remaining(now))}
        params.update(self.params)
        return str(Address(SipUri.parse(self.contact), None, params))

    def as_dict(self, now: float) -> dict[str, object]:
        """`{"contact", "instance", "expires", ...}`: the shape the test adapters share."""
        return {
            "contact": self.contact,
            "instance": self.instance,
            "expires": self.remaining(now),
            "reg_id": _number(self.reg_id),
            "call_id": self.call_id,
            "cseq": self.cseq,
            "user_agent": self.user_agent,
            "connection": self.connection,
        }


@dataclass(frozen=True)
class RegisterResult:
    """Outcome of a REGISTER: the status to answer and the bindings to list in a 200."""

    status: int
    reason: str
    bindings: tuple[Binding, ...] = ()
    added: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Registrar:
    """Bindings of every address of record. All methods take `now` (seconds, monotonic)."""

    max_contacts: int = 5
    max_expires: int = 60
    min_expires: int = 1
    _bindings: dict[str, list[Binding]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_contacts < 1 or self.max_expires < 1:
            raise ValueError("max_contacts and max_expires must be >= 1")
        if not 0 <= self.min_expires <= self.max_expires:
            raise ValueError("min_expires must be between 0 and max_expires")

    def grant(self, asked: int) -> int:
        """The expiry granted for an asked one (0 stays 0: removal)."""
        if asked == 0:
            return 0
        return max(self.min_expires, min(asked, self.max_expires), 1)

    def register(
        self, request: RegisterRequest, now: float, connection: Hashable | None = None
    ) -> RegisterResult:
        """Apply a REGISTER atomically: all of it, or nothing (603, 500)."""
        current = self.lookup(request.aor, now)
        if request.wildcard:
            self._bindings.pop(request.aor, None)
            return RegisterResult(200, "OK", (), (), tuple(current))
        if not request.contacts:
            return RegisterResult(200, "OK", tuple(current))
        updated = [replace(b) for b in current]
        added: list[Binding] = []
        removed: list[Binding] = []
        for spec in request.contacts:
            error = self._apply(updated, spec, request, now, connection, added, removed)
            if error is not None:
                return error
        if len(updated) > self.max_contacts and added:
            return RegisterResult(603, "Too Many Contacts", tuple(current))
        self._bindings[request.aor] = updated
        if not updated:
            del self._bindings[request.aor]
        return RegisterResult(200, "OK", tuple(updated), tuple(added), tuple(removed))

    def _apply(
        self,
        bindings: list[Binding],
        spec: ContactSpec,
        request: RegisterRequest,
        now: float,
        connection: Hashable | None,
        added: list[Binding],
        removed: list[Binding],
    ) -> RegisterResult | None:
        asked = spec.expires if spec.expires is not None else request.expires_header
        granted = self.grant(self.max_expires if asked is None else asked)
        existing = _find(bindings, spec)
        if existing is not None:
            if existing.call_id == request.call_id and request.cseq <= existing.cseq:
                return RegisterResult(500, "Server Internal Error - Out of Order CSeq")
            if granted == 0:
                bindings.remove(existing)
                removed.append(existing)
                return None
            existing.contact, existing.connection = spec.uri, connection
            existing.call_id, existing.cseq = request.call_id, request.cseq
            existing.expires_at, existing.params = now + granted, spec.params
            existing.reg_id, existing.user_agent = spec.reg_id, request.user_agent
            return None
        if granted == 0:
            return None
        binding = Binding(
            aor=request.aor,
            contact=spec.uri,
            instance=spec.instance,
            reg_id=spec.reg_id,
            call_id=request.call_id,
            cseq=request.cseq,
            expires_at=now + granted,
            connection=connection,
            params=spec.params,
            user_agent=request.user_agent,
            registered_at=now,
        )
        bindings.append(binding)
        added.append(binding)
        return None

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of `aor`, oldest first (expired ones are dropped on the way)."""
        live = [b for b in self._bindings.get(aor, []) if b.expires_at > now]
        if live:
            self._bindings[aor] = live
        else:
            self._bindings.pop(aor, None)
        return list(live)

    def aors(self) -> list[str]:
        """Every address of record that has (or had, until the next expiry pass) bindings."""
        return list(self._bindings)

    def expire(self, now: float) -> list[Binding]:
        """Drop every binding whose time is up; return them."""
        gone: list[Binding] = []
        for aor in list(self._bindings):
            before = self._bindings[aor]
            gone.extend(b for b in before if b.expires_at <= now)
            self.lookup(aor, now)
        return gone

    def next_expiry(self) -> float | None:
        """When the next binding expires (for a timer), or None when there are none."""
        times = [b.expires_at for bs in self._bindings.values() for b in bs]
        return min(times) if times else None

    def remove_connection(self, connection: Hashable) -> list[Binding]:
        """Drop every binding that came over `connection` (it closed); return them."""
        gone: list[Binding] = []
        for aor in list(self._bindings):
            keep = [b for b in self._bindings[aor] if b.connection != connection]
            gone.extend(b for b in self._bindings[aor] if b.connection == connection)
            if keep:
                self._bindings[aor] = keep
            else:
                del self._bindings[aor]
        return gone

    def clear(self, aor: str) -> list[Binding]:
        """Drop every binding of `aor`; return them."""
        return self._bindings.pop(aor, [])


def _find(bindings: list[Binding], spec: ContactSpec) -> Binding | None:
    for binding in bindings:
        if spec.instance is not None:
            if binding.instance == spec.instance:
                return binding
        elif binding.instance is None and binding.contact == spec.uri:
            return binding
    return None
