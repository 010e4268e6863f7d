"""Cross-site request forgery: the `sinal_token` cookie works only from an allowed origin, with
JSON bodies that say so (`api/csrf.py`).

The matrix walks the app's own route list, so a route added later is covered without a line
here: every unsafe method of every route refuses a cookie request from a foreign page (403) and
a cookie request with a `text/plain` body (415), and lets the same requests through with a
Bearer token, or with the cookie from the page's own origin.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.routes import HTTPRoute
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from api.app import create_app
from api.csrf import UNSAFE_METHODS, check_content_type, check_origin, is_json, own_origin
from api.settings import Settings, SettingsError, normalize_origin
from streams.errors import Forbidden, SinalError
from tests.support import SECRET, ServerProcess, assert_problem, bearer, token

FOREIGN = "https://evil.example"
# Roles that take each request past its role check, as far as it goes.
COOKIE = {"Cookie": f"sinal_token={token('csrf-user', 'service', 'admin')}"}
BEARER = bearer("csrf-user", "service", "admin")
JSON_BODY = {"Content-Type": "application/json"}
TEXT_BODY = {"Content-Type": "text/plain"}
_PARAMETER = re.compile(r"\{(\w+)(?::(\w+))?\}")


def unsafe_routes() -> list[tuple[str, str]]:
    """(method, concrete path) for every unsafe method of every route of the app."""
    # Built, never started: only its routes are read. Litestar warns here of what it will drop
    # in 3.0 (dependencies inferred from parameter names, `Parameter(query=)`), used by Sinal.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        app = create_app(Settings(jwt_secret=SECRET))
    routes = []
    for route in app.litestar.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = _PARAMETER.sub(lambda match: _value_for(match.group(2)), route.path)
        routes.extend((method, path) for method in sorted(set(route.methods) & UNSAFE_METHODS))
    return routes


def _value_for(kind: str | None) -> str:
    # Fixed values: every pytest-xdist worker must collect the same test ids.
    return {"uuid": "00000000-0000-4000-8000-000000000001", "int": "1"}.get(kind or "str", "x")


ROUTES = unsafe_routes()


def test_the_matrix_covers_the_routes_that_change_things() -> None:
    """A sanity check of the walk itself: it found the routes a CSRF attack would aim at."""
    paths = {path for _, path in ROUTES}
    assert "/v1/notifications/read-all" in paths
    assert any(path.endswith("/cancel") for path in paths)
    assert len(ROUTES) >= 15


def is_csrf_refusal(response: httpx.Response) -> bool:
    if response.status_code not in (403, 415):
        return False
    return response.json().get("field") in ("Origin", "Content-Type")


@pytest.fixture(scope="module")
def client(memory_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=memory_server.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_cookie_request_from_another_origin_is_refused(
    client: httpx.Client, method: str, path: str
) -> None:
    """The bug: a page of any site could retry or cancel executions, mark all read or dismiss
    with the victim's cookie (a form post, or `fetch` with `mode: "no-cors"`)."""
    foreign = {**COOKIE, **JSON_BODY, "Origin": FOREIGN}
    response = client.request(method, path, headers=foreign, content=b"{}")
    assert_problem(response, 403, "Origin")
    # Without `Origin`, the browser's `Sec-Fetch-Site` gives a cross-site request away.
    for site in ("cross-site", "same-site"):
        headers = {**COOKIE, **JSON_BODY, "Sec-Fetch-Site": site}
        assert_problem(client.request(method, path, headers=headers, content=b"{}"), 403, "Origin")
    # An opaque origin (a sandboxed frame, a cross-origin redirect) is no allowed origin.
    response = client.request(method, path, headers={**COOKIE, "Origin": "null"})
    assert_problem(response, 403, "Origin")


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_cookie_request_with_a_body_that_is_not_json_is_refused(
    client: httpx.Client, method: str, path: str, memory_server: ServerProcess
) -> None:
    """The bug: the body was parsed as JSON whatever its `Content-Type`, so a `text/plain`
    request, which needs no CORS preflight, could carry one."""
    for headers in (
        {**COOKIE, **TEXT_BODY, "Origin": memory_server.url},
        {**COOKIE, **TEXT_BODY},
        {**COOKIE, "Content-Type": "application/x-www-form-urlencoded"},
        COOKIE,  # no Content-Type at all
    ):
        response = client.request(method, path, headers=headers, content=b'{"ids": []}')
        assert_problem(response, 415, "Content-Type")


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_bearer_request_or_a_cookie_request_from_this_origin_passes(
    client: httpx.Client, method: str, path: str, memory_server: ServerProcess
) -> None:
    """They may fail for their own reasons (404, 400, 409...), never with the CSRF refusal."""
    allowed = [
        # A header is no ambient credential: any origin, any body type.
        ({**BEARER, **TEXT_BODY, "Origin": FOREIGN}, b"{}"),
        ({**BEARER, **COOKIE, "Origin": FOREIGN}, b"{}"),
        ({**COOKIE, **JSON_BODY, "Origin": memory_server.url}, b"{}"),
        ({**COOKIE, "Content-Type": "application/json; charset=utf-8"}, b"{}"),
        ({**COOKIE, "Content-Type": "application/merge-patch+json"}, b"{}"),
        ({**COOKIE, **JSON_BODY, "Sec-Fetch-Site": "same-origin"}, b"{}"),
        ({**COOKIE, **JSON_BODY, "Sec-Fetch-Site": "none"}, b"{}"),
        # No body needs no type: e.g. `POST /v1/notifications/{id}/read` from the page.
        ({**COOKIE, "Origin": memory_server.url}, b""),
    ]
    for headers, body in allowed:
        response = client.request(method, path, headers=headers, content=body)
        assert not is_csrf_refusal(response), (headers, response.text)


