"""The sandbox's users: loaded from a JSON/TOML file or generated, and their sipInfo JSON (pure).

A user is an extension (`101`) with a password. The extension is also the SIP username, so
`sip:101@domain` reaches every device registered as 101. Like RingCentral, a user has an
authorizationId (the digest username; defaults to the extension), a display name and an E.164
phone number, which the sandbox shows callees in the `P-rc` header.

File formats (JSON or TOML, chosen by the extension; `.toml` is TOML, anything else JSON)::

    {"users": [{"extension": "101", "password": "s3cret", "name": "Alice"}, ...]}
    [{"extension": "101", "password": "s3cret"}, ...]          # JSON only
    {"101": "s3cret", "102": "other"}                          # extension -> password

    [[users]]                                                  # TOML
    extension = "101"
    password = "s3cret"

Optional keys: `authorization_id` (or `authorizationId`), `name`, `phone_number` (or
`phoneNumber`).
"""

from __future__ import annotations

import json
import re
import secrets
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["User", "UserTable", "generate_users", "load_users", "sip_info"]

_EXTENSION = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True)
class User:
    """One extension. The password never shows in `repr`."""

    extension: str
    password: str = field(repr=False)
    authorization_id: str = ""
    name: str = ""
    phone_number: str = ""

    def __post_init__(self) -> None:
        if not _EXTENSION.fullmatch(self.extension):
            raise ValueError(
                f"extension {self.extension!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if not self.password:
            raise ValueError(f"user {self.extension} has an empty password")
        if not self.authorization_id:
            object.__setattr__(self, "authorization_id", self.extension)
        if not self.name:
            object.__setattr__(self, "name", f"User {self.extension}")
        if not self.phone_number:
            object.__setattr__(self, "phone_number", default_phone_number(self.extension))

    @property
    def username(self) -> str:
        """The SIP username (the user part of the address of record): the extension."""
        return self.extension


def default_phone_number(extension: str) -> str:
    """A fictional North-American number for an extension: +1 650 555 0101 for 101.

    555-01xx numbers are reserved for fiction, so nothing real is ever shown or dialled.
    """
    digits = "".join(c for c in extension if c.isdigit())[-4:] or "0"
    return f"+1650555{int(digits):04d}"


def generate_users(
    count: int = 5, first: int = 101, password: str | None = None
) -> list[User]:
    """`count` users with extensions `first`, `first+1`, ... and random (or given) passwords."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return [
        User(str(first + n), password or secrets.token_urlsafe(12)) for n in range(count)
    ]


def load_users(path: str | Path) -> list[User]:
    """Read users from a JSON or TOML file (see the module docstring for the formats)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    try:
        return users_from_data(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def users_from_data(data: Any) -> list[User]:
    """Users from already-decoded JSON/TOML data (the same formats as `load_users`)."""
    if isinstance(data, Mapping) and "users" in data:
        data = data["users"]
    if isinstance(data, Mapping):
        return [User(str(ext), str(pw)) for ext, pw in data.items()]
    if not isinstance(data, list):
        raise ValueError("expected a list of users, {'users': [...]} or {extension: password}")
    return [_user_from_entry(entry) for entry in data]


def _user_from_entry(entry: Any) -> User:
    if not isinstance(entry, Mapping):
        raise ValueError(f"a user entry must be an object, got {type(entry).__name__}")
    known = {
        "extension": "extension",
        "username": "extension",
        "password": "password",
        "authorization_id": "authorization_id",
        "authorizationId": "authorization_id",
        "name": "name",
        "phone_number": "phone_number",
        "phoneNumber": "phone_number",
    }
    values: dict[str, str] = {}
    for key, value in entry.items():
        if key not in known:
            raise ValueError(f"unknown key {key!r} in user entry (known: {sorted(known)})")
        values[known[key]] = str(value)
    if "extension" not in values or "password" not in values:
        raise ValueError("every user entry needs 'extension' and 'password'")
    return User(**values)


class UserTable:
    """Users by extension, with lookups by authorizationId and by dialled number."""

    def __init__(self, users: Iterable[User] = ()) -> None:
        self._users: dict[str, User] = {}
        for user in users:
            self.add(user)

    def add(self, user: User) -> None:
        """Add a user; a duplicate extension or authorizationId is an error."""
        if user.extension in self._users:
            raise ValueError(f"duplicate extension {user.extension}")
        if self.by_authorization_id(user.authorization_id) is not None:
            raise ValueError(f"duplicate authorizationId {user.authorization_id}")
        self._users[user.extension] = user

    def get(self, extension: str) -> User | None:
        """The user with this extension, or None."""
        return self._users.get(extension)

    def __getitem__(self, extension: str) -> User:
        return self._users[extension]

    def __iter__(self) -> Iterator[User]:
        return iter(self._users.values())

    def __len__(self) -> int:
        return len(self._users)

    def by_authorization_id(self, authorization_id: str) -> User | None:
        """The user whose digest username is `authorization_id`, or None."""
        for user in self._users.values():
            if user.authorization_id == authorization_id:
                return user
        return None

    def by_number(self, number: str) -> User | None:
        """The user reached by dialling `number`: its extension or its phone number (with or
        without the leading + and country code 1)."""
        user = self._users.get(number)
        if user is not None:
            return user
        wanted = number.lstrip("+")
        for candidate in self._users.values():
            phone = candidate.phone_number.lstrip("+")
            if wanted and wanted in (phone, phone.removeprefix("1")):
                return candidate
        return None


def sip_info(
    user: User, *, domain: str, outbound_proxy: str, transport: str = "WS"
) -> dict[str, Any]:
    """The user's camelCase sipInfo, ready for `SipInfo.from_dict` / RingCentral-style apps."""
    return {
        "username": user.username,
        "password": user.password,
        "authorizationId": user.authorization_id,
        "domain": domain,
        "outboundProxy": outbound_proxy,
        "transport": transport,
        "stunServers": [],
    }
