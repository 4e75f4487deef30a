"""Digest authentication for SIP (RFC 2617 / RFC 7616; MD5, SHA-256, SHA-512-256), pure.

Two forms are produced:

* With `qop=auth` in the challenge (Kamailio, Asterisk, most registrars): the RFC 7616 form with
  `cnonce` and `nc`, the digest URI being the Request-URI, `realm`/`opaque`/`algorithm` echoed from
  the challenge.
* Without `qop` (RingCentral): exactly what RingCentral's servers expect and the upstream SDK sends:
  RFC 2069 response, `algorithm="MD5"` quoted and first, the digest URI `sip:{domain}` whatever the
  Request-URI (see upstream-webphone-sdk.md §2.2). The realm is still taken from the challenge when
  it has one; RingCentral's equals the domain.

RFC 8760 brought RFC 7616's SHA-256 and SHA-512-256 (and their `-sess` forms) to SIP: a
registrar may offer one of them alone (Kamailio's `algorithm` parameter) or several challenges in
order of preference; the client answers the first it supports (RFC 7616 §3.7, `pick_challenge`).

`NonceReuse` keeps the last `qop=auth` challenge of a registrar so that the next REGISTER carries
its credentials at once (RFC 3261 §22.3 lets a UA send credentials preemptively; RFC 7616 §3.4:
`nc` counts the requests sent with one nonce, which is what makes reusing it legitimate).
"""


from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import SipParseError
from .message import SipResponse

