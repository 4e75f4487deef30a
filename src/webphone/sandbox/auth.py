"""Server-side digest authentication (RFC 7616 / RFC 2617 with MD5), pure.

The client side lives in `webphone.sip.digest`; this is its mirror image: build challenges
(`WWW-Authenticate` for REGISTER's 401, `Proxy-Authenticate` for the 407 of other requests) and
verify `Authorization` / `Proxy-Authorization` answers.

Nonces are stateless: `<issued ms>.<random>.<HMAC>` under a per-sandbox secret, so any nonce
this sandbox issued can be checked without a table, and one it did not issue (another run,
forged) is refused. A nonce older than `nonce_ttl` is *stale*: a correct answer with it gets a
fresh challenge with `stale=true` (RFC 7616 §3.3), which clients answer without asking the
user again. The nonce count is not tracked: RFC 7616 §3.4 lets a client answer one challenge
again with the next `nc`, and `SipClient` does for its REGISTER refreshes. `single_use=True`
makes the authenticator behave like registrars that allow each nonce once (OpenSIPS by default,
Kamailio's one-time nonces): a correct answer with a nonce already accepted gets a `Verdict`
with `reused`, and the caller refuses it (how is its choice: a new challenge, 403, 400). The
accepted nonces are kept until they expire (`nonce_ttl`), when a reuse would be stale anyway.

Two answer forms are accepted, because both exist in the wild:

* `qop=auth` (RFC 7616): `response = MD5(HA1:nonce:nc:cnonce:auth:HA2)`; what Kamailio and our
  `SipClient` speak, and what the challenge offers.
* no qop (RFC 2069): `response = MD5(HA1:nonce:HA2)`; what RingCentral's browser SDK sends even
  when the challenge offers qop (it ignores qop, see upstream-webphone-sdk.md §2.2).

The digest URI is taken from the answer as given and not compared with the Request-URI:
RingCentral's form always uses `sip:{domain}` whatever the Request-URI.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from webphone.errors import SipParseError
from webphone.sip.digest import digest_response, parse_digest_params

__all__ = ["Credentials", "DigestAuthenticator", "Verdict", "parse_credentials"]

_MAX_VALUE = 4096


@dataclass(frozen=True)
class Credentials:
    """A parsed `Authorization` / `Proxy-Authorization` Digest answer."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_credentials(value: str) -> Credentials:
    """Parse a Digest answer; raise `SipParseError` saying what is wrong."""
    if len(value) > _MAX_VALUE:
        raise SipParseError(f"Digest credentials longer than {_MAX_VALUE} characters")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(f"credentials scheme is {scheme!r}, only Digest is supported")
    params = parse_digest_params(rest, "credentials")
    missing = [k for k in ("username", "nonce", "uri", "response") if k not in params]
    if missing:
        raise SipParseError(f"Digest credentials lack {', '.join(missing)}")
    return Credentials(
        username=params["username"],
        realm=params.get("realm", ""),
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=params.get("algorithm", "MD5"),
        qop=params.get("qop"),
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
    )


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking credentials.

    `ok`: accepted. `username`: the digest username they claimed (None when unparsable).
    `stale`: the answer was right but the nonce expired; challenge again with `stale=true`.
    `reused`: the answer was right but its nonce was accepted before (`single_use` only).
    `reason`: why not, for logs (never contains the password).
    """

    ok: bool
    username: str | None = None
    stale: bool = False
    reused: bool = False
    reason: str = ""


class DigestAuthenticator:
    """Issues nonces and checks digest answers for one realm.

    `nonce_ttl` is how long (seconds) a nonce stays valid; `single_use`: each nonce is accepted
    once (see the module docstring). Time is passed in (`now`, seconds on any monotonic clock);
    the authenticator never reads a clock itself.
    """

    def __init__(
        self, realm: str, *, secret: bytes | None = None, nonce_ttl: float = 300.0,
        single_use: bool = False,
    ) -> None:
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.single_use = single_use
        self._secret = secret or secrets.token_bytes(32)
        self._accepted: dict[str, int] = {}  # nonce -> issued (ms), in the order accepted

    def new_nonce(self, now: float) -> str:
        """A fresh nonce stamped with `now`."""
        stamp = f"{int(now * 1000):x}.{secrets.token_hex(6)}"
        return f"{stamp}.{self._tag(stamp)}"

    def challenge(self, now: float, *, stale: bool = False) -> str:
        """A `WWW-Authenticate` / `Proxy-Authenticate` value offering qop=auth."""
        value = (
            f'Digest realm="{self.realm}", nonce="{self.new_nonce(now)}", qop="auth", '
            "algorithm=MD5"
        )
        return value + (", stale=true" if stale else "")

    def verify(
        self,
        value: str | None,
        *,
        method: str,
        password_for: Callable[[str], str | None],
        now: float,
    ) -> Verdict:
        """Check an answer to one of our challenges for a request with `method`.

        `password_for(username)` returns the password of a digest username, or None for an
        unknown one.
        """
        if value is None:
            return Verdict(False, reason="no credentials")
        try:
            creds = parse_credentials(value)
        except SipParseError as exc:
            return Verdict(False, reason=str(exc))
        if creds.realm and creds.realm != self.realm:
            return Verdict(False, creds.username, reason=f"realm {creds.realm!r} is not ours")
        issued = self._issued(creds.nonce)
        if issued is None:
            return Verdict(False, creds.username, reason="nonce not issued by this server")
        password = password_for(creds.username)
        if password is None:
            return Verdict(False, creds.username, reason="unknown user")
        expected = self._expected(creds, method, password)
        if expected is None:
            return Verdict(False, creds.username, reason="unsupported algorithm or qop")
        if not hmac.compare_digest(expected, creds.response):
            return Verdict(False, creds.username, reason="wrong password")
        if now * 1000 - issued > self.nonce_ttl * 1000:
            return Verdict(False, creds.username, stale=True, reason="nonce expired")
        if self.single_use and not self._first_use(creds.nonce, issued, now):
            return Verdict(False, creds.username, reused=True, reason="nonce used before")
        return Verdict(True, creds.username)

    def _first_use(self, nonce: str, issued: int, now: float) -> bool:
        """Record `nonce` as accepted; False if it was already. Nonces accepted before
        `nonce_ttl` ago are dropped first (accepted within their lifetime, so the front of the
        table holds the oldest, give or take one lifetime)."""
        horizon = now * 1000 - self.nonce_ttl * 1000
        while self._accepted:
            oldest, stamp = next(iter(self._accepted.items()))
            if stamp >= horizon:
                break
            del self._accepted[oldest]
        if nonce in self._accepted:
            return False
        self._accepted[nonce] = issued
        return True

    def _tag(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:20]

    def _issued(self, nonce: str) -> int | None:
        """Issue time (ms) of a nonce we made, or None for any other string."""
        stamp, _, tag = nonce.rpartition(".")
        if not stamp or not hmac.compare_digest(self._tag(stamp), tag):
            return None
        try:
            return int(stamp.partition(".")[0], 16)
        except ValueError:
            return None

    def _expected(self, creds: Credentials, method: str, password: str) -> str | None:
        algorithm = creds.algorithm.upper()
        if algorithm not in ("MD5", "MD5-SESS"):
            return None
        if creds.qop is None and algorithm != "MD5":
            return None
        if creds.qop is not None and (
            creds.qop.lower() != "auth" or not creds.nc or creds.cnonce is None
        ):
            return None
        return digest_response(
            username=creds.username, realm=creds.realm or self.realm, password=password,
            method=method, uri=creds.uri, nonce=creds.nonce, algorithm=algorithm,
            qop=None if creds.qop is None else "auth", nc=creds.nc, cnonce=creds.cnonce,
        )
