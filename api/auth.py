"""Authentication: JWTs from the platform, and short-lived stream tickets minted here.

Credentials, in order: `Authorization: Bearer <JWT>`, the HttpOnly cookie `sinal_token`, and, on
GET stream endpoints only, `?ticket=` (because `EventSource` cannot send headers). Tickets are
signed with their own key and audience, so a ticket is never accepted as a JWT, nor a JWT as a
ticket. No token or ticket is ever logged.

Revocation (docs/admin.md): an administrator can revoke every token of a user issued before a
moment, whole seconds since the epoch (`iat` is whole seconds: a token issued in the same
second as the revocation is taken as issued after it, so that one made just after it works).
A ticket carries the `iat` of its token and is refused with it. `revoked` is kept current by
the control plane (api/control.py) from the database and the control bus.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from api import requests
from api.settings import Settings
from streams.access import Principal
from streams.channels import is_valid_identifier
from streams.errors import Unauthorized

COOKIE = "sinal_token"
TICKET_AUDIENCE = "sinal:stream"
TICKET_ALGORITHM = "HS256"
# The ticket claims that carry the expiry and issue time of the token it was minted from.
TOKEN_EXPIRY = "token_exp"
TOKEN_ISSUED = "token_iat"
# The last second of year 9999: later `exp`, `nbf` or `iat` claims are refused.
MAX_NUMERIC_DATE = 253_402_300_799
# Tokens verified recently, kept so that a client's next requests skip the signature check.
# Each is kept as its SHA-256 digest (65 bytes, not the token's 200 or more) with the principal,
# whose `expires_at` is the entry's expiry: an entry is held for every idle stream of a
# server under this size, so its bytes count per connection (docs/benchmarks.md).
VERIFIED_CACHE_SIZE = 10_000


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.ticket_ttl_s = settings.ticket_ttl_s
        self.max_lifetime_s = settings.max_token_lifetime_s
        if settings.jwt_public_key_file is not None:
            self._verify_key: str = settings.jwt_public_key_file.read_text()
        elif settings.jwt_secret is not None:
            self._verify_key = settings.jwt_secret
        else:
            raise ValueError("no JWT secret or public key configured")
        ticket_secret = settings.ticket_secret or settings.jwt_secret or ""
        # A key of its own for tickets: derived, so one configured secret is enough.
        self._ticket_key = hashlib.sha256(b"sinal-ticket\x00" + ticket_secret.encode()).hexdigest()
        self._verified: dict[bytes, Principal] = {}
        # User -> tokens issued before this second are refused; and how many were since the
        # control plane last wrote them to the audit log.
        self.revoked: dict[str, float] = {}
        self.refused: Counter[str] = Counter()
        # In development a bad signature is most often a token made by `sinal token` in another
        # directory, with another development secret: the 401 says which file this server uses.
        self._dev_secret_file = (
            settings.dev_secret_file.resolve() if settings.dev_secret_in_use() else None
        )

    # -- verifying ---------------------------------------------------------------------------

    def authenticate(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        ticket: str | None = None,
    ) -> Principal:
        """The caller, from the first credential present; `ticket` only where streams allow it."""
        authorization = headers.get("authorization")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("Authorization header must be 'Bearer <token>'")
            principal = self.verify_token(token.strip())
        elif cookies.get(COOKIE):
            principal = self.verify_token(cookies[COOKIE])
        elif ticket:
            principal = self.verify_ticket(ticket)
        else:
            raise Unauthorized("credentials are missing: send a Bearer token")
        if self.revoked:
            self.check_revoked(principal)
        requests.identified(principal.sub)  # for the access log
        return principal

    def check_revoked(self, principal: Principal) -> None:
        """Raise if the user's tokens issued before a revocation include this one's."""
        before = self.revoked.get(principal.sub)
        if before is None:
            return
        # A token without `iat` cannot show it came after: refused while the revocation holds.
        if principal.issued_at is None or principal.issued_at < before:
            self.refused[principal.sub] += 1
            raise Unauthorized(
                "token was revoked by an administrator: sign in again for a new one",
                extra={"revoked": True},
            )

    def verify_token(self, token: str) -> Principal:
        """Verify `token`, or find it verified before and not expired since.

        A client sends the same token with every request until it expires; verifying it once
        (signature, claims) instead of on every request saves a large share of a cheap
        request's time. The cache is keyed by the whole token's SHA-256 digest, so only that
        exact, already verified string is found in it.
        """
        key = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(key)
        if cached is not None:
            if cached.expires_at is not None and time.time() < cached.expires_at:
                return cached
            del self._verified[key]
        principal, claims = self._decode_token(token)
        if "nbf" not in claims and principal.expires_at is not None:
            # (one that becomes valid later is checked each time)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[key] = principal
        return principal

    def _decode_token(self, token: str) -> tuple[Principal, dict[str, Any]]:
        options: Any = {"require": ["sub", "exp"], "verify_aud": bool(self.audience)}
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token has expired") from None
        except jwt.InvalidSignatureError as error:
            raise Unauthorized(f"token is invalid: {error}{self._secret_hint()}") from None
        except jwt.PyJWTError as error:
            raise Unauthorized(f"token is invalid: {error}") from None
        for name in ("nbf", "iat"):  # `exp` is read by `principal_from_claims`
            _seconds(claims, name)
        principal = principal_from_claims(claims)
        if (
            principal.issued_at is not None
            and principal.expires_at is not None
            and principal.expires_at - principal.issued_at > self.max_lifetime_s
        ):
            # A revocation is kept this long (docs/admin.md): a token living longer would
            # outlive the revocation that covers it.
            raise Unauthorized(
                f"token lives longer than this server accepts ({self.max_lifetime_s} s "
                "from 'iat' to 'exp')"
            )
        return principal, claims

    def _secret_hint(self) -> str:
        if self._dev_secret_file is None:
            return ""
        return (
            f" (this server signs with the development secret in {self._dev_secret_file}:"
            " make the token with `sinal token` in the directory where `sinal serve` runs)"
        )

    def verify_ticket(self, ticket: str) -> Principal:
        try:
            claims = jwt.decode(
                ticket,
                self._ticket_key,
                algorithms=[TICKET_ALGORITHM],
                audience=TICKET_AUDIENCE,
                options={"require": ["sub", "exp", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("ticket has expired: request a new one") from None
        except jwt.PyJWTError:
            raise Unauthorized("ticket is invalid") from None
        # The connection it opens lives as long as the token behind it, not as the ticket: a
        # ticket only has to be used soon. (One minted without the claim: its own `exp`.)
        expiry = TOKEN_EXPIRY if TOKEN_EXPIRY in claims else "exp"
        issued = TOKEN_ISSUED if TOKEN_ISSUED in claims else "iat"
        return principal_from_claims(claims, expiry, issued)

    # -- minting -------------------------------------------------------------------------------

    def issue_ticket(self, principal: Principal) -> tuple[str, int]:
        """A ticket for `principal`, and the whole seconds it stays valid (`expires_in`).

        It never outlives the token it is minted from: its `exp` is the sooner of the token's
        and the ticket lifetime's, and it carries the token's expiry (`token_exp`) for the
        connections it opens.
        """
        now = time.time()
        # Rounded up: `exp` is whole seconds, and a ticket lives at least the `expires_in` it
        # is announced with (truncating made a 1 s ticket dead on arrival).
        expires = math.ceil(now) + self.ticket_ttl_s
        claims: dict[str, Any] = {
            "sub": principal.sub,
            "roles": sorted(principal.roles),
            "teams": sorted(principal.teams),
            "aud": TICKET_AUDIENCE,
            "iat": int(now),
        }
        if principal.expires_at is not None:
            # Rounded down here: the ticket must not live a fraction of a second longer.
            expires = min(expires, math.floor(principal.expires_at))
            claims[TOKEN_EXPIRY] = principal.expires_at
        if principal.issued_at is not None:
            claims[TOKEN_ISSUED] = principal.issued_at
        claims["exp"] = expires
        ticket = jwt.encode(claims, self._ticket_key, algorithm=TICKET_ALGORITHM)
        return ticket, max(0, math.floor(expires - now))


def mint_token(
    secret: str,
    sub: str,
    roles: Iterable[str] = (),
    teams: Iterable[str] = (),
    ttl_s: int = 3600,
    **extra: Any,
) -> str:
    """An HS256 JWT, as the platform would issue one (`sinal token`, tests, benchmarks)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "roles": list(roles),
        "teams": list(teams),
        "iat": now,
        "exp": now + ttl_s,
    }
    claims.update(extra)
    return jwt.encode(claims, secret, algorithm="HS256")