_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    """A parsed `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge."""

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    stale: bool = False
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def parse_challenge(value: str) -> Challenge:
    """Parse a Digest challenge header value; raise `SipParseError` naming what is wrong."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(
            f"authentication challenge scheme is {scheme!r}, only Digest is supported"
        )
    params = parse_digest_params(rest, "challenge")
    if "nonce" not in params:
        raise SipParseError("Digest challenge has no nonce")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper().removesuffix("-SESS") not in _HASHES:
        raise SipParseError(f"Digest algorithm {algorithm!r} is not supported "
                            "(MD5, SHA-256, SHA-512-256, each also -sess)")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    known = {"realm", "nonce", "opaque", "algorithm", "qop", "stale"}
    return Challenge(
        realm=params.get("realm", ""),
        nonce=params["nonce"],
        opaque=params.get("opaque"),
        algorithm=algorithm,
        qop=qop,
        stale=params.get("stale", "").lower() == "true",
        extra={k: v for k, v in params.items() if k not in known},
    )


def pick_challenge(values: list[str]) -> Challenge:
    """The first challenge of `values` (the header fields of one 401/407, in the server's order
    of preference) that parses with an algorithm we support (RFC 7616 §3.7, RFC 8760 §2.4);
    `SipParseError` of the first one when none does."""
    if not values:
        raise SipParseError("no Digest challenge to answer")
    errors: list[SipParseError] = []
    for value in values:
        try:
            return parse_challenge(value)
        except SipParseError as exc:
            errors.append(exc)
    raise errors[0]


def rejection(response: SipResponse, what: str) -> str:
    """Why `what` (e.g. "REGISTER for 101@sip.test") got `response` (401, 403 or 407 after our
    credentials, or a challenge we could not answer), and what to do about it."""
    header = {401: "WWW-Authenticate", 407: "Proxy-Authenticate"}.get(response.status_code)
    status = f"{response.status_code} {response.reason}"
    if header is not None:
        try:
            pick_challenge(response.headers.get_all(header))
        except SipParseError as exc:
            return (f"{what} was challenged with {status} and the challenge cannot be answered: "
                    f"{exc}; the server needs a digest form webphone does not speak")
    return f"{what} was rejected with {status}: check authorizationId and password"


def parse_digest_params(text: str, what: str) -> dict[str, str]:
    """The `name=value, ...` list after `Digest` (names lowercased, quoted values unquoted);
    `SipParseError` naming `what` (challenge, credentials) and where it broke."""
    params: dict[str, str] = {}
    pos, rest = 0, text.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if not match or match.end() == pos:
            raise SipParseError(f"malformed Digest {what} near {rest[pos:pos + 30]!r}")
        params[match.group(1).lower()] = _unquote(match.group(2))
        pos = match.end()
    return params


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


#: RFC 7616 §3.2 algorithm names (upper case, without -sess) -> hashlib names; SHA-512/256
#: comes from OpenSSL, so a Python built without it answers the others only
_HASHES = {name: lib for name, lib in
           {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}.items()
           if lib in hashlib.algorithms_available}


def _hasher(algorithm: str) -> Callable[[str], str]:
    name = _HASHES.get(algorithm.upper().removesuffix("-SESS"))
    if name is None:
        raise SipParseError(f"Digest algorithm {algorithm!r} is not supported")

    def digest(text: str) -> str:
        return hashlib.new(name, text.encode("utf-8"), usedforsecurity=False).hexdigest()

    return digest


def digest_response(
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The `response` value of RFC 2617 / RFC 7616 (any algorithm of `_HASHES`, and -sess),
    computed in one place for the client that answers a challenge and the sandbox that checks
    the answer.

    Without `qop` it is RFC 2069's H(HA1:nonce:HA2); with `qop="auth"` it covers `nc` and
    `cnonce`, and a -sess algorithm folds the nonce and cnonce into HA1 (RFC 7616 §3.4.2).
    `SipParseError` for an algorithm not supported.
    """
    h = _hasher(algorithm)
    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    domain: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The `Authorization` / `Proxy-Authorization` value answering `challenge`.

    `uri` is the Request-URI (used with qop); `domain` is the SIP domain (RingCentral's no-qop
    form uses `sip:{domain}` as digest URI and falls back to it as realm).
    """
    realm = challenge.realm or domain
    if "auth" not in challenge.qop:
        if challenge.qop:
            raise SipParseError(f"Digest qop {challenge.qop!r} offers no 'auth'; cannot answer")
        if challenge.algorithm.upper() != "MD5":  # RFC 7616 §3.3: qop is required past MD5
            raise SipParseError(f"Digest algorithm {challenge.algorithm!r} without qop=auth; "
                                "cannot answer")
        return rc_authorization(method, realm, username, password, challenge.nonce, domain)
    cnonce = cnonce or secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = digest_response(
        username=username, realm=realm, password=password, method=method, uri=uri,
        nonce=challenge.nonce, algorithm=challenge.algorithm, qop="auth", nc=nc_text,
        cnonce=cnonce,
    )
    parts = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f"algorithm={challenge.algorithm}",
        f'response="{response}"',
        f'cnonce="{cnonce}"',
        "qop=auth",
        f"nc={nc_text}",
    ]
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)


#: Answers to a request that carried reused credentials which say "not accepted" (besides a 401
#: without stale, which carries its own fresh challenge): 403, as a registrar that allows each
#: nonce once replies (OpenSIPS/Kamailio scripts that map every failed check to 403), and 400,
#: what some give credentials they judge malformed (an `nc` they do not expect).
REFUSING_REUSE = frozenset({400, 403})


def refuses_reuse(status: int, *, stale: bool) -> bool:
    """True when `status` answers a REGISTER whose credentials reused a cached nonce with "your
    credentials were not accepted".

    401 without `stale=true` (RFC 7616 §3.3: stale means the answer was right and only the nonce
    expired, so a 401 without it judged the credentials themselves); 403 and 400, which carry no
    challenge. A 407 does not count: it is a proxy asking for its own credentials
    (Proxy-Authorization, RFC 3261 §22.3), not a judgement on the registrar's nonce.
    """
    if status == 401:
        return not stale
    return status in REFUSING_REUSE


class NonceReuse:
    """Answers a cached `qop=auth` challenge again, each time with the next nonce count.

    `remember(challenge)` after answering a 401 (that answer was nc 1); `next(...)` gives the
    credentials of the next request, or None when there is nothing to reuse. Challenges without
    qop (RFC 2069, RingCentral's form) are never reused: they carry no nonce count, so a server
    cannot tell a reuse from a replay and commonly refuses it. A server that no longer accepts
    the nonce answers the preemptive request with a fresh challenge (`stale=true` once it has
    expired, RFC 7616 §3.3), which the caller answers and remembers as usual.

    A registrar may also allow each nonce once: it answers a reuse with a 401 without stale, a
    403 or a 400 (`refuses_reuse`). `refused()` then turns reuse off for that server (`connected`
    names it, e.g. the WebSocket URL) for the life of this object: the refusal is the server's
    policy, which a reconnection does not change, and each refused attempt may count as a failed
    login there (an intrusion filter bans an address after a few).
    """

    def __init__(self) -> None:
        self._challenge: Challenge | None = None
        self._count = 0
        self._server = ""
        self._refused_by: set[str] = set()

    @property
    def enabled(self) -> bool:
        """False once the current server refused a reused nonce."""
        return self._server not in self._refused_by

    def connected(self, server: str) -> None:
        """A new connection, to `server`: forget the challenge (another server of a pool may
        answer now); reuse stays off if `server` refused it before."""
        self._server = server
        self.forget()

    def remember(self, challenge: Challenge) -> None:
        """The challenge just answered (with nc 1); forgets it when it cannot be reused."""
        usable = "auth" in challenge.qop and self.enabled
        self._challenge = challenge if usable else None
        self._count = 1

    def forget(self) -> None:
        """Drop the cached challenge: the next request waits for a fresh one."""
        self._challenge = None

    def refused(self) -> None:
        """The server refused credentials from `next()` (`refuses_reuse`): no reuse with it
        from now on."""
        self._refused_by.add(self._server)
        self.forget()

    def next(self, *, method: str, uri: str, username: str, password: str,
             domain: str) -> str | None:
        """The `Authorization` value for the next request, or None (no reusable challenge)."""
        if self._challenge is None:
            return None
        self._count += 1
        return authorization(self._challenge, method=method, uri=uri, username=username,
                             password=password, domain=domain, nc=self._count)


def rc_authorization(
    method: str, realm: str, username: str, password: str, nonce: str, domain: str
) -> str:
    """RingCentral's exact no-qop form (RFC 2069 response, digest URI `sip:{domain}`)."""
    uri = f"sip:{domain}"
    response = digest_response(
        username=username, realm=realm, password=password, method=method, uri=uri, nonce=nonce
    )
    return (
        f'Digest algorithm="MD5", username="{username}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}"'
    )
