"""Cross-site request forgery: which requests may use the ambient `sinal_token` cookie.

A browser attaches the cookie to a request whichever site's page makes it. Two rules keep another
site from acting with it, on REST (`CsrfGuard`, every unsafe method of every route) and on the
action WebSocket (`api/actions.py`), with the one `check_origin` below:

- **Origin.** The request's `Origin` must be an allowed origin: those of `SINAL_ALLOWED_ORIGINS`,
  or, when that is unset, the origin the request was sent to (its scheme and `Host`). Without
  `Origin`, a `Sec-Fetch-Site` other than `same-origin` or `none` is refused too. A request with
  neither header comes from no browser (every browser sends `Origin` on a cross-origin POST and
  on every WebSocket handshake), so it carries no forged intent and is let through.
- **JSON.** A body must say `Content-Type: application/json` (parameters such as `charset`
  allowed; `application/<anything>+json` too, RFC 6839). A page of another origin can send
  `text/plain` or a form without asking, but a JSON type only after a CORS preflight, which
  Sinal never grants; so a browser that sends no `Origin` still cannot forge a body.

A request with an `Authorization` header is authenticated by it (`api/auth.py` tries it first),
and no page can add that header to another origin's request without that preflight: such
requests are not checked, and neither are safe methods, which change nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import COOKIE
from api.settings import normalize_origin
from streams.errors import Forbidden, UnsupportedMediaType

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# `Sec-Fetch-Site` values that mean the page is Sinal's own, or that no page is involved (the
# user typed the URL or opened a bookmark).
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})
# WebSocket scopes say `ws`/`wss`; the page that opens the socket has an http(s) origin.
_WEB_SCHEMES = {"ws": "http", "wss": "https"}


def own_origin(scheme: str, host: str | None) -> str | None:
    """The origin a request was sent to, from its scheme and `Host` header."""
    if not host:
        return None
    scheme = _WEB_SCHEMES.get(scheme, scheme)
    try:
        return normalize_origin(f"{scheme}://{host}")
    except ValueError:
        return None


def cookie_authenticated(headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
    """Whether the caller's credential is the cookie, as `Authenticator.authenticate` picks it."""
    return not headers.get("authorization") and bool(cookies.get(COOKIE))


def check_origin(headers: Mapping[str, str], scheme: str, allowed: Collection[str] | None) -> None:
    """Refuse (403, `field: "Origin"`) a cookie-authenticated request from a foreign page.

    `allowed`: the normalized origins of `SINAL_ALLOWED_ORIGINS`; None: the request's own.
    """
    origin = headers.get("origin")
    if origin is None:
        site = headers.get("sec-fetch-site")
        if site is None or site.lower() in SAME_SITE_FETCHES:
            return
        raise Forbidden(
            f"the sinal_token cookie is not accepted from a {site} page "
            "(no Origin, and Sec-Fetch-Site says so); send a Bearer token instead",
            field="Origin",
        )
    accepted = allowed if allowed is not None else {own_origin(scheme, headers.get("host"))}
    try:
        ok = normalize_origin(origin) in accepted
    except ValueError:
        ok = False  # `null` (a sandboxed or privacy-sensitive page) and anything malformed
    if not ok:
        raise Forbidden(
            f"the sinal_token cookie is not accepted from the origin {origin[:100]!r}; "
            "elsewhere, send a Bearer token (or, on streams and /v1/actions, a ticket)",
            field="Origin",
        )


def is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def check_content_type(headers: Mapping[str, str]) -> None:
    """Refuse (415, `field: "Content-Type"`) a body that does not say it is JSON."""
    has_body = headers.get("content-length", "0").strip() not in ("", "0") or (
        "transfer-encoding" in headers
    )
    content_type = headers.get("content-type")
    if has_body and (content_type is None or not is_json(content_type)):
        shown = "none" if content_type is None else repr(content_type[:100])
        raise UnsupportedMediaType(
            f"a request body must be sent with Content-Type: application/json (got {shown})",
            field="Content-Type",
        )


class CsrfGuard(ASGIMiddleware):
    """Both rules on every unsafe HTTP request that the cookie authenticates."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, allowed_origins: Collection[str] | None) -> None:
        self.allowed = None if allowed_origins is None else frozenset(allowed_origins)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["method"] in UNSAFE_METHODS:  # type: ignore[typeddict-item]
            # Parsed once: the request the handler gets reads them back from the scope.
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
            headers = connection.headers
            if cookie_authenticated(headers, connection.cookies):
                check_origin(headers, scope["scheme"], self.allowed)
                check_content_type(headers)
        await next_app(scope, receive, send)