def test_the_page_origin_is_told_by_scheme_and_port(memory_server: ServerProcess) -> None:
    """Same host, other scheme or port: another origin."""
    with httpx.Client(base_url=memory_server.url, timeout=10) as client:
        host = memory_server.url.removeprefix("http://")
        for origin in (f"https://{host}", f"http://{host.split(':')[0]}:1", "http://localhost"):
            headers = {**COOKIE, **JSON_BODY, "Origin": origin}
            response = client.post("/v1/notifications/read-all", headers=headers, content=b"{}")
            assert_problem(response, 403, "Origin")
        headers = {**COOKIE, **JSON_BODY, "Origin": memory_server.url.upper()}
        response = client.post("/v1/notifications/read-all", headers=headers, content=b"{}")
        assert response.status_code == 200, response.text


# -- SINAL_ALLOWED_ORIGINS -------------------------------------------------------------------


@pytest.fixture(scope="module")
def configured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"SINAL_ALLOWED_ORIGINS": "https://app.example, http://localhost:3000"}
    server = ServerProcess(tmp_path_factory.mktemp("origins"), env).start()
    yield server
    server.stop()


def test_allowed_origins_replace_the_default(configured_server: ServerProcess) -> None:
    with httpx.Client(base_url=configured_server.url, timeout=10) as client:
        for origin in ("https://app.example", "https://APP.example:443", "http://localhost:3000"):
            headers = {**COOKIE, **JSON_BODY, "Origin": origin}
            response = client.post("/v1/notifications/read-all", headers=headers, content=b"{}")
            assert response.status_code == 200, (origin, response.text)
        # The server's own origin is no longer implied.
        for origin in (configured_server.url, "http://app.example", "http://localhost:3001"):
            headers = {**COOKIE, **JSON_BODY, "Origin": origin}
            response = client.post("/v1/notifications/read-all", headers=headers, content=b"{}")
            assert_problem(response, 403, "Origin")


@pytest.mark.anyio
async def test_the_websocket_origin_check_follows_allowed_origins(
    configured_server: ServerProcess,
) -> None:
    url = configured_server.url.replace("http://", "ws://") + "/v1/actions"

    async def status(headers: dict[str, str], origin: str) -> tuple[int, str | None]:
        try:
            async with connect(
                url, additional_headers=headers, origin=Origin(origin), open_timeout=10
            ):
                return 101, None
        except InvalidStatus as error:
            return error.response.status_code, error.response.headers["content-type"]

    refused = (403, "application/problem+json")
    assert await status(COOKIE, "https://app.example") == (101, None)
    assert await status(COOKIE, configured_server.url) == refused
    assert await status(COOKIE, FOREIGN) == refused
    assert await status(BEARER, FOREIGN) == (101, None)


def test_a_bad_allowed_origins_value_stops_start_up(tmp_path: Path) -> None:
    for value in ("app.example", "https://app.example/path", "ftp://app.example", "https://a.b,"):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({"SINAL_ALLOWED_ORIGINS": value})
        assert raised.value.variable == "SINAL_ALLOWED_ORIGINS"
    settings = Settings.from_env({"SINAL_ALLOWED_ORIGINS": "https://A.example:443/, http://b:80"})
    assert settings.allowed_origins == ("https://a.example", "http://b")


# -- the rules on their own ------------------------------------------------------------------


def test_origins_are_compared_normalized() -> None:
    assert normalize_origin("HTTPS://Example.COM:443") == "https://example.com"
    assert normalize_origin("http://[::1]:8000") == "http://[::1]:8000"
    assert own_origin("wss", "example.com") == "https://example.com"
    assert own_origin("http", "example.com:80") == "http://example.com"
    assert own_origin("http", None) is None
    with pytest.raises(ValueError, match="invalid port"):
        normalize_origin("http://example.com:99999")


def refusal(headers: dict[str, str], scheme: str = "http", allowed: set[str] | None = None) -> str:
    try:
        check_origin(headers, scheme, allowed)
    except Forbidden as error:
        return str(error.field)
    return "accepted"


def test_check_origin() -> None:
    host = {"host": "sinal.example"}
    assert refusal({**host, "origin": "http://sinal.example"}) == "accepted"
    assert refusal({**host, "origin": "https://sinal.example"}, "https") == "accepted"
    assert refusal({**host, "origin": "http://sinal.example"}, "https") == "Origin"
    assert refusal({"origin": "http://sinal.example"}) == "Origin"  # no Host: nothing to match
    assert refusal(host) == "accepted"  # no browser
    assert refusal({**host, "origin": "https://a.example"}, allowed={"https://a.example"}) == (
        "accepted"
    )
    assert refusal({**host, "origin": "http://sinal.example"}, allowed=set()) == "Origin"


def test_json_media_types() -> None:
    for media_type in ("application/json", "Application/JSON; charset=UTF-8", "application/x+json"):
        assert is_json(media_type)
    for media_type in ("text/plain", "text/json", "application/jsonp", "multipart/form-data", ""):
        assert not is_json(media_type)
    check_content_type({})  # no body
    check_content_type({"content-length": "0", "content-type": "text/plain"})
    with pytest.raises(SinalError) as raised:
        check_content_type({"transfer-encoding": "chunked"})
    assert (raised.value.status, raised.value.field) == (415, "Content-Type")