def principal_from_claims(
    claims: Mapping[str, Any], expiry: str = "exp", issued: str = "iat"
) -> Principal:
    """The caller the verified `claims` describe; its credential expires at claim `expiry` and
    was issued at claim `issued`."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not is_valid_identifier(sub):
        raise Unauthorized("token subject must be 1-128 characters of A-Z a-z 0-9 _ @ . -")
    return Principal(
        sub,
        _strings(claims, "roles"),
        _strings(claims, "teams"),
        _seconds(claims, expiry),
        _seconds(claims, issued),
    )


def _seconds(claims: Mapping[str, Any], name: str) -> float | None:
    """A time claim as seconds since the epoch, or None when absent.

    PyJWT takes any value `int()` takes: "9999999999" as text, and 10**400, which then
    overflowed as a float. RFC 7519 says a NumericDate is a JSON number.
    """
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and abs(value) <= MAX_NUMERIC_DATE
    ):
        raise Unauthorized(
            f"token claim '{name}' must be a number of seconds since 1970, "
            f"at most {MAX_NUMERIC_DATE} (year 9999)"
        )
    return float(value)


def _strings(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Unauthorized(f"token claim '{name}' must be a list of strings")
    return _interned(frozenset(value))


# Each connection keeps its principal for its whole life: its roles and teams are shared with
# every other principal holding the same set (an empty frozenset alone is 216 bytes).
_SETS: dict[frozenset[str], frozenset[str]] = {}
MAX_INTERNED_SETS = 10_000


def _interned(value: frozenset[str]) -> frozenset[str]:
    found = _SETS.get(value)
    if found is not None:
        return found
    if len(_SETS) < MAX_INTERNED_SETS:
        _SETS[value] = value
    return value
